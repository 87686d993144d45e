"""Does the service leak over a long run? Thousands of mixed requests (good .npy, good mp4, bad input); RSS of
the ingress and the replica must stay flat (< 10% growth after warm-up) and file descriptors and temp files
must not pile up. Then a burst of large bodies (24 concurrent 56 MB .npy uploads): the RSS of the ingress and the
replica before it, right after it and after settling must come back near the level before.

    nice -n 10 python -m bench.soak                         # 2,000 requests and the burst, ~3 min
    python -m bench.soak --requests 20000 --clients 8
    python -m bench.soak --requests 0 --burst-requests 8 --ingress model    # only the burst
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench.common import (babyai_frames, local_service, markdown_table, mp4_bytes, ray_processes, run_identity,
                          score_body, write_result)
from serve.client import npy_bytes
from rewards.args import arg, parse_args

MB = 2**20


@dataclass
class Args:
    """Mixed load in rounds; after each round, RSS and open fds of the ingress, replica and proxy."""

    model: str = arg("babyai-liv", "the model the replica serves")
    requests: int = arg(2000, "requests in all")
    rounds: int = arg(10, "measurement rounds (the first one is the warm-up)")
    clients: int = arg(4, "concurrent closed-loop clients")
    bad_fraction: float = arg(0.2, "share of requests with bad input (truncated mp4, float .npy, no task)")
    burst_requests: int = arg(24, "large uploads sent at once after the rounds (0: no burst)")
    burst_mb: int = arg(56, "size of each large upload (224 px frames in a .npy), MB")
    settle_s: float = arg(10.0, "idle seconds after the burst before the last RSS sample")
    ingress: str = arg("gateway", "ServeArgs.ingress: gateway, or model (the model replica is the ingress)",
                       choices=["gateway", "model"])
    port: int = arg(8314, "port of the service")
    out: str = arg("runs/bench/soak.json", "JSON result file")


def request_mix(bad_fraction: float) -> list[tuple[str, bytes, dict]]:
    """20 requests in proportion: good .npy and mp4 and, `bad_fraction` of them, bad input."""
    trajectory = babyai_frames(64)
    video = mp4_bytes(trajectory)
    long = np.concatenate([trajectory] * 4)  # 3 MB: over Starlette's 1 MB in-memory spool, so uploads hit the disk
    good = [("good npy", *score_body("npy", npy_bytes(trajectory))), ("good mp4", *score_body("mp4", video)),
            ("good npy 256 frames", *score_body("npy", npy_bytes(long)))]
    bad = [("truncated mp4", *score_body("mp4", video[: len(video) // 2])),
           ("float npy", *score_body("npy", npy_bytes(trajectory.astype(np.float32)))),
           ("empty task", *score_body("npy", npy_bytes(trajectory), task=""))]
    n_bad = round(20 * bad_fraction)
    return [good[i % 3] for i in range(20 - n_bad)] + [bad[i % 3] for i in range(n_bad)]


def send_round(url: str, mix: list, count: int, clients: int, statuses: collections.Counter) -> None:
    async def run():
        queue = iter(range(count))
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            async def client():
                for i in queue:
                    kind, body, headers = mix[i % len(mix)]
                    response = await http.post("/v1/score", content=body, headers=headers)
                    statuses[(kind, response.status_code)] += 1

            await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(run())


def snapshot(roles: dict, temp_dir: Path) -> dict:
    """RSS (MB) and open fds of each watched process, and the files left in the cluster's private temp dir."""
    sample = {}
    for role in ("ingress", "replica", "proxy"):
        for process in roles[role]:
            with contextlib.suppress(psutil.Error):
                sample[f"{role} RSS MB"] = process.memory_info().rss / MB
                sample[f"{role} fds"] = process.num_fds()
    sample["temp files"] = sum(1 for p in temp_dir.iterdir() if p.name != "ray")
    return sample


