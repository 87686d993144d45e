"""The REST API (design §5) as a FastAPI app over a dict of model handles."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from rewards import InvalidTaskError, InvalidVideoError, PayloadTooLargeError, UnknownModelError
from rewards.preprocess import check_frames
from rewards.video import decode_image
from serve.decoding import IsolatedDecoder
from rewards.errors import UnauthorizedError
from serve.errors import error_response, install_error_handlers
from serve.status import ERROR_STATUS
from serve.metrics import GatewayMetrics, timer
from serve.schemas import (BatchScoreResponse, EmbedResponse, ErrorResponse, EvalLabel, ModelsResponse, ScoreResponse,
                           StepResponse)
from serve.wire import load_npy, load_npz, pack_states, unpack_states

# what stays open when a token is set: liveness, the web page (it asks for the token) and the API docs
PUBLIC_PATHS = frozenset({"/healthz", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in sorted(set(ERROR_STATUS.values()))}


class ApiSettings(BaseModel):
    """Limits and auth of the HTTP front door."""

    default_model: str
    api_token: str | None = None
    max_body_bytes: int = 64 * 2**20
    max_frames: int = 2048
    max_pixels_per_frame: int = 512 * 512


class BodyLimit:
    """ASGI middleware that refuses a body over `max_bytes` with 413 before the app parses it.

    A declared Content-Length is checked before anything is read; a chunked body is counted as it arrives and,
    once over the limit, the app sees the client as gone while the client gets the 413.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self.refuse(send, f"body of {length.decode(errors='replace')[:20]} bytes")
        received, refused = 0, False

        async def counting_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                refused = True
                await self.refuse(send, f"body of more than {received} bytes")
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message):
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, send_unless_refused)

    async def refuse(self, send, what: str) -> None:
        await send_error(send, 413, PayloadTooLargeError.code, f"{what} exceeds the limit of {self.max_bytes}")


class TokenGuard:
    """ASGI middleware: with a token set, every path but PUBLIC_PATHS needs `Authorization: Bearer <token>`.

    It runs before routing and body parsing, so an unauthenticated client cannot make the service read its body.
    """

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and route_path(scope) not in PUBLIC_PATHS:
            supplied = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(supplied, self.expected):
                return await send_error(send, 401, UnauthorizedError.code, "missing or wrong bearer token")
        await self.app(scope, receive, send)


