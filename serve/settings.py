"""The HTTP front door's settings, apart from the routes (serve/api.py), so `Edge` (serve/intake.py) reads them
without importing the routes that depend on it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: what takes HTTP in front of the ingress replicas: Serve's Python proxy actor, its HAProxy ingress, or auto (HAProxy
#: where `vlreward serve` starts the local Ray, else what the running Ray started with): one place for ServeArgs.proxy
#: and `vlreward serve --proxy`, which must not import Ray to build its parser
Proxy = Literal["auto", "python", "haproxy"]


class ApiSettings(BaseModel):
    """Limits and auth of the HTTP front door (built from ServeArgs by `from_args`)."""

    default_model: str
    api_token: str | None = None
    max_body_bytes: int = 64 * 2**20
    max_frames: int = 2048
    max_pixels_per_frame: int = 512 * 512
    retry_after_s: float = Field(1.0, description="Retry-After of every 503")
    body_read_timeout_s: float = Field(10.0, description="408 after this long without a part of the body")
    max_concurrent_bodies: int = Field(64, description="slow bodies received at once; beyond them 503")
    ready_timeout_s: float = Field(5.0, description="how long /readyz waits for each model")

    @classmethod
    def from_args(cls, args, api_token: str | None = None) -> "ApiSettings":
        """The settings of `args` (a serve.app.ServeArgs): its first model is the default route, and `api_token`
        (e.g. from the environment) stands in for a missing `args.api_token`."""
        shared = set(cls.model_fields) & set(type(args).model_fields) - {"api_token"}
        return cls(default_model=args.models[0].key, api_token=args.api_token or api_token,
                   **args.model_dump(include=shared))
