"""LIV behind the RewardModel protocol: value = cos(φ(frame), goal), reward = value difference."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rewards.base import Goal, GoalEmbedding, Score, check_task_text, goal_digest
from rewards.critic import CriticReward
from rewards.errors import InvalidTaskError
from rewards.math import cosine_similarity, value_difference_rewards
from rewards.preprocess import embed_videos


class LIVReward(CriticReward):
    """A trained LIV critic that scores videos against a task sentence or a goal image."""

    goal_kinds = ("text", "image")

    @torch.no_grad()
    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        if isinstance(goal, GoalEmbedding):
            return goal
        if isinstance(goal, str):
            text = check_task_text(goal)
            vector = self.critic.encode_text(self.sentence_encoder([text]))[0]
            return GoalEmbedding("text", vector.cpu().numpy(), goal_digest(text))
        if isinstance(goal, np.ndarray):
            if goal.ndim != 3 or goal.shape[-1] != 3 or goal.dtype != np.uint8:
                raise InvalidTaskError(f"goal image must be uint8 [H, W, 3], got {goal.dtype} {list(goal.shape)}")
            vector = self.embed_frames(goal[None])[0]
            return GoalEmbedding("image", vector.cpu().numpy(), goal_digest(goal))
        raise InvalidTaskError(f"LIV takes a task string or a goal image, not {type(goal).__name__}")

    @torch.no_grad()
    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Score many videos in one forward pass over all their frames (the batching that pays)."""
        if len(trajectories) != len(goals):
            raise InvalidTaskError(f"{len(trajectories)} videos but {len(goals)} goals")
        goal_vectors = [torch.from_numpy(self.embed_goal(goal).vector).to(self.device) for goal in goals]
        embeddings = embed_videos(self.embed_frames, trajectories)
        scores = []
        for frame_embeddings, goal_vector in zip(embeddings, goal_vectors):
            values = cosine_similarity(frame_embeddings, goal_vector).float().cpu().numpy()
            scores.append(Score(values=values, rewards=value_difference_rewards(values)))
        return scores
