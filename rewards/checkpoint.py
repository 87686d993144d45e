"""Critic checkpoints on disk: a directory with config.json + model.safetensors (weights only, never pickle)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rewards.errors import InvalidCheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
Module = TypeVar("Module", bound=torch.nn.Module)


def save_checkpoint(module: torch.nn.Module, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the module's dataclass `config` (+ `extra` metadata, e.g. the training command) and its weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**dataclasses.asdict(module.config), **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory


def load_checkpoint(directory: str | Path, config_cls, module_cls: type[Module]) -> tuple[Module, str]:
    """Rebuild `module_cls(config_cls.from_dict(config.json))` with its weights; returns it and the weights' digest."""
    directory = Path(directory)
    try:
        module = module_cls(config_cls.from_dict(json.loads((directory / CONFIG_FILE).read_text())))
        weights = directory / WEIGHTS_FILE
        module.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as error:
        raise InvalidCheckpointError(f"cannot load {module_cls.__name__} checkpoint {directory}: {error}") from None
    return module, hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


def config_from_dict(config_cls, data: dict):
    """A frozen config dataclass from JSON: unknown keys (metadata) dropped, lists back to tuples."""
    known = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in config_cls.__dataclass_fields__}
    return config_cls(**known)
