"""Where does the time of a scored request go? py-spy samples the model replica and the ingress while closed-loop
clients post 64-frame .npy trajectories; prints each process's top functions by own time and by inclusive time.
`Worker.main_loop` is Ray's task loop waiting in C: time the process spends idle.

Before sampling, a per-stage breakdown (ms per 64-frame .npy request at one client): each stage of the path timed
alone in this process with the service's own code (multipart parse, .npy decode, model call, response encoding,
a Ray hop carrying the frames), next to the end-to-end latency over HTTP of the live service and of the naive peer;
what the stages do not cover is Serve's proxy and the event-loop handoffs ("proxy and the rest").

    nice -n 10 python -m bench.profile           # ~1.5 min; flame graphs (SVG) next to the JSON result
    python -m bench.profile --ingress gateway --seconds 0      # the stage table only, for the Gateway layout
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import (babyai_frames, drive, local_service, markdown_table, ray_processes, run_identity, score_body,
                          write_result)
from bench.throughput import naive_server
from serve.client import npy_bytes
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Sample the replica and the ingress under load with py-spy."""

    model: str = arg("babyai-liv", "the model the replica serves")
    clients: int = arg(8, "concurrent closed-loop clients")
    seconds: int = arg(20, "sampled seconds")
    top: int = arg(15, "functions listed per process")
    ingress: str = arg("model", "ServeArgs.ingress of the profiled service", choices=["gateway", "model"])
    repeats: int = arg(50, "timed repetitions of each stage (the median is reported)")
    port: int = arg(8315, "port of the service")
    naive_port: int = arg(8316, "port of the naive peer (the end-to-end baseline)")
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


def median_ms(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def stage_times(args: Args, body: bytes, headers: dict, frames) -> dict[str, float]:
    """ms per request of each stage, timed alone with the code the service runs."""
    import ray
    from starlette.requests import Request

    import rewards
    from serve.schemas import ScoreResponse
    from serve.service import RewardService
    from serve.wire import load_npy

    async def parse():
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/score", "headers":
                 [(k.lower().encode(), v.encode()) for k, v in {**headers, "content-length": str(len(body))}.items()]}
        form = await Request(scope, receive).form()
        data = await form["frames"].read()
        await form.close()
        return data

    data = asyncio.run(parse())
    service = RewardService(rewards.load_model(args.model))
    response = ScoreResponse.of(service.model, service.score_many([frames], ["go to the red ball"])[0])

    @ray.remote(num_cpus=0)
    class Echo:
        def score(self, frames):  # what a handle call carries: the frames there, a response back
            return response

    echo = Echo.remote()
    ray.get(echo.score.remote(frames))
    return {
        "parse (multipart)": median_ms(lambda: asyncio.run(parse()), args.repeats),
        "decode (.npy)": median_ms(lambda: load_npy(data), args.repeats),
        "hop (Ray actor call with the frames; gateway layout only)": median_ms(
            lambda: ray.get(echo.score.remote(frames)), args.repeats),
        "batch wait (configured)": 0.0,
        "model (batch of one)": median_ms(lambda: service.score_many([frames], ["go to the red ball"]), args.repeats),
        "encode (response JSON)": median_ms(lambda: ScoreResponse.model_validate(response).model_dump_json(
            by_alias=True), args.repeats),
    }


def latency_ms(url: str, body: bytes, headers: dict, seconds: float = 4.0) -> float:
    return drive(url, body, headers, 1, seconds, warmup_s=0.5).percentile_ms(50)


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    frames = babyai_frames(64)
    body, headers = score_body("npy", npy_bytes(frames))
    folder = Path(args.out).parent
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    with local_service(args.port, models=[args.model], ingress=args.ingress) as url:
        stages = stage_times(args, body, headers, frames)
        if args.ingress == "model":
            stages = {k: v for k, v in stages.items() if not k.startswith("hop")}
        with naive_server(args) as (naive_url, _):
            peer = latency_ms(naive_url, body, headers)
        end_to_end = latency_ms(url, body, headers)
        rows = [{"stage": k, "ms": v} for k, v in stages.items()]
        rows.append({"stage": "proxy and the rest (end to end - stages)", "ms": end_to_end - sum(stages.values())})
        rows.append({"stage": "end to end, service p50 (HTTP, 1 client)", "ms": end_to_end})
        rows.append({"stage": "end to end, naive peer p50 (HTTP, 1 client)", "ms": peer})
        result["stages"] = rows
        print(f"\nper-stage ms of one 64-frame .npy request ({args.ingress} ingress)\n\n{markdown_table(rows)}",
              flush=True)
        if not args.seconds:
            write_result(args.out, args, identity, rows, **result)
            return result
        roles = ray_processes()
        sampled = ("replica",) if args.ingress == "model" else ("replica", "ingress")  # model: one process does both
        load = threading.Thread(target=drive, args=(url, body, headers, args.clients, args.seconds + 4))
        load.start()
        recorders = [threading.Thread(target=record, args=(roles[role][0].pid, args.seconds, folder / f"{role}.txt",
                                                            folder / f"profile-{role}.svg"))
                     for role in sampled]
        for thread in recorders:
            thread.start()
        for thread in recorders + [load]:
            thread.join()
    for role in sampled:
        own, total = shares(folder / f"{role}.txt", args.top)
        result[role] = {"own": own, "total": total}
        print(f"\n{role}: share of samples, innermost frame\n\n{markdown_table(own)}")
        print(f"\n{role}: share of samples, anywhere on the stack (this repository's code)\n\n{markdown_table(total)}")
    write_result(args.out, args, identity, result.pop("stages"), **result)
    return result


if __name__ == "__main__":
    main(parse_args(Args))
