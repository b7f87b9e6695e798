"""The gateway's errors: one family, each class carrying its HTTP meaning (status, problem type,
headers), so nothing later maps a reason string with ``if``. The domain raises them without
knowing Flask; ``gateway/http_errors.py`` renders them once, in the shape of the blueprint that
served the request.

    GatewayError                   500 internal
    ├── BadRequest                 400 bad-request       (an ``errors`` map names the fields)
    │   ├── UnknownRequester       400 unknown-client    requester_registry
    │   └── FormExpired            400 bad-request       web: a citizen form without its CSRF token
    ├── InvalidToken               401 invalid-token     Bearer error="invalid_token" (RFC 6750)
    │   └── TokenError             401                   tokens: a JWS or JWT refused
    ├── OutsideConsent             403 outside-consent   Bearer error="insufficient_scope"
    ├── FormNotAllowed             403 form-not-allowed  exchange/prefill: not in the policy
    ├── UnknownForm                404 unknown-form      exchange/prefill
    ├── ConsentError               409 consent-state     consent
    │   ├── ConsentNotFound        404 not-found         (another's consent looks the same)
    │   └── TransitionRefused      409 consent-state     the lifecycle does not allow it
    ├── KeyReused                  409 idempotency-key-reused  exchange: one key, another consent
    ├── MessageRefused             401 invalid-message   cdi: an FI's signed message or assertion
    ├── MessageReplayed            409 message-replayed  cdi: a message's jti seen before
    ├── TokenNotHeld               403 token-not-held    cdi: an access token of another requester
    ├── QueryNotFound              404 not-found         cdi: unknown, or another FI's query
    ├── UnsupportedMediaType       415 unsupported-media-type
    ├── ContentTooLarge            413 content-too-large
    ├── IdentifierUnreadable       500 identifier-unreadable  identifiers: a sealed HKID broken
    ├── Throttled                  429 too-many-requests Retry-After
    ├── Unavailable                503 unavailable       Retry-After
    │   ├── StoreUnavailable       503                   store/redis: Redis did not answer
    │   ├── DatabaseUnavailable    503                   store/db: the database did not answer
    │   ├── Contention             503 contention        store/db: a concurrent change won
    │   └── SourceUnavailable      503 source-unavailable a department's trouble, as one
    │       ├── SourceFailed       502 source-failed     exchange/router: down, an error, garbage
    │       └── SourceTimeout      504 source-timeout    exchange/router: slower than its timeout
    └── OAuthError                 400 (RFC 6749 5.2 code) oauth/errors: invalid_client 401, ...

Library exceptions become these where they arise, once: Redis errors in ``store/redis.py``,
SQLAlchemy's in the engine's ``handle_error`` hook (``store/db.py``), connector errors in
``exchange/router.py``. The ``message`` of a class is an i18n key for the citizen pages.
"""
from __future__ import annotations


class GatewayError(Exception):
    status = 500
    problem = "internal"
    message = "error.internal"          # citizen pages: a key of gateway/web/i18n.py
    bearer_error: str | None = None     # set: the 401/403 carries WWW-Authenticate: Bearer
    default_detail = "the gateway could not complete the request"

    def __init__(self, detail: str | None = None, *, errors: dict | None = None,
                 headers: dict | None = None):
        self.detail = detail or self.default_detail
        super().__init__(self.detail)
        self.errors = errors or {}
        self.headers = dict(headers or {})
        # for the operator's eyes only (the CLI's one line, logs); never in a response body
        self.operator_detail: str | None = None


class BadRequest(GatewayError):
    status, problem, message = 400, "bad-request", "error.bad_request"
    default_detail = "bad request"


class UnknownRequester(BadRequest):
    problem = "unknown-client"
    default_detail = "unknown client"


class FormExpired(BadRequest):
    message = "error.csrf"
    default_detail = "the form expired or did not come from this site; reload the page"


class NotAcceptable(GatewayError):
    status, problem, message = 406, "not-acceptable", "error.bad_request"


class MethodNotAllowed(GatewayError):
    status, problem, message = 405, "method-not-allowed", "error.bad_request"


class InvalidToken(GatewayError):
    status, problem, message, bearer_error = 401, "invalid-token", "error.bad_request", \
        "invalid_token"
    default_detail = "the access token was refused"


class TokenError(InvalidToken):
    """A token, assertion or signed message was refused. The message is safe to show."""


