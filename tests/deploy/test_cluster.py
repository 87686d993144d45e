"""The scale-out proofs of bench/cluster.py as a test (about 10 minutes on 2 busy cores):

    VLREWARD_CLUSTER_TEST_PORT=8201 python -m pytest -q -m slow tests/deploy/test_cluster.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_autoscales_over_nodes_and_survives_replica_and_node_failures_also_in_rl_training(tmp_path):
    out = tmp_path / "cluster.json"
    port = os.environ.get("VLREWARD_CLUSTER_TEST_PORT", "8201")
    # its own process: the bench starts and stops a multi-node Ray cluster, whatever Ray this session holds
    subprocess.run([sys.executable, "-m", "bench.cluster", "--port", port, "--out", str(out)], cwd=ROOT, check=True,
                   timeout=1800, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    results = json.loads(out.read_text())["results"]

    scaling = results["autoscale"]
    assert scaling["scaled_up"] and scaling["peak_replicas"] >= 3 and scaling["peak_nodes"] >= 2, scaling
    assert scaling["scaled_down"], scaling
    assert results["replica_failure"]["recovered"] and results["node_failure"]["recovered"], results
    assert results["node_failure"]["answered_after_removal"] > 0
    rl = results.pop("rl")
    assert rl["returncode"] == 0 and rl["killed_after_iteration"] == 1 and rl["iterations"] >= 2, rl
    for name, result in results.items():
        assert result["ok"] > 0 and result["wrong"] == 0 and result["lost"] == 0, (name, result)
