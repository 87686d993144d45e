"""How close is the service to what the hardware allows, and how far ahead of a naive server? Prints a table.

(a) the model in-process at its best batch size (the limit), (b) the service end to end over HTTP with 1, 8
and 32 closed-loop clients, for .npy bodies and mp4 uploads, (c) the naive peer (bench/naive_server.py)
under the same load. All three run side by side and every point is measured once per round, rounds
interleaved, so drifting load on a shared machine hits them alike; a row is the median over rounds, and a ratio
(to the limit, to the peer) the median over rounds of that round's ratio.

The service runs as users run it, `vlreward serve` in its own process group (one local Ray each, one at a time);
`--variants` adds configurations to compare in the same run (the gRPC port, a replica per CPU, one batch at a time,
torch threads, Serve's default threads instead of its RAY_SERVE_THROUGHPUT_OPTIMIZED, the access log, Serve's
Python proxy instead of HAProxy). Where each server's CPU goes at 8 clients (the model replica, the proxy, the rest
of Ray) is a table of its own.

    nice -n 10 python -m bench.throughput                 # ~3 min on 2 CPU cores
    python -m bench.throughput --rounds 5 --seconds 5 --clients 1 8 32 64
    python -m bench.throughput --media npy --variants service "service, python proxy" \
        "before (python proxy, 1 batch at once, access log)"
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import asdict, dataclass

import httpx
import numpy as np
import psutil
import torch

import rewards
import yaml

from bench.common import (TASK, babyai_frames, drive, drive_grpc, markdown_table, mp4_bytes, run_identity, score_body,
                          wait_ready, write_result)
from serve.client import npy_bytes
from serve.app import ModelSpec
from serve.rpc import ScoreRequest
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Frames/s of the model in-process, the service over HTTP and the naive peer, side by side."""

    model: str = arg("babyai-liv", "shipped model name or checkpoint directory")
    trajectory_frames: int = arg(64, "frames per scored trajectory (one request)")
    frame_size: int = arg(64, "rendered frame side in pixels")
    batch_sizes: list[int] = arg([256, 1024, 4096], "in-process batch sizes (frames) to find the best one")
    threads: list[int] = arg([0], "in-process torch thread counts to try; 0 means 1 and all cores (CPU only)")
    clients: list[int] = arg([1, 8, 32], "concurrent closed-loop HTTP clients")
    media: list[str] = arg(["npy", "mp4"], "request bodies: npy (frames) and/or mp4 (video upload)")
    rounds: int = arg(2, "measurement rounds; each measures every point once")
    seconds: float = arg(2.5, "measured seconds per point and round (HTTP points after a 0.5 s warm-up)")
    precision: str = arg("auto", "in-process precision: fp32, bf16 (autocast) or auto (bf16 on CUDA, else fp32)",
                         choices=["auto", "fp32", "bf16"])
    naive: bool = arg(True, "also measure the naive peer server")
    variants: list[str] = arg(["service"], "service configurations to measure side by side (names in VARIANTS)")
    port: int = arg(8310, "port of the first service variant (the next ones count up from it)")
    naive_port: int = arg(8311, "port of the naive peer")
    out: str = arg("runs/bench/throughput.json", "JSON result file")


#: name -> (ServeArgs or ModelSpec keys over the defaults, environment of `vlreward serve`); "service" is what the
#: CLI runs (HAProxy in front, the model replica as ingress with user code on its event loop, two batches at once,
#: no batch wait, no access log); the others are the alternatives measured against it
GRPC = "the HTTP port + 1"  # a variant with this grpc_port is driven over gRPC
PYTHON = {"proxy": "python"}  # Serve's Python proxy actor in front instead of HAProxy (and Serve's default threads)
VARIANTS = {
    "service": ({}, {}),
    "service, grpc": ({"grpc_port": GRPC}, {}),  # the same service's gRPC port (serve/rpc.py), behind HAProxy too
    "service, a replica per CPU": ({"replica_per_cpu": True}, {}),  # a process (and a GIL) per core, 1 batch each
    "service, user code on its own thread": ({}, {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}),  # Serve's default
    "service, access log": ({"access_log": True}, {}),
    "service, 2 torch threads": ({"torch_threads": 2}, {}),  # the replica's model on both cores, as the naive peer
    "service, 1 batch at once, 2 torch threads": ({"concurrent_batches": 1, "torch_threads": 2}, {}),  # the peer's way
    "service, 2 torch threads for a lone request": ({"lone_request_threads": 2}, {}),  # 1 under load
    "service, python proxy": (PYTHON, {}),
    "before (python proxy, 1 batch at once, access log)": ({**PYTHON, "concurrent_batches": 1, "access_log": True}, {}),
}


