"""The one table from vlreward's error types to HTTP statuses: plain data, so the client imports it without Ray.

The error handlers, the ASGI middleware, OpenAPI's documented responses, Retry-After and the client's
code-to-error lookup all read it.
"""

from __future__ import annotations

import math

from rewards import errors
from rewards.errors import VLRewardError

ERROR_STATUS: dict[type[VLRewardError], int] = {
    VLRewardError: 400,
    errors.InvalidVideoError: 422,
    errors.InvalidTaskError: 422,
    errors.InvalidStateError: 422,
    errors.InvalidCheckpointError: 400,
    errors.UnknownModelError: 404,
    errors.ModelNotReadyError: 503,
    errors.OverloadedError: 503,
    errors.UnauthorizedError: 401,
    errors.RequestTimeoutError: 408,
    errors.PayloadTooLargeError: 413,
}
ERROR_BY_CODE: dict[str, type[VLRewardError]] = {cls.code: cls for cls in ERROR_STATUS}
RETRY_LATER = frozenset({503})  # statuses that carry Retry-After


def status_of(error: VLRewardError) -> int:
    """The status of the most specific mapped class (Ray wraps remote errors in subclasses)."""
    return next(ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS)


def retry_after(seconds: float) -> str:
    """The Retry-After value for `seconds`: whole seconds, rounded up (as Ray Serve's own 503s)."""
    return str(max(0, math.ceil(seconds)))


def error_headers(status: int, retry_after_s: float) -> dict[str, str] | None:
    """The headers an error answer at `status` carries: Retry-After on the statuses in RETRY_LATER."""
    return {"Retry-After": retry_after(retry_after_s)} if status in RETRY_LATER else None
