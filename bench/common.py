"""What every bench script shares: run identity, result files, tables, test media, a live service, HTTP load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from vlreward.report import markdown_table  # noqa: F401 (every bench prints its table with it)

TASK = "go to the red ball"


def run_identity() -> dict:
    """The device, the machine and the git commit a result was measured on."""
    import torch

    cuda = torch.cuda.is_available()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "commit": commit + ("-dirty" if dirty else ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(path: str, args, identity: dict, rows: list[dict], **extra) -> None:
    """One JSON file per run: the Args, where it ran, the table rows and any summary numbers."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"args": asdict(args), **identity, "rows": rows, **extra}, indent=2) + "\n")
    print(f"\nresult: {path}")


def babyai_frames(num_frames: int, size: int = 64, first_seed: int = 100_000) -> np.ndarray:
    """Real BabyAI frames uint8 [num_frames, size, size, 3]: random-policy GoToRedBall episodes, end to end."""
    from envs.babyai import rollout

    episodes, total, seed = [], 0, first_seed
    while total < num_frames:
        frames = rollout("GoToRedBall", seed, "random", render_size=size).frames
        episodes.append(frames)
        total, seed = total + len(frames), seed + 1
    return np.concatenate(episodes)[:num_frames]


def mp4_bytes(frames: np.ndarray) -> bytes:
    """The frames as the H.264 mp4 the dataset generator writes."""
    import tempfile

    from envs.generate import write_video

    with tempfile.TemporaryDirectory() as folder:
        return write_video(Path(folder) / "clip.mp4", frames).read_bytes()


def score_body(media: str, payload: bytes, task: str = TASK) -> tuple[bytes, dict]:
    """A ready-made multipart /v1/score body and its headers, built once so load generation costs little CPU."""
    field = {"npy": "frames", "mp4": "video"}[media]
    request = httpx.Request("POST", "http://x/v1/score", files={field: (f"t.{media}", payload)}, data={"task": task})
    return request.read(), {"content-type": request.headers["content-type"]}


@contextlib.contextmanager
def local_service(port: int, **serve_args):
    """The real application (Ray + Serve + replicas) on a fresh local Ray cluster of this process; yields its URL."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from serve.app import ServeArgs, init_ray, run_local, stop_local

    for attempt in range(3):  # on a busy machine the raylet can miss Ray's fixed 30 s start-up wait
        try:
            init_ray("local", num_cpus=os.cpu_count())  # "local": never join another agent's cluster
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        url = run_local(ServeArgs(**serve_args), port=port)
        wait_ready(url)
        yield url
    finally:
        stop_local()


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def ray_processes() -> dict[str, list]:
    """This process's Ray cluster by role (psutil processes): replica, ingress, proxy, controller, other."""
    import psutil

    roles: dict[str, list] = {"driver": [psutil.Process()], "replica": [], "ingress": [], "proxy": [],
                              "controller": [], "other": []}
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            title = " ".join(process.cmdline())
            role = ("replica" if "ServeReplica" in title and ":model-" in title else
                    "ingress" if "ServeReplica" in title and "Gateway" in title else
                    "proxy" if "ProxyActor" in title else
                    "controller" if "ServeController" in title else "other")
            roles[role].append(process)
    return roles


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_s: list[float]

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


async def closed_loop(send, clients: int, seconds: float, warmup_s: float) -> LoadResult:
    """`clients` closed-loop clients each await `send(i)` (True: answered OK) for `seconds` after `warmup_s`."""
    latencies, errors = [], 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def client(i: int):
        nonlocal errors
        while (sent := time.perf_counter()) < stop_at:
            ok = await send(i)
            if sent >= measure_from:
                if ok:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    # requests in flight at `stop_at` finish after it: count the time they took
    return LoadResult(clients, len(latencies), errors, max(time.perf_counter(), stop_at) - measure_from, latencies)


def drive(url: str, body: bytes, headers: dict, clients: int, seconds: float, path: str = "/v1/score",
          warmup_s: float = 1.0) -> LoadResult:
    """`clients` closed-loop clients POST `body` for `seconds` (after `warmup_s` unmeasured); counts 200s."""

    async def run() -> LoadResult:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
            async def send(_client: int) -> bool:
                return (await http.post(path, content=body, headers=headers)).status_code == 200

            return await closed_loop(send, clients, seconds, warmup_s)

    return asyncio.run(run())


def drive_grpc(url: str, request: bytes, clients: int, seconds: float, method: str = "Score",
               application: str = "vlreward", warmup_s: float = 1.0) -> LoadResult:
    """`drive` over gRPC (`grpc://HOST:PORT`): each client calls `method` with the serialized `request` on a channel
    of its own (one connection per client, as `drive`'s); counts OK answers."""
    import grpc

    from serve.rpc import SERVICE

    async def run() -> LoadResult:
        unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        channels = [grpc.aio.insecure_channel(url.removeprefix("grpc://"), options=unlimited) for _ in range(clients)]
        calls = [channel.unary_unary(f"/{SERVICE}/{method}") for channel in channels]  # bytes in, bytes out

        async def send(client: int) -> bool:
            try:
                await calls[client](request, metadata=(("application", application),), timeout=300)
                return True
            except grpc.aio.AioRpcError:
                return False

        try:
            return await closed_loop(send, clients, seconds, warmup_s)
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))

    return asyncio.run(run())
