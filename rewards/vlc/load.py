"""Loading VLC checkpoints (config.json + model.safetensors, see rewards/checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

from rewards.checkpoint import load_checkpoint
from rewards.critic import with_text_backbone
from rewards.vlc.model import VideoLanguageCritic, VLCConfig
from rewards.vlc.reward import VLCReward


def load_vlc_critic(directory: str | Path) -> tuple[VideoLanguageCritic, str]:
    """Rebuild a VLC critic from a checkpoint directory; returns it and the weights' digest (its version)."""
    return load_checkpoint(directory, VLCConfig, VideoLanguageCritic)


def load_vlc(name: str, directory: str | Path, device: str = "cpu") -> VLCReward:
    """A VLC critic from disk behind the RewardModel protocol."""
    critic, digest = load_vlc_critic(directory)
    return with_text_backbone(VLCReward, name, critic, digest, device)
