"""Tokens' errors are the gateway's ``TokenError`` (401, Bearer invalid_token)."""
from gateway.errors import TokenError

__all__ = ["TokenError"]
