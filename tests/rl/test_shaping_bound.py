"""The oracle-shaping bench's wrapper pays what its docstring says (bench/shaping_bound.py measures the ceiling
of dense shaping with it, so a wrong sign or a missing bonus would misstate that ceiling)."""

import numpy as np
import pytest

from bench.shaping_bound import OracleShaping
from envs.babyai import make_env


@pytest.mark.parametrize("kind", ["sparse", "oracle", "oracle+sparse"])
def test_oracle_shaping_pays_the_success_bonus_and_the_progress_potential(kind):
    env = OracleShaping(make_env("GoToRedBallNoDists", seed=3), kind, scale=2.0, gamma=0.9)
    _, info = env.reset()
    progress, rng = [info["progress"]], np.random.default_rng(0)
    rewards, successes = [], []
    for _ in range(64):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(0, 3)))
        rewards.append(reward), progress.append(info["progress"]), successes.append(info["success"])
        if terminated or truncated:
            break
    progress, successes = np.array(progress), np.array(successes, float)
    shaping = 2.0 * (0.9 * progress[1:] - progress[:-1])
    expected = {"sparse": successes, "oracle": shaping, "oracle+sparse": successes + shaping}[kind]
    np.testing.assert_allclose(rewards, expected, atol=1e-9)
    assert np.ptp(progress) > 0  # the random walk moved the progress, so the shaping term was exercised
