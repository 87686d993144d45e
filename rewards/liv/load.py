"""Loading LIV checkpoints (config.json + model.safetensors, see rewards/checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

from rewards.checkpoint import load_checkpoint
from rewards.critic import with_text_backbone
from rewards.liv.model import LIVConfig, LIVCritic
from rewards.liv.reward import LIVReward


def load_critic(directory: str | Path) -> tuple[LIVCritic, str]:
    """Rebuild a LIV critic from a checkpoint directory; returns it and the weights' digest (its version)."""
    return load_checkpoint(directory, LIVConfig, LIVCritic)


def load_liv(name: str, directory: str | Path, device: str = "cpu") -> LIVReward:
    """A LIV critic from disk behind the RewardModel protocol."""
    critic, digest = load_critic(directory)
    return with_text_backbone(LIVReward, name, critic, digest, device)
