"""`HelperProcessModel`: a service client's calls made from a helper process, so that the sampler's process pays
neither their CPU nor their GIL.

A client (`serve.client.RemoteRewardModel`, `serve.grpc_client.GrpcRewardModel`: `remote = True`) spends about a
millisecond of Python per request building, sending and parsing it, on threads that take the GIL from the thread
stepping the envs. Measured with SB3 PPO on 2 cores, that cost the sampler more than the requests themselves
(`bench.vector_rewards`). Here the sampler's process only writes the frames into a pipe; a helper process
(`python -m rl.offload`, started fresh, never forked from a process that holds Ray's threads) makes the calls with
its own copy of the client and sends back each call's scores or error. A message is a JSON header followed by its
arrays' bytes (no pickle crosses the pipe); the client travels as its class and its state. `rl.submission`'s
`EpisodeSubmitter` puts every remote model behind one, so the RLlib, gymnasium and SB3 adapters all do.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import itertools
import json
import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any, Sequence

import numpy as np

from rewards import Goal, RewardModel, Score, VLRewardError, errors

#: the attributes adapters read from a model (`rl.inputs`, `rewards.scores_in_segments`), copied to the stand-in
_DESCRIPTION = ("name", "version", "goal_kinds", "segments")


def offloads(model: RewardModel) -> bool:
    """Whether `model` is a client of a model computed elsewhere, rebuilt from its state (`remote`)."""
    return bool(getattr(model, "remote", False))


def pack(header: dict, values: Any = None) -> bytes:
    """One message: the JSON of `header` and `values` (arrays, strings, numbers, lists of them), its length first,
    then the arrays' bytes."""
    arrays: list[np.ndarray] = []
    offset = 0

    def plain(value):
        nonlocal offset
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError("the scoring helper carries numeric arrays, not object arrays")
            arrays.append(value)
            offset += value.nbytes
            return {"dtype": value.dtype.str, "shape": list(value.shape), "offset": offset - value.nbytes}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise TypeError(f"the scoring helper carries arrays, strings and numbers, not {type(value).__name__}")

    text = json.dumps({**header, "values": plain(values)}).encode()
    return b"".join([len(text).to_bytes(4, "little"), text, *(np.ascontiguousarray(a).data for a in arrays)])


def unpack(message: bytes) -> tuple[dict, Any]:
    """(header, values) of a `pack`ed message; its arrays are read-only views of it."""
    size = int.from_bytes(message[:4], "little")
    header, start = json.loads(message[4:4 + size]), 4 + size

    def restored(value):
        if isinstance(value, dict):
            dtype, shape = np.dtype(value["dtype"]), value["shape"]
            return np.frombuffer(message, dtype, int(np.prod(shape)), start + value["offset"]).reshape(shape)
        return [restored(item) for item in value] if isinstance(value, list) else value

    return header, restored(header.pop("values"))


def _error(header: dict) -> Exception:
    """The exception a call raised in the helper: the same vlreward error, else a RuntimeError naming it."""
    kind, message = header["error"]
    error_class = getattr(errors, kind, None)
    if isinstance(error_class, type) and issubclass(error_class, VLRewardError):
        return error_class(message)
    return RuntimeError(f"{kind}: {message}")


