class TokenError(Exception):
    """A token, assertion or signed message was refused. The message is safe to show."""
