"""LIV checkpoints on disk: a directory with config.json + model.safetensors (weights only, never pickle)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rewards.errors import InvalidCheckpointError
from rewards.liv.model import LIVConfig, LIVCritic
from rewards.liv.reward import LIVReward
from rewards.text import shared_minilm

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_critic(critic: LIVCritic, directory: str | Path, extra: dict | None = None) -> Path:
    """Write config.json (+ `extra` metadata such as the training command) and model.safetensors."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**dataclasses.asdict(critic.config), **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory


def load_critic(directory: str | Path) -> tuple[LIVCritic, str]:
    """Rebuild the critic from a checkpoint directory; returns it and the weights' digest (its version)."""
    directory = Path(directory)
    try:
        config = LIVConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        weights = directory / WEIGHTS_FILE
        critic = LIVCritic(config)
        critic.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as error:
        raise InvalidCheckpointError(f"cannot load LIV checkpoint {directory}: {error}") from None
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    return critic, digest


def load_liv(name: str, directory: str | Path, device: str = "cpu") -> LIVReward:
    """A LIV critic from disk behind the RewardModel protocol."""
    critic, digest = load_critic(directory)
    if critic.config.text_backbone != "all-minilm-l6-v2":
        raise InvalidCheckpointError(f"unknown text backbone {critic.config.text_backbone!r}")
    return LIVReward(name, critic, shared_minilm(), version=digest, device=device)