def burst(url: str, count: int, megabytes: int) -> collections.Counter:
    """`count` uploads of a `megabytes` MB .npy (224 px frames) at once; their statuses."""
    frames = babyai_frames(max(2, megabytes * MB // (224 * 224 * 3)), 224)
    body, headers = score_body("npy", npy_bytes(frames))
    statuses = collections.Counter()

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=900) as http:
            async def one():
                statuses[(await http.post("/v1/score", content=body, headers=headers)).status_code] += 1

            await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(run())
    return statuses


def memory(roles: dict) -> dict:
    """RSS (MB) of the ingress and the replica, split as the kernel counts it: anonymous (the heap), file-backed
    and shared memory (Ray's object store, which keeps pages it once held until the store reuses them)."""
    sample = {}
    for role in ("ingress", "replica"):
        for process in roles[role][:1]:
            with contextlib.suppress(psutil.Error, OSError):
                status = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines())
                kb = {key: int(status[key].split()[0]) for key in ("VmRSS", "RssAnon", "RssFile", "RssShmem")}
                sample[f"{role} RSS MB"] = kb["VmRSS"] / 1024
                sample[f"{role} anon/file/shm MB"] = "/".join(f"{kb[k] / 1024:.0f}" for k in ("RssAnon", "RssFile",
                                                                                           "RssShmem"))
    return sample


def expected(kind: str, status: int) -> bool:
    """Good input gets 200, bad input a 4xx."""
    return status == 200 if kind.startswith(("good", "burst")) else 400 <= status < 500


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    mix = request_mix(args.bad_fraction)
    # a private TMPDIR for the cluster: whatever its processes leave there is theirs
    temp_dir = Path(tempfile.mkdtemp(prefix="vls"))
    os.environ["TMPDIR"] = str(temp_dir)
    statuses: collections.Counter = collections.Counter()
    rows = []
    burst_rows = []
    with local_service(args.port, models=[args.model], ingress=args.ingress) as url:
        roles = ray_processes()
        if args.ingress == "model":  # the model replica is the ingress
            roles["ingress"] = roles["replica"]
        per_round = args.requests // args.rounds
        for round_index in range(args.rounds if args.requests else 0):
            start = time.perf_counter()
            send_round(url, mix, per_round, args.clients, statuses)
            rows.append({"requests": per_round * (round_index + 1), "req/s": per_round / (time.perf_counter() - start),
                         **snapshot(roles, temp_dir)})
            print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
        if args.burst_requests:
            burst_rows.append({"when": "before the burst", **memory(roles)})
            start = time.perf_counter()
            burst_statuses = burst(url, args.burst_requests, args.burst_mb)
            burst_rows.append({"when": f"after {args.burst_requests} x {args.burst_mb} MB "
                                       f"({time.perf_counter() - start:.0f} s)", **memory(roles)})
            time.sleep(args.settle_s)
            burst_rows.append({"when": f"after {args.settle_s:g} s idle", **memory(roles)})
            statuses.update({("burst", status): n for status, n in burst_statuses.items()})
            print(markdown_table(burst_rows), flush=True)
        replicas_alive = all(p.is_running() for p in roles["replica"] + roles["ingress"])
    if not rows:
        write_result(args.out, args, identity, [], burst=burst_rows, statuses={f"{k} {s}": n for (k, s), n in
                                                                              statuses.items()})
        return {"burst": burst_rows}
    warm, final = rows[0], rows[-1]
    growth = {role: (final[f"{role} RSS MB"] - warm[f"{role} RSS MB"]) / warm[f"{role} RSS MB"]
              for role in ("ingress", "replica", "proxy")}
    summary = {"rss_growth_after_warmup": growth, "fd_growth_after_warmup": {
        role: final[f"{role} fds"] - warm[f"{role} fds"] for role in ("ingress", "replica", "proxy")},
        "temp_file_growth_after_warmup": final["temp files"] - warm["temp files"],
        "temp_dir_entries": sorted(p.name for p in temp_dir.iterdir()), "processes_alive": replicas_alive,
        "statuses": {f"{kind} {status}": n for (kind, status), n in sorted(statuses.items())},
        "unexpected_statuses": sum(n for (kind, status), n in statuses.items() if not expected(kind, status))}
    print(f"\n{identity['device']}, commit {identity['commit']}, {args.requests} requests, {args.clients} clients\n")
    print(markdown_table(rows))
    print("\nRSS growth after the warm-up round: " + ", ".join(f"{r} {g:+.1%}" for r, g in growth.items())
          + f" (target < 10%); fd growth {summary['fd_growth_after_warmup']}; "
          f"temp file growth {summary['temp_file_growth_after_warmup']}; "
          f"answers other than 200 for good and 4xx for bad input: {summary['unexpected_statuses']}")
    print(markdown_table([{"request": k, "count": n} for k, n in summary["statuses"].items()]))
    if burst_rows:
        summary["burst"] = burst_rows
        print("\nRSS around a burst of large bodies\n\n" + markdown_table(burst_rows))
    write_result(args.out, args, identity, rows, **summary)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return summary


if __name__ == "__main__":
    main(parse_args(Args))
