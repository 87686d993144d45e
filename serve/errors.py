"""The FastAPI handlers that turn every error into `{"error": {"code", "message"}}` by serve/status.py's table."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException

from rewards.errors import ModelNotReadyError, OverloadedError, VLRewardError
from serve.status import RETRY_LATER, status_of


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as `{"error": {"code", "message"}}`; bad input never becomes a 500."""

    @app.exception_handler(VLRewardError)
    async def vlreward_error(request: Request, error: VLRewardError):
        status = status_of(error)
        headers = {"Retry-After": "1"} if status in RETRY_LATER else None
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
