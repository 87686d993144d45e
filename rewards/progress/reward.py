"""The progress critic behind the RewardModel protocol: value = predicted progress, reward = value difference."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rewards.base import Goal, GoalEmbedding, Score, StepState, goal_digest, state_array, text_goal
from rewards.critic import CriticReward
from rewards.errors import InvalidTaskError
from rewards.math import value_difference_rewards
from rewards.preprocess import embed_videos


class ProgressReward(CriticReward):
    """values[t] = P(task done | first frame, frame t, sentence) in [0, 1]; rewards[t] = values[t] − values[t−1].

    The return telescopes to V_T − V_0: the progress made, about 1 for a success and about 0 for a video that
    stalls, loops back, reverses or does another task.
    """

    goal_kinds = ("text",)
    segments = True  # frame t's value reads only frames 0 and t and the goal: `rewards.join_segments`

    @torch.no_grad()
    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        """A task sentence -> its frozen MiniLM features [384] (the head reads them through FiLM)."""
        text = text_goal(goal, "the progress critic")
        if isinstance(text, GoalEmbedding):
            return text
        return GoalEmbedding("text", self.sentence_encoder([text])[0].float().cpu().numpy(), goal_digest(text))

    @torch.no_grad()
    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Score many videos with one tower pass over all their frames."""
        if len(trajectories) != len(goals):
            raise InvalidTaskError(f"{len(trajectories)} videos but {len(goals)} goals")
        sentences = self.goal_vectors(goals)
        scores = []
        for features, sentence in zip(embed_videos(self.embed_frames, trajectories), sentences):
            values = self.critic.head.video_values(features, sentence).cpu().numpy()
            scores.append(Score(values=values, rewards=value_difference_rewards(values)))
        return scores

    @torch.no_grad()
    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState]]:
        """One new frame per stream [B, H, W, 3]: reward V_t − V_{t−1} (0 on a stream's first frame).

        A stream's state is its first frame's embedding as read for its goal, and its last value,
        {"start": [E], "value": [1]}: a stream keeps its goal.
        """
        if not len(frames) == len(goals) == len(states):
            raise InvalidTaskError(f"{len(frames)} frames, {len(goals)} goals and {len(states)} states")
        now = self.critic.head.encode(self.embed_frames(frames), torch.stack(self.goal_vectors(goals)))
        size = now.shape[1]
        start = torch.stack([now[i] if state is None else
                             torch.from_numpy(state_array(state, "start", (size,))).to(self.device)
                             for i, state in enumerate(states)])
        values = self.critic.head.predict(start, now).sigmoid().float().cpu().numpy()
        previous = np.array([values[i] if state is None else state_array(state, "value", (1,))[0]
                             for i, state in enumerate(states)], np.float32)
        starts = start.float().cpu().numpy()
        return values - previous, [{"start": starts[i], "value": values[i:i + 1]} for i in range(len(values))]
