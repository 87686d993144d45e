"""The FastAPI handlers that turn every error into `{"error": {"code", "message"}}` by serve/status.py's table."""

from __future__ import annotations

from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException

from rewards.errors import ModelNotReadyError, OverloadedError, VLRewardError
from serve.status import error_headers, status_of

#: Ray's errors from a model handle call, as the vlreward error the client sees. They are translated where the
#: call is awaited (`from_ray`), not by exception handlers: Serve replaces an ingress app's handlers for
#: BackPressureError and DeploymentUnavailableError with its own plain-text 503.
RAY_ERRORS: dict[type[Exception], Callable[[Exception], VLRewardError]] = {
    BackPressureError: lambda error: OverloadedError(f"the model's queue is full: {error}"),
    DeploymentUnavailableError: lambda error: ModelNotReadyError(f"the model is not available: {error}"),
    ReplicaUnavailableError: lambda error: ModelNotReadyError("the model replica went away; retry"),
    RayActorError: lambda error: ModelNotReadyError("the model replica went away; retry"),  # Serve replaces it
}


def from_ray(error: Exception) -> VLRewardError | None:
    """The vlreward error that `error` stands for, by the most specific class in RAY_ERRORS; None for others."""
    return next((RAY_ERRORS[cls](error) for cls in type(error).__mro__ if cls in RAY_ERRORS), None)


def error_message(error: VLRewardError) -> str:
    """What the client is told: the message's last line, at most 500 characters (Ray wraps a replica's errors with
    their traceback, which stays in the replica's log)."""
    message = str(error.args[0]) if error.args else error.code
    return message.splitlines()[-1][:500]


def error_body(code: str, message: str) -> dict:
    """The one shape of every error the service answers, over HTTP (the body) and gRPC (the details, as JSON)."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, retry_after_s: float = 1.0) -> None:
    """Every error leaves as `{"error": {"code", "message"}}`; bad input never becomes a 500. Each 503 carries
    `Retry-After: retry_after_s`."""

    def answer(error: VLRewardError) -> JSONResponse:
        status = status_of(error)
        return error_response(status, error.code, error_message(error), error_headers(status, retry_after_s))

    @app.exception_handler(VLRewardError)
    async def vlreward_error(request: Request, error: VLRewardError):
        return answer(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        """A bug, not bad input: still JSON, and the replica's log has the traceback."""
        return error_response(500, "internal_error", f"{type(error).__name__} while serving {request.url.path}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return error_response(error.status_code, "http_error", str(error.detail))
