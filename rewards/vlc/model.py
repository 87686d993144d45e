"""The Video-Language Critic as an nn.Module (no file I/O) and its training loss (design §4.3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rewards.checkpoint import config_from_dict
from rewards.cnn import ImageEncoder
from rewards.math import shared_cross_entropy


@dataclass(frozen=True)
class VLCConfig:
    """Everything needed to rebuild a VLC critic and preprocess its frames; saved as config.json.

    The defaults are a CPU-sized critic; the original uses CLIP ViT-B/32 frames, 4 layers, width 512, 8 heads.
    """

    architecture: str = "vlc"
    embed_dim: int = 128  # frame embedding size = transformer width (as CLIP's 512 feeds the original's)
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    text_backbone: str = "all-minilm-l6-v2"
    text_dim: int = 384
    layers: int = 2
    heads: int = 4
    num_frames: int = 12  # frames sampled evenly from a (partial) video; also the number of learned positions
    rank_weight: float = 33.0

    @classmethod
    def from_dict(cls, data: dict) -> "VLCConfig":
        return config_from_dict(cls, data)


def even_indices(start: int | np.ndarray, end: int | np.ndarray, num: int) -> np.ndarray:
    """`num` frame indices spread evenly over [start, end] (inclusive), repeating frames in short spans.

    With array `start`/`end` of shape [N] the result is [N, num]: one row per span.
    """
    return np.rint(np.linspace(start, end, num, axis=-1)).astype(np.int64)


class VideoLanguageCritic(nn.Module):
    """Text token + frame tokens -> causal transformer -> one score per frame.

    The text token comes first, so with a causal mask the score of frame t sees the text and frames 0..t only:
    the score of a partial video is the score at its last frame.
    """

    def __init__(self, config: VLCConfig):
        super().__init__()
        self.config = config
        width = config.embed_dim
        self.image_encoder = ImageEncoder(config)
        self.text_projection = nn.Linear(config.text_dim, width)
        self.positions = nn.Parameter(torch.randn(config.num_frames + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, config.heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.layers, norm=nn.LayerNorm(width),
                                                 enable_nested_tensor=False)
        self.pooler = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.head = nn.Linear(width, 1)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, S, S] -> frame embeddings [N, D]."""
        return self.image_encoder(pixels)

    def encode_text(self, sentence_features: torch.Tensor) -> torch.Tensor:
        """frozen sentence features [B, text_dim] -> text tokens [B, D]."""
        return self.text_projection(sentence_features)

    def forward(self, frame_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """frame embeddings [B, L, D] (L <= num_frames) and text tokens [B, D] -> scores [B, L]."""
        tokens = torch.cat([text_embeddings.unsqueeze(1), frame_embeddings], dim=1)
        tokens = tokens + self.positions[: tokens.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device)
        hidden = self.transformer(tokens, mask=mask, is_causal=True)
        return self.head(self.pooler(hidden[:, 1:])).squeeze(-1)


def contrastive_loss(logits: torch.Tensor, caption_of: torch.Tensor, success: torch.Tensor,
                     same_task: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy of last-frame scores `logits` [U, B] (U distinct captions × B videos).

    `same_task` [U, B] bool marks the captions that name video j's task (its own caption `caption_of[j]` or a
    paraphrase; default: its own only). A successful video j is a positive of every such caption. Each adds
    - caption -> video: row `caption_of[j]` over all B videos, target j. The row's other positives (successes
      worded with it or a paraphrase) are masked out: they are not negatives, and each has a row of its own;
      failed videos, of any caption, stay in as negatives (a failed attempt at the same task is the hardest negative);
    - video -> caption: column j over the U distinct captions. Its own caption and the paraphrases share the target
      evenly, as in LIV's `info_nce` (`shared_cross_entropy`, 0 is a perfect match), rather than being masked:
      every wording names the task, so scoring a paraphrase as high as the own caption costs nothing, and the
      critic is pulled to score all wordings of a task alike (a reward should not hinge on the wording).
    Failed videos add no term of their own: no caption is theirs, so they have no row target and no column.
    Both directions are averaged over the successful videos; with none in the batch the loss is 0.
    """
    winners = success.nonzero().squeeze(1)  # [P]
    if len(winners) == 0:
        return logits.sum() * 0.0
    captions = torch.arange(len(logits), device=logits.device)
    own = caption_of == captions[:, None]  # [U, B]
    same_task = own if same_task is None else same_task | own
    rows = logits[caption_of[winners]]  # [P, B]
    videos = torch.arange(len(success), device=logits.device)
    other_positives = (same_task & success)[caption_of[winners]] & (winners[:, None] != videos)  # [P, B]
    caption_to_video = F.cross_entropy(rows.masked_fill(other_positives, float("-inf")), winners)
    video_to_caption = shared_cross_entropy(logits[:, winners].T, same_task[:, winners].T)
    return (caption_to_video + video_to_caption) / 2


def vlc_loss(critic: VideoLanguageCritic, pixels: torch.Tensor, sentence_features: torch.Tensor,
             success: torch.Tensor, same_task: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """L = rank_weight · L_rank + L_CE over every caption × video pair of the batch.

    pixels [B, L, 3, S, S] (L frames sampled evenly per video), sentence_features [B, text_dim] (the caption of
    each video), success [B] bool, same_task [B, B] bool (optional: video a's caption names video b's task, e.g.
    a paraphrase; see `contrastive_loss`). Captions are deduplicated by their features (equal features are one
    caption to the critic). L_rank = mean over successful videos and t of relu(s_t − s_{t+1}) with their own caption.
    """
    batch, length = pixels.shape[:2]
    frames = critic.encode_images(pixels.flatten(0, 1)).view(batch, length, -1)
    captions, caption_of = torch.unique(sentence_features, dim=0, return_inverse=True)  # [U, text_dim], [B]
    texts = critic.encode_text(captions)
    num_captions = len(captions)
    scores = critic(frames.repeat(num_captions, 1, 1), texts.repeat_interleave(batch, 0))
    scores = scores.view(num_captions, batch, length)  # [U, B, L]: every caption with every video
    matched = scores[caption_of, torch.arange(batch, device=scores.device)][success]  # [P, L]
    rank = F.relu(matched[:, :-1] - matched[:, 1:]).mean() if len(matched) else scores.sum() * 0.0
    if same_task is not None:  # [B, B] -> [U, B]: caption u names video b's task if a video worded u does
        same_task = scores.new_zeros(num_captions, batch).index_add_(0, caption_of, same_task.float()) > 0
    contrastive = contrastive_loss(scores[..., -1], caption_of, success, same_task)
    total = critic.config.rank_weight * rank + contrastive
    return total, {"loss": total.item(), "rank": rank.item(), "ce": contrastive.item()}
