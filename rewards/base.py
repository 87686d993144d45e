"""The one face every reward model shows (design §3): goals in, per-frame values and rewards out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence, Union, runtime_checkable

import numpy as np

from rewards.errors import InvalidStateError, InvalidTaskError
from rewards.math import value_difference_rewards

GOAL_KINDS = ("text", "image", "demo")
MAX_TASK_CHARS = 512


@dataclass(frozen=True)
class GoalEmbedding:
    """A goal already encoded by one model; cacheable by (model, digest)."""

    kind: str
    vector: np.ndarray  # [D] float32
    digest: str


Goal = Union[str, np.ndarray, GoalEmbedding]

# What a streaming client carries between `score_step` calls: a few named arrays the model made and reads back.
# Clients treat it as opaque; it is small (a value, or a DP row) so replicas can stay stateless.
StepState = dict[str, np.ndarray]


@dataclass(frozen=True)
class Score:
    """Per-frame progress `values[T]` and dense `rewards[T]` (reward for arriving at frame t)."""

    values: np.ndarray
    rewards: np.ndarray

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


def scores_in_segments(model) -> bool:
    """Whether an episode may be scored as segments sent while it runs (`join_segments`): the model says so with
    `segments = True` when frame t's value depends only on frames 0 and t and the goal, and its rewards are value
    differences (LIV, the progress critic). A sequence model (VLC) or an alignment (ORCA) needs the whole video."""
    return bool(getattr(model, "segments", False))


def join_segments(parts: Sequence[Score]) -> Score:
    """The whole episode's score from its segments' scores: the first segment starts at frame 0 and every later one
    was sent behind frame 0 again (so its first value, frame 0's, is dropped). Rewards are the value differences,
    so the reward at a segment's first frame reads the previous segment's last value."""
    values = np.concatenate([parts[0].values] + [part.values[1:] for part in parts[1:]])
    return Score(values=values, rewards=value_difference_rewards(values))


@runtime_checkable
class RewardModel(Protocol):
    """What serve/ and rl/ rely on; LIV, remote clients and future critics all implement it."""

    name: str
    goal_kinds: tuple[str, ...]
    version: str

    def embed_goal(self, goal: Goal) -> GoalEmbedding: ...

    def score(self, frames: np.ndarray, goal: Goal) -> Score: ...

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]: ...


@runtime_checkable
class StreamingRewardModel(RewardModel, Protocol):
    """A model that can also pay rewards one frame at a time (design §3), for per-step RL."""

    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState]]:
        """One new frame per stream, frames [B, H, W, 3] -> rewards [B] and each stream's next state."""
        ...

    def score_step(self, frame: np.ndarray, goal: Goal, state: StepState | None = None) -> tuple[float, StepState]: ...


class StreamingMixin:
    """`score_step` for one stream, from the model's vectorised `score_steps`."""

    def score_step(self, frame: np.ndarray, goal: Goal, state: StepState | None = None) -> tuple[float, StepState]:
        """The reward for arriving at `frame` [H, W, 3]; start with state None and pass back the state you got.

        Streaming agrees with `score`: the k-th call's reward is `score(frames[:k+1], goal).rewards[k]`.
        """
        rewards, states = self.score_steps(frame[None], [goal], [state])
        return float(rewards[0]), states[0]


def state_array(state: StepState, key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """`state[key]` as float32 of the given shape (None = any length), or InvalidStateError naming what is wrong.

    Finite means finite as float32: a float64 beyond float32's range (1e300) would become inf on the cast.
    """
    array = state.get(key) if isinstance(state, dict) else None
    floats = isinstance(array, np.ndarray) and array.dtype.kind == "f"
    if floats:
        with np.errstate(over="ignore"):
            cast = array.astype(np.float32, copy=False)
    if not floats or array.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(array.shape, shape)) or not np.isfinite(cast).all():
        got = f"{array.dtype} {list(array.shape)}" if isinstance(array, np.ndarray) else type(array).__name__
        raise InvalidStateError(f"state[{key!r}] must be finite floats of shape {list(shape)}; got {got}")
    return cast


def check_task_text(goal: str) -> str:
    """The stripped task text, or InvalidTaskError if it is empty or longer than MAX_TASK_CHARS."""
    text = goal.strip()
    if not text:
        raise InvalidTaskError("task text is empty")
    if len(text) > MAX_TASK_CHARS:
        raise InvalidTaskError(f"task text has {len(text)} characters; at most {MAX_TASK_CHARS} are allowed")
    return text


def text_goal(goal: Goal, model: str) -> str | GoalEmbedding:
    """For text-only models: a text GoalEmbedding as it is, or the checked task text; InvalidTaskError naming
    `model` for any other goal."""
    if isinstance(goal, GoalEmbedding):
        if goal.kind != "text":
            raise InvalidTaskError(f"{model} takes a task string, not a {goal.kind} goal")
        return goal
    if not isinstance(goal, str):
        raise InvalidTaskError(f"{model} takes a task string, not {type(goal).__name__}")
    return check_task_text(goal)


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
