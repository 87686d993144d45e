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


def read_config(directory: str | Path, config_cls):
    """`directory`/config.json -> a `config_cls` (see config_from_dict); InvalidCheckpointError when unreadable."""
    try:
        return config_from_dict(config_cls, json.loads((Path(directory) / CONFIG_FILE).read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise InvalidCheckpointError(f"bad {CONFIG_FILE} in {directory}: {error}") from None


def write_config(directory: str | Path, config) -> Path:
    """Write a config dataclass as `directory`/config.json (tuples become lists)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    return directory


def record_in_config(directory: str | Path, key: str, value) -> Path:
    """Set `key` of `directory`/config.json (e.g. the held-out figures) and keep the rest; the weights, and so the
    model's version, are untouched."""
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}, indent=2) + "\n")
    return path


def files_digest(*paths: Path) -> str:
    """A short sha256 over the files' bytes, read in chunks: a model's version."""
    sha = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 24):
                sha.update(chunk)
    return sha.hexdigest()[:12]


def path_inside(root: str | Path, relative: str | Path, what: str, where: str = "the checkpoint directory",
                allow_root: bool = True) -> Path:
    """`root`/`relative` resolved (links followed); InvalidCheckpointError unless it lies inside `root` (or is
    `root` itself, when allowed): the one confinement check behind the model root and a checkpoint's parts."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if (path == root and not allow_root) or not path.is_relative_to(root):
        raise InvalidCheckpointError(f"{what} {str(relative)!r} is outside {where}; it must lie inside")  # no server paths
    return path


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
    module = module_cls(read_config(directory, config_cls))
    weights = Path(directory) / WEIGHTS_FILE
    try:
        module.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as error:
        raise InvalidCheckpointError(f"cannot load {module_cls.__name__} checkpoint {directory}: {error}") from None
    return module, files_digest(weights)


def from_pretrained_quietly(model_cls, directory: str | Path, **kwargs):
    """`model_cls.from_pretrained` of a local transformers folder, without the per-tensor progress bar that every
    CLI call printed for a load of milliseconds (transformers' own setting is restored after)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        return model_cls.from_pretrained(str(directory), local_files_only=True, **kwargs)
    finally:
        if shown:
            logging.enable_progress_bar()


def config_from_dict(config_cls, data: dict):
    """A frozen config dataclass from JSON: unknown keys (metadata) dropped, lists back to tuples."""
    known = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in config_cls.__dataclass_fields__}
    return config_cls(**known)
