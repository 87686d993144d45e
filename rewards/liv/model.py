"""The LIV critic as an nn.Module (no file I/O) and its training loss (design §4.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rewards.checkpoint import config_from_dict
from rewards.cnn import ImageEncoder
from rewards.math import cosine_similarity, shared_cross_entropy


@dataclass(frozen=True)
class LIVConfig:
    """Everything needed to rebuild a LIV critic and preprocess its frames; saved as config.json."""

    architecture: str = "liv"
    embed_dim: int = 128
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    text_backbone: str = "all-minilm-l6-v2"
    text_dim: int = 384
    gamma: float = 0.98
    num_negatives: int = 0  # extra shuffled-transition negatives in the VIP terms (LIV's option)
    # learn the InfoNCE temperature as CLIP does; on raw cosines (the reference) logits span only [-1, 1] and the
    # term stayed at log B in our training runs. Training only: the value S(o, g) is a cosine either way
    learn_temperature: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> "LIVConfig":
        return config_from_dict(cls, data)


class LIVCritic(nn.Module):
    """Image encoder φ and a projection ψ of frozen sentence features into one embedding space."""

    def __init__(self, config: LIVConfig):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config)
        self.text_projection = nn.Sequential(
            nn.Linear(config.text_dim, 256), nn.GELU(), nn.Linear(256, config.embed_dim)
        )
        if config.learn_temperature:  # CLIP's initial 1/0.07, kept <= 100 in the loss
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] -> φ(o) [B, D]."""
        return self.image_encoder(pixels)

    def encode_text(self, sentence_features: torch.Tensor) -> torch.Tensor:
        """frozen sentence features [B, text_dim] -> ψ(l) [B, D]."""
        return self.text_projection(sentence_features)


def log_mean_exp_td(e_t, e_next, goal, gamma: float) -> torch.Tensor:
    """log mean exp(−(r + γ·V(o_{t+1}) − V(o_t))) with r = −1 and V = cos / (1 − γ); inputs [B, D].

    Computed as logsumexp − log B: the reference formula without overflow.
    """
    scale = 1.0 / (1.0 - gamma)
    advantage = -(-1.0 + gamma * cosine_similarity(e_next, goal) * scale - cosine_similarity(e_t, goal) * scale)
    return torch.logsumexp(advantage, 0) - math.log(advantage.numel())


def vip_loss(e_start, e_t, e_next, goal, gamma: float, num_negatives: int = 0) -> torch.Tensor:
    """VIP's value loss; all inputs [B, D]. Each extra negative pairs (o_t, o_{t+1}) of a shuffled batch with the
    goals, so transitions from other videos also pay the −1 step cost towards this goal (LIV's option)."""
    v_start = cosine_similarity(e_start, goal) / (1.0 - gamma)
    loss = (1.0 - gamma) * -v_start.mean() + log_mean_exp_td(e_t, e_next, goal, gamma)
    for _ in range(num_negatives):
        permutation = torch.randperm(len(e_t), device=e_t.device)
        loss = loss + log_mean_exp_td(e_t[permutation], e_next[permutation], goal, gamma)
    return loss


def info_nce(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor | None = None,
             same_task: torch.Tensor | None = None, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over the cosines of the batch's (image, caption) pairs, raw or times exp(logit_scale).

    image_embeddings and text_embeddings [B, D] are the pairs. `same_task` [B, B] bool marks pairs whose captions
    name one task (equal or paraphrased): they share the target evenly instead of being negatives (without it only
    the diagonal is positive, as in the reference), so a batch of a few tasks does not push paraphrases apart.
    `negatives` [N, D] are end frames of failed videos: extra images every caption must score below its own in the
    caption -> image direction. They have no caption, so no image -> caption term; N = 0 is the loss without them.
    """
    batch = len(image_embeddings)
    images = image_embeddings if negatives is None else torch.cat([image_embeddings, negatives])
    logits = F.normalize(images, dim=-1) @ F.normalize(text_embeddings, dim=-1).T  # [B + N, B]
    if logit_scale is not None:
        logits = logits * logit_scale.clamp(max=math.log(100)).exp()
    if same_task is None:
        same_task = torch.eye(batch, dtype=torch.bool, device=logits.device)
    positives = torch.cat([same_task, same_task.new_zeros(len(logits) - batch, batch)])  # [B + N, B]
    return (shared_cross_entropy(logits[:batch], same_task) + shared_cross_entropy(logits.T, positives.T)) / 2


def liv_loss(critic: LIVCritic, pixels: torch.Tensor, sentence_features: torch.Tensor,
             same_task: torch.Tensor | None = None, success: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The LIV objective: InfoNCE(φ(o_end), ψ(l)) + VIP(g = φ(o_g)) + VIP(g = ψ(l)).

    pixels [B, 5, 3, S, S] holds (o_0, o_g, o_t, o_{t+1}, o_end) per video; sentence_features [B, text_dim];
    same_task [B, B] (optional) marks videos of one task, see `info_nce`; success [B] bool (optional: all, at least
    one). A failed video only lends φ(o_end) as an InfoNCE negative: its frames show no path to its caption's goal,
    so the VIP terms and the InfoNCE pairs are the successes'.
    """
    if success is None:
        success = torch.ones(len(pixels), dtype=torch.bool, device=pixels.device)
    negatives = critic.encode_images(pixels[~success, -1])  # [N, D]
    pixels, sentence_features = pixels[success], sentence_features[success]
    if same_task is not None:
        same_task = same_task[success][:, success]
    batch, stack = pixels.shape[:2]
    embeddings = critic.encode_images(pixels.flatten(0, 1)).view(batch, stack, -1)
    e_start, e_goal, e_t, e_next, e_end = embeddings.unbind(1)
    e_text = critic.encode_text(sentence_features)
    gamma = critic.config.gamma
    logit_scale = critic.logit_scale if critic.config.learn_temperature else None
    losses = {
        "info_nce": info_nce(e_end, e_text, logit_scale, same_task, negatives),
        "vip_image": vip_loss(e_start, e_t, e_next, e_goal, gamma, critic.config.num_negatives),
        "vip_text": vip_loss(e_start, e_t, e_next, e_text, gamma, critic.config.num_negatives),
    }
    total = sum(losses.values())
    metrics = {"loss": total.item(), **{k: v.item() for k, v in losses.items()}}
    if logit_scale is not None:
        metrics["temperature"] = float(1 / logit_scale.detach().exp())
    return total, metrics
