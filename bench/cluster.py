"""Does the service scale out and survive failures on a Ray cluster? Prints a timeline per scenario.

A head and `workers` worker nodes run on loopback (`ray.cluster_utils.Cluster`); the application is
deploy/serve_config.yaml applied as `serve run` applies it, with only what one machine needs changed (port, a
single proxy, a smaller max_replicas, second-scale delays). Workers declare logical GPUs, so the model replicas
are placed as on the GPU worker group; torch sees no GPU and scores on CPU. Scenarios, in order:

- autoscale: closed-loop HTTP clients raise ongoing requests; the model deployment goes 1 -> >= 3 replicas over
  several nodes, then back to min_replicas once the load stops.
- replica_failure: under steady load, `ray.kill` one model replica; Serve starts a new one.
- node_failure: under steady load, remove the worker node holding most model replicas.
- rl: `vlreward rl --url handle` joins the cluster as its own driver and scores through the deployment handle
  (no HTTP); after its first PPO iteration the longest-running model replica is killed; training must finish.
Every HTTP answer is compared to the in-process score of the same trajectory; a failed call counts as lost.

    nice -n 10 python -m bench.cluster                       # ~10 min on 2 busy cores
    python -m bench.cluster --scenarios autoscale --clients 12
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from bench.common import run_identity, wait_ready, write_result
from rewards.args import arg, parse_args

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "serve_config.yaml"
SCENARIOS = ("autoscale", "replica_failure", "node_failure", "rl")


@dataclass
class Args:
    """Autoscaling, replica and node failures, and RL training of the vlreward app on a local multi-node cluster."""

    scenarios: list[str] = arg(list(SCENARIOS), "scenarios to run, in this order")
    workers: int = arg(2, "worker nodes beside the head (the head takes no replicas, as in the RayService)")
    worker_cpus: int = arg(6, "logical CPUs per worker node (may exceed the machine's cores)")
    worker_gpus: float = arg(1.0, "logical GPUs per worker node; replicas ask for a share, torch still sees none")
    port: int = arg(8200, "HTTP port of the Serve proxy")
    clients: int = arg(8, "closed-loop HTTP clients while a scenario loads the service")
    trajectories: int = arg(4, "distinct BabyAI episodes (each with its own mission) the clients score")
    max_replicas: int = arg(4, "autoscaling max_replicas (the shipped config allows 8)")
    target_ongoing_requests: float = arg(1.0, "autoscaling target per replica (shipped: 4; 2 cores make less load)")
    upscale_delay_s: float = arg(2.0, "autoscaling upscale delay (shipped: 10 s)")
    downscale_delay_s: float = arg(5.0, "autoscaling downscale delay (shipped: 120 s)")
    look_back_period_s: float = arg(3.0, "autoscaling look-back window (shipped: 10 s)")
    scale_timeout_s: float = arg(150.0, "longest wait for scaling up, down or recovering")
    steady_s: float = arg(15.0, "seconds of load kept on after a failure")
    client_retries: int = arg(5, "RemoteRewardModel retries (jittered backoff from 0.5 s, doubling)")
    sample_every_s: float = arg(1.0, "timeline sampling period")
    rl_steps: int = arg(2000, "env steps of the rl scenario's PPO run (500 per iteration)")
    out: str = arg("runs/bench/cluster.json", "JSON result file")


def cluster_config(args: Args):
    """deploy/serve_config.yaml with the one-machine changes (checked against Ray's schema) and its model spec."""
    from ray.serve.schema import ServeDeploySchema

    from serve.app import ModelSpec

    config = yaml.safe_load(CONFIG.read_text())
    config["proxy_location"] = "HeadOnly"  # proxies on every node would all bind the same loopback port
    config["http_options"] = {"host": "127.0.0.1", "port": args.port}
    (app,) = config["applications"]
    model = app["args"]["models"][0]
    model["autoscaling_config"].update(
        max_replicas=args.max_replicas, target_ongoing_requests=args.target_ongoing_requests,
        upscale_delay_s=args.upscale_delay_s, downscale_delay_s=args.downscale_delay_s,
        look_back_period_s=args.look_back_period_s, metrics_interval_s=min(1.0, args.look_back_period_s))
    return ServeDeploySchema.model_validate(config), ModelSpec(**model)


class Load:
    """`clients` threads, each with its own RemoteRewardModel (the HTTP client and its retries), scoring known
    trajectories in a closed loop. Every answer is checked against the in-process score."""

    def __init__(self, url: str, cases: list[tuple[np.ndarray, str, np.ndarray]], clients: int, retries: int):
        self.url, self.cases, self.clients, self.retries = url, cases, clients, retries
        self.ok = self.wrong = 0
        self.lost: list[str] = []
        self.refused: Counter[int] = Counter()  # non-2xx answers the client saw (it retries 429/5xx)
        self.latencies: list[float] = []
        self._lock, self._stop, self._threads = threading.Lock(), threading.Event(), []

    def __enter__(self) -> Load:
        from serve.client import RemoteRewardModel

        models = [RemoteRewardModel(self.url, retries=self.retries, backoff_s=0.5, timeout_s=60)
                  for _ in range(self.clients)]
        for model in models:
            model.http.event_hooks["response"].append(self._count_refusal)
        self._threads = [threading.Thread(target=self._client, args=(i, m), daemon=True) for i, m in enumerate(models)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, index: int, model) -> None:
        from rewards import VLRewardError

        for n in itertools.count(index, self.clients):
            if self._stop.is_set():
                return
            frames, task, expected = self.cases[n % len(self.cases)]
            start = time.perf_counter()
            try:
                values = model.score(frames, task).values
            except VLRewardError as error:  # after the client's retries: an accepted request that got no answer
                with self._lock:
                    self.lost.append(f"{type(error).__name__}: {str(error)[:160]}")
                continue
            with self._lock:
                self.latencies.append(time.perf_counter() - start)
                if np.allclose(values, expected, atol=1e-4):
                    self.ok += 1
                else:
                    self.wrong += 1

    def _count_refusal(self, response) -> None:
        if not response.is_success:
            with self._lock:
                self.refused[response.status_code] += 1

    def latency_ms(self) -> dict:
        with self._lock:
            p50, p95, top = np.percentile(self.latencies, [50, 95, 100]) * 1000
        return {"latency_p50_ms": round(p50), "latency_p95_ms": round(p95), "latency_max_ms": round(top)}

    def totals(self) -> dict:
        with self._lock:
            return {"ok": self.ok, "wrong": self.wrong, "lost": len(self.lost), "refused": dict(self.refused)}


def running(replicas: list[dict]) -> list[dict]:
    return [r for r in replicas if r["state"] == "RUNNING"]


def settled(replicas: list[dict], at_least: int = 1, nodes: int = 1) -> bool:
    """No replica starting or stopping, and `at_least` running over `nodes` nodes."""
    live = running(replicas)
    return len(live) == len(replicas) and len(live) >= at_least and len({r["node_id"] for r in live}) >= nodes


@dataclass
class Timeline:
    """Replicas per node every `every_s`, from the controller (what `serve status` shows), plus events."""

    client: object
    model: str
    node_names: dict[str, str]
    every_s: float
    start: float
    load: Load | None = None
    rows: list[dict] = field(default_factory=list)

    def replicas(self, deployment: str | None = None) -> list[dict]:
        details = self.client.get_serve_details()
        return [replica for app in details["applications"].values()
                for name, info in app["deployments"].items() if name == (deployment or self.model)
                for replica in info["replicas"]]

    def by_node(self, replicas: list[dict]) -> dict[str, int]:
        counts = Counter(self.node_names.get(r["node_id"], "?") for r in running(replicas))
        return {name: counts.get(name, 0) for name in self.node_names.values()}

    def log(self, event: str = "") -> dict:
        """One row: running model and gateway replicas by node, replicas starting, answers so far, the event."""
        model, gateway = self.replicas(), self.replicas("Gateway")
        states = Counter(r["state"] for r in model)
        row = {"t_s": round(time.monotonic() - self.start, 1), "replicas": states["RUNNING"],
               "by_node": self.by_node(model), "starting": states["STARTING"], "stopping": states["STOPPING"],
               "gateways": self.by_node(gateway), **(self.load.totals() if self.load else {}), "event": event}
        self.rows.append(row)

        def nodes(counts):
            return " ".join(f"{name}:{n}" for name, n in counts.items() if name != "head" or n)

        answers = (f"ok {row['ok']:5d} wrong {row['wrong']} lost {row['lost']} non-2xx {sum(row['refused'].values())}"
                   if self.load else "")
        print(f"{row['t_s']:6.1f}s  model {row['replicas']} ({nodes(row['by_node'])}) +{row['starting']} starting"
              f" -{row['stopping']} stopping"
              f"  gateway ({nodes(row['gateways'])})  {answers}  {event}", flush=True)
        return row

    def wait_for(self, condition: Callable[[list[dict]], bool], timeout_s: float, what: str) -> bool:
        """Log every `every_s` until `condition(model replicas)` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self.replicas()):
                self.log(what)
                return True
            self.log()
            time.sleep(self.every_s)
        self.log(f"TIMEOUT waiting for {what}")
        return False

    def hold(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.log()
            time.sleep(self.every_s)


def autoscale(args: Args, timeline: Timeline, load: Load, min_replicas: int) -> dict:
    first_row = len(timeline.rows)
    timeline.log("load starts")
    with load:
        timeline.load = load
        scaled = timeline.wait_for(lambda rs: settled(rs, at_least=3, nodes=2), args.scale_timeout_s,
                                   ">= 3 replicas running on >= 2 nodes")
        timeline.hold(args.upscale_delay_s + 2)
    timeline.log("load stops")
    back = timeline.wait_for(lambda rs: settled(rs) and len(rs) == min_replicas, args.scale_timeout_s,
                             f"back to min_replicas={min_replicas}")
    rows = timeline.rows[first_row:]
    return {"scaled_up": scaled, "peak_replicas": max(row["replicas"] for row in rows),
            "peak_nodes": max(sum(1 for n in row["by_node"].values() if n) for row in rows), "scaled_down": back,
            **load.totals()}


def replica_failure(args: Args, timeline: Timeline, load: Load) -> dict:
    """Kill the longest-running model replica (the one surely taking traffic) once scaling has settled."""
    import ray

    timeline.log("load starts")
    with load:
        timeline.load = load
        timeline.wait_for(lambda rs: settled(rs, at_least=2), args.scale_timeout_s, "scaling settled, >= 2 replicas")
        before = timeline.replicas()
        victim = min(before, key=lambda r: r["start_time_s"])
        ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
        killed_at = time.monotonic()
        timeline.log(f"ray.kill replica {victim['replica_id']} on {timeline.node_names[victim['node_id']]}")
        known = {r["replica_id"] for r in before}
        recovered = timeline.wait_for(lambda rs: any(r["replica_id"] not in known for r in running(rs)),
                                      args.scale_timeout_s, "a new replica runs")
        recovery_s = time.monotonic() - killed_at
        timeline.hold(args.steady_s)
    timeline.log("load stops")
    return {"replicas_before": len(before), "recovered": recovered, "recovery_s": round(recovery_s, 1),
            **load.totals()}


def node_failure(args: Args, timeline: Timeline, load: Load, cluster, workers: dict) -> dict:
    """Remove (kill, not drain) the worker node that holds the most model replicas."""
    timeline.log("load starts")
    with load:
        timeline.load = load
        timeline.wait_for(lambda rs: settled(rs, at_least=2, nodes=2), args.scale_timeout_s,
                          "scaling settled, replicas on >= 2 nodes")
        before = timeline.replicas()
        node_id, lost_replicas = Counter(r["node_id"] for r in before).most_common(1)[0]
        ok_before = load.totals()["ok"]
        cluster.remove_node(workers[node_id], allow_graceful=False)
        removed_at = time.monotonic()
        timeline.log(f"removed node {timeline.node_names[node_id]} with {lost_replicas} model replicas")
        known = {r["replica_id"] for r in before}
        recovered = timeline.wait_for(
            lambda rs: all(r.get("node_id") != node_id for r in rs) and any(r["replica_id"] not in known for r in running(rs)),
            args.scale_timeout_s, "a new replica runs on a live node, none left on the removed one")
        recovery_s = time.monotonic() - removed_at
        timeline.hold(args.steady_s)
        answered_after = load.totals()["ok"] - ok_before
    timeline.log("load stops")
    return {"removed_replicas": lost_replicas, "recovered": recovered, "recovery_s": round(recovery_s, 1),
            "answered_after_removal": answered_after, **load.totals()}


def rl_training(args: Args, timeline: Timeline, address: str, model: str, out: Path) -> dict:
    """`vlreward rl` as its own driver on the cluster; kill the longest-running replica after its first iteration."""
    import queue
    import subprocess
    import sys

    import ray

    command = [str(Path(sys.executable).with_name("vlreward")), "rl", "--url", "handle", "--model", model,
               "--steps", str(args.rl_steps), "--train-batch-size", "500", "--out", str(out)]
    process = subprocess.Popen(command, env={**os.environ, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    timeline.log("vlreward rl starts")
    iterations, killed_after, tail = 0, None, []
    while process.poll() is None or not lines.empty():
        while not lines.empty():
            line = lines.get().rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith("[") and " it " in line:
                iterations += 1
                timeline.log(f"rl {line}")
        if iterations and killed_after is None:
            victim = min(timeline.replicas(), key=lambda r: r["start_time_s"])
            ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
            killed_after = iterations
            timeline.log(f"ray.kill replica {victim['replica_id']} on {timeline.node_names[victim['node_id']]}")
        timeline.log()
        time.sleep(args.sample_every_s)
    timeline.log(f"vlreward rl exits with {process.returncode}")
    return {"returncode": process.returncode, "iterations": iterations, "killed_after_iteration": killed_after,
            "output_tail": tail if process.returncode else []}


def main(args: Args) -> dict:
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    # Ray reads these when the nodes start; a busy 2-core machine needs more than Ray's defaults
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster
    from ray.serve._private import api as serve_api

    from envs.babyai import rollout
    from rewards import load_model

    identity = run_identity()
    config, spec = cluster_config(args)
    model = load_model(spec.model)
    episodes = [rollout("GoToRedBall" if i % 2 == 0 else "GoToLocal", 100_000 + i, "expert")
                for i in range(args.trajectories)]
    cases = [(e.frames, e.mission, model.score(e.frames, e.mission).values) for e in episodes]
    url = f"http://127.0.0.1:{args.port}"

    start = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = {}
    results: dict[str, dict] = {}
    try:
        for _ in range(args.workers):
            node = cluster.add_node(num_cpus=args.worker_cpus, num_gpus=args.worker_gpus)
            workers[node.node_id] = node
        node_names = {cluster.head_node.node_id: "head",
                      **{node_id: f"w{i + 1}" for i, node_id in enumerate(workers)}}
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        # what `serve run deploy/serve_config.yaml` does: start Serve with the config's proxy options, apply it
        client = serve_api.serve_start(http_options=config.http_options.model_dump(),
                                       proxy_location=config.proxy_location)
        client.deploy_apps(config)
        print(f"{time.monotonic() - start:6.1f}s  {len(node_names)} nodes up, application submitted", flush=True)
        timeline = Timeline(client, f"model-{spec.key}", node_names, args.sample_every_s, start)
        wait_ready(url, timeout_s=args.scale_timeout_s * 2)
        timeline.log(f"ready: {len(cases)} trajectories, {args.clients} clients")
        for scenario in args.scenarios:
            print(f"\n== {scenario}", flush=True)
            timeline.load = None
            if scenario == "rl":
                result = rl_training(args, timeline, cluster.address, spec.model, Path(args.out).with_name("cluster-rl"))
            else:
                load = Load(url, cases, args.clients, args.client_retries)
                if scenario == "autoscale":
                    result = autoscale(args, timeline, load, spec.autoscaling_config["min_replicas"])
                elif scenario == "replica_failure":
                    result = replica_failure(args, timeline, load)
                else:
                    result = node_failure(args, timeline, load, cluster, workers)
                result.update(load.latency_ms(), lost_examples=load.lost[:5])
            results[scenario] = result
            print(f"-> {result}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
    write_result(args.out, args, identity, timeline.rows, results=results)
    return results


if __name__ == "__main__":
    main(parse_args(Args))
