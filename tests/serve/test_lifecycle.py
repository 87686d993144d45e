"""`vlreward serve` as a user runs it: the README's three models become ready on a 2-CPU Ray, and SIGTERM or
Ctrl-C (SIGINT) stops everything it started, the decoder child and multiprocessing's resource tracker included."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from serve.wire import npy_bytes

ROOT = Path(__file__).resolve().parents[2]
README_MODELS = ["babyai-liv", "babyai-vlc", "babyai-orca"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float) -> float:
    """Seconds until /readyz answers 200; fails with the CLI's output if it exits or the time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            pytest.fail(f"vlreward serve exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not ready after {timeout_s} s")


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return "?"


@pytest.mark.parametrize("how", ["SIGTERM to the process group", "SIGINT to the CLI"])
def test_readme_models_start_on_two_cpus_and_stop_leaves_no_process(how):
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vlreward.cli", "serve", "--models", *README_MODELS, "--port", str(port),
         "--num-cpus", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        # the targets (ready in 60 s, stopped in 10 s) hold on this 2-core machine when idle; when other work already
        # saturates it, both are allowed more: the test is about what is left behind, not the busy machine's speed
        busy = os.getloadavg()[0] > 2 * os.cpu_count()
        ready_s = wait_ready(process, url, timeout_s=180 if busy else 60)
        stop_s = 60 if busy else 10
        models = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
        assert sorted(m["name"] for m in models) == sorted(README_MODELS)
        versions = {m["name"]: m["version"] for m in models}
        frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
        for name in ("babyai-liv", "babyai-vlc"):  # the ingress's own model (no hop) and one behind a handle
            score = httpx.post(f"{url}/v1/score", files={"frames": ("t.npy", npy_bytes(frames))},
                               data={"task": "go to the red ball", "model": name}, timeout=60).json()
            assert score["model"] == name and score["version"] == versions[name] and score["num_frames"] == 5
        started = descendants(process.pid)
        titles = [cmdline(p) for p in started]
        assert any("resource_tracker" in t for t in titles), titles  # the ingress's decoder pool is up ...
        assert any("multiprocessing" in t and "spawn" in t for t in titles), titles  # ... with its child

        sent = time.monotonic()
        if how.startswith("SIGTERM"):
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGINT)
        process.wait(timeout=stop_s)
        _, alive = psutil.wait_procs(started, timeout=max(0.1, stop_s - (time.monotonic() - sent)))
        stopped_s = time.monotonic() - sent
        assert not alive, [f"{p.pid} {cmdline(p)[:120]}" for p in alive]
        assert stopped_s <= stop_s
        print(f"ready in {ready_s:.1f} s; {len(started)} processes stopped in {stopped_s:.1f} s ({how})")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for leftover in [p for p in psutil.process_iter() if f"--port {port}" in cmdline(p)]:
            leftover.kill()



def test_trim_heap_gives_freed_memory_back_after_a_burst_of_buffers():
    """What the ingress and the replicas do once the last request of a burst ends: without it, the heap a burst of
    large bodies freed stays in glibc's arenas (issue 17: 2.7 GB RSS after 24 concurrent 56 MB uploads)."""
    code = """
import sys
from pathlib import Path
from serve.deployments import trim_heap

def anon_mb():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon"))
    return int(line.split()[1]) / 1024

before = anon_mb()
chunks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MB in pieces below glibc's mmap threshold
keep = chunks[-1]  # one live buffer at the top of the heap: the heap cannot simply shrink from the end
del chunks
freed = anon_mb()
assert trim_heap()
print(before, freed, anon_mb())
"""
    before, freed, trimmed = map(float, subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                                       capture_output=True, text=True).stdout.split())
    assert freed - before > 150, (before, freed)  # freeing alone gave (almost) nothing back
    assert trimmed - before < 30, (before, freed, trimmed)
