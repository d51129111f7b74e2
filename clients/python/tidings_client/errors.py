"""The server's error answers as exceptions: one class per status, all `TidingsError`."""

from typing import Any, Dict, List


class TidingsError(Exception):
    """An error answer of the server: `status`, `code` and the body's fields."""

    def __init__(self, status: int, body: Dict[str, Any]):
        super().__init__(body.get("error") or f"HTTP {status}")
        self.status = status
        self.code = body.get("code")
        self.body = body


class BadRequest(TidingsError):
    """400: a malformed request (a missing field, a bad name, JSON that is not an object)."""


class Unauthorized(TidingsError):
    """401: no valid credentials."""


class Forbidden(TidingsError):
    """403: valid credentials, but not allowed to do this (another application's, an admin's)."""


class NotFound(TidingsError):
    """404: no such queue, application, action, subscription, event or delivery."""


class SchemaViolation(TidingsError):
    """406: the payload does not conform to the action's schema; `errors` lists every reason."""

    @property
    def errors(self) -> List[str]:
        return list(self.body.get("errors") or self.body.get("reasons") or [])


class Conflict(TidingsError):
    """409: exists otherwise, not pending, an Idempotency-Key reused, or a record changed meanwhile."""


class PayloadTooLarge(TidingsError):
    """413: the body exceeds the server's limit."""


class UnsupportedMediaType(TidingsError):
    """415: the body is not JSON."""


class EndpointCheckFailed(TidingsError):
    """417: a subscription's endpoint did not pass the hub's check."""


class Unprocessable(TidingsError):
    """422: understood but refused: an unknown action, a destination the address policy refuses."""


class TooManyRequests(TidingsError):
    """429: slow down (login attempts)."""


class BadGateway(TidingsError):
    """502: the subscriber's endpoint failed during a replay."""


class Unavailable(TidingsError):
    """503: the server or its store cannot answer now (retried by the client where that is safe)."""


class InsufficientStorage(TidingsError):
    """507: the server's disk is full."""


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    406: SchemaViolation,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    417: EndpointCheckFailed,
    422: Unprocessable,
    429: TooManyRequests,
    502: BadGateway,
    503: Unavailable,
    507: InsufficientStorage,
}


def error_for(status: int, body: Dict[str, Any]) -> TidingsError:
    """The exception for an error answer (`TidingsError` itself for a status without a class)."""
    return _BY_STATUS.get(status, TidingsError)(status, body)
