"""`DeploymentRewardModel`: the RewardModel protocol over a Serve deployment handle, for code inside the cluster.

No HTTP and no npz encoding: frames travel through Ray's object store to the `ModelServer` replica, whose
`@serve.batch` joins the trajectories of one `score_batch` call (and of other callers) into one model pass.
"""

from __future__ import annotations

import concurrent.futures
from typing import Sequence

import numpy as np

from rewards import Goal, GoalEmbedding, Score


class DeploymentRewardModel:
    """Score through `serve.get_deployment_handle("model-<model>", app_name)` of a running vlreward app.

    Example (inside a Ray cluster that runs the app):
        model = DeploymentRewardModel("babyai-liv")
        model.score_batch([frames], ["go to the red ball"])[0].rewards
    """

    def __init__(self, model: str, app_name: str = "vlreward", waiters: int = 16):
        self.model, self.app_name, self.waiters = model, app_name, waiters
        self._connect()

    def _connect(self) -> None:
        from ray import serve

        self.handle = serve.get_deployment_handle(f"model-{self.model}", app_name=self.app_name)
        info = self.handle.info.remote().result()
        self.name, self.version, self.goal_kinds = info.name, info.version, tuple(info.goal_kinds)
        self.segments = info.segments  # see rewards.scores_in_segments
        self._pool = concurrent.futures.ThreadPoolExecutor(self.waiters, thread_name_prefix="vlreward-handle")

    def __getstate__(self) -> dict:
        return {"model": self.model, "app_name": self.app_name, "waiters": self.waiters}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._connect()

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        body = self.handle.embed.remote(goal).result()
        return GoalEmbedding(body.kind, np.asarray(body.vector, np.float32), body.digest)

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self.score_batch([frames], [goal])[0]

    def submit(self, frames: np.ndarray, goal: Goal) -> concurrent.futures.Future:
        """Send one trajectory now and return a `Future[Score]` at once (the RL env runners' path).

        The request is on its way (frames in the object store, queued at the replica's `@serve.batch`) when this
        returns; one of `waiters` threads waits for the answer. A failed call sets the future's exception.
        """
        response = self.handle.score.remote(frames, goal)
        return self._pool.submit(lambda: _to_score(response.result()))

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """One handle call for all: the replica batches them together."""
        return [_to_score(result) for result in self.handle.score_many.remote(list(trajectories), list(goals)).result()]


def _to_score(result) -> Score:
    return Score(np.asarray(result.values, np.float32), np.asarray(result.rewards, np.float32))
