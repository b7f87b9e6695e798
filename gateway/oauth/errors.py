"""RFC 6749 section 5.2 errors, each carrying its code and HTTP status."""
from __future__ import annotations

import re

from gateway.errors import GatewayError

# RFC 6749 5.2: error_description MUST NOT hold characters outside %x20-21 / %x23-5B / %x5D-7E
# (it may echo a client's input, such as an unknown field's name)
_NOT_ALLOWED = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


class OAuthError(GatewayError):
    """The /oauth JSON endpoints answer ``{"error", "error_description"}``; elsewhere (a
    problem document, a page) the same error keeps its status and its code as problem type."""
    error = "invalid_request"
    status = 400
    message = "error.bad_request"

    def __init__(self, description: str = "", *, status: int | None = None,
                 headers: dict | None = None):
        super().__init__(description or self.error, headers=headers)
        self.description = description
        self.problem = self.error.replace("_", "-")
        if status is not None:
            self.status = status

    def body(self) -> dict:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = _NOT_ALLOWED.sub("?", self.description)[:500]
        return body


class InvalidRequest(OAuthError):
    """RFC 6749 5.2: missing, repeated or malformed parameter."""


class InvalidClient(OAuthError):
    """RFC 6749 5.2: client authentication failed."""
    error, status = "invalid_client", 401


class InvalidGrant(OAuthError):
    """RFC 6749 5.2: code or refresh token invalid, expired, revoked, reused, or PKCE failed."""
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidAuthorizationDetails(OAuthError):
    """RFC 9396 section 5: authorization_details not allowed or malformed."""
    error = "invalid_authorization_details"


class InvalidRequestURI(OAuthError):
    """RFC 9126 section 2.4 / RFC 9101: request_uri unknown, expired or used."""
    error = "invalid_request_uri"


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"


class SlowDown(OAuthError):
    """Too many requests from this client (429 with Retry-After)."""
    error, status, message = "slow_down", 429, "error.too_many"

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry after {retry_after} s",
                         headers={"Retry-After": str(retry_after)})


class TemporarilyUnavailable(OAuthError):
    error, status, message = "temporarily_unavailable", 503, "error.unavailable"

    def __init__(self, description="a backing service did not answer; try again shortly"):
        super().__init__(description, headers={"Retry-After": "5"})
