import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ResNetConfig, ResNetModel

import rewards
from rewards.liv import LIVConfig, LIVCritic
from rewards.checkpoint import save_checkpoint
from rewards.orca import MATCHERS, FeaturesConfig, ORCAConfig, ORCAReward, load_orca, save_orca

SHIPPED_LIV = Path(rewards.__file__).parent / "checkpoints" / "babyai-liv"


def moving_square(steps, size=32, seed=0):
    """uint8 [steps, size, size, 3]: a bright square sliding left to right over fixed noise, one step per frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(background[None], steps, axis=0)
    for t in range(steps):
        x = 2 + t * (size - 10) // max(steps - 1, 1)
        frames[t, 10:18, x:x + 8] = 255
    return frames


@pytest.fixture(scope="module")
def feature_sources(tmp_path_factory):
    """Source folders of a tiny random HF ResNet and a tiny random LIV critic."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sources")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(config).save_pretrained(root / "resnet")
    save_checkpoint(LIVCritic(LIVConfig(embed_dim=16, image_size=32, channels=(8, 8))), root / "liv")
    return {"hf_resnet": root / "resnet", "liv": root / "liv"}


@pytest.fixture(scope="module", params=["hf_resnet", "liv"])
def model(request, feature_sources, tmp_path_factory):
    config = ORCAConfig(features=FeaturesConfig(kind=request.param))
    directory = save_orca(config, tmp_path_factory.mktemp("ckpt") / f"orca-{request.param}", feature_sources[request.param])
    return load_orca(directory.name, directory)


def test_checkpoint_round_trips_and_is_self_contained(feature_sources, tmp_path):
    config = ORCAConfig(matcher="dtw", context=2, features=FeaturesConfig(kind="liv", path="encoder"))
    shutil.copytree(feature_sources["liv"], tmp_path / "source")
    directory = save_orca(config, tmp_path / "ckpt", tmp_path / "source")
    first = load_orca("a", directory)
    shutil.rmtree(tmp_path / "source")
    second = load_orca("b", directory)
    assert first.config == second.config == config and first.version == second.version
    assert isinstance(second, rewards.RewardModel)
    demo, video = moving_square(5), moving_square(7, seed=1)
    np.testing.assert_array_equal(first.score(video, demo).rewards, second.score(video, demo).rewards)


def test_time_warped_demo_beats_reversed_and_shuffled(model):
    demo = moving_square(8)
    warped = np.repeat(demo, 2, axis=0)
    shuffled = warped[np.random.default_rng(0).permutation(len(warped))]
    final = {name: model.score(video, demo).rewards[-1] for name, video in
             [("warped", warped), ("reversed", warped[::-1]), ("shuffled", shuffled)]}
    assert final["warped"] > max(final["reversed"], final["shuffled"]), final


def test_values_equal_rewards_and_batch_equals_single(model):
    demo = model.embed_goal(moving_square(6))
    videos = [moving_square(5, seed=1), moving_square(9, seed=2), moving_square(3, size=24, seed=3)]
    batch = model.score_batch(videos, [demo] * 3)
    for video, score in zip(videos, batch):
        np.testing.assert_array_equal(score.values, score.rewards)
        np.testing.assert_allclose(score.rewards, model.score(video, demo).rewards, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("context", [1, 3])
def test_streaming_equals_offline_scoring_of_each_prefix(model, context):
    streaming = ORCAReward("s", dataclasses.replace(model.config, context=context), model.features, model.version)
    demo, video = streaming.embed_goal(moving_square(6)), moving_square(8, seed=4)
    state, streamed = None, []
    for t, frame in enumerate(video):
        reward, state = streaming.score_step(frame, demo, state)
        streamed.append(reward)
        assert len(state["recent"]) == min(t + 1, context - 1)
        assert reward == pytest.approx(float(streaming.score(video[:t + 1], demo).rewards[-1]), rel=1e-5, abs=1e-7)
    if context == 1:  # nothing looks ahead, so the stream is also the offline score of the whole video
        np.testing.assert_allclose(streamed, streaming.score(video, demo).rewards, rtol=1e-5, atol=1e-7)


def test_vector_of_streams_keeps_states_apart(model, streaming_check):
    streaming_check(model, moving_square(7, seed=6), moving_square(5))


@pytest.mark.parametrize("matcher", sorted(MATCHERS))
def test_every_matcher_is_a_reward_model(model, matcher):
    baseline = ORCAReward(matcher, dataclasses.replace(model.config, matcher=matcher), model.features, model.version)
    score = baseline.score(moving_square(7, seed=5), moving_square(5))
    assert score.rewards.shape == (7,) and np.isfinite(score.rewards).all()
    if matcher != "orca":
        with pytest.raises(rewards.InvalidTaskError, match="only the 'orca' matcher streams"):
            baseline.score_step(moving_square(1)[0], moving_square(5), None)


def test_goal_embedding_holds_the_demo_features(model):
    goal = model.embed_goal(moving_square(4))
    assert goal.kind == "demo" and goal.vector.ndim == 2 and len(goal.vector) == 4


@pytest.mark.parametrize("goal, message", [
    ("slide the square right", "demo video"),
    (moving_square(1), "at least 2"),
    (moving_square(4).astype(np.float32), "uint8"),
    (moving_square(1)[0], "uint8 \\[N, H, W, 3\\]"),
    (rewards.GoalEmbedding("image", np.zeros(16, np.float32), "x"), "demo embedding"),
])
def test_bad_goals_raise_invalid_task(model, goal, message):
    with pytest.raises(rewards.InvalidTaskError, match=message):
        model.score(moving_square(3), goal)


def test_features_must_stay_inside_the_checkpoint(feature_sources, tmp_path):
    config = ORCAConfig(features=FeaturesConfig(kind="liv", path="../elsewhere"))
    with pytest.raises(rewards.InvalidCheckpointError, match="inside"):
        save_orca(config, tmp_path / "ckpt", feature_sources["liv"])


def test_shipped_liv_critic_serves_as_feature_extractor(tmp_path):
    directory = save_orca(ORCAConfig(features=FeaturesConfig(kind="liv")), tmp_path / "babyai-orca", SHIPPED_LIV)
    model = load_orca("babyai-orca", directory)
    demo = moving_square(6, size=64)
    assert model.score(np.repeat(demo, 2, axis=0), demo).rewards[-1] > model.score(demo[::-1], demo).rewards[-1]
