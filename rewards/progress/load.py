"""Loading progress critics: config.json + model.safetensors holding the head only; the tower is the installed one."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from rewards.backbones import load_backbone
from rewards.checkpoint import WEIGHTS_FILE, files_digest, read_config
from rewards.critic import with_text_backbone
from rewards.errors import InvalidCheckpointError
from rewards.progress.model import ProgressConfig, ProgressCritic
from rewards.progress.reward import ProgressReward


def load_progress_critic(directory: str | Path, device: str = "cpu") -> tuple[ProgressCritic, str]:
    """The head saved in `directory` on the installed tower; InvalidCheckpointError if the tower's weights are not
    the ones the head was trained on. Returns the critic and the head weights' digest (its version)."""
    directory = Path(directory)
    config = read_config(directory, ProgressConfig)
    try:
        tower = load_backbone(config.backbone, device)
        if config.backbone_digest and config.backbone_digest != tower.digest:
            raise ValueError(f"trained on {config.backbone} weights {config.backbone_digest}, installed {tower.digest}")
        critic = ProgressCritic(config, tower)
        weights = directory / WEIGHTS_FILE
        critic.head.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as error:
        raise InvalidCheckpointError(f"cannot load progress critic {directory}: {error}") from None
    return critic, files_digest(weights)


def load_progress(name: str, directory: str | Path, device: str = "cpu") -> ProgressReward:
    """A progress critic from disk behind the RewardModel protocol."""
    critic, digest = load_progress_critic(directory, device)
    return with_text_backbone(ProgressReward, name, critic, digest, device)
