"""The REST API (design §5) as a FastAPI app over a dict of model handles."""

from __future__ import annotations

import asyncio
import io
import json
import secrets

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from rewards import InvalidTaskError, InvalidVideoError, UnknownModelError
from rewards.preprocess import check_frames
from rewards.video import decode_image, decode_video
from serve.errors import PayloadTooLargeError, UnauthorizedError, error_response, install_error_handlers
from serve.schemas import BatchScoreResponse, EmbedResponse, ErrorResponse, ModelsResponse, ScoreResponse

ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (401, 404, 413, 415, 422, 503)}


class ApiSettings(BaseModel):
    """Limits and auth of the HTTP front door."""

    default_model: str
    api_token: str | None = None
    max_body_bytes: int = 64 * 2**20
    max_frames: int = 2048
    max_pixels_per_frame: int = 512 * 512


def load_npy(data: bytes) -> np.ndarray:
    """A .npy upload -> array, refusing pickled objects."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidVideoError(f"frames is not a readable .npy file: {error}") from None


def load_npz(data: bytes) -> list[np.ndarray]:
    """A .npz upload of trajectories named 0, 1, 2, ... -> list of arrays in that order."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return [archive[key] for key in sorted(archive.files, key=int)]
    except (ValueError, OSError, EOFError, KeyError, TypeError) as error:
        raise InvalidVideoError(f"trajectories is not a .npz of arrays named 0..N-1: {error}") from None


def create_api(model_handles: dict, settings: ApiSettings) -> FastAPI:
    app = FastAPI(title="vlreward", version="0.1.0", responses=ERROR_RESPONSES,
                  description="Video-language rewards: score rollout videos against a task.")
    install_error_handlers(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        """Refuse an oversized body from its Content-Length, before anything parses it."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            return error_response(413, PayloadTooLargeError.code,
                                  f"body of {length} bytes exceeds the limit of {settings.max_body_bytes}")
        return await call_next(request)

    def require_token(request: Request) -> None:
        if settings.api_token is None:
            return
        supplied = request.headers.get("authorization", "")
        if not secrets.compare_digest(supplied.encode(), f"Bearer {settings.api_token}".encode()):
            raise UnauthorizedError("missing or wrong bearer token")

    def model_handle(name: str | None):
        name = name or settings.default_model
        if name not in model_handles:
            raise UnknownModelError(f"unknown model {name!r}; served models: {', '.join(sorted(model_handles))}")
        return name, model_handles[name]

    def checked(frames: np.ndarray, max_frames: int | None, stride: int) -> np.ndarray:
        check_frames(frames)
        if stride < 1:
            raise InvalidVideoError(f"stride must be >= 1, got {stride}")
        frames = frames[::stride][:max_frames]
        if len(frames) > settings.max_frames:
            raise PayloadTooLargeError(f"{len(frames)} frames exceed the limit of {settings.max_frames}")
        if frames.shape[1] * frames.shape[2] > settings.max_pixels_per_frame:
            raise PayloadTooLargeError(
                f"frames of {frames.shape[1]}x{frames.shape[2]} exceed {settings.max_pixels_per_frame} pixels")
        return frames

    async def read_media(upload: UploadFile, max_frames: int | None = None, stride: int = 1) -> np.ndarray:
        """A .npy array (sniffed by its magic bytes) or a video file -> checked uint8 frames."""
        data = await upload.read()
        if data.startswith(b"\x93NUMPY"):
            return checked(load_npy(data), max_frames, stride)
        return checked(await asyncio.to_thread(decode_video, data, max_frames, stride), None, 1)

    def text_goal(task: str | None) -> str:
        if task is None or not task.strip():
            raise InvalidTaskError("a non-empty `task` is required")
        return task

    async def read_goal(task: str | None, goal_image: UploadFile | None, demo: UploadFile | None):
        """Exactly one goal: task text, a goal image, or a demo video (design §2)."""
        given = [g for g in (task, goal_image, demo) if g is not None]
        if len(given) != 1:
            raise InvalidTaskError("send exactly one goal: `task` (text), `goal_image` (png/jpeg) or `demo` (video/.npy)")
        if goal_image is not None:
            return check_frames(decode_image(await goal_image.read())[None])[0]
        if demo is not None:
            return await read_media(demo)
        return text_goal(task)

    @app.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every model answers", dependencies=[Depends(require_token)])
    async def readyz():
        await asyncio.gather(*(handle.info.remote() for handle in model_handles.values()))
        return {"status": "ready", "models": sorted(model_handles)}

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=[Depends(require_token)])
    async def list_models():
        infos = await asyncio.gather(*(handle.info.remote() for handle in model_handles.values()))
        return ModelsResponse(models=infos)

    @app.post("/v1/score", response_model=ScoreResponse, response_model_by_alias=True,
              dependencies=[Depends(require_token)], summary="Score one trajectory against a task")
    async def score(
        video: UploadFile | None = File(None, description="mp4/webm/avi/gif video"),
        frames: UploadFile | None = File(None, description=".npy uint8 [T,H,W,3]"),
        task: str | None = Form(None, description="task description, e.g. 'go to the red ball'"),
        goal_image: UploadFile | None = File(None, description="goal image (png/jpeg), for image-goal models"),
        demo: UploadFile | None = File(None, description="demonstration video or .npy, for demo-goal models (ORCA)"),
        model: str | None = Form(None),
        max_frames: int | None = Form(None, ge=1),
        stride: int = Form(1, ge=1),
    ):
        _, handle = model_handle(model)
        if (video is None) == (frames is None):
            raise InvalidVideoError("send exactly one of `video` (a video file) or `frames` (a .npy file)")
        trajectory = await read_media(video or frames, max_frames, stride)
        return await handle.score.remote(trajectory, await read_goal(task, goal_image, demo))

    @app.post("/v1/score/batch", response_model=BatchScoreResponse, response_model_by_alias=True,
              dependencies=[Depends(require_token)], summary="Score many trajectories in one request (the RL path)")
    async def score_batch(
        trajectories: UploadFile = File(..., description=".npz of uint8 [T,H,W,3] arrays named 0..N-1"),
        tasks: str = Form(..., description="JSON list of N task strings (or of one, shared by all)"),
        model: str | None = Form(None),
    ):
        name, handle = model_handle(model)
        arrays = [checked(a, None, 1) for a in load_npz(await trajectories.read())]
        try:
            task_list = json.loads(tasks)
        except json.JSONDecodeError:
            raise InvalidTaskError("tasks must be a JSON list of strings") from None
        if not isinstance(task_list, list) or len(task_list) not in (1, len(arrays)) or not arrays:
            raise InvalidTaskError(f"tasks must be a JSON list of 1 or {len(arrays)} strings")
        goals = [text_goal(t if isinstance(t, str) else None) for t in task_list * (len(arrays) // len(task_list))]
        results = await asyncio.gather(*(handle.score.remote(a, g) for a, g in zip(arrays, goals)))
        return BatchScoreResponse(model=name, results=results)

    @app.post("/v1/embed", response_model=EmbedResponse, dependencies=[Depends(require_token)],
              summary="Embed a task with a model (the goal embedding the service caches)")
    async def embed(task: str = Form(...), model: str | None = Form(None)):
        _, handle = model_handle(model)
        return await handle.embed.remote(text_goal(task))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        from importlib.resources import files

        return files("serve").joinpath("static/index.html").read_text()

    return app
