"""How much memory does the service take? RSS of the model replica (target <= 1.5 GB) and of Ray + Serve + one
replica in all (target <= 3 GB), measured with psutil over this process's local Ray cluster after warm-up.

    nice -n 10 python -m bench.memory           # ~1 min

PSS (proportional set size) splits shared pages between the processes that map them, so the PSS total is what
the cluster really holds; the RSS total counts shared libraries once per process.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from bench.common import (babyai_frames, local_service, markdown_table, mp4_bytes, ray_processes, run_identity,
                          write_result)
from serve.client import npy_bytes
from rewards.args import arg, parse_args

GB = 2**30


@dataclass
class Args:
    """RSS and PSS of each process of the running service, by role."""

    model: str = arg("babyai-liv", "the model the replica serves")
    warm_requests: int = arg(20, "score requests (half .npy, half mp4, 64 frames) before measuring")
    port: int = arg(8313, "port of the service")
    out: str = arg("runs/bench/memory.json", "JSON result file")


def memory(process: psutil.Process) -> tuple[float, float]:
    """(RSS, PSS) in GB; (0, 0) for a process that ended meanwhile."""
    with contextlib.suppress(psutil.Error):
        info = process.memory_full_info()
        return info.rss / GB, info.pss / GB
    return 0.0, 0.0


def process_label(role: str, process: psutil.Process) -> str:
    """Serve's processes by role; Ray's own by name (raylet, gcs_server, ray::IDLE...) or Python script."""
    if role != "other":
        return role
    with contextlib.suppress(psutil.Error):
        scripts = [Path(part).name for part in process.cmdline() if part.endswith(".py")]
        return scripts[0] if process.name().startswith("python") and scripts else process.name()
    return "ended"


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    trajectory = babyai_frames(64)
    bodies = [{"frames": ("t.npy", npy_bytes(trajectory))}, {"video": ("t.mp4", mp4_bytes(trajectory))}]
    with local_service(args.port, models=[args.model]) as url:
        for i in range(args.warm_requests):
            httpx.post(f"{url}/v1/score", files=bodies[i % 2], data={"task": "go to the red ball"},
                       timeout=120).raise_for_status()
        usage = collections.defaultdict(lambda: [0, 0.0, 0.0])
        for role, processes in ray_processes().items():
            for process in processes:
                rss, pss = memory(process)
                row = usage[process_label(role, process)]
                row[0], row[1], row[2] = row[0] + 1, row[1] + rss, row[2] + pss
    rows = [{"process": label, "count": n, "RSS GB": rss, "PSS GB": pss}
            for label, (n, rss, pss) in sorted(usage.items(), key=lambda item: -item[1][1])]
    cluster = [r for r in rows if r["process"] != "driver"]
    summary = {
        "replica_rss_gb": usage["replica"][1],
        "cluster_rss_gb": sum(r["RSS GB"] for r in cluster),
        "cluster_pss_gb": sum(r["PSS GB"] for r in cluster),
        "targets_gb": {"replica_rss": 1.5, "cluster": 3.0},
    }
    rows.append({"process": "Ray + Serve + replica (all but the driver)", "count": sum(r["count"] for r in cluster),
                 "RSS GB": summary["cluster_rss_gb"], "PSS GB": summary["cluster_pss_gb"]})
    print(f"\n{identity['device']}, commit {identity['commit']}, model {args.model}\n")
    print(markdown_table(rows, ["process", "count", "RSS GB", "PSS GB"]))
    print(f"\nreplica RSS {summary['replica_rss_gb']:.2f} GB (target <= 1.5); Ray + Serve + replica "
          f"PSS {summary['cluster_pss_gb']:.2f} GB, RSS sum {summary['cluster_rss_gb']:.2f} GB (target <= 3)")
    write_result(args.out, args, identity, rows, **summary)
    return summary


if __name__ == "__main__":
    main(parse_args(Args))
