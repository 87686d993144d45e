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


def init_ray(address: str | None = None, **ray_init_kwargs) -> None:
    """Start (or join, with `address`) a Ray cluster with settings that suit small machines."""
    import os

    import ray

    # a busy 2-core machine can take longer than Ray's 5 s to start the HTTP proxy
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **ray_init_kwargs)


def run_local(args: ServeArgs, host: str = "127.0.0.1", port: int = 8000, address: str | None = None) -> str:
    """Run the application on a local (or the given) Ray cluster and return its URL."""
    from ray import serve

    init_ray(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name="vlreward", route_prefix="/")
    return f"http://{host}:{port}"
