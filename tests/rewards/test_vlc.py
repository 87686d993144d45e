import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rewards
from rewards.checkpoint import save_checkpoint
from rewards.vlc import VideoLanguageCritic, VLCConfig, load_vlc, vlc_loss
from rewards.vlc.model import contrastive_loss, even_indices

TINY = VLCConfig(embed_dim=32, image_size=32, channels=(8, 8), layers=2, heads=2)
TASK = "go to the red ball"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    return load_vlc("tiny-vlc", save_checkpoint(VideoLanguageCritic(TINY), tmp_path_factory.mktemp("ckpt") / "tiny-vlc"))


def random_frames(n, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_even_indices_repeat_frames_of_short_prefixes():
    assert even_indices(0, 3, 4).tolist() == [0, 1, 2, 3]
    assert even_indices(0, np.arange(3), 4).tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 2]]


def test_critic_score_at_t_ignores_later_frames():
    torch.manual_seed(0)
    critic = VideoLanguageCritic(TINY).eval()
    frames, text = torch.randn(3, 12, 32), torch.randn(3, 32)
    changed = frames.clone()
    changed[:, 5:] = torch.randn(3, 7, 32)
    with torch.no_grad():
        before, after = critic(frames, text), critic(changed, text)
    assert before.shape == (3, 12)
    torch.testing.assert_close(before[:, :5], after[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_values_at_t_ignore_later_frames(tiny_model):
    frames = random_frames(20)
    changed = frames.copy()
    changed[8:] = random_frames(12, seed=1)
    before, after = tiny_model.score(frames, TASK).values, tiny_model.score(changed, TASK).values
    np.testing.assert_allclose(before[:8], after[:8], atol=1e-6)
    assert not np.allclose(before[8:], after[8:])


def test_values_are_partial_video_scores_and_rewards_subtract_the_first(tiny_model):
    frames = random_frames(7)
    score = tiny_model.score(frames, TASK)
    assert score.values.shape == score.rewards.shape == (7,)
    np.testing.assert_allclose(score.rewards, score.values - score.values[0], atol=1e-7)
    # value at t = 4: the critic's last-frame score of 12 frames spread evenly over o_0..o_4
    window = tiny_model.embed_frames(frames)[even_indices(0, 4, 12)]
    text = torch.from_numpy(tiny_model.embed_goal(TASK).vector)
    with torch.no_grad():
        expected = tiny_model.critic(window[None], text[None])[0, -1].item()
    assert score.values[4] == pytest.approx(expected, abs=1e-5)


def test_batch_equals_single_scores(tiny_model):
    videos = [random_frames(n, seed=n) for n in (3, 15, 1)] + [random_frames(4, size=32)]
    tasks = [TASK, "pick up the key", TASK, "open the door"]
    batch = tiny_model.score_batch(videos, tasks)
    for video, task, score in zip(videos, tasks, batch):
        np.testing.assert_allclose(score.values, tiny_model.score(video, task).values, atol=1e-5)


def test_precomputed_goal_embedding_gives_the_same_scores(tiny_model):
    goal = tiny_model.embed_goal(TASK)
    assert goal.kind == "text" and goal.vector.shape == (32,)
    frames = random_frames(5)
    np.testing.assert_allclose(tiny_model.score(frames, goal).values, tiny_model.score(frames, TASK).values, atol=1e-6)


@pytest.mark.parametrize("goal", ["", "   ", "x" * 600, random_frames(1)[0], random_frames(3), 3, None,
                                  rewards.GoalEmbedding("image", np.zeros(32, np.float32), "d")])
def test_bad_goals_raise_invalid_task(tiny_model, goal):
    with pytest.raises(rewards.InvalidTaskError):
        tiny_model.score(random_frames(2), goal)


def test_save_load_round_trip_gives_equal_outputs(tmp_path, tiny_model):
    directory = save_checkpoint(tiny_model.critic, tmp_path / "copy", extra={"steps": 0})
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((directory / "config.json").read_text())["architecture"] == "vlc"
    loaded = load_vlc("copy", directory)
    assert loaded.version == tiny_model.version and loaded.critic.config == TINY
    frames = random_frames(6)
    np.testing.assert_array_equal(loaded.score(frames, TASK).values, tiny_model.score(frames, TASK).values)


def test_malformed_checkpoint_raises(tmp_path, tiny_model):
    directory = save_checkpoint(tiny_model.critic, tmp_path / "ckpt")
    (directory / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(rewards.InvalidCheckpointError):
        load_vlc("ckpt", directory)


def test_contrastive_loss_worked_example():
    """Duplicate successful captions are not each other's negatives; a failure of the same task is."""
    one_caption_two_wins = torch.zeros(1, 2)
    assert contrastive_loss(one_caption_two_wins, torch.tensor([0, 0]), torch.tensor([True, True])).item() == 0
    # add a failed video of the same caption with the same score: caption -> video is log 2, video -> caption 0
    loss = contrastive_loss(torch.zeros(1, 3), torch.tensor([0, 0, 0]), torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(math.log(2) / 2)
    assert contrastive_loss(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([False, False])).item() == 0


def moving_square(direction: int, size: int = 32, length: int = 12) -> torch.Tensor:
    """pixels [length, 3, size, size]: a bright square crossing the frame (+1 right, -1 left, 0 still)."""
    pixels = torch.zeros(length, 3, size, size)
    for t in range(length):
        x = size // 2 - 4 + direction * round((t - length / 2) * (size - 8) / length)
        pixels[t, :, 12:20, x:x + 8] = 2.0
    return pixels


def test_vlc_loss_decreases_on_tiny_synthetic_videos():
    """"move right"/"move left" successes, plus failures: the square moves the wrong way or stays still."""
    torch.manual_seed(0)
    critic = VideoLanguageCritic(TINY)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    right, left = F.normalize(torch.randn(2, TINY.text_dim), dim=-1)
    videos = [(1, right, True), (-1, left, True), (-1, right, False), (1, left, False), (0, right, False)]
    pixels = torch.stack([moving_square(direction) for direction, _, _ in videos])
    features = torch.stack([caption for _, caption, _ in videos])
    success = torch.tensor([won for _, _, won in videos])
    history = []
    for _ in range(60):
        loss, metrics = vlc_loss(critic, pixels + 0.1 * torch.randn_like(pixels), features, success)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((metrics["loss"], metrics["ce"]))
    losses, ces = np.array(history).T
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() - 1.0
    assert ces[-5:].mean() < ces[:5].mean() - 0.3  # not only the ranking term: captions are told apart
    with torch.no_grad():  # the successful "move right" video ends higher than its failures
        last = critic(critic.encode_images(pixels.flatten(0, 1)).view(5, 12, -1), critic.encode_text(features))[:, -1]
    assert last[0] > max(last[2], last[4])


def test_streaming_rewards_equal_offline_rewards(tiny_model, streaming_check):
    streaming_check(tiny_model, random_frames(14, seed=7), "open the drawer", tolerance=1e-4)


def test_contrastive_loss_treats_paraphrases_of_a_task_as_one_caption():
    """Two successes worded "go to the red ball" and "walk to the red ball" (captions 0 and 1), all scores 0."""
    won, caption_of = torch.tensor([True, True]), torch.tensor([0, 1])
    one_task = torch.ones(2, 2, dtype=torch.bool)
    one_caption = contrastive_loss(torch.zeros(1, 2), torch.tensor([0, 0]), won)
    assert one_caption.item() == 0 == contrastive_loss(torch.zeros(2, 2), caption_of, won, one_task).item()
    # unmarked, each paraphrase is a negative of the other's video, in both directions
    assert contrastive_loss(torch.zeros(2, 2), caption_of, won).item() == pytest.approx(math.log(2))
    # an unrelated caption 2: scoring 0 on both videos, then 3 on video 0; only video -> caption sees it
    loss = [contrastive_loss(torch.tensor([[0.0, 0.0], [0.0, 0.0], [score, 0.0]]), caption_of, won,
                             torch.tensor([[True, True], [True, True], [False, False]])).item() for score in (0.0, 3.0)]
    assert loss[0] == pytest.approx(math.log(1.5) / 2, abs=1e-6)  # 0.2027
    assert loss[1] == pytest.approx((math.log(1 + math.exp(3) / 2) + math.log(1.5)) / 4, abs=1e-6)  # 0.7018


def test_vlc_loss_maps_same_task_onto_its_distinct_captions(monkeypatch):
    """Videos worded a, a, b, c with b a paraphrase of a: same_task [B, B] becomes [U, B] over captions a, b, c."""
    torch.manual_seed(0)
    critic = VideoLanguageCritic(TINY).eval()
    pixels = torch.rand(4, TINY.num_frames, 3, 32, 32)
    a, b, c = torch.randn(3, TINY.text_dim)
    features, success = torch.stack([a, a, b, c]), torch.tensor([True, False, True, True])
    same_task = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    by_caption = same_task & ~torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():  # task = caption: the loss without same_task
        plain, by_task = (vlc_loss(critic, pixels, features, success, marks)[1] for marks in (None, by_caption))
    assert by_task == plain
    calls = []
    monkeypatch.setattr("rewards.vlc.model.contrastive_loss", lambda *args: calls.append(args) or torch.tensor(0.0))
    vlc_loss(critic, pixels, features, success, same_task)
    _, caption_of, _, names = calls[0]
    assert names.shape == (3, 4) and torch.equal(names[caption_of], same_task)
