"""Golden outputs of every shipped model on one fixed input: a change of weights, preprocessing or reward math
fails here. After an intended change, rewrite them with `VLREWARD_UPDATE_GOLDEN=1 pytest tests/rewards/test_golden.py`."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import rewards
from rewards.base import join_segments, scores_in_segments

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
TOLERANCE = 1e-4


def fixed_video() -> np.ndarray:
    """uint8 [8, 64, 64, 3]: a red square crossing a grey floor towards a blue one."""
    frames = np.full((8, 64, 64, 3), 96, np.uint8)
    frames[:, 40:52, 44:56] = (40, 60, 220)
    for t in range(8):
        frames[t, 8 + 4 * t:18 + 4 * t, 8 + 4 * t:18 + 4 * t] = (220, 40, 40)
    return frames


@pytest.mark.parametrize("name", rewards.list_models())
def test_shipped_model_matches_its_golden_output(name):
    model = rewards.load_model(name)
    frames = fixed_video()
    goal = "go to the blue box" if "text" in model.goal_kinds else frames[::2]
    values = model.score(frames, goal).values.astype(float)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("VLREWARD_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": model.version, "values": np.round(values, 6).tolist()}) + "\n")
    golden = json.loads(path.read_text())
    assert golden["version"] == model.version, f"{name}'s weights changed; rewrite its golden output"
    np.testing.assert_allclose(values, golden["values"], atol=TOLERANCE)


@pytest.mark.parametrize("name", rewards.list_models())
def test_a_model_that_scores_in_segments_joins_them_into_its_whole_score(name):
    """`segments = True` is a promise the RL env runners rely on (rl.submission): check it on every shipped model."""
    model = rewards.load_model(name)
    if not scores_in_segments(model):
        pytest.skip(f"{name} needs whole videos")
    frames = fixed_video()
    goal = "go to the blue box" if "text" in model.goal_kinds else frames[::2]
    parts = [model.score(frames[segment], goal) for segment in ([0, 1, 2], [0, 3, 4, 5], [0, 6, 7])]
    whole, joined = model.score(frames, goal), join_segments(parts)
    np.testing.assert_allclose(joined.values, whole.values, atol=1e-5)
    np.testing.assert_allclose(joined.rewards, whole.rewards, atol=1e-5)
