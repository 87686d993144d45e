"""The progress critic (in the spirit of ReWiND and Rank2Reward): a small head on a frozen pretrained tower reads
the task sentence, the first frame and the current frame and predicts how much of the task is done, in [0, 1].

No file I/O here; rewards/progress/load.py builds it from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rewards.backbones import IMAGENET_MEAN, IMAGENET_STD, ImageTower
from rewards.checkpoint import config_from_dict


@dataclass(frozen=True)
class ProgressConfig:
    """Everything needed to rebuild the head and preprocess its frames; saved as config.json.

    The tower's weights are not saved with the head: they come from the installed package, and `backbone_digest`
    pins the ones the head was trained on.
    """

    architecture: str = "progress"
    backbone: str = "efficientnet-lite0"
    backbone_digest: str = ""
    image_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    feature_channels: int = 1280
    reduced_channels: int = 32  # 1x1 conv over the feature map; the flattened map keeps where things are
    feature_side: int = 4  # image_size / the tower's stride
    hidden: int = 256
    dropout: float = 0.1  # on frame embeddings while training: features are cached, so no pixel augmentation
    text_backbone: str = "all-minilm-l6-v2"
    text_dim: int = 384

    @classmethod
    def from_dict(cls, data: dict) -> "ProgressConfig":
        return config_from_dict(cls, data)


class ProgressHead(nn.Module):
    """Feature maps of (first frame, current frame) and a sentence -> progress logit.

    The current frame is read relative to the first (how far the scene moved from where it began) and modulated by
    the sentence (FiLM), so the same scene pays for "open the drawer" and not for "close the drawer".
    """

    def __init__(self, config: ProgressConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.frame = nn.Sequential(
            nn.Conv2d(config.feature_channels, config.reduced_channels, 1), nn.GELU(), nn.Flatten(),
            nn.Linear(config.reduced_channels * config.feature_side ** 2, hidden), nn.LayerNorm(hidden), nn.GELU(),
            nn.Dropout(config.dropout))
        self.mix = nn.Linear(2 * hidden, hidden)
        self.film = nn.Linear(config.text_dim, 2 * hidden)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def encode_frames(self, features: torch.Tensor) -> torch.Tensor:
        """feature maps [B, C, h, w] -> frame embeddings [B, hidden]."""
        return self.frame(features.float())

    def forward(self, start: torch.Tensor, now: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """frame embeddings start [B, H] and now [B, H], sentence features [B, text_dim] -> logits [B]."""
        scale, shift = self.film(sentence).chunk(2, dim=-1)
        mixed = self.mix(torch.cat([now, now - start], dim=-1))
        return self.out(mixed * (1 + scale) + shift).squeeze(-1)


class ProgressCritic(nn.Module):
    """The frozen tower plus the trainable head: what the reward runs on pixels."""

    def __init__(self, config: ProgressConfig, tower: ImageTower):
        super().__init__()
        self.config = config
        self.tower = tower
        self.head = ProgressHead(config)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] -> frame embeddings [B, hidden]."""
        return self.head.encode_frames(self.tower(pixels))


def progress_loss(head: ProgressHead, start: torch.Tensor, now: torch.Tensor, sentence: torch.Tensor,
                  target: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Binary cross-entropy of predicted progress against soft targets in [0, 1]; inputs are per-sample feature
    maps start/now [B, C, h, w], sentence features [B, text_dim], targets [B] and optional weights [B].

    The batch mixes (see rewards/progress/train.py) frames of videos with their own task and progress label,
    the same frames with another task's sentence (target 0) and rewound videos (a success played backwards from
    its end: target 0), so progress rises only when the sentence's task advances.
    """
    logits = head(head.encode_frames(start), head.encode_frames(now), sentence)
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = losses.mean() if weight is None else (losses * weight).sum() / weight.sum()
    floor = F.binary_cross_entropy(target.clamp(1e-6, 1 - 1e-6), target, reduction="none").mean()
    return loss, {"loss": loss.item(), "loss_above_floor": loss.item() - floor.item(),
                  "abs_error": (logits.sigmoid() - target).abs().mean().item()}
