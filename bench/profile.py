"""Where does the time of a scored request go? py-spy samples the model replica and the ingress while closed-loop
clients post 64-frame .npy trajectories; prints each process's top functions by own time and by inclusive time.
`Worker.main_loop` is Ray's task loop waiting in C: time the process spends idle.

    nice -n 10 python -m bench.profile           # ~1.5 min; flame graphs (SVG) next to the JSON result
"""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import (babyai_frames, drive, local_service, markdown_table, ray_processes, run_identity, score_body,
                          write_result)
from serve.client import npy_bytes
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Sample the replica and the ingress under load with py-spy."""

    model: str = arg("babyai-liv", "the model the replica serves")
    clients: int = arg(8, "concurrent closed-loop clients")
    seconds: int = arg(20, "sampled seconds")
    top: int = arg(15, "functions listed per process")
    port: int = arg(8315, "port of the service")
    out: str = arg("runs/bench/profile.json", "JSON result file (flame graphs go next to it)")


def record(pid: int, seconds: int, raw: Path, svg: Path) -> None:
    """py-spy's collapsed stacks (raw) and a flame graph of one process, sampled without pausing it."""
    py_spy = Path(sys.executable).parent / "py-spy"
    for path, fmt in ((raw, "raw"), (svg, "flamegraph")):
        subprocess.run([str(py_spy), "record", "--pid", str(pid), "--duration", str(seconds // 2), "--rate", "50",
                        "--nonblocking", "--format", fmt, "--output", str(path)], check=True, capture_output=True)


#: py-spy names files relative to sys.path, so this repository's frames start with its package names
PACKAGES = ("(rewards/", "(serve/", "(rl/", "(envs/", "(vlreward/", "(bench/")


def function_of(frame: str) -> str:
    """py-spy's "name (path/to/file.py:123)" -> "name (to/file.py)": one row per function, not per line."""
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})" if path else name


def shares(raw: Path, top: int) -> tuple[list[dict], list[dict]]:
    """From collapsed stacks: the share of samples where a function is the innermost frame (own time, any code)
    or anywhere on the stack (inclusive time, this repository's functions only)."""
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples += int(count)
        own[function_of(frames[-1])] += int(count)
        for frame in {function_of(f) for f in frames if any(package in f for package in PACKAGES)}:
            total[frame] += int(count)
    as_rows = lambda counter: [{"function": f[:110], "share": n / samples} for f, n in counter.most_common(top)]
    return as_rows(own), as_rows(total)


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    body, headers = score_body("npy", npy_bytes(babyai_frames(64)))
    folder = Path(args.out).parent
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    with local_service(args.port, models=[args.model]) as url:
        roles = ray_processes()
        load = threading.Thread(target=drive, args=(url, body, headers, args.clients, args.seconds + 4))
        load.start()
        recorders = [threading.Thread(target=record, args=(roles[role][0].pid, args.seconds, folder / f"{role}.txt",
                                                            folder / f"profile-{role}.svg"))
                     for role in ("replica", "ingress")]
        for thread in recorders:
            thread.start()
        for thread in recorders + [load]:
            thread.join()
    for role in ("replica", "ingress"):
        own, total = shares(folder / f"{role}.txt", args.top)
        result[role] = {"own": own, "total": total}
        print(f"\n{role}: share of samples, innermost frame\n\n{markdown_table(own)}")
        print(f"\n{role}: share of samples, anywhere on the stack (this repository's code)\n\n{markdown_table(total)}")
    write_result(args.out, args, identity, [], **result)
    return result


if __name__ == "__main__":
    main(parse_args(Args))