def in_process_points(args: Args, frames: np.ndarray, device: str, autocast: bool) -> dict:
    """(label -> measure()) for the model alone: score_batch over whole trajectories, one call at a time.

    On a busy CPU one torch thread can beat all cores (threads wait on each other), so both are tried.
    """
    model = rewards.load_model(args.model, device=device)
    goal = model.embed_goal(TASK)
    default_threads = torch.get_num_threads()
    thread_counts = [default_threads] if device != "cpu" else sorted(
        {t for n in args.threads for t in ((1, os.cpu_count()) if n == 0 else (n,))})

    def measure(batch_size: int, threads: int) -> tuple[float, list[float]]:
        torch.set_num_threads(threads)
        trajectories = [frames] * max(1, batch_size // len(frames))
        goals = [goal] * len(trajectories)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            model.score_batch(trajectories, goals)  # warm-up
            calls, start = [], time.perf_counter()
            while (elapsed := time.perf_counter() - start) < args.seconds:
                sent = time.perf_counter()
                model.score_batch(trajectories, goals)
                calls.append(time.perf_counter() - sent)
        torch.set_num_threads(default_threads)
        return len(calls) * len(trajectories) * len(frames) / elapsed, calls

    return {("in-process", "array", f"batch {b}, {t} threads"): (lambda b=b, t=t: measure(b, t))
            for t, b in itertools.product(thread_counts, args.batch_sizes)}


def http_points(args: Args, server: str, url: str, bodies: dict) -> dict:
    """(label -> measure()) for a server over HTTP, or over gRPC where `url` is grpc://: each media at each load."""
    def measure(media: str, clients: int) -> tuple[float, list[float]]:
        if url.startswith("grpc://"):
            request = ScoreRequest(task=TASK, media=bodies[media]).SerializeToString()
            result = drive_grpc(url, request, clients, args.seconds, warmup_s=0.5)
        else:
            body, headers = score_body(media, bodies[media])
            result = drive(url, body, headers, clients, args.seconds, warmup_s=0.5)
        if result.errors:
            print(f"{server} {media} {clients} clients: {result.errors} failed requests", flush=True)
        return result.requests * args.trajectory_frames / result.seconds, result.latencies_s

    return {(server, media, f"{clients} clients"): (lambda m=media, c=clients: measure(m, c))
            for media, clients in itertools.product(bodies, args.clients)}


#: what each process of a server is for, by the start of its name (the rest: Ray's GCS, raylet, controller, agents)
PROCESS_ROLES = {"ray::ServeReplica": "model replica", "haproxy": "proxy", "ray::HAProxyManager": "proxy",
                 "ray::ProxyActor": "proxy"}


#: the load whose CPU is split by process (first media): the issue's main point
CPU_LOAD = "8 clients"


class CpuMeter:
    """Cores each role of a server's processes (the process `pid` and its descendants) used while its `CPU_LOAD`
    point ran, over every round that measured it, and cores per 1,000 frames/s: where a server's CPU goes.
    `own_role`: what the process `pid` itself is (the naive peer is its own model replica; `vlreward serve`'s
    process is Ray's driver)."""

    def __init__(self, pid: int, own_role: str = "Ray, the rest"):
        self.root, self.own_role = psutil.Process(pid), own_role
        self.seconds, self.elapsed, self.frames = collections.Counter(), 0.0, 0.0

    def _role(self, process: psutil.Process) -> str:
        return self.own_role if process.pid == self.root.pid else next(
            (role for prefix, role in PROCESS_ROLES.items() if process.name().startswith(prefix)), "Ray, the rest")

    def _cpu_seconds(self) -> dict[int, tuple[str, float]]:
        seconds = {}
        for process in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                seconds[process.pid] = self._role(process), times.user + times.system
        return seconds

    def around(self, points: dict, server: str, media: str) -> dict:
        """`points` with the server's `CPU_LOAD` point of `media` counted here whenever it runs."""
        key = (server, media, CPU_LOAD)
        if key not in points:
            return points
        measure = points[key]

        def metered() -> tuple[float, list[float]]:
            before, start = self._cpu_seconds(), time.perf_counter()
            rate, times = measure()
            after, elapsed = self._cpu_seconds(), time.perf_counter() - start
            for pid, (role, seconds) in after.items():
                self.seconds[role] += seconds - before.get(pid, (role, 0.0))[1]
            self.elapsed, self.frames = self.elapsed + elapsed, self.frames + rate * elapsed
            return rate, times

        return {**points, key: metered}

    def row(self, server: str) -> dict:
        cores = {role: self.seconds[role] / self.elapsed for role in ("model replica", "proxy", "Ray, the rest")}
        rate, total = self.frames / self.elapsed, sum(cores.values())
        return {"server": server, "load": CPU_LOAD, "frames/s": rate, **{f"cores: {r}": c for r, c in cores.items()},
                "cores: all": total, "cores per 1,000 frames/s": 1000 * total / rate}


@contextlib.contextmanager
def naive_server(args: Args):
    process = subprocess.Popen([sys.executable, "-m", "bench.naive_server", "--model", args.model,
                                "--port", str(args.naive_port)])
    url = f"http://127.0.0.1:{args.naive_port}"
    try:
        for _ in range(240):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            time.sleep(0.5)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def cli_service(model: str, variant: str, port: int):
    """`vlreward serve` with one variant's config and environment, in its own process group, stopped with SIGTERM:
    its URL (grpc:// for a gRPC variant) and pid."""
    keys, env = VARIANTS[variant]
    spec = {"model": model, **{k: v for k, v in keys.items() if k in ModelSpec.model_fields}}
    config = {"models": [spec], **{k: v for k, v in keys.items() if k not in ModelSpec.model_fields}}
    if config.get("grpc_port") == GRPC:
        config["grpc_port"] = port + 1
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump(config, file)
    process = subprocess.Popen([sys.executable, "-m", "vlreward.cli", "serve", "--config", file.name, "--port",
                                str(port)], env={**os.environ, "RAY_AUTH_MODE": "disabled", **env},
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 180)
        yield (f"grpc://127.0.0.1:{port + 1}" if "grpc_port" in config else url), process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        Path(file.name).unlink()


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    autocast = args.precision == "bf16" or (args.precision == "auto" and device == "cuda")
    frames = babyai_frames(args.trajectory_frames, args.frame_size)
    payloads = {"npy": npy_bytes(frames), "mp4": mp4_bytes(frames)}
    bodies = {media: payloads[media] for media in args.media}

    rates, latencies = collections.defaultdict(list), collections.defaultdict(list)
    meters = {}  # per server: where its CPU went at CPU_LOAD
    rounds = collections.defaultdict(list)  # per variant, per round of its window: key -> (frames/s, p50 s)
    with contextlib.ExitStack() as servers:
        shared = in_process_points(args, frames, device, autocast)
        if args.naive:
            naive_url, naive_pid = servers.enter_context(naive_server(args))
            meters["naive peer"] = CpuMeter(naive_pid, own_role="model replica")
            shared = meters["naive peer"].around(shared | http_points(args, "naive peer", naive_url, bodies),
                                                 "naive peer", args.media[0])
        points = dict(shared)
        # one variant's Ray at a time (an idle one takes ~0.1 core); the limit and the naive peer are measured in
        # every variant's window, rounds interleaved, so drifting load on a shared machine hits them alike
        for offset, variant in enumerate(args.variants):
            with cli_service(args.model, variant, args.port + 10 * offset) as (url, pid):
                meters[variant] = CpuMeter(pid)
                own = meters[variant].around(http_points(args, variant, url, bodies), variant, args.media[0])
                points |= own
                for round_index in range(args.rounds):
                    measured = {}
                    for key, measure in (shared | own).items():
                        rate, times = measure()
                        rates[key].append(rate)
                        latencies[key] += times
                        measured[key] = rate, float(np.percentile(times, 50)) if times else np.nan
                        print(f"{variant} window, round {round_index + 1}/{args.rounds}: {' '.join(key)}: "
                              f"{rate:,.0f} frames/s", flush=True)
                    rounds[variant].append(measured)
    cpu = [meter.row(server) for server, meter in meters.items() if meter.elapsed]

    rows = [{"server": server, "media": media, "load": load, "frames/s": float(np.median(rates[key])),
             "min..max": f"{min(rates[key]):,.0f}..{max(rates[key]):,.0f}",
             "p50 ms": float(np.percentile(latencies[key], 50) * 1000) if latencies[key] else np.nan,
             "p99 ms": float(np.percentile(latencies[key], 99) * 1000) if latencies[key] else np.nan}
            for key in points for server, media, load in [key]]
    limit = max(r["frames/s"] for r in rows if r["server"] == "in-process")
    summary = {"limit_frames_per_s": limit, "precision": "bf16" if autocast else "fp32",
               "media_bytes": {media: len(payload) for media, payload in bodies.items()}}

    def paired(variant: str, compare) -> float:
        """The median over the variant's rounds of compare(that round's measurements): a variant against the limit
        and the peer measured in the same round, seconds apart, so the machine's drift between windows cancels."""
        return float(np.median([compare(measured) for measured in rounds[variant]]))

    def round_limit(measured: dict) -> float:
        return max(rate for key, (rate, _) in measured.items() if key[0] == "in-process")

    targets = []  # the serving issue's targets side by side: one row per variant and media
    for variant, media in itertools.product(args.variants, args.media):
        target = {"variant": variant, "media": media}
        for load in [f"{c} clients" for c in args.clients if c >= 8]:
            own, peer = (variant, media, load), ("naive peer", media, load)
            target[f"x limit, {load}"] = summary[f"{variant} / limit, {media}, {load}"] = paired(
                variant, lambda m: m[own][0] / round_limit(m))
            if args.naive:
                target[f"x naive peer, {load}"] = summary[f"{variant} / naive peer, {media}, {load}"] = paired(
                    variant, lambda m: m[own][0] / m[peer][0])
        if 1 in args.clients and args.naive:
            own, peer = (variant, media, "1 clients"), ("naive peer", media, "1 clients")
            target["p50 - naive peer p50 (ms), 1 client"] = summary[
                f"{variant} p50 - naive peer p50 (ms), {media}, 1 client"] = paired(
                variant, lambda m: (m[own][1] - m[peer][1]) * 1000)
        targets.append(target)

    print(f"\n{identity['device']}, {identity['cpu_count']} CPUs, load average at start "
          f"{identity['load_average_at_start'][0]:.1f}, commit {identity['commit']}, {args.trajectory_frames}-frame "
          f"trajectories of {args.frame_size} px, in-process {summary['precision']}, median of {args.rounds} rounds\n")
    print(markdown_table(rows, ["server", "media", "load", "frames/s", "min..max", "p50 ms", "p99 ms"]))
    if any(len(target) > 2 for target in targets):  # none without 8+ clients or the naive peer
        print()
        print(markdown_table(targets))
    if cpu:
        print()
        print(markdown_table(cpu))
    write_result(args.out, args, identity, rows, targets=targets, cpu=cpu, **summary)
    return summary


if __name__ == "__main__":
    main(parse_args(Args))