class HelperProcessModel:
    """`submit(frames, goal)` and `submit_batch(trajectories, goals)` (Futures) of `model`, run in a helper process.

    A call's vlreward error comes back as the same exception (the submitter's retry of an unready model keeps
    working); the helper exiting fails every call in flight and every later one with a `VLRewardError` naming its
    exit code: never a made-up score. `close()` lets the calls in flight finish, then the helper exits.
    """

    def __init__(self, model: RewardModel):
        for attribute in _DESCRIPTION:
            if hasattr(model, attribute):
                setattr(self, attribute, getattr(model, attribute))
        to_helper, self._requests_fd = os.pipe()
        self._results_fd, from_helper = os.pipe()
        self._process = subprocess.Popen([sys.executable, "-m", "rl.offload", str(to_helper), str(from_helper)],
                                         pass_fds=(to_helper, from_helper), stdin=subprocess.DEVNULL)
        os.close(to_helper)
        os.close(from_helper)
        self._requests = Connection(self._requests_fd, readable=False)
        client = type(model)
        self._requests.send_bytes(pack({"client": [client.__module__, client.__qualname__],
                                        "state": model.__getstate__()}))  # JSON: the clients' state is plain
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self._failure: Exception | None = None
        self._reader = threading.Thread(target=self._read, name="vlreward-offload", daemon=True)
        self._reader.start()

    def submit(self, frames: np.ndarray, goal: Goal) -> concurrent.futures.Future:
        """A Future of the Score."""
        return self._call("submit", frames, goal)

    def submit_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> concurrent.futures.Future:
        """A Future of the list of Scores."""
        return self._call("submit_batch", list(trajectories), list(goals))

    def _call(self, method: str, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        call = next(self._ids)
        message = pack({"call": call, "method": method}, args)
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._pending[call] = future
        try:
            self._requests.send_bytes(message)  # one writer: the submitter's dispatcher thread
        except OSError:  # the helper is gone: the reader names its exit code
            self._reader.join(timeout=10)
            raise self._failure or VLRewardError("the scoring helper process is gone") from None
        return future

    def close(self) -> None:
        """No more calls: the helper answers those in flight, then exits."""
        with self._lock:
            if not self._requests.closed:
                self._requests.close()
        self._reader.join(timeout=10)

    def _read(self) -> None:
        """Settle each call's future from the helper's answers, until it exits."""
        results = Connection(self._results_fd, writable=False)
        try:
            while True:
                header, scores = unpack(results.recv_bytes())
                with self._lock:
                    future = self._pending.pop(header["call"])
                if header["error"] is not None:
                    future.set_exception(_error(header))
                elif header["one"]:
                    future.set_result(Score(*(part.copy() for part in scores)))  # writable, not views of the message
                else:
                    future.set_result([Score(*(part.copy() for part in score)) for score in scores])
        except (EOFError, OSError):
            pass
        finally:
            results.close()
            code = self._process.wait()
            with self._lock:
                self._failure = VLRewardError(f"the scoring helper process exited (code {code})")
                pending, self._pending = list(self._pending.values()), {}
            for future in pending:
                future.set_exception(self._failure)


def _client(header: dict, _) -> RewardModel:
    """The client the sampler's process sent: a class marked `remote`, rebuilt from its state."""
    module, name = header["client"]
    client_class = getattr(importlib.import_module(module), name)
    if not getattr(client_class, "remote", False):
        raise TypeError(f"{module}.{name} is not a service client (remote = True)")
    client = client_class.__new__(client_class)
    client.__setstate__(header["state"])
    return client


def _answer(model: RewardModel, requests: Connection, results: Connection) -> None:
    """The helper's loop: make each call with `model` and send back its scores or error as it ends; once the
    sampler closes its end, finish the calls in flight and return."""
    lock = threading.Lock()
    workers = concurrent.futures.ThreadPoolExecutor(getattr(model, "max_in_flight", 8), "vlreward-offload")

    def start(method: str, args: list) -> concurrent.futures.Future:
        if callable(getattr(model, method, None)):  # the HTTP client's own non-blocking calls
            return getattr(model, method)(*args)
        blocking = {"submit": model.score, "submit_batch": model.score_batch}[method]  # e.g. the gRPC client
        return workers.submit(blocking, *args)

    def reply(call: int, method: str, done: concurrent.futures.Future) -> None:
        error, one = done.exception(), method == "submit"
        if error is not None:
            message = pack({"call": call, "one": one, "error": [type(error).__name__, str(error)]})
        else:
            scores = [done.result()] if one else done.result()
            values = [[score.values, score.rewards] for score in scores]
            message = pack({"call": call, "one": one, "error": None}, values[0] if one else values)
        with lock:
            results.send_bytes(message)

    in_flight: list[concurrent.futures.Future] = []
    while True:
        try:
            header, args = unpack(requests.recv_bytes())
        except EOFError:
            break
        try:
            future = start(header["method"], args)
        except Exception as error:
            future = concurrent.futures.Future()
            future.set_exception(error)
        future.add_done_callback(lambda done, h=header: reply(h["call"], h["method"], done))
        in_flight = [*(f for f in in_flight if not f.done()), future]
    concurrent.futures.wait(in_flight)
    workers.shutdown()


def main(requests_fd: int, results_fd: int) -> None:
    requests, results = Connection(requests_fd, writable=False), Connection(results_fd, readable=False)
    model = _client(*unpack(requests.recv_bytes()))
    try:
        _answer(model, requests, results)
    finally:
        if callable(getattr(model, "close", None)):
            model.close()
        results.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
