"""Video decoding for the ingress in a child process: a malformed file can crash the decoder, not the service.

decord aborts or segfaults on some crafted files (e.g. an mp4 whose `stts` box claims 2^31 frames); in the
ingress process that would drop every request in flight. Here only the child dies; the upload that killed it
gets a 422 and a fresh child decodes the next one.

The child never outlives the ingress: it watches its parent and exits once the parent is gone (however the parent
died: a graceful Serve shutdown calls `close`, a SIGKILL cannot), so no decoder and no multiprocessing resource
tracker (which exits when the last process holding its pipe does) is left behind, reparented to init.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from rewards import InvalidVideoError
from rewards.video import decode_video

PARENT_POLL_S = 0.25


def _exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: a daemon thread that ends this child within PARENT_POLL_S of its parent's death."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _warm() -> None:
    """A no-op whose unpickling makes a new child import this module, and with it the decoder (seconds)."""


class IsolatedDecoder:
    """`decode_video` in a pool of spawned processes, restarted when a file crashes one of them."""

    def __init__(self, workers: int = 1, warm: bool = False):
        """With `warm`, start the children now (a server) instead of on the first upload (tests, scripts)."""
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if warm:
            self._executor()

    def _executor(self) -> ProcessPoolExecutor:
        """The live pool, or a new one whose children start loading now rather than on the next upload."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
            for _ in range(self.workers):
                self._pool.submit(_warm)
        return self._pool

    def pids(self) -> list[int]:
        """Process ids of the live decoder children (for tests and benches)."""
        return list((getattr(self._pool, "_processes", None) or {}).keys())

    def close(self) -> None:
        """Stop the children now (a replica shutting down): pending decodes are cancelled, running ones killed."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join(timeout=2)

    async def decode(self, data: bytes, max_frames: int | None, stride: int, max_pixels_per_frame: int) -> np.ndarray:
        """Frames of the video in `data`; a crash is retried once on a fresh process (another upload in the same
        pool may have caused it), and a second crash is this file's: InvalidVideoError."""
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            pool = self._executor()
            try:
                return await loop.run_in_executor(pool, decode_video, data, max_frames, stride, max_pixels_per_frame)
            except BrokenProcessPool:
                if self._pool is pool:
                    self._pool = None
        raise InvalidVideoError("the video crashed the decoder: the file is malformed")
