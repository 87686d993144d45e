"""The one face every reward model shows (design §3): goals in, per-frame values and rewards out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence, Union, runtime_checkable

import numpy as np

from rewards.errors import InvalidTaskError

GOAL_KINDS = ("text", "image", "demo")
MAX_TASK_CHARS = 512


@dataclass(frozen=True)
class GoalEmbedding:
    """A goal already encoded by one model; cacheable by (model, digest)."""

    kind: str
    vector: np.ndarray  # [D] float32
    digest: str


Goal = Union[str, np.ndarray, GoalEmbedding]


@dataclass(frozen=True)
class Score:
    """Per-frame progress `values[T]` and dense `rewards[T]` (reward for arriving at frame t)."""

    values: np.ndarray
    rewards: np.ndarray

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


@runtime_checkable
class RewardModel(Protocol):
    """What serve/ and rl/ rely on; LIV, remote clients and future critics all implement it."""

    name: str
    goal_kinds: tuple[str, ...]
    version: str

    def embed_goal(self, goal: Goal) -> GoalEmbedding: ...

    def score(self, frames: np.ndarray, goal: Goal) -> Score: ...

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]: ...


def check_task_text(goal: str) -> str:
    """The stripped task text, or InvalidTaskError if it is empty or longer than MAX_TASK_CHARS."""
    text = goal.strip()
    if not text:
        raise InvalidTaskError("task text is empty")
    if len(text) > MAX_TASK_CHARS:
        raise InvalidTaskError(f"task text has {len(text)} characters; at most {MAX_TASK_CHARS} are allowed")
    return text


def goal_kind(goal: Goal) -> str:
    """"text" for a string, "image" for [H, W, 3], "demo" for [N, H, W, 3]; InvalidTaskError otherwise."""
    if isinstance(goal, GoalEmbedding):
        return goal.kind
    if isinstance(goal, str):
        return "text"
    if isinstance(goal, np.ndarray) and goal.ndim in (3, 4):
        return "image" if goal.ndim == 3 else "demo"
    shape = list(getattr(goal, "shape", []))
    raise InvalidTaskError(f"a goal is a task string, an image [H,W,3] or a demo [N,H,W,3]; got {type(goal).__name__} {shape}")


def goal_digest(goal: str | np.ndarray) -> str:
    """A stable short id of a raw goal: text by its UTF-8 bytes, arrays by shape and bytes."""
    sha = hashlib.sha256()
    if isinstance(goal, str):
        sha.update(b"text:" + goal.encode())
    else:
        sha.update(f"array:{goal.shape}:{goal.dtype}:".encode() + np.ascontiguousarray(goal).tobytes())
    return sha.hexdigest()[:16]
