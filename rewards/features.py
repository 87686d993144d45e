"""Frozen image feature extractors for cost matrices: uint8 frames [T, H, W, 3] -> features [T, D].

ORCA and its baselines only need a fixed embedding per frame. The reference uses an ImageNet ResNet-50's
last stage without pooling (spatial layout kept); any trained LIV critic's image tower works too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rewards.backbones import load_backbone
from rewards.checkpoint import CONFIG_FILE, files_digest, from_pretrained_quietly
from rewards.errors import InvalidCheckpointError
from rewards.liv.load import load_critic
from rewards.preprocess import check_frames, preprocess_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrameFeatures:
    """Preprocess with the backbone's own size/mean/std, encode in chunks, flatten: frames [T, H, W, 3] -> [T, D].

    Subclasses set the preprocessing fields, `version` (a digest of the weights) and `encode`.
    """

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation = "bilinear"
    version: str

    def __init__(self, device: str = "cpu", frames_per_forward: int = 256):
        self.device = device
        self.frames_per_forward = frames_per_forward

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] -> features [B, ...]."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        check_frames(frames)
        chunks = np.array_split(frames, -(-len(frames) // self.frames_per_forward))
        return torch.cat([
            self.encode(preprocess_frames(chunk, self.image_size, self.mean, self.std, self.interpolation, self.device)).flatten(1)
            for chunk in chunks
        ])


class HFResNetFeatures(FrameFeatures):
    """A transformers ResNet's last-stage feature map, unpooled and flattened (as the reference ORCA uses)."""

    image_size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, directory: str | Path, device: str = "cpu"):
        from transformers import ResNetModel

        super().__init__(device)
        try:
            self.model = from_pretrained_quietly(ResNetModel, directory, use_safetensors=True).to(device).eval()
        except (OSError, ValueError) as error:
            raise InvalidCheckpointError(f"cannot load ResNet features from {directory}: {error}") from None
        self.version = files_digest(*sorted(Path(directory).glob("*.safetensors")))  # one file, or shards

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state


class LIVFeatures(FrameFeatures):
    """A LIV critic's image tower φ(o), so a trained critic (e.g. the shipped babyai-liv) can feed ORCA."""

    def __init__(self, directory: str | Path, device: str = "cpu"):
        super().__init__(device)
        critic, self.version = load_critic(directory)
        self.critic = critic.to(device).eval()
        self.image_size, self.mean, self.std = critic.config.image_size, critic.config.mean, critic.config.std

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.critic.encode_images(pixels)


class TowerFeatures(FrameFeatures):
    """A frozen pretrained tower's feature map, averaged over space (rewards/backbones.py); the folder holds only
    config.json, {"backbone": "efficientnet-lite0", "image_size": 128}: the weights come from the installed package."""

    def __init__(self, directory: str | Path, device: str = "cpu"):
        super().__init__(device)
        try:
            config = json.loads((Path(directory) / CONFIG_FILE).read_text())
            self.tower = load_backbone(config["backbone"], device)
            self.image_size = int(config["image_size"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InvalidCheckpointError(f"cannot load tower features from {directory}: {error}") from None
        spec = self.tower.spec
        self.mean, self.std, self.interpolation = spec.mean, spec.std, spec.interpolation
        self.version = f"{spec.name}-{self.tower.digest}-{self.image_size}"

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tower(pixels).mean(dim=(2, 3))


FEATURE_KINDS = {"hf_resnet": HFResNetFeatures, "liv": LIVFeatures, "tower": TowerFeatures}


def load_features(kind: str, directory: str | Path, device: str = "cpu") -> FrameFeatures:
    """The feature extractor of `kind` ("hf_resnet", "liv" or "tower") stored in `directory`."""
    if kind not in FEATURE_KINDS:
        raise InvalidCheckpointError(f"unknown feature extractor {kind!r}; known: {', '.join(FEATURE_KINDS)}")
    return FEATURE_KINDS[kind](directory, device)
