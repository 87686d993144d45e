"""Ray Serve deployments: thin wrappers that build a plain object in __init__ and delegate to it."""

from __future__ import annotations

import numpy as np
from ray import serve

from rewards import Goal, load_model
from serve.schemas import EmbedResponse, ModelInfo, ScoreResponse
from serve.service import RewardService


def total_frames(items: list[tuple[np.ndarray, object]]) -> int:
    """Batch cost is frames, not requests: a 500-frame video weighs 500 one-frame steps."""
    return sum(len(frames) for frames, _ in items)


@serve.deployment(max_ongoing_requests=64)
class ModelServer:
    """One reward model on one replica (GPU when the deployment asks for one)."""

    def __init__(self, model_name: str, model_root: str | None, max_batch_frames: int, batch_wait_timeout_s: float,
                 goal_cache_size: int):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.service = RewardService(load_model(model_name, device=device, model_root=model_root), goal_cache_size)
        self._score_batch.set_max_batch_size(max_batch_frames)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def info(self) -> ModelInfo:
        return self.service.info()

    async def embed(self, goal: Goal) -> EmbedResponse:
        return self.service.embed(goal)

    async def score(self, frames: np.ndarray, goal: Goal) -> ScoreResponse:
        """Embed (and so validate) the goal per request, then join the cross-request batch."""
        return await self._score_batch((frames, self.service.embed_goal(goal)))

    @serve.batch(max_batch_size=4096, batch_wait_timeout_s=0.01, batch_size_fn=total_frames)
    async def _score_batch(self, items: list[tuple[np.ndarray, Goal]]) -> list[ScoreResponse]:
        trajectories, goals = zip(*items)
        return self.service.score_many(trajectories, goals)


@serve.deployment(max_ongoing_requests=256)
@serve.ingress()
class Gateway:
    """HTTP ingress: auth, limits, decoding and validation; scoring goes to the ModelServer handles."""

    def __init__(self, model_handles: dict, settings: dict):
        from serve.api import ApiSettings, create_api

        self.api = create_api(model_handles, ApiSettings(**settings))

    def __serve_build_asgi_app__(self):
        return self.api
