"""ServeArgs: the application's configuration, from Python, the CLI or a YAML file; checked before Ray starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

import rewards
from serve.app import ModelSpec, ServeArgs, bind_app, build_app


def test_yaml_config_mixes_names_and_full_specs_and_flags_override_it(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("models:\n  - babyai-liv\n  - model: babyai-orca\n    num_replicas: 2\n    precision: bf16\n"
                      "max_frames: 100\napi_token: from-file\ningress: gateway\n")
    args = ServeArgs.from_yaml(config, api_token="from-flag", model_root=None)
    assert [spec.key for spec in args.models] == ["babyai-liv", "babyai-orca"]
    assert args.models[1] == ModelSpec(model="babyai-orca", num_replicas=2, precision="bf16")
    assert args.max_frames == 100 and args.api_token == "from-flag"
    gateway = bind_app(args, 2)._bound_deployment  # binds the graph without starting Ray
    handles, settings = gateway.init_args
    assert gateway.name == "Gateway" and list(handles) == ["babyai-liv", "babyai-orca"]
    assert handles["babyai-orca"]._bound_deployment.name == "model-babyai-orca"
    assert handles["babyai-orca"]._bound_deployment.num_replicas == 2
    assert settings["default_model"] == "babyai-liv" and settings["max_frames"] == 100
    assert settings["api_token"] == "from-flag"


def test_the_ingress_settings_come_from_serve_args():
    """Every ApiSettings field that ServeArgs has is taken from it; the ingress holds ingress_max_ongoing_requests."""
    from serve.settings import ApiSettings

    args = ServeArgs(models=["babyai-orca", "babyai-liv"], max_body_bytes=1000, max_frames=7, max_pixels_per_frame=99,
                     retry_after_s=4.5, body_read_timeout_s=3, max_concurrent_bodies=9, ingress_max_ongoing_requests=77,
                     ingress="gateway")
    settings = ApiSettings.from_args(args)
    assert settings == ApiSettings(default_model="babyai-orca", max_body_bytes=1000, max_frames=7,
                                   max_pixels_per_frame=99, retry_after_s=4.5, body_read_timeout_s=3,
                                   max_concurrent_bodies=9)
    assert ApiSettings.from_args(args, api_token="env").api_token == "env"
    assert ApiSettings.from_args(args.model_copy(update={"api_token": "arg"}), api_token="env").api_token == "arg"
    gateway = bind_app(args, 2)._bound_deployment
    assert gateway.init_args[1] == settings.model_dump()
    assert gateway._deployment_config.max_ongoing_requests == 77


def test_the_http_client_imports_without_ray_or_fastapi():
    """serve/client.py is what RL code and users import: it must not drag in Ray or the web framework."""
    import subprocess
    import sys

    code = "import sys, serve.client; print(sorted(m for m in ('ray', 'fastapi', 'starlette') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(Path(__file__).resolve().parents[2]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


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
    gateway = build_app(ServeArgs(ingress="gateway"))  # KubeRay's layout (deploy/kuberay/rayservice.yaml)
    assert gateway._bound_deployment.init_args[1]["api_token"] == "from-secret"


def test_the_haproxy_proxy_is_one_option_of_config_and_cli_and_needs_ray_started_with_it(tmp_path, monkeypatch):
    """`proxy: haproxy` (YAML) and `vlreward serve --proxy haproxy` are one option; an app that asks for HAProxy on a
    Ray started without Serve's flag (a cluster whose containers lack it) is refused, not served by the Python proxy.
    The default, auto, serves with either: HAProxy where `vlreward serve` starts Ray, the cluster's proxy elsewhere."""
    import typing

    from serve.app import HAPROXY_FLAG
    from vlreward.cli import build_parser

    choices = typing.get_args(ServeArgs.model_fields["proxy"].annotation)
    assert choices == ("auto", "python", "haproxy") and ServeArgs().proxy == "auto"
    assert build_parser().parse_args(["serve", "--proxy", "haproxy"]).proxy == "haproxy"
    (tmp_path / "serve.yaml").write_text("proxy: haproxy\n")
    args = ServeArgs.from_yaml(tmp_path / "serve.yaml", proxy=None)  # no --proxy: the file's value stands
    assert args.proxy == "haproxy"
    monkeypatch.delenv(HAPROXY_FLAG, raising=False)
    with pytest.raises(ValueError, match=HAPROXY_FLAG):
        bind_app(args, 2)
    assert bind_app(ServeArgs(), 2)._bound_deployment.name == "model-babyai-goto-progress"
    monkeypatch.setenv(HAPROXY_FLAG, "1")
    assert bind_app(args, 2)._bound_deployment.name == "model-babyai-goto-progress"  # the default: the model is the ingress


def test_serves_access_log_is_off_unless_asked_for_in_every_layout():
    """A line per request in each replica's log costs the replica CPU on the request path: opt-in."""
    from vlreward.cli import build_parser

    for ingress in ("model", "gateway"):
        for access_log in (False, True):
            args = ServeArgs(ingress=ingress, **({"access_log": True} if access_log else {}))
            app = bind_app(args, 2)._bound_deployment
            assert app._deployment_config.logging_config["enable_access_log"] is access_log
    assert build_parser().parse_args(["serve", "--access-log"]).access_log is True
    assert build_parser().parse_args(["serve"]).access_log is None  # the config file's value (or the default) stands


def test_the_configuration_example_in_the_serving_docs_is_valid():
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    example = yaml.safe_load(text.split("## Configure the service")[1].split("```yaml\n")[1].split("```")[0])
    args = ServeArgs(**example)
    assert args.models[1].key == "metaworld-liv" and args.grpc_port == 9000
