"""`build_app(args)`: the whole application graph in one place (`serve run serve.app:build_app`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from rewards import DEFAULT_MODEL
from serve.deployments import Gateway, ModelServer


class ModelSpec(BaseModel):
    """One served model: which checkpoint, and how its replicas are placed, batched and scaled."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="shipped model name, or a checkpoint directory under model_root")
    num_replicas: int = Field(1, ge=1, description="fixed replica count (ignored with autoscaling_config)")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions share a card")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype of model calls")
    max_batch_frames: int = Field(4096, ge=1, description="frames per cross-request batch")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int = Field(64, ge=1, description="requests in flight per replica; ≥ requests per batch")
    max_queued_requests: int = Field(256, ge=-1, description="queued per caller beyond that, then 503; -1: no limit")
    autoscaling_config: dict | None = Field(None, description="Ray Serve autoscaling_config (min/max_replicas, ...)")

    @property
    def key(self) -> str:
        """The name clients use: a shipped name, or a checkpoint directory's last component."""
        return self.model.rstrip("/").split("/")[-1]


class ServeArgs(BaseModel):
    """Application arguments, from the CLI or a YAML file; checked before anything starts."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec(model=DEFAULT_MODEL)], min_length=1,
                                    description="models to serve (names or full specs); the first is the default")
    model_root: str | None = Field(None, description="directory that checkpoint paths must resolve under")
    api_token: str | None = Field(None, description="bearer token required on every route but /healthz")
    max_body_bytes: int = Field(64 * 2**20, ge=1)
    max_frames: int = Field(2048, ge=1)
    max_pixels_per_frame: int = Field(512 * 512, ge=1)
    goal_cache_size: int = Field(1024, ge=1)
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with 503 when a queue is full")

    @field_validator("models", mode="before")
    @classmethod
    def _names_are_specs(cls, models):
        return [{"model": m} if isinstance(m, str) else m for m in models]

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "ServeArgs":
        """Arguments from a YAML file (the same keys as `serve run` args), with non-None overrides on top."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of ServeArgs keys, got {type(data).__name__}")
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})


def build_app(args: dict | ServeArgs) -> Application:
    """The application (the entry point `serve run`/KubeRay call): with no token in `args`, the one in the
    VLREWARD_API_TOKEN environment variable (a Kubernetes Secret cannot go in serveConfigV2)."""
    args = args if isinstance(args, ServeArgs) else ServeArgs(**args)
    api_token = args.api_token or os.environ.get("VLREWARD_API_TOKEN") or None
    backpressure = BackpressureConfig(status_code=503, retry_after_s=args.retry_after_s)
    handles = {}
    for spec in args.models:
        scaling = ({"autoscaling_config": spec.autoscaling_config} if spec.autoscaling_config
                   else {"num_replicas": spec.num_replicas})
        handles[spec.key] = ModelServer.options(
            name=f"model-{spec.key}",
            ray_actor_options={"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus},
            max_ongoing_requests=spec.max_ongoing_requests,
            max_queued_requests=spec.max_queued_requests,
            backpressure_config=backpressure,
            user_config={"max_batch_frames": max(spec.max_batch_frames, args.max_frames),
                         "batch_wait_timeout_s": spec.batch_wait_timeout_s},
            **scaling,
        ).bind(spec.model, args.model_root, args.goal_cache_size, spec.precision)
    settings = {"default_model": args.models[0].key, "api_token": api_token,
                "max_body_bytes": args.max_body_bytes, "max_frames": args.max_frames,
                "max_pixels_per_frame": args.max_pixels_per_frame}
    return Gateway.options(ray_actor_options={"num_cpus": 0}, backpressure_config=backpressure).bind(handles, settings)


def init_ray(address: str | None = None, **ray_init_kwargs) -> None:
    """Start a new local Ray (or join the cluster at `address`) with settings that suit small machines.

    Without an address this never attaches to another Ray that happens to run on the machine ("local").
    """
    import ray

    # a busy 2-core machine can take longer than Ray's 5 s to start the HTTP proxy
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, **ray_init_kwargs)


def run_local(args: ServeArgs, host: str = "127.0.0.1", port: int = 8000, address: str | None = None) -> str:
    """Run the application on a local (or the given) Ray cluster and return its URL."""
    from ray import serve

    init_ray(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name="vlreward", route_prefix="/")
    return f"http://{host}:{port}"
