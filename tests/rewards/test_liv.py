import dataclasses

import numpy as np
import pytest
import torch

import rewards
from rewards.liv import LIVConfig, LIVCritic, liv_loss
from rewards.checkpoint import save_checkpoint
from rewards.math import value_difference_rewards

TINY = LIVConfig(embed_dim=16, image_size=32, channels=(8, 8))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    directory = save_checkpoint(LIVCritic(TINY), tmp_path_factory.mktemp("ckpt") / "tiny-liv")
    return rewards.load_model(str(directory))


def random_frames(n, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_value_difference_rewards_worked_example():
    np.testing.assert_allclose(value_difference_rewards(np.array([0.1, 0.4, 0.3, 0.9])), [0.0, 0.3, -0.1, 0.6], atol=1e-7)


def test_rewards_telescope_to_last_minus_first_value(tiny_model):
    score = tiny_model.score(random_frames(12), "go to the red ball")
    assert score.values.shape == score.rewards.shape == (12,)
    assert score.rewards[0] == 0
    assert score.episode_return == pytest.approx(score.values[-1] - score.values[0], abs=1e-5)


def test_batch_equals_single_scores(tiny_model):
    videos = [random_frames(n, seed=n) for n in (3, 7, 1)]
    tasks = ["go to the red ball", "pick up the key", "go to the red ball"]
    batch = tiny_model.score_batch(videos, tasks)
    for video, task, score in zip(videos, tasks, batch):
        np.testing.assert_allclose(score.values, tiny_model.score(video, task).values, atol=1e-5)


def test_image_goal_and_precomputed_embedding(tiny_model):
    goal = tiny_model.embed_goal(random_frames(1, seed=9)[0])
    assert goal.kind == "image" and goal.vector.shape == (16,)
    frames = random_frames(4)
    np.testing.assert_allclose(tiny_model.score(frames, goal).values,
                               tiny_model.score(frames, random_frames(1, seed=9)[0]).values, atol=1e-6)


@pytest.mark.parametrize("frames, message", [
    (np.zeros((0, 8, 8, 3), np.uint8), "non-empty"),
    (np.zeros((2, 8, 8), np.uint8), "shape"),
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
])
def test_bad_frames_raise_invalid_video(tiny_model, frames, message):
    with pytest.raises(rewards.InvalidVideoError, match=message):
        tiny_model.score(frames, "go to the red ball")


@pytest.mark.parametrize("goal", ["", "   ", "x" * 600, np.zeros((4, 4), np.uint8), 3])
def test_bad_goals_raise_invalid_task(tiny_model, goal):
    with pytest.raises(rewards.InvalidTaskError):
        tiny_model.score(random_frames(2), goal)


def test_unknown_model_lists_shipped_names():
    with pytest.raises(rewards.UnknownModelError, match="babyai-liv"):
        rewards.load_model("no-such-model")


def test_model_root_confines_paths(tmp_path, tiny_model):
    outside = save_checkpoint(LIVCritic(TINY), tmp_path / "outside")
    with pytest.raises(rewards.InvalidCheckpointError, match="outside the model root"):
        rewards.load_model(str(outside), model_root=tmp_path / "root")
    (tmp_path / "root").mkdir()
    inside = save_checkpoint(LIVCritic(TINY), tmp_path / "root" / "mine")
    assert rewards.load_model("mine", model_root=tmp_path / "root").name == inside.name


def test_checkpoint_is_weights_only(tmp_path):
    directory = save_checkpoint(LIVCritic(TINY), tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    (directory / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(rewards.InvalidCheckpointError):
        rewards.load_model(str(directory))


def test_liv_loss_decreases_on_tiny_synthetic_videos():
    """Videos where a bright square moves towards the corner named by the caption."""
    torch.manual_seed(0)
    critic = LIVCritic(TINY)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    pixels = torch.rand(8, 5, 3, 32, 32)
    pixels[:, 1, :, :8, :8] += 2.0  # goal and end frames share a bright corner
    pixels[:, 4, :, :8, :8] += 2.0
    features = torch.nn.functional.normalize(torch.randn(8, TINY.text_dim), dim=-1)
    losses = []
    for _ in range(60):
        loss, _ = liv_loss(critic, pixels, features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1


def test_shipped_models_satisfy_protocol():
    for name in rewards.list_models():
        model = rewards.load_model(name)
        assert isinstance(model, rewards.RewardModel) and model.name == name


def test_vip_extra_negatives_add_a_term_per_negative():
    from rewards.liv.model import vip_loss

    torch.manual_seed(0)
    e_start, e_t, e_next, goal = torch.randn(4, 6, 8).unbind(0)
    plain = vip_loss(e_start, e_t, e_next, goal, 0.98)
    # a batch of identical transitions: shuffling changes nothing, so each negative adds the same TD term
    same = [x[:1].expand(6, 8) for x in (e_start, e_t, e_next)]
    one, three = (vip_loss(*same, goal, 0.98, n) for n in (1, 3))
    base = vip_loss(*same, goal, 0.98)
    assert torch.isfinite(plain) and (three - base) == pytest.approx(3 * (one - base).item(), rel=1e-5)


def test_streaming_rewards_equal_offline_rewards(tiny_model, streaming_check):
    video = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    streaming_check(tiny_model, video, "go to the red ball")
    streaming_check(tiny_model, video, video[-1])  # an image goal streams the same way


@pytest.mark.parametrize("state", [{}, {"value": np.zeros(2, np.float32)}, {"value": np.array([np.nan], np.float32)},
                                   {"value": np.array(["x"])}])
def test_malformed_stream_state_is_rejected(tiny_model, state):
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(rewards.InvalidStateError, match="value"):
        tiny_model.score_step(frame, "go to the red ball", state)


def test_learned_temperature_sharpens_info_nce_and_round_trips(tmp_path):
    from rewards.liv.model import info_nce

    torch.manual_seed(0)
    text = torch.randn(8, 16)
    images = text + 0.3 * torch.randn(8, 16)  # each image nearest its own caption
    raw = info_nce(images, text)
    assert raw > np.log(8) - 1  # raw cosines in [-1, 1] cannot get far below log B
    assert info_nce(images, text, torch.tensor(np.log(1 / 0.07))) < 0.2 * raw
    config = dataclasses.replace(TINY, learn_temperature=True)
    critic = LIVCritic(config)
    with torch.no_grad():
        critic.logit_scale.fill_(3.0)
    loaded = rewards.load_model(str(save_checkpoint(critic, tmp_path / "ckpt")))
    _, metrics = liv_loss(loaded.critic, torch.rand(4, 5, 3, 32, 32), torch.randn(4, config.text_dim))
    assert metrics["temperature"] == pytest.approx(np.exp(-3.0), rel=1e-5)


def test_a_streamed_task_sentence_is_embedded_once(tiny_model, monkeypatch):
    calls = []
    encoder = tiny_model.sentence_encoder
    monkeypatch.setattr(tiny_model, "sentence_encoder", lambda texts: calls.append(texts) or encoder(texts))
    state = None
    for frame in random_frames(4, seed=3):
        _, state = tiny_model.score_step(frame, "open the door", state)
    tiny_model.score_batch([random_frames(3, seed=4)] * 2, ["open the door", "close the door"])
    assert calls == [["open the door"], ["close the door"]]


def test_info_nce_shares_the_positive_among_videos_of_one_task():
    from rewards.liv.model import info_nce

    text = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    captions = text[[0, 0, 1, 1]]  # four videos of two tasks, each image at its caption
    same_task = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    scale = torch.tensor(np.log(100.0))
    assert info_nce(captions, captions, scale) == pytest.approx(np.log(2), abs=0.05)  # a twin caption as negative
    assert info_nce(captions, captions, scale, same_task) == pytest.approx(0.0, abs=0.05)


def test_info_nce_failure_end_frames_are_negatives_for_every_caption():
    """Two captions at orthonormal e0, e1 with each success's end frame on its caption (raw cosines)."""
    from rewards.liv.model import info_nce

    e = torch.eye(3, 16)
    plain = info_nce(e[:2], e[:2])
    assert plain.item() == pytest.approx(np.log(1 + 1 / np.e), abs=1e-6)  # 0.3133, each direction alike
    assert torch.equal(info_nce(e[:2], e[:2], negatives=torch.zeros(0, 16)), plain)  # no failures: today's loss
    # caption -> image gains a candidate at cosine 0 (orthogonal) or 1 (the failure ends where caption 0 points)
    orthogonal, on_caption = (info_nce(e[:2], e[:2], negatives=e[[k]]) for k in (2, 0))
    assert orthogonal.item() == pytest.approx((np.log(1 + 2 / np.e) + np.log(1 + 1 / np.e)) / 2, abs=1e-6)  # 0.4324
    assert on_caption.item() == pytest.approx(
        ((np.log(2 + 1 / np.e) + np.log(1 + 2 / np.e)) / 2 + np.log(1 + 1 / np.e)) / 2, abs=1e-6)  # 0.5100
    assert plain < orthogonal < on_caption


def test_liv_loss_failures_only_add_info_nce_negatives():
    torch.manual_seed(0)
    critic = LIVCritic(TINY)
    pixels, features = torch.rand(5, 5, 3, 32, 32), torch.randn(5, TINY.text_dim)
    same_task = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 0, 1, 0], [0, 0, 1, 0, 1], [1, 1, 0, 1, 0], [0, 0, 1, 0, 1]],
                             dtype=torch.bool)
    success = torch.tensor([True, True, True, False, False])
    with torch.no_grad():
        total, _ = liv_loss(critic, pixels, features, same_task)
        assert torch.equal(liv_loss(critic, pixels, features, same_task, torch.ones(5, dtype=torch.bool))[0], total)
        _, mixed = liv_loss(critic, pixels, features, same_task, success)
        _, wins_only = liv_loss(critic, pixels[:3], features[:3], same_task[:3, :3])
    for term in ("vip_image", "vip_text"):  # the VIP terms see the successes only
        assert mixed[term] == pytest.approx(wins_only[term], abs=1e-5)
    assert mixed["info_nce"] > wins_only["info_nce"] + 1e-3  # two more candidates for every caption
