"""LIV behind the RewardModel protocol: value = cos(φ(frame), goal), reward = value difference."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rewards.base import Goal, GoalEmbedding, Score, StepState, check_task_text, goal_digest, state_array
from rewards.critic import CriticReward
from rewards.errors import InvalidTaskError
from rewards.math import cosine_similarity, value_difference_rewards
from rewards.preprocess import embed_videos


class LIVReward(CriticReward):
    """A trained LIV critic that scores videos against a task sentence or a goal image."""

    goal_kinds = ("text", "image")
    segments = True  # frame t's value reads only frame t (and frame 0) and the goal: `rewards.join_segments`

    @torch.no_grad()
    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        if isinstance(goal, GoalEmbedding):
            return goal
        if isinstance(goal, str):
            text = check_task_text(goal)
            vector = self.critic.encode_text(self.sentence_encoder([text]))[0]
            return GoalEmbedding("text", vector.float().cpu().numpy(), goal_digest(text))
        if isinstance(goal, np.ndarray):
            if goal.ndim != 3 or goal.shape[-1] != 3 or goal.dtype != np.uint8:
                raise InvalidTaskError(f"goal image must be uint8 [H, W, 3], got {goal.dtype} {list(goal.shape)}")
            vector = self.embed_frames(goal[None])[0]
            return GoalEmbedding("image", vector.float().cpu().numpy(), goal_digest(goal))
        raise InvalidTaskError(f"LIV takes a task string or a goal image, not {type(goal).__name__}")

    @torch.no_grad()
    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Score many videos in one forward pass over all their frames (the batching that pays)."""
        if len(trajectories) != len(goals):
            raise InvalidTaskError(f"{len(trajectories)} videos but {len(goals)} goals")
        goal_vectors = self.goal_vectors(goals)
        embeddings = embed_videos(self.embed_frames, trajectories)
        scores = []
        for frame_embeddings, goal_vector in zip(embeddings, goal_vectors):
            values = cosine_similarity(frame_embeddings, goal_vector).float().cpu().numpy()
            scores.append(Score(values=values, rewards=value_difference_rewards(values)))
        return scores

    @torch.no_grad()
    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState]]:
        """One new frame per stream [B, H, W, 3]: reward V_t − V_{t−1} (0 on a stream's first frame).

        A stream's state is its last value, {"value": [1]}.
        """
        if not len(frames) == len(goals) == len(states):
            raise InvalidTaskError(f"{len(frames)} frames, {len(goals)} goals and {len(states)} states")
        goal_vectors = torch.stack(self.goal_vectors(goals))
        values = cosine_similarity(self.embed_frames(frames), goal_vectors).float().cpu().numpy()
        previous = np.array([values[i] if state is None else state_array(state, "value", (1,))[0]
                             for i, state in enumerate(states)], np.float32)
        return values - previous, [{"value": value[None]} for value in values]
