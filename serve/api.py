"""The REST API (design §5): named routes on one APIRouter, and `create_api` that serves them over model handles.

A map of the edge, in the order a request meets it:
- serve/guards.py: `TokenGuard` (401), then `BodyGuard` (413 too large, 408 too slow, 503 too many slow bodies).
- serve/intake.py's `Edge`: what every route depends on (`EdgeDep`): the settings, the served models' handles, the
  video decoder. Frames and goals are validated once there, on their way in (`Edge.frames`, `.media`, `.goal`).
- The routes, one module-level function each: `healthz`, `readyz`, `list_models`, `score` (multipart or a raw
  .npy body), `score_batch`, `score_step`, `evaluate`, `embed`, `index` (the web page).
- serve/errors.py: every error leaves as `{"error": {"code", "message"}}` at serve/status.py's status.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from rewards import InvalidTaskError, InvalidVideoError, ModelNotReadyError
from serve.decoding import IsolatedDecoder
from serve.errors import install_error_handlers
from serve.guards import BodyGuard, TokenGuard
from serve.intake import Edge, eval_labels, success_list, task_list
from serve.metrics import CountRequests, GatewayMetrics
from serve.schemas import (AuditResponse, BatchScoreResponse, EmbedResponse, ErrorResponse, ModelsResponse,
                           ScoreResponse, StepResponse)
from serve.settings import ApiSettings
from serve.status import ERROR_STATUS, error_headers
from serve.wire import load_npy, pack_states, unpack_states

ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in sorted(set(ERROR_STATUS.values()))}
NPY_TYPE = "application/x-npy"


def current_edge(request: Request) -> Edge:
    return request.app.state.edge


EdgeDep = Annotated[Edge, Depends(current_edge)]
router = APIRouter(responses=ERROR_RESPONSES)  # every route documents the error statuses it can answer


@router.get("/healthz", summary="Liveness")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: every model answers within `ready_timeout_s`",
            responses={503: {"description": "models that are not ready, named in `not_ready`"}})
async def readyz(edge: EdgeDep):
    async def answers(handle) -> bool:
        try:  # on timeout wait_for cancels the call
            await asyncio.wait_for(_awaited(handle.info.remote()), edge.settings.ready_timeout_s)
            return True
        except Exception:  # no replica yet (it cannot be placed, or is still loading), or it failed
            return False

    ready = dict(zip(edge.handles, await asyncio.gather(*(answers(h) for h in edge.handles.values()))))
    not_ready = sorted(name for name, ok in ready.items() if not ok)
    if not_ready:
        error = ModelNotReadyError(f"not ready within {edge.settings.ready_timeout_s:g} s: {', '.join(not_ready)}")
        return JSONResponse({"error": {"code": error.code, "message": str(error)}, "not_ready": not_ready,
                             "models": sorted(ready)}, status_code=503,
                            headers=error_headers(503, edge.settings.retry_after_s))
    return {"status": "ready", "models": sorted(edge.handles)}


async def _awaited(response):
    return await response


@router.get("/v1/models", response_model=ModelsResponse)
async def list_models(edge: EdgeDep):
    return ModelsResponse(models=await edge.model_infos())


class QueryOptions:
    """Options of /v1/score in the query string: with a raw .npy body, the only place for them."""

    def __init__(self, task: str | None = Query(None, description="task (with a raw body, or instead of the form's)"),
                 model: str | None = Query(None), max_frames: int | None = Query(None, ge=1),
                 stride: int | None = Query(None, ge=1)):
        self.values = {"task": task, "model": model, "max_frames": max_frames, "stride": stride}

    def merged(self, **form) -> dict:
        """The form's options with the query's, each given in one place at most."""
        both = sorted(k for k, v in form.items() if v is not None and self.values[k] is not None)
        if both:
            raise InvalidTaskError(f"{', '.join(both)} given both in the query string and in the form")
        return {k: form[k] if form[k] is not None else self.values[k] for k in self.values}


NPY_BODY = {"requestBody": {"content": {NPY_TYPE: {"schema": {"type": "string", "format": "binary",
                                                              "description": ".npy uint8 [T,H,W,3]; options "
                                                                             "(task, model, max_frames, stride) "
                                                                             "in the query string"}}}}}


@router.post("/v1/score", response_model=ScoreResponse, response_model_by_alias=True, openapi_extra=NPY_BODY,
             summary="Score one trajectory against a task",
             description="Multipart (a `video` or `frames` file and a goal), or a raw body of Content-Type "
                         f"`{NPY_TYPE}` (the frames as .npy) with the options in the query string, e.g. "
                         "`/v1/score?task=go+to+the+red+ball&stride=2`.")
async def score(
    request: Request,
    edge: EdgeDep,
    query: Annotated[QueryOptions, Depends()],
    video: UploadFile | None = File(None, description="mp4/webm/avi/gif video"),
    frames: UploadFile | None = File(None, description=".npy uint8 [T,H,W,3]"),
    task: str | None = Form(None, description="task description, e.g. 'go to the red ball'"),
    goal_image: UploadFile | None = File(None, description="goal image (png/jpeg), for image-goal models"),
    demo: UploadFile | None = File(None, description="demonstration video or .npy, for demo-goal models (ORCA)"),
    model: str | None = Form(None),
    max_frames: int | None = Form(None, ge=1),
    stride: int | None = Form(None, ge=1),
):
    options = query.merged(task=task, model=model, max_frames=max_frames, stride=stride)
    _, handle = edge.model(options["model"])
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == NPY_TYPE:
        trajectory = edge.frames(await asyncio.to_thread(load_npy, await request.body()), options["max_frames"],
                                 options["stride"] or 1)
    else:
        if (video is None) == (frames is None):
            raise InvalidVideoError("send exactly one of `video` (a video file) or `frames` (a .npy file), or a raw "
                                    f"body of Content-Type {NPY_TYPE}")
        trajectory = await edge.media(await (video or frames).read(), options["max_frames"], options["stride"] or 1)
    goal = await edge.goal(options["task"], goal_image, demo)
    return await edge.ask(handle.score.remote(trajectory, goal))


@router.post("/v1/score/batch", response_model=BatchScoreResponse, response_model_by_alias=True,
             summary="Score many trajectories in one request (the RL path)")
async def score_batch(
    edge: EdgeDep,
    trajectories: UploadFile = File(..., description=".npz of uint8 [T,H,W,3] arrays named 0..N-1"),
    tasks: str = Form(..., description="JSON list of N task strings (or of one, shared by all)"),
    model: str | None = Form(None),
    successes: str | None = Form(None, description="optional JSON list of N booleans, each trajectory's success: "
                                 "feeds the live reward audit (GET /v1/audit)"),
):
    name, handle = edge.model(model)
    arrays = await edge.trajectories(trajectories)
    goals = task_list(tasks, len(arrays))
    return await edge.score_many(name, handle, arrays, goals, success_list(successes, len(arrays)))


@router.get("/v1/audit", response_model=AuditResponse,
            summary="The live reward audit: per model and task, returns paid against the successes clients reported")
async def audit(edge: EdgeDep):
    return AuditResponse(audits=edge.audits.snapshot())


@router.post("/v1/score/step", response_model=StepResponse,
             summary="Streaming: the reward for one new frame per stream; the client carries the state")
async def score_step(
    edge: EdgeDep,
    frames: UploadFile = File(..., description=".npy uint8 [B,H,W,3]: the newest frame of each of B streams"),
    task: str | None = Form(None, description="one task shared by every stream"),
    tasks: str | None = Form(None, description="JSON list of B task strings, one per stream"),
    goal_image: UploadFile | None = File(None, description="goal image shared by every stream"),
    demo: UploadFile | None = File(None, description="demonstration shared by every stream (ORCA)"),
    state: str | None = Form(None, description="`state` of the previous response; omit when streams start"),
    model: str | None = Form(None),
):
    name, handle = edge.model(model)
    new_frames = await edge.media(await frames.read())
    if tasks is not None:
        if any(g is not None for g in (task, goal_image, demo)):
            raise InvalidTaskError("send `tasks` alone, or one shared goal (`task`, `goal_image` or `demo`)")
        goals = task_list(tasks, len(new_frames))
    else:
        goals = [await edge.goal(task, goal_image, demo)] * len(new_frames)
    states = unpack_states(state, len(new_frames))
    rewards, states = await edge.ask(handle.score_steps.remote(new_frames, goals, states))
    return StepResponse(model=name, rewards=rewards, state=pack_states(states))


@router.post("/v1/eval",
             summary="Reward quality of labelled trajectories: AUROC, VOC, paraphrase and hard-negative checks")
async def evaluate(
    edge: EdgeDep,
    trajectories: UploadFile = File(..., description=".npz of uint8 [T,H,W,3] arrays named 0..N-1"),
    labels: str = Form(..., description="JSON list of N EvalLabel objects: task, success, and optional "
                                        "kind, env, seed, performed, paraphrases, progress"),
    model: str | None = Form(None),
) -> dict:
    _, handle = edge.model(model)
    arrays = await edge.trajectories(trajectories)
    rows = [{**label, "frames": frames} for label, frames in zip(eval_labels(labels, arrays), arrays)]
    return await edge.ask(handle.evaluate.remote(rows))


@router.post("/v1/embed", response_model=EmbedResponse,
             summary="Embed a task with a model (the goal embedding the service caches)")
async def embed(edge: EdgeDep, task: str = Form(...), model: str | None = Form(None)):
    _, handle = edge.model(model)
    return await edge.ask(handle.embed.remote(await edge.goal(task, None, None)))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index():
    return files("serve").joinpath("static/index.html").read_text()


def create_api(model_handles: dict, settings: ApiSettings, metrics: GatewayMetrics | None = None,
               decoder: IsolatedDecoder | None = None) -> FastAPI:
    """The routes over `model_handles` (name -> Serve handle of a ModelServer); `metrics` only inside Serve."""
    app = FastAPI(title="vlreward", version="0.1.0", responses=ERROR_RESPONSES, routes=list(router.routes),
                  description="Video-language rewards: score rollout videos against a task.")
    app.state.edge = Edge(model_handles, settings, decoder or IsolatedDecoder(), metrics)
    install_error_handlers(app, settings.retry_after_s)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_read_timeout_s,
                       max_slow_bodies=settings.max_concurrent_bodies, retry_after_s=settings.retry_after_s)
    if settings.api_token is not None:  # outside the body guard: strangers learn nothing, not even the limit
        app.add_middleware(TokenGuard, token=settings.api_token)
    if metrics is not None:  # outermost, so the 401s, 408s and 413s are counted too
        app.add_middleware(CountRequests, metrics=metrics)
    return app
