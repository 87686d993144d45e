"""`vlreward serve` as a user runs it: the README's three models become ready on a 2-CPU Ray, and SIGTERM or
Ctrl-C (SIGINT) stops everything it started, the decoder child and multiprocessing's resource tracker included,
after answering the requests it had admitted, and exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from serve.grpc_client import GrpcRewardModel
from serve.wire import npy_bytes

ROOT = Path(__file__).resolve().parents[2]
README_MODELS = ["babyai-liv", "babyai-vlc", "babyai-orca"]


def wait_ready(process: subprocess.Popen, url: str, timeout_s: float) -> float:
    """Seconds until /readyz answers 200; fails with the CLI's output if it exits or the time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            pytest.fail(f"vlreward serve exited with {process.returncode}:\n{process.stdout.read()[-3000:]}\n"
                        f"stderr:\n{process.stderr.read()[-3000:]}")
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


def kill_leftovers(process: subprocess.Popen, port: int) -> None:
    """After a failed test: kill the service's process group and anything still serving on `port`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for leftover in [p for p in psutil.process_iter() if f"--port {port}" in cmdline(p)]:
        leftover.kill()


@pytest.mark.parametrize("how", ["SIGTERM to the process group", "SIGINT to the CLI"])
def test_readme_models_start_on_two_cpus_and_stop_leaves_no_process(how, free_port):
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vlreward.cli", "serve", "--models", *README_MODELS, "--port", str(port),
         "--grpc-port", str(grpc_port), "--num-cpus", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
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
            over_grpc = GrpcRewardModel(f"grpc://127.0.0.1:{grpc_port}", name).score(frames, "go to the red ball")
            np.testing.assert_allclose(over_grpc.rewards, score["rewards"], atol=1e-6)
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
        kill_leftovers(process, port)



def test_a_drained_admission_gate_refuses_new_requests_and_waits_for_those_in_flight():
    """The ingress side of that stop, in-process: once drained, a request gets 503 at once (Retry-After,
    `Connection: close`) while the one admitted before finishes, and the drain returns once it has; a request
    still running when the grace is over is counted as cut off."""
    from serve.guards import Admission, AdmissionGate

    async def main():
        release = asyncio.Event()

        async def slow_app(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"scored"})

        admission = Admission()
        transport = httpx.ASGITransport(app=AdmissionGate(slow_app, admission, retry_after_s=2))
        async with httpx.AsyncClient(transport=transport, base_url="http://vlreward") as client:
            admitted = asyncio.create_task(client.post("/v1/score"))
            while not admission.in_flight:
                await asyncio.sleep(0.01)
            drain = asyncio.create_task(admission.drain(grace_s=10, quiet_s=0.1))
            await asyncio.sleep(0)  # the drain closes the gate
            refused = await client.post("/v1/score")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
            assert refused.headers["retry-after"] == "2" and refused.headers["connection"] == "close"
            await asyncio.sleep(0.2)
            assert not drain.done()  # the admitted request is still running
            release.set()
            assert (await admitted).status_code == 200
            assert await drain == {"in_flight": 1, "left": 0, "refused": 1}

            release.clear()
            stuck = Admission()
            transport.app = AdmissionGate(slow_app, stuck)
            running = asyncio.create_task(client.post("/v1/score"))
            while not stuck.in_flight:
                await asyncio.sleep(0.01)
            assert await stuck.drain(grace_s=0.2) == {"in_flight": 1, "left": 1, "refused": 0}
            release.set()
            await running

    asyncio.run(main())


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


@pytest.mark.parametrize("signum, proxy", [(signal.SIGTERM, "python"), (signal.SIGINT, "python"),
                                           (signal.SIGTERM, "haproxy")],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-haproxy"])
def test_a_signal_during_a_burst_answers_every_admitted_request_and_exits_0(signum, proxy, free_port):
    """Issue 26: `docker stop`, systemd and Kubernetes send SIGTERM to the process (Ctrl-C: SIGINT). Ray's native
    handler used to abort it (a stack dump, exit 134). Now every request whose body was sent before the signal is
    answered 200 (or 503 if it reached the ingress after the drain began), never a dropped connection; those sent
    after it get 503 while the service drains (refused at once, `Connection: close`) or no connection at all once
    it is gone; the process exits 0 within 10 s with one line on stderr and leaves no process behind."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_SERVE_ENABLE_HA_PROXY", None)  # --proxy alone picks it (conftest's Serve may have set it)
    process = subprocess.Popen(
        [sys.executable, "-m", "vlreward.cli", "serve", "--port", str(port), "--num-cpus", "2", "--proxy", proxy],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    # 8 x 512 frames: about a second of scoring on 2 idle cores (a few when busy), well inside the 5 s grace, so
    # the drain meets the burst still in flight however fast the default layout scores
    frames = npy_bytes(np.random.default_rng(0).integers(0, 256, (512, 64, 64, 3), dtype=np.uint8))
    burst = 8
    try:
        busy = os.getloadavg()[0] > 2 * os.cpu_count()  # as above: a saturated machine is allowed more time
        wait_ready(process, url, timeout_s=180 if busy else 60)
        assert process.stdout.readline().startswith("vlreward serving")  # serve.run returned: the service is up
        started = descendants(process.pid)
        with httpx.Client(base_url=url, timeout=60) as client:
            def score(sent: list) -> httpx.Response | httpx.TransportError:
                def trace(event, _info):  # when the whole request is on the wire
                    if event == "http11.send_request_body.complete":
                        sent.append(time.monotonic())
                try:
                    return client.post("/v1/score", files={"frames": ("f.npy", frames)},
                                       data={"task": "go to the red ball"}, extensions={"trace": trace})
                except httpx.TransportError as error:
                    return error

            assert score([]).status_code == 200  # warm
            sent_at = [[] for _ in range(burst + 4)]

            def stderr_at_exit() -> tuple[str, float]:
                return process.communicate(timeout=180)[1], time.monotonic()

            with ThreadPoolExecutor(len(sent_at) + 1) as pool:
                answers = [pool.submit(score, sent) for sent in sent_at[:burst]]
                deadline = time.monotonic() + 30
                while not all(sent_at[:burst]) and time.monotonic() < deadline:
                    time.sleep(0.01)
                signalled = time.monotonic()
                process.send_signal(signum)
                exiting = pool.submit(stderr_at_exit)
                for sent in sent_at[burst:]:  # requests after the signal, while the service drains or is gone
                    time.sleep(0.2)
                    answers.append(pool.submit(score, sent))
                answers = [answer.result() for answer in answers]
                stderr, exited = exiting.result()
            stop_s = 60 if busy else 10
            stopped_s = exited - signalled
            _, alive = psutil.wait_procs(started, timeout=max(0.1, stop_s - stopped_s))

        before = [answer for answer, sent in zip(answers, sent_at) if sent and sent[0] < signalled]
        assert len(before) >= burst, "the burst was not on the wire before the signal"
        assert all(isinstance(answer, httpx.Response) for answer in before), f"dropped: {before}"
        for answer in answers:
            if isinstance(answer, httpx.Response):
                assert answer.status_code in (200, 503), answer.text
                if answer.status_code == 503:
                    assert answer.json()["error"]["code"] == "model_not_ready" and "retry-after" in answer.headers
        assert sum(isinstance(a, httpx.Response) and a.status_code == 200 for a in before) >= 1
        assert process.returncode == 0, stderr[-3000:]
        assert "SIGTERM received" not in stderr and "***" not in stderr, stderr[-3000:]
        ours = [line for line in stderr.splitlines() if line.startswith("vlreward serve:")]
        assert len(ours) == 1, stderr[-3000:]
        finished = re.match(rf"vlreward serve: {signal.Signals(signum).name}: (\d+) requests in flight finished, "
                            r"\d+ refused \(503\); stopped in [\d.]+ s$", ours[0])
        assert finished and int(finished[1]) >= 1, ours  # the burst was still being scored: the drain waited for it
        assert stopped_s <= stop_s
        assert not alive, [f"{p.pid} {cmdline(p)[:120]}" for p in alive]
        statuses = [a.status_code if isinstance(a, httpx.Response) else type(a).__name__ for a in answers]
        print(f"{signal.Signals(signum).name}: exit 0 in {stopped_s:.1f} s; answers {statuses}; {ours[0]}")
    finally:
        kill_leftovers(process, port)


def test_haproxy_ingress_serves_and_a_sigterm_leaves_no_haproxy_holding_the_port(free_port):
    """Issue 26: `vlreward serve` puts Serve's HAProxy in front of the replicas (its default, proxy auto), beside the
    test session's own HAProxy service (each picks its own side ports). It answers /readyz and a score; SIGTERM
    exits 0 and leaves no process behind, haproxy included (one used to outlive Ray and keep the port, so the next
    start failed with "Failed to bind to address"), nor HAProxy's files, and a second start on the same port
    answers."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_SERVE_ENABLE_HA_PROXY", None)  # the default alone turns it on
    url = f"http://127.0.0.1:{port}"
    frames = npy_bytes(np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8))
    busy = os.getloadavg()[0] > 2 * os.cpu_count()  # as above: a saturated machine is allowed more time
    for _ in range(2):  # the second start takes the port the first one gave back
        config = None  # HAProxy's config file, one per Ray node: what names our haproxy processes
        process = subprocess.Popen(
            [sys.executable, "-m", "vlreward.cli", "serve", "--models", "babyai-liv", "--port",
             str(port), "--num-cpus", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        try:
            wait_ready(process, url, timeout_s=180 if busy else 60)
            score = httpx.post(f"{url}/v1/score", files={"frames": ("f.npy", frames)},
                               data={"task": "go to the red ball"}, timeout=60)
            assert score.status_code == 200 and score.json()["num_frames"] == 5, score.text
            started = descendants(process.pid)
            haproxy = [p for p in started if p.name() == "haproxy"]
            assert haproxy, [cmdline(p)[:120] for p in started]  # HAProxy, not Serve's Python proxy, took the port
            config = haproxy[0].cmdline()[haproxy[0].cmdline().index("-f") + 1]

            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=60 if busy else 20)[0]
            assert process.returncode == 0, output[-3000:]
            _, alive = psutil.wait_procs(started, timeout=5)
            assert not alive, [f"{p.pid} {cmdline(p)[:120]}" for p in alive]
            ours = [p for p in psutil.process_iter() if config in cmdline(p)]  # e.g. an haproxy reparented to init
            assert not ours, [f"{p.pid} {cmdline(p)[:120]}" for p in ours]
            assert not Path(config).parent.exists()  # nor its node's files (config, admin socket, server state)
            with socket.socket() as probe:  # nothing listens on the port (SO_REUSEADDR: TIME_WAIT does not count)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", port))
        finally:
            kill_leftovers(process, port)
            for leftover in [p for p in psutil.process_iter() if config and config in cmdline(p)]:
                leftover.kill()
