"""`bench.random_success`: a real random-policy count, its JSON and its reproducibility from the seed."""

from __future__ import annotations

import json

from bench.random_success import main

ARGV = ["--env", "babyai", "--task", "GoToRedBallNoDists", "--episodes", "5", "--seed", "3"]


def test_the_count_is_written_with_its_command_and_repeats_from_the_seed(tmp_path):
    result = json.loads(main([*ARGV, "--out", str(tmp_path / "a")]).read_text())
    assert {key: result[key] for key in ("env", "task", "episodes", "seed")} == {
        "env": "babyai", "task": "GoToRedBallNoDists", "episodes": 5, "seed": 3}
    assert 0 <= result["successes"] <= 5 and result["rate"] == result["successes"] / 5
    assert result["command"].startswith("python -m bench.random_success --env babyai --task GoToRedBallNoDists")
    again = json.loads(main([*ARGV, "--out", str(tmp_path / "b")]).read_text())
    assert again["successes"] == result["successes"]
