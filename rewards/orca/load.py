"""ORCA checkpoints: config.json (ORCAConfig) plus the frozen feature extractor's own files in a subfolder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from rewards.checkpoint import CONFIG_FILE, path_inside
from rewards.errors import InvalidCheckpointError
from rewards.features import load_features
from rewards.orca.reward import ORCAConfig, ORCAReward



def save_orca(config: ORCAConfig, directory: str | Path, features_source_dir: str | Path) -> Path:
    """Write config.json and copy the feature extractor's folder to `config.features.path` inside the
    checkpoint, so the checkpoint is self-contained (and stays under the model root when served)."""
    directory = Path(directory)
    shutil.copytree(features_source_dir, _features_dir(directory, config), dirs_exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    return directory


def load_orca(name: str, directory: str | Path, device: str = "cpu") -> ORCAReward:
    """An ORCA-family reward from disk; its version digests the config and the feature weights."""
    directory = Path(directory)
    try:
        text = (directory / CONFIG_FILE).read_text()
        config = ORCAConfig.from_dict(json.loads(text))
    except (OSError, ValueError, TypeError) as error:
        raise InvalidCheckpointError(f"cannot load ORCA checkpoint {directory}: {error}") from None
    features = load_features(config.features.kind, _features_dir(directory, config), device)
    version = hashlib.sha256((text + features.version).encode()).hexdigest()[:12]
    return ORCAReward(name, config, features, version)


def _features_dir(directory: Path, config: ORCAConfig) -> Path:
    """The feature extractor's folder, which must lie strictly inside the checkpoint directory."""
    return path_inside(directory, config.features.path, "features path", allow_root=False)
