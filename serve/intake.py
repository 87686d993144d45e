"""Uploads on their way in: each model call, trajectory and goal passes through `Edge` once and is checked there.

The routes (serve/api.py) depend on one `Edge` per app; nothing past it checks frames or goals again.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from fastapi import UploadFile
from pydantic import ValidationError

from rewards import Goal, InvalidTaskError, InvalidVideoError, PayloadTooLargeError, UnknownModelError
from rewards.base import check_task_text
from rewards.preprocess import check_frames
from rewards.video import decode_image
from serve.audit import AuditBook
from serve.decoding import IsolatedDecoder
from serve.errors import from_ray
from serve.metrics import GatewayMetrics, timer
from serve.schemas import BatchScoreResponse, EvalLabel
from serve.settings import ApiSettings
from serve.wire import load_npy, load_npz


class Edge:
    """What every route depends on: the settings, the served models (name -> Serve handle of a ModelServer), the
    video decoder and, inside Serve, the metrics. Every upload passes its checks once, here, on its way in."""

    def __init__(self, model_handles: dict, settings: ApiSettings, decoder: IsolatedDecoder,
                 metrics: GatewayMetrics | None = None):
        self.handles, self.settings, self.decoder, self.metrics = model_handles, settings, decoder, metrics
        self.audits = AuditBook(metrics.audit if metrics else None)  # returns paid against reported successes

    def model(self, name: str | None) -> tuple[str, Any]:
        """(name, handle) of the requested model, or of the default one."""
        name = name or self.settings.default_model
        if name not in self.handles:
            raise UnknownModelError(f"unknown model {name!r}; served models: {', '.join(sorted(self.handles))}")
        return name, self.handles[name]

    async def model_infos(self) -> list:
        """Every served model's ModelInfo, in the order served."""
        return list(await asyncio.gather(*(self.ask(handle.info.remote()) for handle in self.handles.values())))

    @staticmethod
    async def ask(call) -> Any:
        """The result of a model handle call (`handle.method.remote(...)`), Ray's errors raised as vlreward's
        (serve/errors.py's RAY_ERRORS: a full queue is 503 overloaded, a missing replica 503 model_not_ready)."""
        try:
            return await call
        except Exception as error:
            translated = from_ray(error)
            if translated is None:
                raise
            raise translated from None

    def frames(self, frames: np.ndarray, max_frames: int | None = None, stride: int = 1) -> np.ndarray:
        """The one check of uploaded frames: uint8 [T,H,W,3], subsampled, within the frame and pixel limits."""
        check_frames(frames)
        frames = frames[::stride][:max_frames]
        if len(frames) > self.settings.max_frames:
            raise PayloadTooLargeError(f"{len(frames)} frames exceed the limit of {self.settings.max_frames}")
        if frames.shape[1] * frames.shape[2] > self.settings.max_pixels_per_frame:
            raise PayloadTooLargeError(
                f"frames of {frames.shape[1]}x{frames.shape[2]} exceed {self.settings.max_pixels_per_frame} pixels")
        return frames

    async def media(self, data: bytes, max_frames: int | None = None, stride: int = 1) -> np.ndarray:
        """A .npy array (sniffed by its magic bytes) or a video file -> checked uint8 frames."""
        with timer(self.metrics.decode if self.metrics else lambda seconds: None):
            if data.startswith(b"\x93NUMPY"):
                return self.frames(await asyncio.to_thread(load_npy, data), max_frames, stride)
            # decode one frame past the limit at most, so an over-long video is refused without decoding all of it
            most = min(max_frames or self.settings.max_frames, self.settings.max_frames + 1)
            return self.frames(await self.decoder.decode(data, most, stride, self.settings.max_pixels_per_frame))

    async def trajectories(self, upload: UploadFile) -> list[np.ndarray]:
        """An .npz of trajectories named 0..N-1 -> checked frames, at least one."""
        return self.checked(await asyncio.to_thread(load_npz, await upload.read()))

    def checked(self, trajectories: list[np.ndarray]) -> list[np.ndarray]:
        """Each trajectory's frames checked, at least one trajectory."""
        if not trajectories:
            raise InvalidVideoError("trajectories holds no arrays")
        return [self.frames(frames) for frames in trajectories]

    async def score_many(self, name: str, handle, trajectories: list[np.ndarray], goals: list[str],
                         successes: list[bool] | None) -> BatchScoreResponse:
        """Checked trajectories scored in one model call; their reported successes feed the live audit."""
        results = await self.ask(handle.score_many.remote(trajectories, goals))
        if successes is not None:
            self.audits.add(name, goals, [result.episode_return for result in results], successes)
        return BatchScoreResponse(model=name, results=results)

    async def goal(self, task: str | None, goal_image: UploadFile | None, demo: UploadFile | None) -> Goal:
        """Exactly one goal: task text, a goal image (decoded off the event loop) or a demo video (design §2)."""
        given = [g for g in (task, goal_image, demo) if g is not None]
        if len(given) != 1:
            raise InvalidTaskError("send exactly one goal: `task` (text), `goal_image` (png/jpeg) or `demo` "
                                   "(video/.npy)")
        if goal_image is not None:
            return self.frames((await asyncio.to_thread(decode_image, await goal_image.read()))[None])[0]
        if demo is not None:
            return await self.media(await demo.read())
        return check_task_text(task)


def task_list(tasks: str, count: int) -> list[str]:
    """A JSON list of `count` task strings, or of one shared by all."""
    try:
        parsed = json.loads(tasks)
    except json.JSONDecodeError:
        raise InvalidTaskError("tasks must be a JSON list of strings") from None
    return task_texts(parsed, count)


def task_texts(tasks, count: int) -> list[str]:
    """`count` checked task strings from a list of `count`, or of one shared by all."""
    if not isinstance(tasks, list) or len(tasks) not in (1, count) or not all(isinstance(t, str) for t in tasks):
        raise InvalidTaskError(f"tasks must be a list of 1 or {count} strings")
    return [check_task_text(t) for t in tasks * (count // len(tasks))]


def success_list(successes: str | None, count: int) -> list[bool] | None:
    """The optional JSON list of `count` booleans that reports each trajectory's success (the live audit)."""
    if successes is None:
        return None
    try:
        parsed = json.loads(successes)
    except json.JSONDecodeError:
        parsed = None
    return success_flags(parsed, count)


def success_flags(successes, count: int) -> list[bool]:
    """A list of `count` booleans, one per trajectory."""
    if not isinstance(successes, list) or len(successes) != count or not all(isinstance(s, bool) for s in successes):
        raise InvalidTaskError(f"successes must be a list of {count} booleans, one per trajectory")
    return successes


def eval_labels(labels: str, arrays: list[np.ndarray]) -> list[dict]:
    """The /v1/eval labels, one per trajectory, checked against it."""
    try:
        parsed = [EvalLabel(**label).model_dump(exclude_none=True) for label in json.loads(labels)]
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidTaskError(f"labels: {problems}") from None
    except (json.JSONDecodeError, TypeError):
        raise InvalidTaskError("labels must be a JSON list of {task, success, ...} objects") from None
    if len(parsed) != len(arrays):
        raise InvalidTaskError(f"{len(arrays)} trajectories but {len(parsed)} labels")
    for label, frames in zip(parsed, arrays):
        check_task_text(label["task"])
        if "progress" in label and len(label["progress"]) != len(frames):
            raise InvalidTaskError(f"progress has {len(label['progress'])} values for {len(frames)} frames")
    return parsed
