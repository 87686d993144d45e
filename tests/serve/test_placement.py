"""Placement that fits the machine: replicas' CPU requests are sized so every model is placed, and what cannot be
placed is refused at start with a message naming it (design §6: a 1-CPU request per replica left the third model
of the README example unplaced on 2 CPUs, and /readyz waited forever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve.app import (ModelSpec, PlacementError, ServeArgs, bind_app, check_placement, replica_cpus,
                       replica_per_cpu)

ROOT = Path(__file__).resolve().parents[2]
NODE = [{"CPU": 2.0}]


def test_unset_cpus_share_the_cluster_so_three_models_fit_on_two_cpus():
    args = ServeArgs(models=["babyai-liv", "babyai-vlc", "babyai-orca"])
    cpus = replica_cpus(args, 2.0)
    assert cpus == {"babyai-liv": 0.66, "babyai-vlc": 0.66, "babyai-orca": 0.66}
    check_placement(args, cpus, {"CPU": 2.0}, NODE)  # fits: no error


def test_shares_are_at_most_one_cpu_and_leave_room_for_explicit_requests():
    args = ServeArgs(models=["babyai-liv", {"model": "babyai-orca", "num_cpus": 1.5, "num_replicas": 2}])
    assert replica_cpus(args, 64.0) == {"babyai-liv": 1.0, "babyai-orca": 1.5}
    assert replica_cpus(args, 4.0) == {"babyai-liv": 1.0, "babyai-orca": 1.5}
    assert replica_cpus(args, 3.5) == {"babyai-liv": 0.5, "babyai-orca": 1.5}
    assert replica_cpus(args, None)["babyai-liv"] == 1.0  # no cluster known (building a config): one CPU


def test_autoscaled_models_are_counted_by_the_replicas_they_start_with():
    spec = ModelSpec(model="babyai-liv", autoscaling_config={"min_replicas": 1, "initial_replicas": 3,
                                                             "max_replicas": 8})
    assert spec.start_replicas == 3
    assert replica_cpus(ServeArgs(models=[spec, "babyai-orca"]), 2.0) == {"babyai-liv": 0.5, "babyai-orca": 0.5}


@pytest.mark.parametrize("models, available, nodes, named", [
    ([{"model": "babyai-liv", "num_cpus": 1.5}, {"model": "babyai-orca", "num_cpus": 1}], {"CPU": 2.0}, NODE,
     "babyai-orca: needs 1 CPU"),
    ([{"model": "babyai-liv", "num_cpus": 4}], {"CPU": 8.0}, [{"CPU": 2.0}] * 4, "more than any node has"),
    ([{"model": "babyai-liv", "num_gpus": 1}], {"CPU": 2.0}, NODE, "babyai-liv: one replica asks for 1 GPU"),
    ([{"model": "babyai-liv", "num_cpus": 2}, "babyai-orca"], {"CPU": 2.0}, NODE, "babyai-orca: no CPU is left"),
])
def test_what_cannot_be_placed_is_refused_naming_the_model(models, available, nodes, named):
    args = ServeArgs(models=models)
    with pytest.raises(PlacementError, match=named) as error:
        check_placement(args, replica_cpus(args, sum(n.get("CPU", 0) for n in nodes)), available, nodes)
    placed = [spec.key for spec in args.models if spec.key not in str(error.value)]
    assert placed == [spec.key for spec in args.models][: len(placed)]  # only the ones that do not fit are named


def test_the_bound_gateway_app_asks_for_the_share():
    app = bind_app(ServeArgs(models=["babyai-liv", "babyai-vlc", "babyai-orca"], ingress="gateway"), 2.0)
    handles = app._bound_deployment.init_args[0]
    assert {name: h._bound_deployment.ray_actor_options["num_cpus"] for name, h in handles.items()} == {
        "babyai-liv": 0.66, "babyai-vlc": 0.66, "babyai-orca": 0.66}


def test_the_cli_refuses_a_model_that_cannot_be_placed_before_deploying(tmp_path):
    """On a real 2-CPU local Ray: one clear error line naming the model, a non-zero exit, within seconds."""
    config = tmp_path / "serve.yaml"
    config.write_text("models:\n  - model: babyai-liv\n    num_cpus: 1.5\n  - model: babyai-orca\n    num_cpus: 1\n")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "vlreward.cli", "serve", "--config", str(config), "--port", "8391",
                             "--num-cpus", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                            start_new_session=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vlreward serve: error: cannot place every model") and "babyai-orca" in last, last
    assert "babyai-liv:" not in last


def test_with_the_model_as_ingress_the_first_model_answers_http_and_the_others_keep_their_share():
    app = bind_app(ServeArgs(models=["babyai-liv", "babyai-vlc", "babyai-orca"], ingress="model"), 2.0)
    ingress = app._bound_deployment
    assert ingress.name == "model-babyai-liv" and ingress.ray_actor_options["num_cpus"] == 0.66
    # the first model's queue bounds travel into its replica (LocalHandle answers a full queue with our JSON 503)
    assert ingress.init_args[4] == {"max_ongoing": 64, "max_queued": 256}
    others = ingress.init_args[5]
    assert sorted(others) == ["babyai-orca", "babyai-vlc"]
    assert all(h._bound_deployment.ray_actor_options["num_cpus"] == 0.66 for h in others.values())


def test_one_cpu_model_served_alone_gets_a_replica_per_cpu_unless_its_spec_sizes_it():
    """`vlreward serve --replica-per-cpu`: a replica per CPU (each its own process and GIL) fills the cores, and each
    asks for one CPU, so all are placed; a spec that sets its replicas, autoscaling, CPUs, threads or a GPU, and a
    multi-model service, keep theirs."""
    from vlreward.cli import build_parser

    assert build_parser().parse_args(["serve", "--replica-per-cpu"]).replica_per_cpu is True
    assert build_parser().parse_args(["serve"]).replica_per_cpu is None and not ServeArgs().replica_per_cpu
    alone = replica_per_cpu(ServeArgs(), 2.0)
    assert alone.models[0].num_replicas == 2 and ServeArgs().models[0].start_replicas == 1
    assert alone.models[0].concurrent_batches == 1 and ServeArgs().models[0].concurrent_batches == 2  # one per core
    two_batches = ServeArgs(models=[{"model": "babyai-liv", "concurrent_batches": 2}])
    assert replica_per_cpu(two_batches, 2.0).models[0].concurrent_batches == 2  # a spec's own count stands
    assert replica_cpus(alone, 2.0) == {alone.models[0].key: 1.0}
    app = bind_app(alone, 2.0)
    assert app._bound_deployment.num_replicas == 2
    assert replica_per_cpu(ServeArgs(), 1.5).models[0].num_replicas == 1
    for sized in ({"num_replicas": 1}, {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}},
                  {"num_cpus": 0.5}, {"torch_threads": 2}, {"num_gpus": 1}):
        args = ServeArgs(models=[{"model": "babyai-liv", **sized}])
        assert replica_per_cpu(args, 2.0) == args
    several = ServeArgs(models=["babyai-liv", "babyai-orca"])
    assert replica_per_cpu(several, 2.0) == several
