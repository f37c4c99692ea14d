"""OpenAI-shaped errors: every failure leaves the server as {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import (
    BadInputError,
    ManifestError,
    ModelNotAvailableError,
    ParamError,
    TaskhubError,
    UnknownStageError,
    UnknownTaskError,
)

log = logging.getLogger("taskhub.serve")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error to send to the client as it is: HTTP status, message, the offending field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_taskhub(exc: TaskhubError, param: str | None = None) -> APIError:
    """A TaskhubError raised while serving: the caller's mistake (400/404) or the server's (500)."""
    if isinstance(exc, UnknownTaskError):
        return APIError(404, str(exc), param=param, code="task_not_found")
    if isinstance(exc, (ParamError, BadInputError)):
        return APIError(400, str(exc), param=param, code="invalid_value")
    if isinstance(exc, (ModelNotAvailableError, ManifestError, UnknownStageError)):
        return APIError(503, str(exc), code="model_not_available")
    return APIError(500, str(exc), code="task_failed")


def not_found(what: str, name: str, known: list[str], param: str) -> APIError:
    listing = ", ".join(sorted(known)) or "(none)"
    return APIError(
        404, f"The {what} {name!r} is not served here. Served: {listing}", param=param, code=f"{what}_not_found"
    )


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def taskhub_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskhubError)
    return from_taskhub(exc).response()


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback here, one line to the client, never the traceback."""
    log.exception("unhandled error serving %s %s", request.method, request.url.path)
    return APIError(
        500, f"Internal error ({type(exc).__name__}); see the server log.", code="internal_error"
    ).response()


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 (no such route or method) in OpenAI's shape."""
    status = int(getattr(exc, "status_code", 500))
    detail = str(getattr(exc, "detail", "")) or "error"
    message = f"{detail}: {request.method} {request.url.path}"
    return APIError(status, message, headers=getattr(exc, "headers", None)).response()