class OutsideConsent(GatewayError):
    status, problem, message, bearer_error = 403, "outside-consent", "error.bad_request", \
        "insufficient_scope"


class FormNotAllowed(GatewayError):
    """The requester's policy does not name this form for the consent's purpose."""
    status, problem, message = 403, "form-not-allowed", "error.bad_request"


class UnknownForm(GatewayError):
    status, problem, message = 404, "unknown-form", "error.not_found"
    default_detail = "no such form"


class ConsentError(GatewayError):
    """A consent cannot do what was asked (unknown, not the caller's, wrong state)."""
    status, problem, message = 409, "consent-state", "error.consent_state"


class ConsentNotFound(ConsentError):
    status, problem, message = 404, "not-found", "error.not_found"
    default_detail = "no such consent"


class TransitionRefused(ConsentError):
    pass


class KeyReused(GatewayError):
    status, problem, message = 409, "idempotency-key-reused", "error.bad_request"


class MessageRefused(GatewayError):
    """An FI's signed CDI message (or its polling assertion) was refused: malformed, unknown
    ``kid``, an algorithm other than the key's, a bad signature, stale or future ``iat``."""
    status, problem, message = 401, "invalid-message", "error.bad_request"
    default_detail = "the signed message was refused"

    def __init__(self, detail: str | None = None, *, credentials: bool = True, **kwargs):
        super().__init__(detail, **kwargs)
        # RFC 9110 15.5.2: a 401 names how to authenticate; the CDI bridge takes JWS signed by
        # the FI's registered keys (messages) and its self-signed JWT as a Bearer (polling).
        # RFC 6750 3.1: no error code when the request carried no credentials at all.
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="cdi", error="invalid_token"'
                                if credentials else 'Bearer realm="cdi"')


class MessageReplayed(GatewayError):
    status, problem, message = 409, "message-replayed", "error.bad_request"
    default_detail = "this message (its jti) was received before"


class TokenNotHeld(GatewayError):
    status, problem, message = 403, "token-not-held", "error.bad_request"
    default_detail = "the access token was issued to another requester"


class QueryNotFound(GatewayError):
    status, problem, message = 404, "not-found", "error.not_found"
    default_detail = "no such query"


class UnsupportedMediaType(GatewayError):
    status, problem, message = 415, "unsupported-media-type", "error.bad_request"


class ContentTooLarge(GatewayError):
    status, problem, message = 413, "content-too-large", "error.too_large"


class IdentifierUnreadable(GatewayError):
    """A citizen's sealed identifier did not open (tampered with, or sealed under a key no
    longer held): that record is refused, never returned as data (gateway/identifiers.py)."""
    status, problem, message = 500, "identifier-unreadable", "error.internal"
    default_detail = ("a citizen's record could not be read; nothing was released; the "
                      "operator has been told")


class Throttled(GatewayError):
    status, problem, message = 429, "too-many-requests", "error.too_many"

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry after {retry_after} s",
                         headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class Unavailable(GatewayError):
    status, problem, message = 503, "unavailable", "error.unavailable"
    retry_after = 5
    default_detail = "a backing service did not answer; try again shortly"

    def __init__(self, detail: str | None = None, **kwargs):
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", str(self.retry_after))


class StoreUnavailable(Unavailable):
    """Redis did not answer; callers fail closed rather than go on without it."""


class DatabaseUnavailable(Unavailable):
    default_detail = "the database did not answer; try again shortly"


class Contention(Unavailable):
    """A transaction lost a race (deadlock, serialization failure) even after its retries:
    the record is busy, not the database down."""
    problem, message, retry_after = "contention", "error.contention", 1
    default_detail = "a concurrent change to the same record won; try again"


class SourceUnavailable(Unavailable):
    problem, retry_after = "source-unavailable", 10
    default_detail = "a source of the data did not answer; try again shortly"


class SourceFailed(SourceUnavailable):
    """A department or utility service is down, answered an error or garbage: 502, naming it."""
    status, problem = 502, "source-failed"
    default_detail = "a source of the data answered wrongly or not at all; try again shortly"


class SourceTimeout(SourceUnavailable):
    """A department or utility service did not answer within its timeout: 504, naming it."""
    status, problem = 504, "source-timeout"
    default_detail = "a source of the data did not answer in time; try again shortly"
