"""RewardService without Ray: the plain object every ModelServer replica delegates to (style rule 8)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import rewards
from rewards import GoalEmbedding, InvalidTaskError
from rewards.orca.reward import ORCAReward
from rewards.base import Score
from serve.schemas import ScoreResponse
from serve.service import RewardService

TASK = "go to the red ball"


@pytest.fixture(scope="module")
def liv():
    return rewards.load_model("babyai-liv")


@pytest.fixture(scope="module")
def orca():
    return rewards.load_model("babyai-orca")


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)


def test_the_service_module_needs_no_ray():
    code = "import serve.service, sys; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_names_the_model_and_its_weights_digest(liv):
    info = RewardService(liv).info()
    assert (info.name, info.kind, info.goal_kinds, info.version) == ("babyai-liv", "LIVReward", ["text", "image"],
                                                                     liv.version)
    assert info.streams and info.segments


def test_an_orca_matcher_that_refuses_to_stream_is_not_reported_as_streaming(orca):
    """The bug: /v1/models said streams: true for every ORCA-family model, also those whose matcher refuses."""
    assert RewardService(orca).info().streams and not RewardService(orca).info().segments  # ORCA aligns whole videos
    for matcher in ("ot", "temporal_ot", "dtw", "threshold"):
        model = ORCAReward(f"orca-{matcher}", dataclasses.replace(orca.config, matcher=matcher), orca.features,
                           orca.version)
        service = RewardService(model)
        assert not service.info().streams, matcher
        demo = frames(4, 1)
        assert len(service.score_many([frames(5)], [demo])[0].values) == 5  # it still scores whole trajectories
        with pytest.raises(InvalidTaskError, match="does not score step by step"):
            service.step_many([(frames(1), [demo], [None])])


def test_score_many_answers_each_trajectory_with_its_own_score(liv):
    service = RewardService(liv)
    trajectories, goals = [frames(3, 1), frames(7, 2)], [TASK, "pick up the blue key"]
    scores = service.score_many(trajectories, goals)
    for score, trajectory, goal in zip(scores, trajectories, goals):
        expected = liv.score(trajectory, goal)
        assert isinstance(score, Score) and len(score.values) == len(trajectory)
        np.testing.assert_allclose(score.values, expected.values, atol=1e-5)
        np.testing.assert_allclose(score.rewards, expected.rewards, atol=1e-5)


def test_the_wire_form_of_a_score_names_the_model_and_its_weights(liv):
    score = RewardService(liv).score_many([frames(4, 1)], [TASK])[0]
    response = ScoreResponse.of(liv, score)
    assert (response.model, response.version, response.num_frames) == ("babyai-liv", liv.version, 4)
    assert response.episode_return == pytest.approx(float(score.rewards.sum()), abs=1e-4)
    assert {"version", "return"} <= set(response.model_dump(by_alias=True))


def test_goals_are_embedded_once_and_the_cache_is_bounded_lru(liv):
    lookups = []
    service = RewardService(liv, goal_cache_size=2, on_goal_lookup=lookups.append)
    first = service.embed_goal(TASK)
    assert service.embed_goal(TASK) is first
    service.embed_goal("b")
    service.embed_goal(TASK)  # refreshes TASK: "b" is now the oldest
    service.embed_goal("c")  # evicts "b"
    assert service.embed_goal(TASK) is first
    assert (service.cache_hits, service.cache_misses) == (3, 3) and lookups == [False, True, False, True, False, True]
    service.embed_goal("b")
    assert service.cache_misses == 4
    embedding = GoalEmbedding("text", first.vector, "given")
    assert service.embed_goal(embedding) is embedding  # an embedding passes through, not cached
    assert service.cache_misses == 4


def test_a_goal_of_a_kind_the_model_does_not_take_is_refused(liv, orca):
    with pytest.raises(InvalidTaskError, match="takes demo goals, not text"):
        RewardService(orca).embed_goal(TASK)
    with pytest.raises(InvalidTaskError, match="not demo"):
        RewardService(liv).embed_goal(frames(4))


def test_embed_returns_the_cached_vector(liv):
    service = RewardService(liv)
    response = service.embed(TASK)
    assert response.kind == "text" and response.model == "babyai-liv"
    np.testing.assert_allclose(response.vector, liv.embed_goal(TASK).vector, atol=1e-6)


def test_step_many_splits_one_model_call_back_into_each_request(orca):
    service = RewardService(orca)
    demo = frames(4, 3)
    items = [(frames(2, 4), [demo, demo], [None, None]), (frames(1, 5), [demo], [None])]
    results = service.step_many(items)
    assert [len(rewards_) for rewards_, _ in results] == [2, 1]
    alone, _ = orca.score_steps(frames(1, 5), [demo], [None])
    np.testing.assert_allclose(results[1][0], alone, atol=1e-6)
    assert all(len(states) == len(item[0]) for (_, states), item in zip(results, items))
