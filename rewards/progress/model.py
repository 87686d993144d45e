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
    backbone: str = "efficientnet-lite0-s16"
    backbone_digest: str = ""
    image_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    feature_channels: int = 112
    hidden: int = 64
    conv_layers: int = 3  # 3x3 convolutions dilated 1, 2, 4, ... after the sentence modulates the map: 15x15 cells seen
    dropout: float = 0.1  # on the pooled embeddings while training: features are cached, so no pixel augmentation
    text_backbone: str = "all-minilm-l6-v2"
    text_dim: int = 384

    @classmethod
    def from_dict(cls, data: dict) -> "ProgressConfig":
        return config_from_dict(cls, data)


class ProgressHead(nn.Module):
    """Tower feature maps of (first frame, current frame) and a sentence -> progress logit.

    The sentence modulates every cell of the map (FiLM) before small convolutions relate neighbouring cells
    ("the agent next to the red ball", "the gripper at the drawer handle") and a max/mean pool summarises them:
    the same weights at every cell, which generalises from few scenes where a flattened map memorises them. The
    current frame is then read against the first (how far the scene moved from where it began).
    """

    def __init__(self, config: ProgressConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.cells = nn.Conv2d(config.feature_channels, hidden, 1)
        self.film = nn.Linear(config.text_dim, 2 * hidden)
        self.convs = nn.Sequential(*[layer for i in range(config.conv_layers) for layer in (
            nn.GELU(), nn.Conv2d(hidden, hidden, 3, padding=2 ** i, dilation=2 ** i))])
        self.pooled = nn.Sequential(nn.LayerNorm(2 * hidden), nn.Dropout(config.dropout))
        self.out = nn.Sequential(nn.Linear(4 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def encode(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """feature maps [B, C, h, w] read for sentence features [B, text_dim] -> embeddings [B, 2·hidden]."""
        scale, shift = self.film(sentence)[..., None, None].chunk(2, dim=1)
        cells = self.convs(self.cells(features.float()) * (1 + scale) + shift)
        return self.pooled(torch.cat([cells.amax(dim=(2, 3)), cells.mean(dim=(2, 3))], dim=1))

    def predict(self, start: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        """embeddings of the first and the current frame [B, 2·hidden] -> progress logits [B]."""
        return self.out(torch.cat([now, now - start], dim=-1)).squeeze(-1)

    def video_values(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """One video's feature maps [T, C, h, w] and its sentence features [text_dim] -> progress values [T] in
        [0, 1], each frame read against the first."""
        embedded = self.encode(features, sentence.expand(len(features), -1))
        return self.predict(embedded[:1].expand_as(embedded), embedded).sigmoid().float()

    def forward(self, start: torch.Tensor, now: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """feature maps start/now [B, C, h, w], sentence features [B, text_dim] -> progress logits [B]."""
        return self.predict(self.encode(start, sentence), self.encode(now, sentence))


class ProgressCritic(nn.Module):
    """The frozen tower plus the trainable head: what the reward runs on pixels."""

    def __init__(self, config: ProgressConfig, tower: ImageTower):
        super().__init__()
        self.config = config
        self.tower = tower
        self.head = ProgressHead(config)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] -> the tower's feature maps [B, C, h, w] (the head reads them per sentence)."""
        return self.tower(pixels)


def progress_loss(head: ProgressHead, start: torch.Tensor, now: torch.Tensor, sentence: torch.Tensor,
                  target: torch.Tensor, pairs: tuple[torch.Tensor, ...] | None = None,
                  rank_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Binary cross-entropy of predicted progress against soft targets in [0, 1], plus a ranking term.

    start/now [B, C, h, w] feature maps, sentence [B, text_dim], target [B]: the batch mixes (see
    rewards/progress/train.py) frames with their own task and progress label, with another task's sentence
    (target 0) and from rewound videos (target 0), so progress rises only when the sentence's task advances.
    `pairs` = (start, earlier, later, sentence) [P, ...] are two frames of one successful video in time order:
    Rank2Reward's Bradley-Terry term −log σ(logit(later) − logit(earlier)) orders frames directly, which the
    regression alone leaves to calibration.
    """
    logits = head(start, now, sentence)
    regression = F.binary_cross_entropy_with_logits(logits, target)
    floor = F.binary_cross_entropy(target.clamp(1e-6, 1 - 1e-6), target)
    metrics = {"regression_above_floor": regression.item() - floor.item(),
               "abs_error": (logits.sigmoid() - target).abs().mean().item()}
    loss = regression
    if pairs is not None:
        pair_start, earlier, later, pair_sentence = pairs
        first = head.encode(pair_start, pair_sentence)
        margin = head.predict(first, head.encode(later, pair_sentence)) - head.predict(first, head.encode(earlier, pair_sentence))
        rank = F.softplus(-margin).mean()
        loss = loss + rank_weight * rank
        metrics |= {"rank": rank.item(), "ordered": (margin > 0).float().mean().item()}
    return loss, {"loss": loss.item(), **metrics}
