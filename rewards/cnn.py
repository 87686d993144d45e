"""The small image encoder trained from scratch on pixels, shared by the LIV and VLC critics (the fast baselines)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ImageEncoder(nn.Module):
    """Strided conv stack -> flattened feature map -> linear embedding; keeps where things are in the frame.

    `config` gives `channels` (one stride-2 conv each), `image_size` and `embed_dim` (LIVConfig, VLCConfig).
    """

    def __init__(self, config):
        super().__init__()
        layers, in_channels = [], 3
        for out_channels in config.channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.GroupNorm(8, out_channels), nn.GELU()]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.head = nn.Linear(in_channels * side * side, config.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] -> embeddings [B, D]."""
        return self.head(self.convs(pixels).flatten(1))
