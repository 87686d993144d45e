"""ServeArgs: the application's configuration, from Python, the CLI or a YAML file; checked before Ray starts."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

import rewards
from serve.app import ModelSpec, ServeArgs, build_app


def test_yaml_config_mixes_names_and_full_specs_and_flags_override_it(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("models:\n  - babyai-liv\n  - model: babyai-orca\n    num_replicas: 2\n    precision: bf16\n"
                      "max_frames: 100\napi_token: from-file\n")
    args = ServeArgs.from_yaml(config, api_token="from-flag", model_root=None)
    assert [spec.key for spec in args.models] == ["babyai-liv", "babyai-orca"]
    assert args.models[1] == ModelSpec(model="babyai-orca", num_replicas=2, precision="bf16")
    assert args.max_frames == 100 and args.api_token == "from-flag"
    assert build_app(args) is not None  # binds the graph without starting Ray


@pytest.mark.parametrize("text, problem", [
    ("models: []\n", "at least 1"),
    ("models:\n  - model: babyai-liv\n    num_replica: 2\n", "num_replica"),
    ("models:\n  - model: babyai-liv\n    precision: fp8\n", "precision"),
    ("max_frame: 10\n", "max_frame"),
    ("- just a list\n", "mapping"),
])
def test_bad_configs_fail_before_anything_starts(tmp_path, text, problem):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises((pydantic.ValidationError, ValueError), match=problem):
        ServeArgs.from_yaml(config)


def test_checkpoint_directories_are_served_under_their_folder_name():
    assert ModelSpec(model="/models/metaworld-liv/").key == "metaworld-liv"


@pytest.mark.parametrize("name", rewards.list_models())
def test_shipped_models_score_under_bf16_autocast_like_fp32(name):
    """What a replica does with precision: bf16 (on CUDA when there is one; CPU autocast here)."""
    model = rewards.load_model(name)
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    goal = frames if "demo" in model.goal_kinds else "go to the red ball"
    full = model.score(frames, goal)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model.score(frames, goal)
        streamed, _ = model.score_step(frames[0], goal)
    assert half.values.dtype == np.float32 and np.isfinite(streamed)
    # bf16 keeps 8 bits of mantissa: through a 16-block tower a logit moves by ~0.2 (0.05 of a progress value) and
    # VLC's scores, which reach about ±6, by a few hundredths; judged against each model's own scale
    np.testing.assert_allclose(half.values, full.values, atol=0.06 * max(1.0, np.abs(full.values).max()))


def test_the_token_can_come_from_the_environment(monkeypatch):
    """KubeRay passes the API token as a Secret-backed env var; the Gateway must then require it."""
    monkeypatch.setenv("VLREWARD_API_TOKEN", "from-secret")
    gateway = build_app(ServeArgs())
    assert gateway._bound_deployment.init_args[1]["api_token"] == "from-secret"
