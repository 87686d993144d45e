"""deploy/ is configuration only; these tests hold it to Ray's own schemas and to the code it points at."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from ray.serve import Application
from ray.serve._private import api as serve_api
from ray.serve._private.build_app import build_app as build_deployments
from ray.serve._private.utils import import_attr
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVE_SOURCE = Path(ray.__file__).parent / "serve"


@pytest.fixture(scope="module")
def serve_config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()))


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / "rayservice.yaml").read_text())


def built_deployments(app_config) -> dict:
    """The deployments `serve run` would create from this application config (builds, starts nothing)."""
    app = serve_api.call_user_app_builder_with_args_if_necessary(import_attr(app_config.import_path), app_config.args)
    assert isinstance(app, Application)
    return {d.name: d for d in build_deployments(app, name=app_config.name).deployments}


def test_every_override_names_a_built_deployment_and_ray_accepts_its_options(serve_config):
    assert not ray.is_initialized()
    for app_config in serve_config.applications:
        deployments = built_deployments(app_config)
        for override in app_config.deployments:
            assert override.name in deployments, f"{override.name} is not one of {sorted(deployments)}"
            options = override.model_dump(exclude_unset=True, exclude={"name"})
            deployments[override.name].options(**options)  # Ray's own checks of option combinations
    assert not ray.is_initialized()


def test_model_deployment_autoscales_on_gpu_shares(serve_config):
    """What build_app made of the args: the options Ray will run the model replicas with."""
    (app_config,) = serve_config.applications
    (model,) = [d for name, d in built_deployments(app_config).items() if name.startswith("model-")]
    scaling = model._deployment_config.autoscaling_config
    assert 1 <= scaling.min_replicas <= scaling.initial_replicas < scaling.max_replicas
    assert 0 < model.ray_actor_options["num_gpus"] < 1
    assert scaling.target_ongoing_requests <= model._deployment_config.max_ongoing_requests
    assert model._deployment_config.user_config["batch_wait_timeout_s"] > 0


def test_rayservice_serves_the_same_application(rayservice, serve_config):
    assert (rayservice["apiVersion"], rayservice["kind"]) == ("ray.io/v1", "RayService")
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"]) == yaml.safe_load(
        (DEPLOY / "serve_config.yaml").read_text())


def test_rayservice_cluster_keeps_token_auth_and_has_a_gpu_group(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    containers = [c for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
                  for c in group["template"]["spec"]["containers"]]
    assert all(e.get("value") != "disabled" for c in containers for e in c.get("env", []) if e["name"] == "RAY_AUTH_MODE")
    assert all("requests" in c["resources"] and "limits" in c["resources"] for c in containers)
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_groups and all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in gpu_groups)


def test_dockerfile_installs_the_pinned_torch():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_pin,) = [d for d in dependencies if d.startswith("torch==")]
    assert f'"{torch_pin}"' in (DEPLOY / "Dockerfile").read_text()


def test_prometheus_scrapes_ray_nodes():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {"ray-kuberay", "ray-local"}


def test_dashboard_queries_only_metrics_that_exist():
    """Ray's built-in series are named in Ray's source; vlreward's in serve/ (Ray adds `_total` to counters)."""
    dashboard = json.loads((DEPLOY / "grafana" / "vlreward.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    metrics = {m for e in expressions for m in re.findall(r"\bray_\w+", e)}
    ray_serve_source = "".join(p.read_text() for p in SERVE_SOURCE.rglob("*.py"))
    vlreward_source = "".join(p.read_text() for p in (ROOT / "serve").glob("*.py"))
    for metric in sorted(metrics):
        base = re.sub(r"_(bucket|sum|count)$", "", metric.removeprefix("ray_"))
        if base.startswith("serve_"):
            name = base.removesuffix("_total")
            assert (f'"{name}"' in ray_serve_source
                    or f'"{re.sub("_http_", "_{protocol_name}_", name)}"' in ray_serve_source), metric
        else:
            assert f'"{base.removesuffix("_total")}"' in vlreward_source, metric
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("requests", "latency", "frames", "batch", "replicas", "cache"):
        assert topic in titles

