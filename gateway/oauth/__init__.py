"""The consent grant: OAuth 2.0 with PAR (RFC 9126), PKCE (RFC 7636), private_key_jwt
(RFC 7523), rich authorization requests (RFC 9396), revocation (RFC 7009) and introspection
(RFC 7662)."""
