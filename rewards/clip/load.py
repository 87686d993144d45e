"""CLIP-based checkpoints on disk. Each is a self-contained directory with config.json naming its parts.

- "clip_goal_baseline": config.json (GoalBaselineConfig) + an HF CLIP folder (model.safetensors, tokenizer).
- "liv_clip": config.json (LIVCLIPConfig) + LIV's public `model.pt` + a CLIP tokenizer folder (vocab.json,
  merges.txt). `model.pt` is read with `weights_only=True`; anything that needs arbitrary pickle is refused.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from rewards.clip.goal_baseline import CLIPGoalBaselineReward, GoalBaselineConfig
from rewards.clip.hf_model import HFCLIP
from rewards.clip.openai_model import NON_WEIGHT_KEYS, ContextTokenizer, OpenAICLIP, OpenAICLIPConfig
from rewards.checkpoint import CONFIG_FILE, files_digest, path_inside, read_config, write_config
from rewards.errors import InvalidCheckpointError
from rewards.liv.reward import LIVReward



@dataclass(frozen=True)
class LIVCLIPConfig:
    """Where a LIV checkpoint keeps its parts; the model's sizes are read from the weights themselves.

    LIV's `torch.save` dict holds its DataParallel-wrapped CLIP under `state_key`, every key prefixed
    `key_prefix`. Frames are preprocessed as LIV's tensor path does: bilinear resize, CLIP mean/std.
    """

    architecture: str = "liv_clip"
    weights: str = "model.pt"
    tokenizer: str = "tokenizer"
    state_key: str = "liv"
    key_prefix: str = "module.model."


def part_path(directory: Path, relative: str) -> Path:
    """A file or folder named by config.json; it must exist inside the checkpoint directory (model root rule)."""
    path = path_inside(directory, relative, "checkpoint part")
    if not path.exists():
        raise InvalidCheckpointError(f"checkpoint part {relative!r} is missing from {directory}")
    return path

def load_clip_tokenizer(directory: Path):
    """An HF `CLIPTokenizer` from a local folder (tokenizer.json, or vocab.json + merges.txt)."""
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise InvalidCheckpointError(f"cannot load a CLIP tokenizer from {directory}: {error}") from None


def load_hf_clip(directory: Path) -> HFCLIP:
    """An HF CLIP folder -> HFCLIP; safetensors only, so no pickle is ever read."""
    from transformers import CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(directory), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, TypeError) as error:
        raise InvalidCheckpointError(f"cannot load an HF CLIP model from {directory}: {error}") from None
    return HFCLIP(model, load_clip_tokenizer(directory))


def save_clip_goal_baseline(directory: str | Path, config: GoalBaselineConfig, clip_model, tokenizer) -> Path:
    """Write config.json and the HF CLIP model + tokenizer into `directory`/`config.backbone`."""
    directory = write_config(directory, config)
    clip_model.save_pretrained(str(directory / config.backbone))
    tokenizer.save_pretrained(str(directory / config.backbone))
    return directory


def load_clip_goal_baseline(name: str, directory: str | Path, device: str = "cpu") -> CLIPGoalBaselineReward:
    """A "clip_goal_baseline" checkpoint directory -> CLIPGoalBaselineReward."""
    directory = Path(directory)
    config = read_config(directory, GoalBaselineConfig)
    backbone_dir = part_path(directory, config.backbone)
    version = files_digest(directory / CONFIG_FILE, *sorted(backbone_dir.glob("*.safetensors")))
    return CLIPGoalBaselineReward(name, load_hf_clip(backbone_dir), config, version=version, device=device)


def load_openai_state_dict(path: Path, state_key: str, key_prefix: str) -> dict[str, torch.Tensor]:
    """A `torch.save` dict -> the OpenAI-format CLIP state dict under `state_key`, with `key_prefix` removed."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise InvalidCheckpointError(f"{path} is not a weights-only torch checkpoint: {error}") from None
    state = checkpoint.get(state_key) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise InvalidCheckpointError(f"{path} has no {state_key!r} state dict")
    foreign = [key for key in state if not key.startswith(key_prefix)]
    if foreign:
        raise InvalidCheckpointError(f"{path}: keys without the prefix {key_prefix!r}, e.g. {foreign[:3]}")
    state = {key[len(key_prefix):]: value for key, value in state.items()}
    return {key: value for key, value in state.items() if key not in NON_WEIGHT_KEYS}


def build_openai_clip(state: dict[str, torch.Tensor]) -> OpenAICLIP:
    """OpenAI-format state dict -> OpenAICLIP in float32 (LIV saves fp16 on GPU; load_state_dict casts)."""
    try:
        model = OpenAICLIP(OpenAICLIPConfig.from_state_dict(state))
        model.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as error:
        raise InvalidCheckpointError(f"not a ResNet CLIP state dict: {error}") from None
    return model.eval().requires_grad_(False)


def load_liv_openai(name: str, directory: str | Path, device: str = "cpu") -> LIVReward:
    """A "liv_clip" checkpoint directory (LIV's public RN50 `model.pt`) -> LIVReward with LIV's semantics."""
    directory = Path(directory)
    config = read_config(directory, LIVCLIPConfig)
    weights = part_path(directory, config.weights)
    model = build_openai_clip(load_openai_state_dict(weights, config.state_key, config.key_prefix))
    tokenizer = load_clip_tokenizer(part_path(directory, config.tokenizer))
    if tokenizer.eos_token_id != model.config.vocab_size - 1:
        # encode_text finds <end> by argmax, so it must be the highest id, as in OpenAI's vocabulary.
        last = model.config.vocab_size - 1
        raise InvalidCheckpointError(f"tokenizer's end-of-text id {tokenizer.eos_token_id} is not the model's last id {last}")
    tokens = ContextTokenizer(tokenizer, model.config.context_length)
    return LIVReward(name, model, tokens, version=files_digest(weights), device=device)
