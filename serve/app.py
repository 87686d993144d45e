"""`build_app(args)`: the whole application graph in one place (`serve run serve.app:build_app`)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from ray.serve import Application

from rewards import DEFAULT_MODEL
from serve.deployments import Gateway, ModelServer


class ServeArgs(BaseModel):
    """Application arguments; checked before anything starts."""

    models: list[str] = Field(default_factory=lambda: [DEFAULT_MODEL], min_length=1,
                              description="shipped model names or checkpoint dirs under model_root; first is default")
    model_root: str | None = Field(None, description="directory that checkpoint paths must resolve under")
    api_token: str | None = Field(None, description="bearer token required on every route but /healthz")
    max_body_bytes: int = 64 * 2**20
    max_frames: int = 2048
    max_pixels_per_frame: int = 512 * 512
    max_batch_frames: int = 4096
    batch_wait_timeout_s: float = 0.01
    goal_cache_size: int = 1024
    num_replicas: int = 1
    num_gpus_per_replica: float = 0.0


def model_key(name_or_path: str) -> str:
    """The name clients use for a model: a shipped name, or a checkpoint directory's last component."""
    return name_or_path.rstrip("/").split("/")[-1]


def build_app(args: dict | ServeArgs) -> Application:
    args = args if isinstance(args, ServeArgs) else ServeArgs(**args)
    handles = {
        model_key(name): ModelServer.options(
            name=f"model-{model_key(name)}",
            num_replicas=args.num_replicas,
            ray_actor_options={"num_cpus": 1, "num_gpus": args.num_gpus_per_replica},
        ).bind(name, args.model_root, max(args.max_batch_frames, args.max_frames), args.batch_wait_timeout_s,
               args.goal_cache_size)
        for name in args.models
    }
    settings = {"default_model": model_key(args.models[0]), "api_token": args.api_token,
                "max_body_bytes": args.max_body_bytes, "max_frames": args.max_frames,
                "max_pixels_per_frame": args.max_pixels_per_frame}
    return Gateway.options(ray_actor_options={"num_cpus": 0}).bind(handles, settings)