def route_path(scope) -> str:
    """The path inside the app: without the prefix it is mounted under (Serve's route_prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


async def send_error(send, status: int, code: str, message: str) -> None:
    """Answer with vlreward's JSON error body straight from ASGI middleware."""
    response = error_response(status, code, message)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def create_api(model_handles: dict, settings: ApiSettings, metrics: GatewayMetrics | None = None,
               decoder: IsolatedDecoder | None = None) -> FastAPI:
    """The routes over `model_handles` (name -> Serve handle of a ModelServer); `metrics` only inside Serve."""
    app = FastAPI(title="vlreward", version="0.1.0", responses=ERROR_RESPONSES,
                  description="Video-language rewards: score rollout videos against a task.")
    install_error_handlers(app)
    decoder = decoder or IsolatedDecoder()

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_token is not None:  # outside the body limit: strangers learn nothing, not even the limit
        app.add_middleware(TokenGuard, token=settings.api_token)
    if metrics is not None:  # outermost, so the 401s and 413s are counted too
        @app.middleware("http")
        async def count_requests(request: Request, call_next):
            start = time.perf_counter()
            response = await call_next(request)
            route = request.scope.get("route")  # the matched template, so ids in paths cannot explode the tags
            metrics.request(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - start)
            return response

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
        with timer(metrics.decode if metrics else lambda seconds: None):
            if data.startswith(b"\x93NUMPY"):
                return checked(load_npy(data), max_frames, stride)
            # decode one frame past the limit at most, so an over-long video is refused without decoding all of it
            most = min(max_frames or settings.max_frames, settings.max_frames + 1)
            return checked(await decoder.decode(data, most, stride, settings.max_pixels_per_frame), None, 1)

    def text_goal(task: str | None) -> str:
        if task is None or not task.strip():
            raise InvalidTaskError("a non-empty `task` is required")
        return task

    def task_list(tasks: str, count: int) -> list[str]:
        """A JSON list of `count` task strings, or of one shared by all."""
        try:
            parsed = json.loads(tasks)
        except json.JSONDecodeError:
            raise InvalidTaskError("tasks must be a JSON list of strings") from None
        if not isinstance(parsed, list) or len(parsed) not in (1, count):
            raise InvalidTaskError(f"tasks must be a JSON list of 1 or {count} strings")
        return [text_goal(t if isinstance(t, str) else None) for t in parsed * (count // len(parsed))]

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

    @app.get("/readyz", summary="Readiness: every model answers")
    async def readyz():
        await asyncio.gather(*(handle.info.remote() for handle in model_handles.values()))
        return {"status": "ready", "models": sorted(model_handles)}

    @app.get("/v1/models", response_model=ModelsResponse)
    async def list_models():
        infos = await asyncio.gather(*(handle.info.remote() for handle in model_handles.values()))
        return ModelsResponse(models=infos)

    @app.post("/v1/score", response_model=ScoreResponse, response_model_by_alias=True,
              summary="Score one trajectory against a task")
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
              summary="Score many trajectories in one request (the RL path)")
    async def score_batch(
        trajectories: UploadFile = File(..., description=".npz of uint8 [T,H,W,3] arrays named 0..N-1"),
        tasks: str = Form(..., description="JSON list of N task strings (or of one, shared by all)"),
        model: str | None = Form(None),
    ):
        name, handle = model_handle(model)
        arrays = [checked(a, None, 1) for a in load_npz(await trajectories.read())]
        if not arrays:
            raise InvalidVideoError("trajectories holds no arrays")
        goals = task_list(tasks, len(arrays))
        results = await asyncio.gather(*(handle.score.remote(a, g) for a, g in zip(arrays, goals)))
        return BatchScoreResponse(model=name, results=results)

    @app.post("/v1/score/step", response_model=StepResponse,
              summary="Streaming: the reward for one new frame per stream; the client carries the state")
    async def score_step(
        frames: UploadFile = File(..., description=".npy uint8 [B,H,W,3]: the newest frame of each of B streams"),
        task: str | None = Form(None, description="one task shared by every stream"),
        tasks: str | None = Form(None, description="JSON list of B task strings, one per stream"),
        goal_image: UploadFile | None = File(None, description="goal image shared by every stream"),
        demo: UploadFile | None = File(None, description="demonstration shared by every stream (ORCA)"),
        state: str | None = Form(None, description="`state` of the previous response; omit when streams start"),
        model: str | None = Form(None),
    ):
        name, handle = model_handle(model)
        new_frames = await read_media(frames)
        if tasks is not None:
            if any(g is not None for g in (task, goal_image, demo)):
                raise InvalidTaskError("send `tasks` alone, or one shared goal (`task`, `goal_image` or `demo`)")
            goals = task_list(tasks, len(new_frames))
        else:
            goals = [await read_goal(task, goal_image, demo)] * len(new_frames)
        rewards, states = await handle.score_steps.remote(new_frames, goals, unpack_states(state, len(new_frames)))
        return StepResponse(model=name, rewards=rewards, state=pack_states(states))

    @app.post("/v1/eval",
              summary="Reward quality of labelled trajectories: AUROC, VOC, paraphrase and hard-negative checks")
    async def evaluate(
        trajectories: UploadFile = File(..., description=".npz of uint8 [T,H,W,3] arrays named 0..N-1"),
        labels: str = Form(..., description="JSON list of N EvalLabel objects: task, success, and optional "
                                            "kind, env, seed, performed, paraphrases, progress"),
        model: str | None = Form(None),
    ) -> dict:
        _, handle = model_handle(model)
        arrays = [checked(a, None, 1) for a in load_npz(await trajectories.read())]
        try:
            parsed = [EvalLabel(**label).model_dump(exclude_none=True) for label in json.loads(labels)]
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise InvalidTaskError(f"labels: {problems}") from None
        except (json.JSONDecodeError, TypeError):
            raise InvalidTaskError("labels must be a JSON list of {task, success, ...} objects") from None
        if len(parsed) != len(arrays) or not arrays:
            raise InvalidTaskError(f"{len(arrays)} trajectories but {len(parsed)} labels")
        for label, frames in zip(parsed, arrays):
            text_goal(label["task"])
            if "progress" in label and len(label["progress"]) != len(frames):
                raise InvalidTaskError(f"progress has {len(label['progress'])} values for {len(frames)} frames")
        return await handle.evaluate.remote([{**label, "frames": frames} for label, frames in zip(parsed, arrays)])

    @app.post("/v1/embed", response_model=EmbedResponse,
              summary="Embed a task with a model (the goal embedding the service caches)")
    async def embed(task: str = Form(...), model: str | None = Form(None)):
        _, handle = model_handle(model)
        return await handle.embed.remote(text_goal(task))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        from importlib.resources import files

        return files("serve").joinpath("static/index.html").read_text()

    return app
