"""Model names -> checkpoint directories -> RewardModel objects, as in open_clip's factory."""

from __future__ import annotations

import json
from pathlib import Path

from rewards.base import RewardModel
from rewards.errors import InvalidCheckpointError, UnknownModelError
from rewards.clip.load import load_clip_goal_baseline, load_liv_openai
from rewards.checkpoint import CONFIG_FILE, path_inside
from rewards.liv.load import load_liv
from rewards.orca.load import load_orca
from rewards.progress.load import load_progress
from rewards.vlc.load import load_vlc

SHIPPED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
DEFAULT_MODEL = "babyai-goto-progress"
LOADERS = {
    "liv": load_liv,
    "liv_clip": load_liv_openai,
    "vlc": load_vlc,
    "orca": load_orca,
    "progress": load_progress,
    "clip_goal_baseline": load_clip_goal_baseline,
}


def list_models() -> list[str]:
    """Names of the critics shipped inside the package."""
    return sorted(p.parent.name for p in SHIPPED_CHECKPOINTS.glob(f"*/{CONFIG_FILE}"))


def get_config(name: str) -> dict:
    """A fresh copy of a shipped critic's config (callers cannot change the registry)."""
    return json.loads((resolve_checkpoint(name) / CONFIG_FILE).read_text())


def resolve_checkpoint(name_or_path: str, model_root: str | Path | None = None) -> Path:
    """A shipped name, or a checkpoint directory; with `model_root`, paths must resolve inside it."""
    if name_or_path in list_models():
        return SHIPPED_CHECKPOINTS / name_or_path
    path = Path(name_or_path)
    if model_root is not None:
        root = Path(model_root).resolve()
        path = path_inside(root, path, "model path", "the model root")
    if not (path / CONFIG_FILE).is_file():
        raise UnknownModelError(f"unknown model {name_or_path!r}; shipped models: {', '.join(list_models())}")
    if model_root is not None and any(not file.resolve().is_relative_to(root) for file in path.rglob("*")):
        raise InvalidCheckpointError(f"model path {name_or_path!r} links to files outside the model root")
    return path


def load_model(name_or_path: str = DEFAULT_MODEL, device: str = "cpu", model_root: str | Path | None = None) -> RewardModel:
    """Load a reward model by shipped name or checkpoint directory.

    Example: `load_model("babyai-liv").score(frames, "go to the red ball").rewards`.
    Raises UnknownModelError for an unknown name, InvalidCheckpointError for a bad or out-of-root checkpoint.
    """
    directory = resolve_checkpoint(name_or_path, model_root)
    architecture = json.loads((directory / CONFIG_FILE).read_text()).get("architecture")
    if architecture not in LOADERS:
        raise InvalidCheckpointError(f"{directory} has unknown architecture {architecture!r}")
    name = name_or_path if name_or_path in list_models() else directory.name
    return LOADERS[architecture](name, directory, device=device)
