"""ORCA and its frame-level baselines behind the RewardModel protocol: frame features -> cost matrix -> matcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from rewards import matching
from rewards.base import Goal, GoalEmbedding, Score, StepState, StreamingMixin, goal_digest, state_array
from rewards.errors import InvalidTaskError
from rewards.features import FEATURE_KINDS, FrameFeatures
from rewards.preprocess import check_frames, embed_videos

MATCHERS = {
    "orca": lambda cost, config: matching.orca(cost, config.tau),
    "ot": lambda cost, config: matching.ot(cost, config.eps),
    "temporal_ot": lambda cost, config: matching.temporal_ot(cost, config.eps, config.mask_k),
    "dtw": lambda cost, config: matching.dtw(cost),
    "threshold": lambda cost, config: matching.threshold(cost, config.threshold),
}


@dataclass(frozen=True)
class FeaturesConfig:
    """Which frozen feature extractor computes the costs, and where its files sit inside the checkpoint."""

    kind: str = "hf_resnet"
    path: str = "features"


@dataclass(frozen=True)
class ORCAConfig:
    """Everything that decides an ORCA-family reward; saved as config.json."""

    architecture: str = "orca"
    matcher: str = "orca"
    tau: float = 1.0
    eps: float = 0.01
    mask_k: int = 10
    threshold: float = 0.9
    context: int = 3
    features: FeaturesConfig = field(default_factory=FeaturesConfig)

    def __post_init__(self):
        if self.matcher not in MATCHERS:
            raise ValueError(f"unknown matcher {self.matcher!r}; known: {', '.join(MATCHERS)}")
        if self.features.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature extractor {self.features.kind!r}; known: {', '.join(FEATURE_KINDS)}")
        if self.tau <= 0 or self.eps <= 0 or self.mask_k < 0 or self.context < 1:
            raise ValueError(f"need tau > 0, eps > 0, mask_k ≥ 0 and context ≥ 1, got {self}")

    @classmethod
    def from_dict(cls, data: dict) -> "ORCAConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "features" in known:
            known["features"] = FeaturesConfig(**known["features"])
        return cls(**known)


class ORCAReward(StreamingMixin):
    """Scores a video against one demo video by matching their frames' features (design §4.2).

    `config.matcher` picks ORCA or one of its frame-level baselines (ot, temporal_ot, dtw, threshold).
    A goal embedding holds the demo's per-frame features: its vector is [N, D], not [D].
    """

    goal_kinds = ("demo",)

    def __init__(self, name: str, config: ORCAConfig, features: FrameFeatures, version: str):
        self.name = name
        self.config = config
        self.features = features
        self.version = version

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        if isinstance(goal, GoalEmbedding):
            if goal.kind != "demo" or goal.vector.ndim != 2 or len(goal.vector) < 2:
                raise InvalidTaskError(f"ORCA needs a demo embedding [N ≥ 2, D], got a {goal.kind} embedding "
                                       f"of shape {list(goal.vector.shape)}")
            return goal
        if isinstance(goal, str):
            raise InvalidTaskError("ORCA needs a demo video (uint8 [N, H, W, 3]), not a text goal")
        if (not isinstance(goal, np.ndarray) or goal.dtype != np.uint8 or goal.ndim != 4 or goal.shape[-1] != 3
                or min(goal.shape[1:3]) == 0):
            got = f"{goal.dtype} {list(goal.shape)}" if isinstance(goal, np.ndarray) else type(goal).__name__
            raise InvalidTaskError(f"ORCA needs a demo video, uint8 [N, H, W, 3]; got {got}")
        if len(goal) < 2:
            raise InvalidTaskError(f"the demo has {len(goal)} frame(s); ORCA needs at least 2 to match an order against")
        return GoalEmbedding("demo", self.features(goal).float().cpu().numpy(), goal_digest(goal))

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self.score_batch([frames], [goal])[0]

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Score many videos; their frames go through the feature extractor in one pass.

        values = rewards: ORCA's reward for frame t is already progress (the probability, in [0, 1], that frames
        0..t covered the demo in order) and the reference uses it as the per-step reward directly, not as a
        potential to difference; the baselines' per-frame matching scores are used the same way.
        """
        if len(trajectories) != len(goals):
            raise InvalidTaskError(f"{len(trajectories)} videos but {len(goals)} goals")
        demos = [self.embed_goal(goal).vector for goal in goals]
        features = embed_videos(self.features, trajectories)
        scores = []
        for frame_features, demo in zip(features, demos):
            rewards = MATCHERS[self.config.matcher](self._cost(frame_features, demo), self.config).astype(np.float32)
            scores.append(Score(values=rewards, rewards=rewards.copy()))
        return scores

    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState]]:
        """Stream ORCA one new frame per stream [B, H, W, 3]; each reward is what `score` gives the newest frame.

        A frame's cost looks context − 1 frames ahead (clipped at the video's end), so the rows of the newest
        frames change as frames arrive. A stream's state keeps the DP row of the last frame whose context is
        complete ({"log_coverage": [N]}, absent before there is one) and the features of the frames after it
        ({"recent": [k, D]}, k < context); each step recomputes only those rows.
        """
        if self.config.matcher != "orca":
            raise InvalidTaskError(f"only the 'orca' matcher streams; this model uses {self.config.matcher!r}")
        if not len(frames) == len(goals) == len(states):
            raise InvalidTaskError(f"{len(frames)} frames, {len(goals)} goals and {len(states)} states")
        new = self.features(check_frames(frames)).float().cpu().numpy()  # [B, D]
        rewards, next_states = [], []
        for features, goal, state in zip(new, goals, states):
            demo = self.embed_goal(goal).vector
            log_coverage, window = None, features[None]
            if state is not None:
                recent = state_array(state, "recent", (None, demo.shape[1]))[: self.config.context - 1]
                window = np.concatenate([recent, window])
                if "log_coverage" in state:
                    log_coverage = state_array(state, "log_coverage", (len(demo),))
            rows, running = [], log_coverage
            for cost_row in self._cost(window, demo):
                reward, running = matching.orca_step(cost_row, running, self.config.tau)
                rows.append(running)
            if len(window) == self.config.context:  # the oldest frame's context is complete: its row is final
                log_coverage, window = rows[0], window[1:]
            rewards.append(reward)
            next_states.append({"recent": window} if log_coverage is None else
                               {"log_coverage": log_coverage.astype(np.float32), "recent": window})
        return np.array(rewards, np.float32), next_states

    def _cost(self, frame_features: torch.Tensor | np.ndarray, demo: np.ndarray) -> np.ndarray:
        """Learner features [T, D] and demo features [N, D] -> cost [T, N]."""
        if isinstance(frame_features, torch.Tensor):
            frame_features = frame_features.float().cpu().numpy()
        if frame_features.shape[1] != demo.shape[1]:
            raise InvalidTaskError(f"the demo embedding has {demo.shape[1]} features per frame; this model makes "
                                   f"{frame_features.shape[1]}")
        return matching.cost_matrix(frame_features, demo, self.config.context)
