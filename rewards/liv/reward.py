"""LIV behind the RewardModel protocol: value = cos(φ(frame), goal), reward = value difference."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rewards.base import Goal, GoalEmbedding, Score, check_task_text, goal_digest
from rewards.errors import InvalidTaskError
from rewards.liv.model import LIVCritic
from rewards.math import cosine_similarity, value_difference_rewards
from rewards.preprocess import embed_in_chunks, embed_videos, preprocess_frames
from rewards.text import SentenceEncoder

class LIVReward:
    """A trained LIV critic that scores videos against a task sentence or a goal image."""

    goal_kinds = ("text", "image")

    def __init__(self, name: str, critic: LIVCritic, sentence_encoder: SentenceEncoder, version: str,
                 device: str = "cpu", frames_per_forward: int = 512):
        self.name = name
        self.version = version
        self.device = device
        self.critic = critic.to(device).eval()
        self.sentence_encoder = sentence_encoder.to(device)
        self.frames_per_forward = frames_per_forward

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [T, H, W, 3] -> φ(o) [T, D], in chunks that bound memory."""
        config = self.critic.config

        def encode(chunk):
            return self.critic.encode_images(preprocess_frames(chunk, config.image_size, config.mean, config.std,
                                                               device=self.device))

        return embed_in_chunks(encode, frames, self.frames_per_forward)

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

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self.score_batch([frames], [goal])[0]

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
