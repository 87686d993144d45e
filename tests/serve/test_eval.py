"""POST /v1/eval: the reward-quality report of `vlreward eval`, for labelled trajectories a client uploads."""

from __future__ import annotations

import json

import httpx
import pytest

from serve.client import npz_bytes


def post_eval(url, arrays, labels, **data):
    return httpx.post(f"{url}/v1/eval", timeout=120, data={"labels": json.dumps(labels), **data},
                      files={"trajectories": ("t.npz", npz_bytes(arrays))})


def test_successes_and_failures_give_metrics_in_range(service_url, babyai_videos):
    episodes = [(e, True) for _, e in babyai_videos["success"]] + [(e, False) for _, e in babyai_videos["failure"]]
    labels = [{"task": e.mission, "success": ok, "kind": "expert" if ok else "random", "env": "babyai",
               "paraphrases": [e.mission.replace("go to", "walk to")]} for e, ok in episodes]
    response = post_eval(service_url, [e.frames for e, _ in episodes], labels)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["model"] == "babyai-liv" and report["successes"] == 3 and report["failures"] == 3
    assert 0 <= report["auroc_return"] <= 1 and 0 <= report["auroc_final_value"] <= 1
    assert -1 <= report["voc"] <= 1 and report["paraphrase"]["pairs"] == 3
    assert len(report["records"]) == 6


@pytest.mark.parametrize("labels, problem", [
    ("not json", "labels must be"),
    ([{"task": "go to the red ball"}], "success"),
    ([{"task": "go to the red ball", "success": True, "colour": "red"}], "colour"),
    ([{"task": "go to the red ball", "success": True}] * 2, "1 trajectories but 2 labels"),
    ([{"task": "go to the red ball", "success": True, "progress": [0.5]}], "progress has 1 values"),
])
def test_bad_labels_are_422(service_url, random_frames, labels, problem):
    response = httpx.post(f"{service_url}/v1/eval", timeout=60, files={"trajectories": ("t.npz", npz_bytes([random_frames]))},
                          data={"labels": labels if isinstance(labels, str) else json.dumps(labels)})
    assert response.status_code == 422 and problem in response.json()["error"]["message"]


def test_demo_models_point_to_the_cli(service_url, random_frames):
    response = post_eval(service_url, [random_frames], [{"task": "x", "success": True}], model="babyai-orca")
    assert response.status_code == 422 and "vlreward eval" in response.json()["error"]["message"]
