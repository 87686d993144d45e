"""The one table from error types to HTTP statuses, and the FastAPI handlers that use it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException

from rewards.errors import (
    InvalidCheckpointError,
    InvalidStateError,
    InvalidTaskError,
    InvalidVideoError,
    ModelNotReadyError,
    PayloadTooLargeError,
    UnknownModelError,
    VLRewardError,
)


class UnauthorizedError(VLRewardError):
    """Raised when a token is configured and the request lacks the matching bearer token."""

    code = "unauthorized"


class OverloadedError(ModelNotReadyError):
    """Raised when a model's request queue is full (Ray Serve backpressure): retry after a pause."""

    code = "overloaded"


class UnsupportedMediaError(VLRewardError):
    """Raised when an upload is not of a media type the route takes (e.g. a video where .npy is expected)."""

    code = "unsupported_media"


ERROR_STATUS: dict[type[VLRewardError], int] = {
    VLRewardError: 400,
    InvalidVideoError: 422,
    InvalidTaskError: 422,
    InvalidStateError: 422,
    InvalidCheckpointError: 400,
    UnknownModelError: 404,
    ModelNotReadyError: 503,
    OverloadedError: 503,
    UnauthorizedError: 401,
    PayloadTooLargeError: 413,
    UnsupportedMediaError: 415,
}


def status_of(error: VLRewardError) -> int:
    """The status of the most specific mapped class (Ray wraps remote errors in subclasses)."""
    return next(ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS)


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as `{"error": {"code", "message"}}`; bad input never becomes a 500."""

    @app.exception_handler(VLRewardError)
    async def vlreward_error(request: Request, error: VLRewardError):
        status = status_of(error)
        headers = {"Retry-After": "1"} if status == 503 else None
        message = str(error.args[0]) if error.args else error.code
        return error_response(status, error.code, message.splitlines()[-1][:500], headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        """A bug, not bad input: still JSON, and the replica's log has the traceback."""
        if isinstance(error, BackPressureError):  # a model's queue is full: tell the client when to come back
            return await vlreward_error(request, OverloadedError(str(error)))
        if isinstance(error, RayActorError):  # a replica died mid-request; Serve is replacing it
            return await vlreward_error(request, ModelNotReadyError("the model replica went away; retry"))
        return error_response(500, "internal_error", f"{type(error).__name__} while serving {request.url.path}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return error_response(error.status_code, "http_error", str(error.detail))
