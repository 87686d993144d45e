"""RewardService: one RewardModel plus a goal-embedding cache, usable and testable without Ray."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

from rewards import (Goal, GoalEmbedding, InvalidStateError, InvalidTaskError, RewardModel, Score, StepState,
                     VLRewardError, goal_digest, goal_kind)
from rewards.base import StreamingRewardModel, scores_in_segments
from serve.schemas import EmbedResponse, ModelInfo

StepItem = tuple[np.ndarray, Sequence[Goal], Sequence[StepState | None]]  # frames [B, H, W, 3], B goals, B states
PROBE_GOALS = {"text": "probe", "image": np.zeros((64, 64, 3), np.uint8), "demo": np.zeros((2, 64, 64, 3), np.uint8)}


def streams(model: RewardModel) -> bool:
    """Whether `model` really scores step by step: it has `score_steps` and one step on blank frames succeeds (an
    ORCA-family model with a non-streaming matcher has the method but refuses every call)."""
    if not isinstance(model, StreamingRewardModel):
        return False
    try:
        model.score_steps(np.zeros((1, 64, 64, 3), np.uint8), [PROBE_GOALS[model.goal_kinds[0]]], [None])
    except VLRewardError:
        return False
    return True


class RewardService:
    """Scores trajectories with one model; goals are embedded once and kept in an LRU cache."""

    def __init__(self, model: RewardModel, goal_cache_size: int = 1024,
                 on_goal_lookup: Callable[[bool], None] = lambda hit: None):
        self.model = model
        self.goal_cache_size = goal_cache_size
        self.on_goal_lookup = on_goal_lookup  # called with True on a cache hit (metrics)
        self._goal_cache: OrderedDict[str, GoalEmbedding] = OrderedDict()
        self.cache_hits = self.cache_misses = 0
        self.streams = streams(model)

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.model.name, kind=type(self.model).__name__, goal_kinds=list(self.model.goal_kinds),
                         version=self.model.version, streams=self.streams, segments=scores_in_segments(self.model))

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        """The model's embedding of `goal`, from the cache when this goal was seen before."""
        if isinstance(goal, GoalEmbedding):
            return goal
        kind = goal_kind(goal)
        if kind not in self.model.goal_kinds:
            raise InvalidTaskError(f"model {self.model.name} takes {' or '.join(self.model.goal_kinds)} goals, not {kind}")
        key = goal_digest(goal)
        hit = key in self._goal_cache
        self.on_goal_lookup(hit)
        if hit:
            self.cache_hits += 1
            self._goal_cache.move_to_end(key)
            return self._goal_cache[key]
        self.cache_misses += 1
        embedding = self.model.embed_goal(goal)
        self._goal_cache[key] = embedding
        if len(self._goal_cache) > self.goal_cache_size:
            self._goal_cache.popitem(last=False)
        return embedding

    def embed(self, goal: Goal) -> EmbedResponse:
        embedding = self.embed_goal(goal)
        return EmbedResponse(model=self.model.name, kind=embedding.kind, digest=embedding.digest,
                             vector=embedding.vector.tolist())

    def score_many(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Score several trajectories in one model call (the cross-request batch); the edge encodes the answers."""
        return self.model.score_batch(trajectories, [self.embed_goal(goal) for goal in goals])

    def step_many(self, items: Sequence[StepItem]) -> list[tuple[np.ndarray, list[StepState]]]:
        """Advance the streams of several requests in one model call; each gets its rewards [B] and states back."""
        if not self.streams:
            raise InvalidTaskError(f"model {self.model.name} does not score step by step; use /v1/score")
        frames = np.concatenate([item[0] for item in items])
        goals = [self.embed_goal(goal) for item in items for goal in item[1]]
        states = [state for item in items for state in item[2]]
        rewards, next_states = self.model.score_steps(frames, goals, states)
        forged = [i for i, (reward, state) in enumerate(zip(rewards, states)) if state is not None
                  and not np.isfinite(reward)]
        if forged:  # finite but absurd arrays (3e38) pass state_array; no state the model returned does this
            raise InvalidStateError(f"the state of stream {forged[0]} gives a non-finite reward: it is not one "
                                    f"{self.model.name} returned")
        results, start = [], 0
        for item in items:
            end = start + len(item[0])
            results.append((rewards[start:end], next_states[start:end]))
            start = end
        return results
