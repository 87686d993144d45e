"""VLM-RM's goal-baseline CLIP reward (Rocamonde et al., ICLR 2024; design §4.4) behind the RewardModel protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rewards.base import Goal, GoalEmbedding, Score, StepState, StreamingMixin, check_task_text, goal_digest
from rewards.clip.hf_model import HFCLIP
from rewards.clip.openai_model import CLIP_MEAN, CLIP_STD
from rewards.errors import InvalidTaskError
from rewards.preprocess import embed_in_chunks, embed_videos, preprocess_frames

PROMPT_SEPARATOR = "|"


@dataclass(frozen=True)
class GoalBaselineConfig:
    """The reward's fixed part, saved as config.json next to the HF CLIP folder `backbone`.

    `baseline_prompts` describe the scene without the goal ("a humanoid robot"); `alpha` in [0, 1] is how far
    the embedding space is projected onto the baseline->target direction (0: plain CLIP distance to the target).
    Preprocessing is VLM-RM's: a square bicubic resize to the model's size, then CLIP's mean/std.
    """

    baseline_prompts: tuple[str, ...]
    alpha: float
    architecture: str = "clip_goal_baseline"
    backbone: str = "clip"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    interpolation: str = "bicubic"

    def __post_init__(self):
        if not self.baseline_prompts or not all(p.strip() for p in self.baseline_prompts):
            raise ValueError("baseline_prompts must be non-empty strings")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def goal_baseline_reward(images: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor,
                         alpha: float) -> torch.Tensor:
    """R = 1 − ½‖(x − t)P‖², P = α·ddᵀ/‖d‖² + (1 − α)I, d = t − b; images [T, D], target, baseline [D] -> R [T].

    x is the normalised image embedding; t and b are means of normalised prompt embeddings, not renormalised
    (as in VLM-RM). (x − t)P is computed as α·((x − t)·d̂)d̂ + (1 − α)(x − t), never forming the D×D matrix.
    """
    x = F.normalize(images, dim=-1)
    direction = F.normalize(target - baseline, dim=-1)
    offset = x - target
    projected = alpha * (offset @ direction)[:, None] * direction + (1 - alpha) * offset
    return 1 - 0.5 * projected.pow(2).sum(-1)


class CLIPGoalBaselineReward(StreamingMixin):
    """Scores each frame by how close CLIP puts it to the target prompt(s), along the baseline->target direction.

    A text goal is one target prompt, or several separated by "|" (their normalised embeddings are averaged,
    as VLM-RM averages its target prompts). values[t] = rewards[t] = R(frame t): VLM-RM rewards each state
    by R directly (no potential difference), so the reward for arriving at frame t is that frame's R.
    """

    goal_kinds = ("text",)

    def __init__(self, name: str, backbone: HFCLIP, config: GoalBaselineConfig, version: str,
                 device: str = "cpu", frames_per_forward: int = 256):
        self.name = name
        self.version = version
        self.device = device
        self.config = config
        self.backbone = backbone.to(device)
        self.frames_per_forward = frames_per_forward
        self.baseline = self._mean_prompt_embedding(list(config.baseline_prompts))

    @torch.no_grad()
    def _mean_prompt_embedding(self, prompts: list[str]) -> torch.Tensor:
        """prompts (N) -> mean of their normalised embeddings [D]."""
        return F.normalize(self.backbone.encode_texts(prompts), dim=-1).mean(0)

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [T, H, W, 3] -> image embeddings [T, D], in chunks that bound memory."""
        config = self.config

        def encode(chunk):
            return self.backbone.encode_images(preprocess_frames(
                chunk, self.backbone.image_size, config.mean, config.std, config.interpolation, self.device))

        return embed_in_chunks(encode, frames, self.frames_per_forward)

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        """A task text -> the target t [D]; baseline and α are the model's own, so t is all a goal adds."""
        if isinstance(goal, GoalEmbedding):
            return goal
        if not isinstance(goal, str):
            raise InvalidTaskError(f"the CLIP goal-baseline reward takes a task string, not {type(goal).__name__}")
        check_task_text(goal)
        prompts = [prompt.strip() for prompt in goal.split(PROMPT_SEPARATOR)]
        if not all(prompts):
            raise InvalidTaskError(f"task text {goal!r} has an empty target prompt")
        target = self._mean_prompt_embedding(prompts)
        if self.config.alpha > 0 and torch.linalg.vector_norm(target - self.baseline) < 1e-6:
            raise InvalidTaskError(f"task text {goal!r} embeds like the baseline prompts; there is no direction")
        return GoalEmbedding("text", target.float().cpu().numpy(), goal_digest(goal))

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        return self.score_batch([frames], [goal])[0]

    @torch.no_grad()
    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """Score many videos; frames of one size share forward passes."""
        if len(trajectories) != len(goals):
            raise InvalidTaskError(f"{len(trajectories)} videos but {len(goals)} goals")
        targets = [torch.from_numpy(self.embed_goal(goal).vector).to(self.device) for goal in goals]
        embeddings = embed_videos(self.embed_frames, trajectories)
        scores = []
        for frame_embeddings, target in zip(embeddings, targets):
            values = goal_baseline_reward(frame_embeddings, target, self.baseline, self.config.alpha)
            values = values.float().cpu().numpy()
            scores.append(Score(values=values, rewards=values.copy()))
        return scores

    def score_steps(self, frames: np.ndarray, goals: Sequence[Goal],
                    states: Sequence[StepState | None]) -> tuple[np.ndarray, list[StepState]]:
        """One new frame per stream [B, H, W, 3]: each frame's R; nothing to carry, so every state is empty."""
        if not len(frames) == len(goals) == len(states):
            raise InvalidTaskError(f"{len(frames)} frames, {len(goals)} goals and {len(states)} states")
        scores = self.score_batch(list(frames[:, None]), goals)
        return np.array([score.rewards[0] for score in scores], np.float32), [{} for _ in scores]
