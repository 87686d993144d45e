"""VLC behind the RewardModel protocol: value at step t = the critic's score of the partial video o_0..o_t."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from rewards.base import Goal, GoalEmbedding, Score, StepState, goal_digest, state_array, text_goal
from rewards.critic import CriticReward
from rewards.errors import InvalidTaskError
from rewards.preprocess import embed_videos
from rewards.vlc.model import even_indices


class VLCReward(CriticReward):
    """A trained Video-Language Critic that scores videos against a task sentence.

    values[t] is the score of the partial video o_0..o_t (num_frames sampled evenly from it, repeating frames
    while t < num_frames − 1) at its last frame; rewards[t] = values[t] − values[0]. This is not a potential
    difference: the critic was trained so that the score of a partial video measures progress, and VLC pays
    that progress at every step (its return is Σ_t (V_t − V_0), not V_T − V_0), with the first score as the
    baseline so that a video that does nothing earns about 0. The running return-std normalisation and the
    success bonus of the paper belong to the RL side.
    """

    goal_kinds = ("text",)

    @torch.no_grad()
    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        text = text_goal(goal, "VLC")
        if isinstance(text, GoalEmbedding):
            return text
        vector = self.critic.encode_text(self.sentence_encoder([text]))[0]
        return GoalEmbedding("text", vector.float().cpu().numpy(), goal_digest(text))

    @torch.no_grad()
    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Embed every frame of every video once, then run the transformer over all T partial-video windows.

        Each video of T frames gives T windows of num_frames frame indices ([T, num_frames], gathered from its
        embeddings [T, D]); all windows of all videos go through the transformer together, in chunks.
        """
        if len(trajectories) != len(goals):
            raise InvalidTaskError(f"{len(trajectories)} videos but {len(goals)} goals")
        texts = self.goal_vectors(goals)
        embeddings = embed_videos(self.embed_frames, trajectories)
        lengths = [len(video) for video in embeddings]
        num_frames = self.critic.config.num_frames
        windows = torch.cat([
            video[torch.from_numpy(even_indices(0, np.arange(len(video)), num_frames)).to(self.device)]
            for video in embeddings
        ])  # [ΣT, num_frames, D]
        window_texts = torch.cat([text.expand(length, -1) for text, length in zip(texts, lengths)])  # [ΣT, D]
        chunk = max(1, self.frames_per_forward // num_frames)
        last_scores = torch.cat([
            self.critic(frames, text)[:, -1] for frames, text in zip(windows.split(chunk), window_texts.split(chunk))
        ])
        values_per_video = np.split(last_scores.float().cpu().numpy(), np.cumsum(lengths)[:-1])
        return [Score(values=values, rewards=values - values[0]) for values in values_per_video]

    @torch.no_grad()
    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState]]:
        """One new frame per stream [B, H, W, 3]: reward = score of the stream's video so far − its first score.

        The window samples from every frame seen so far, so a stream's state keeps their embeddings
        ({"frames": [t, D]}, 4·D bytes a step) and the first score ({"first": [1]}).
        """
        if not len(frames) == len(goals) == len(states):
            raise InvalidTaskError(f"{len(frames)} frames, {len(goals)} goals and {len(states)} states")
        width = self.critic.config.embed_dim
        new = self.embed_frames(frames)  # [B, D]
        rewards, next_states = [], []
        for embedding, text, state in zip(new, self.goal_vectors(goals), states):
            seen = embedding[None] if state is None else torch.cat(
                [torch.from_numpy(state_array(state, "frames", (None, width))).to(self.device), embedding[None]])
            window = seen[torch.from_numpy(even_indices(0, len(seen) - 1, self.critic.config.num_frames)).to(self.device)]
            value = self.critic(window[None], text[None])[0, -1].float().cpu().numpy()[None]
            first = value if state is None else state_array(state, "first", (1,))
            rewards.append(float(value[0] - first[0]))
            next_states.append({"frames": seen.float().cpu().numpy(), "first": first})
        return np.array(rewards, np.float32), next_states
