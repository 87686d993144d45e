"""`DeploymentRewardModel`: the RewardModel protocol over a Serve deployment handle, for code inside the cluster.

No HTTP and no npz encoding: frames travel through Ray's object store to the `ModelServer` replica, whose
`@serve.batch` joins the trajectories of one `score_batch` call (and of other callers) into one model pass.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rewards import Goal, GoalEmbedding, Score


class DeploymentRewardModel:
    """Score through `serve.get_deployment_handle("model-<model>", app_name)` of a running vlreward app.

    Example (inside a Ray cluster that runs the app):
        model = DeploymentRewardModel("babyai-liv")
        model.score_batch([frames], ["go to the red ball"])[0].rewards
    """

    def __init__(self, model: str, app_name: str = "vlreward"):
        self.model, self.app_name = model, app_name
        self._connect()

    def _connect(self) -> None:
        from ray import serve

        self.handle = serve.get_deployment_handle(f"model-{self.model}", app_name=self.app_name)
        info = self.handle.info.remote().result()
        self.name, self.version, self.goal_kinds = info.name, info.version, tuple(info.goal_kinds)

    def __getstate__(self) -> dict:
        return {"model": self.model, "app_name": self.app_name}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._connect()

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        body = self.handle.embed.remote(goal).result()
        return GoalEmbedding(body.kind, np.asarray(body.vector, np.float32), body.digest)

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self.score_batch([frames], [goal])[0]

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """All requests go out before any result is awaited, so the replica batches them together."""
        responses = [self.handle.score.remote(frames, goal) for frames, goal in zip(trajectories, goals)]
        return [Score(np.asarray(r.values, np.float32), np.asarray(r.rewards, np.float32))
                for r in (response.result() for response in responses)]
