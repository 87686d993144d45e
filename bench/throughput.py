"""How close is the service to what the hardware allows, and how far ahead of a naive server? Prints a table.

(a) the model in-process at its best batch size (the limit), (b) the service end to end over HTTP with 1, 8
and 32 closed-loop clients, for .npy bodies and mp4 uploads, (c) the naive peer (bench/naive_server.py)
under the same load; ratios come from this one run.

    nice -n 10 python -m bench.throughput                 # ~2.5 min
    python -m bench.throughput --seconds 20 --clients 1 8 32 64
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import httpx
import numpy as np
import torch

import rewards
from bench.common import (TASK, babyai_frames, drive, local_service, markdown_table, mp4_bytes, run_identity,
                          score_body, write_result)
from serve.client import npy_bytes
from vlreward.args import arg, parse_args


@dataclass
class Args:
    """Frames/s of the model in-process, the service over HTTP and the naive peer, side by side."""

    model: str = arg(rewards.DEFAULT_MODEL, "shipped model name or checkpoint directory")
    trajectory_frames: int = arg(64, "frames per scored trajectory (one request)")
    frame_size: int = arg(64, "rendered frame side in pixels")
    batch_sizes: list[int] = arg([64, 256, 1024, 4096], "in-process batch sizes (frames) to find the best one")
    threads: list[int] = arg([0], "in-process torch thread counts to try; 0 means 1 and all cores (CPU only)")
    clients: list[int] = arg([1, 8, 32], "concurrent closed-loop HTTP clients")
    media: list[str] = arg(["npy", "mp4"], "request bodies: npy (frames) and/or mp4 (video upload)")
    seconds: float = arg(4.0, "measured seconds per point (after a 1 s warm-up)")
    precision: str = arg("auto", "in-process precision: fp32, bf16 (autocast) or auto (bf16 on CUDA, else fp32)",
                         choices=["auto", "fp32", "bf16"])
    naive: bool = arg(True, "also measure the naive peer server")
    port: int = arg(8310, "port of the service")
    naive_port: int = arg(8311, "port of the naive peer")
    out: str = arg("runs/bench/throughput.json", "JSON result file")


def in_process(args: Args, frames: np.ndarray, device: str, autocast: bool) -> list[dict]:
    """The model alone: score_batch over batch_size frames made of whole trajectories, one call at a time.

    On a busy CPU one torch thread can beat all cores (threads wait on each other), so both are tried.
    """
    model = rewards.load_model(args.model, device=device)
    goal = model.embed_goal(TASK)
    default_threads = torch.get_num_threads()
    thread_counts = [default_threads] if device != "cpu" else sorted(
        {t for n in args.threads for t in ((1, default_threads) if n == 0 else (n,))})
    rows = []
    for threads, batch_size in itertools.product(thread_counts, args.batch_sizes):
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
        rows.append({"server": "in-process", "media": "array",
                     "load": f"batch {len(trajectories) * len(frames)}, {threads} threads",
                     "frames/s": len(calls) * len(trajectories) * len(frames) / elapsed,
                     "p50 ms": float(np.median(calls) * 1000), "p99 ms": float(np.percentile(calls, 99) * 1000)})
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    torch.set_num_threads(default_threads)
    return rows


def over_http(args: Args, server: str, url: str, bodies: dict) -> list[dict]:
    rows = []
    for media, (body, headers) in bodies.items():
        for clients in args.clients:
            result = drive(url, body, headers, clients, args.seconds)
            rows.append({"server": server, "media": media, "load": f"{clients} clients",
                         "frames/s": result.requests * args.trajectory_frames / result.seconds,
                         "p50 ms": result.percentile_ms(50), "p99 ms": result.percentile_ms(99),
                         "errors": result.errors})
            print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


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
        yield url
    finally:
        process.terminate()
        process.wait(30)


def frames_per_s(rows: list[dict], server: str, media: str, clients: int) -> float:
    return next((r["frames/s"] for r in rows if (r["server"], r["media"], r["load"]) == (server, media,
                                                                                        f"{clients} clients")), np.nan)


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    autocast = args.precision == "bf16" or (args.precision == "auto" and device == "cuda")
    frames = babyai_frames(args.trajectory_frames, args.frame_size)
    payloads = {"npy": npy_bytes(frames), "mp4": mp4_bytes(frames)}
    bodies = {media: score_body(media, payloads[media]) for media in args.media}

    rows = in_process(args, frames, device, autocast)
    limit = max(r["frames/s"] for r in rows)
    if args.naive:
        with naive_server(args) as url:
            rows += over_http(args, "naive peer", url, bodies)
    with local_service(args.port, models=[args.model]) as url:
        rows += over_http(args, "service", url, bodies)

    summary = {"limit_frames_per_s": limit, "precision": "bf16" if autocast else "fp32",
               "request_bytes": {media: len(body) for media, (body, _) in bodies.items()}}
    for clients in [c for c in args.clients if c >= 8]:
        summary[f"service_over_limit_npy_{clients}_clients"] = frames_per_s(rows, "service", "npy", clients) / limit
    if args.naive:
        for media in args.media:
            summary[f"service_over_naive_{media}_8_clients"] = (frames_per_s(rows, "service", media, 8)
                                                                / frames_per_s(rows, "naive peer", media, 8))
    low_load = next((r for r in rows if r["server"] == "service" and r["load"] == "1 clients"), None)
    if low_load:
        summary["latency_64_frames_1_client_ms"] = {"p50": low_load["p50 ms"], "p99": low_load["p99 ms"]}

    print(f"\n{identity['device']}, {identity['cpu_count']} CPUs, commit {identity['commit']}, "
          f"{args.trajectory_frames}-frame trajectories of {args.frame_size} px, in-process {summary['precision']}\n")
    print(markdown_table(rows, ["server", "media", "load", "frames/s", "p50 ms", "p99 ms", "errors"]))
    print()
    print(markdown_table([{"ratio": k, "value": v} for k, v in summary.items() if k.startswith("service_over")]))
    write_result(args.out, args, identity, rows, **summary)
    return summary


if __name__ == "__main__":
    main(parse_args(Args))
