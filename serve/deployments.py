"""Ray Serve deployments: thin wrappers that build a plain object in __init__ and delegate to it."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Sequence

import numpy as np
import torch
from ray import serve

from rewards import Goal, InvalidTaskError, StepState, VLRewardError, load_model
from serve.metrics import GatewayMetrics, ModelMetrics
from serve.schemas import EmbedResponse, ModelInfo, ScoreResponse
from serve.service import RewardService


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def total_frames(items: list[tuple]) -> int:
    """Batch cost is frames, not requests: a 500-frame video weighs 500 one-frame steps."""
    return sum(len(item[0]) for item in items)


def each_or_error(run: Callable[[list], list], items: list) -> list:
    """run(items) as one batch; if bad input in one request fails it, rerun them one by one so only that one fails."""
    try:
        return run(items)
    except VLRewardError:
        results = []
        for item in items:
            try:
                results.append(run([item])[0])
            except VLRewardError as error:
                results.append(error)
        return results


def raised(result):
    """A batch slot's result, raising it when it is the error its request caused."""
    if isinstance(result, Exception):
        raise result
    return result


@serve.deployment(max_ongoing_requests=64, user_config={"max_batch_frames": 4096, "batch_wait_timeout_s": 0.01})
class ModelServer:
    """One reward model on one replica (GPU when the deployment asks for one)."""

    def __init__(self, model_name: str, model_root: str | None, goal_cache_size: int, precision: str = "fp32"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.autocast = torch.autocast(device, dtype=PRECISIONS[precision], enabled=precision != "fp32")
        model = load_model(model_name, device=device, model_root=model_root)
        self.metrics = ModelMetrics(model.name)
        self.service = RewardService(model, goal_cache_size, on_goal_lookup=self.metrics.goal_lookup)

    def reconfigure(self, config: dict) -> None:
        """Retune cross-request batching (user_config) without restarting the replica."""
        for batched in (self._score_batch, self._step_batch):
            batched.set_max_batch_size(config["max_batch_frames"])
            batched.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])

    async def info(self) -> ModelInfo:
        return self.service.info()

    async def embed(self, goal: Goal) -> EmbedResponse:
        return self.service.embed(goal)

    async def score(self, frames: np.ndarray, goal: Goal) -> ScoreResponse:
        """Embed (and so validate) the goal per request, then join the cross-request batch."""
        return raised(await self._score_batch((frames, self.service.embed_goal(goal))))

    async def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                          states: Sequence[StepState | None]) -> tuple[list[float], list[StepState]]:
        """One new frame per stream; steps of concurrent requests share one model call."""
        rewards, next_states = raised(await self._step_batch((frames, [self.service.embed_goal(g) for g in goals],
                                                              states)))
        return rewards.tolist(), next_states

    async def evaluate(self, rows: list[dict]) -> dict:
        """Reward-quality metrics of labelled trajectories (off the event loop: batches keep flowing)."""
        from rewards.evaluate import evaluate

        if "text" not in self.service.model.goal_kinds:
            raise InvalidTaskError(f"{self.service.model.name} takes {'/'.join(self.service.model.goal_kinds)} goals; "
                                   "evaluation over REST needs a text-goal model (use `vlreward eval` for demo models)")
        return await asyncio.to_thread(evaluate, self.service.model, rows, "all", progress=False)

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.01, batch_size_fn=total_frames)
    async def _score_batch(self, items: list[tuple[np.ndarray, Goal]]) -> list[ScoreResponse]:
        return await asyncio.to_thread(self._timed, items, lambda batch: self.service.score_many(*zip(*batch)))

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.01, batch_size_fn=total_frames)
    async def _step_batch(self, items: list[tuple]) -> list[tuple]:
        return await asyncio.to_thread(self._timed, items, self.service.step_many)

    def _timed(self, items: list, run: Callable[[list], list]) -> list:
        """run(items) under the replica's autocast, off the event loop so the next batch fills meanwhile."""
        start = time.perf_counter()
        with self.autocast:
            results = each_or_error(run, items)
        self.metrics.batch(total_frames(items), time.perf_counter() - start)
        return results


@serve.deployment(max_ongoing_requests=256)
@serve.ingress()
class Gateway:
    """HTTP ingress: auth, limits, decoding and validation; scoring goes to the ModelServer handles."""

    def __init__(self, model_handles: dict, settings: dict):
        from serve.api import ApiSettings, create_api
        from serve.decoding import IsolatedDecoder

        self.api = create_api(model_handles, ApiSettings(**settings), GatewayMetrics(), IsolatedDecoder(warm=True))

    def __serve_build_asgi_app__(self):
        return self.api
