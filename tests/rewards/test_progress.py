"""The frozen pretrained tower, the feature cache and the progress critic (rewards/progress)."""

import json
import shutil
import socket

import numpy as np
import pytest
import torch

import rewards
from envs.generate import Args as DataArgs
from envs.generate import generate
from rewards.backbones import EfficientNetTower, backbone_spec, load_backbone
from rewards.checkpoint import save_checkpoint
from rewards.evaluate import task_key
from rewards.feature_cache import cache_dir, dataset_features
from rewards.metrics import value_order_correlation
from rewards.preprocess import preprocess_frames, rescale_frames
from rewards.progress import ProgressConfig, ProgressHead, progress_loss
from rewards.progress.train import ProgressBatches, progress_targets
from rewards.train import Args, main
from rewards.video import decode_video, read_manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(DataArgs(tasks=["GoToRedBall", "GoToLocal"], episodes=8, out=str(out), workers=1))
    return out


@pytest.fixture(scope="module")
def tiny_progress(tmp_path_factory):
    """A random head on the real tower at 64 px (2x2 feature maps), loaded through the registry."""
    torch.manual_seed(0)
    tower = load_backbone("efficientnet-lite0-s16")
    head = ProgressHead(ProgressConfig(backbone_digest=tower.digest, image_size=64, hidden=16))
    return rewards.load_model(str(save_checkpoint(head, tmp_path_factory.mktemp("ckpt") / "tiny-progress")))


def test_the_tower_loads_offline_from_the_installed_package(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a socket was opened while loading the tower")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tower = EfficientNetTower(backbone_spec("efficientnet-lite0"))  # not the cached one: really load it here
    tower.train()  # frozen: stays in eval mode, batch norm keeps ImageNet statistics
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())
    assert tower(torch.zeros(2, 3, 128, 128)).shape == (2, 1280, 4, 4)
    assert len(tower.digest) == 12


class CountingTower:
    """Stands in for a tower: records how many frames it encodes; its features are the frames' mean colour."""

    def __init__(self, digest):
        self.spec, self.digest, self.frames = load_backbone("efficientnet-lite0").spec, digest, 0

    def __call__(self, pixels):
        self.frames += len(pixels)
        return pixels.mean(dim=(2, 3), keepdim=True)


def test_the_feature_cache_is_hit_on_a_second_run_and_missed_for_other_weights(dataset):
    rows = read_manifest(dataset)
    first = CountingTower("aaaaaaaaaaaa")
    features = dataset_features(dataset, rows, first, 32, progress=False)
    assert first.frames == sum(row["num_frames"] for row in rows)
    assert [f.shape for f in features] == [(row["num_frames"], 3, 1, 1) for row in rows]
    assert features[0].dtype == np.float16

    again = CountingTower("aaaaaaaaaaaa")
    np.testing.assert_array_equal(dataset_features(dataset, rows, again, 32, progress=False)[3], features[3])
    assert again.frames == 0
    other = CountingTower("bbbbbbbbbbbb")
    dataset_features(dataset, rows, other, 32, progress=False)
    assert other.frames == first.frames and cache_dir(dataset, other, 32) != cache_dir(dataset, first, 32)


def test_features_of_a_dataset_named_by_a_relative_path(dataset, monkeypatch):
    """`vlreward train --data data/babyai-64`, as the README has it: the videos are found once, not under the
    dataset folder twice."""
    monkeypatch.chdir(dataset.parent)
    rows = read_manifest(dataset.name)
    features = dataset_features(dataset.name, rows, CountingTower("cccccccccccc"), 32, progress=False)
    assert [len(f) for f in features] == [row["num_frames"] for row in rows]


def test_progress_targets_worked_examples():
    np.testing.assert_allclose(progress_targets({"success": True}, 5), [0, 0.25, 0.5, 0.75, 1])
    warped = {"success": True, "source_frames": [0, 0, 1, 2, 2]}  # a pause holds its progress
    np.testing.assert_allclose(progress_targets(warped, 5), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(progress_targets({"success": False, "progress": [0, 0.2, 0.1]}, 3), [0, 0.2, 0.1])
    # a done margin: the completing step pays at least m, a failure never gets above 1 - m
    np.testing.assert_allclose(progress_targets({"success": True}, 5, done_margin=0.5), [0, 0.125, 0.25, 0.375, 1])
    np.testing.assert_allclose(progress_targets(warped, 5, done_margin=0.5), [0, 0, 0.25, 1, 1])
    np.testing.assert_allclose(progress_targets({"success": False, "progress": [0, 1.0]}, 2, done_margin=0.5), [0, 0.5])
    assert progress_targets({"success": False, "progress": None}, 3) is None
    rollout = {"success": True, "kind": "rollout", "progress": [0, 0.3, 0.1, 1.0]}  # a policy's: time is not progress
    np.testing.assert_allclose(progress_targets(rollout, 4), [0, 0.3, 0.1, 1.0])


def toy_split(num_videos=40, length=6, seed=0):
    """Two tasks; a video of task k brightens feature channel k over time (a failure only halfway)."""
    rng = np.random.default_rng(seed)
    rows, features = [], []
    for i in range(num_videos):
        task, success = i % 2, i % 4 < 2
        ramp = np.linspace(0, 1 if success else 0.5, length)
        video = rng.normal(0, 0.05, (length, 4, 1, 1)).astype(np.float16)
        video[:, task, 0, 0] += ramp
        rows.append({"task": f"task {task}", "success": success, "env": "toy", "env_task": f"task {task}",
                     "progress": None if success else (ramp * 1.0).tolist(), "paraphrases": []})
        features.append(video)
    sentences = {f"task {k}": torch.from_numpy(np.eye(8, dtype=np.float32)[k]) for k in range(2)}
    tasks = {task_key(row): [row["task"]] for row in rows[:2]}
    return rows, features, sentences, tasks


def test_batches_hold_what_each_kind_promises():
    rows, features, sentences, tasks = toy_split()
    rng = np.random.default_rng(0)
    start, now, sentence, target = ProgressBatches(rows, features, sentences, (0, 1, 0), tasks).draw(64, rng, "cpu")
    assert (target == 0).all()  # mismatched: every sentence names the other task than the video's
    video_task = now[:, :2, 0, 0].argmax(1) * (now[:, :2, 0, 0].max(1).values > 0.3)
    assert all(sentence[i, int(video_task[i])] == 0 for i in range(64) if now[i, :2, 0, 0].max() > 0.3)
    start, now, sentence, target = ProgressBatches(rows, features, sentences, (0, 0, 1), tasks).draw(64, rng, "cpu")
    assert (target == 0).all() and (start[:, :2, 0, 0].max(1).values > 0.8).all()  # rewound: starts at the end
    start, now, sentence, target = ProgressBatches(rows, features, sentences, (1, 0, 0), tasks).draw(64, rng, "cpu")
    assert (start[:, :2, 0, 0].abs().max(1).values < 0.3).all() and target.max() == 1


def test_performed_examples_pay_a_hard_negative_the_task_it_did_by_time():
    """Another task's expert in this task's scene: with the sentence of what it performed, its frames are labelled
    like a success's (time along the recording); a dataset without hard negatives refuses the kind."""
    rows, features, sentences, tasks = toy_split()
    with pytest.raises(ValueError, match="hard negatives"):
        ProgressBatches(rows, features, sentences, (0, 0, 0, 1), tasks)
    rows[2] = {**rows[2], "performed": "task 1"}  # a failure of task 0 whose video did task 1
    batches = ProgressBatches(rows, features, sentences, (0, 0, 0, 1), tasks)
    start, now, sentence, target = batches.draw(64, np.random.default_rng(0), "cpu")
    assert (sentence == sentences["task 1"]).all() and (start == torch.from_numpy(features[2][:1]).float()).all()
    frame_index = [int(np.argmin([float((now[k] - torch.from_numpy(f).float()).abs().sum()) for f in features[2]]))
                   for k in range(64)]
    np.testing.assert_allclose(target.numpy(), np.array(frame_index) / 5, atol=1e-6)
    assert len(batches.shares) == 4 and ProgressBatches(rows, features, sentences, (1, 0, 0), tasks).shares[3] == 0


def test_ranking_pairs_are_in_time_order_and_the_term_orders_frames():
    rows, features, sentences, tasks = toy_split()
    batches = ProgressBatches(rows, features, sentences, (1, 0, 0), tasks)
    rng = np.random.default_rng(0)
    start, earlier, later, sentence = batches.draw_pairs(64, rng, "cpu")
    assert (later[:, :2].sum(dim=(1, 2, 3)) > earlier[:, :2].sum(dim=(1, 2, 3))).float().mean() > 0.8  # the ramp
    torch.manual_seed(0)
    head = ProgressHead(ProgressConfig(feature_channels=4, hidden=8, conv_layers=1, text_dim=8))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    history = []
    for _ in range(60):
        loss, metrics = progress_loss(head, *batches.draw(8, rng, "cpu"), pairs=batches.draw_pairs(64, rng, "cpu"),
                                      rank_weight=10.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics)
    assert np.mean([m["rank"] for m in history[-10:]]) < np.mean([m["rank"] for m in history[:10]])
    assert np.mean([m["ordered"] for m in history[-10:]]) > 0.9


def test_a_tiny_head_learns_progress_and_ranks_its_own_task_first():
    rows, features, sentences, tasks = toy_split()
    batches = ProgressBatches(rows, features, sentences, (0.6, 0.25, 0.15), tasks)
    torch.manual_seed(0)
    head = ProgressHead(ProgressConfig(feature_channels=4, hidden=32, conv_layers=1, text_dim=8))
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(300):
        loss, metrics = progress_loss(head, *batches.draw(64, rng, "cpu"), pairs=batches.draw_pairs(32, rng, "cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(metrics["loss"])
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1

    held_rows, held_features, _, _ = toy_split(seed=1)
    with torch.no_grad():
        for row, video in zip(held_rows, held_features):
            frames = torch.from_numpy(video).float()

            def values(task):
                return head(frames[:1].expand_as(frames), frames, sentences[task].expand(len(frames), -1)).sigmoid()

            own, other = values(row["task"]), values("task 1" if row["task"] == "task 0" else "task 0")
            if row["success"]:
                assert value_order_correlation(own.numpy()) > 0.9
                assert own[-1] - own[0] > other[-1] - other[0] + 0.3  # own task beats the other one
                assert own[-1] > 0.7
            else:
                assert own[-1] < 0.8


def test_scores_stream_and_telescope_on_the_real_tower(tiny_progress):
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    score = tiny_progress.score(frames, "go to the red ball")
    assert score.values.shape == (5,) and ((0 <= score.values) & (score.values <= 1)).all()
    assert score.episode_return == pytest.approx(score.values[-1] - score.values[0], abs=1e-5)
    batch = tiny_progress.score_batch([frames, frames[:2]], ["go to the red ball", "open the door"])
    np.testing.assert_allclose(batch[0].values, score.values, atol=1e-5)
    state, streamed = None, []
    for frame in frames:
        reward, state = tiny_progress.score_step(frame, "go to the red ball", state)
        streamed.append(reward)
    np.testing.assert_allclose(streamed, score.rewards, atol=1e-5)
    with pytest.raises(rewards.InvalidTaskError):
        tiny_progress.score(frames, frames[0])


def test_a_head_trained_on_other_tower_weights_refuses_to_load(tmp_path):
    head = ProgressHead(ProgressConfig(backbone_digest="000000000000", image_size=64, hidden=8))
    with pytest.raises(rewards.InvalidCheckpointError, match="weights"):
        rewards.load_model(str(save_checkpoint(head, tmp_path / "stale")))


def test_vlreward_train_progress_writes_a_loadable_critic(dataset, tmp_path):
    out = main(Args(data=str(dataset), out=str(tmp_path / "progress"), objective="progress", steps=30,
                    batch_size=32, lr=1e-3, embed_dim=32, image_size=64, eval_every=15, log_every=5))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    validations = [r for r in log if "val_score" in r]
    assert [r["step"] for r in validations] == [15, 30] and all(-1 <= r["val_voc"] <= 1 for r in validations)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "progress" and config["trained_with"] is not None
    row = read_manifest(dataset)[0]
    score = rewards.load_model(str(out)).score(decode_video(row["path"]), row["task"])
    assert score.values.shape == (row["num_frames"],) and np.isfinite(score.values).all()


def test_training_at_two_frame_sizes_caches_both_and_records_them(dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data, ignore=shutil.ignore_patterns("features"))  # other tests cache other towers
    out = main(Args(data=str(data), out=str(tmp_path / "progress"), objective="progress", steps=4, batch_size=8,
                    embed_dim=8, image_size=64, backbone="patches-8", eval_every=2, frame_scales=[1.0, 0.5]))
    assert json.loads((out / "config.json").read_text())["frame_scales"] == [1.0, 0.5]
    tuned = main(Args(data=str(data), out=str(tmp_path / "tuned"), objective="progress", steps=1, batch_size=8,
                      embed_dim=8, image_size=64, backbone="patches-8", eval_every=1, lr=0.0, init=str(out)))
    assert (tuned / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()  # lr 0: the init
    with pytest.raises(ValueError, match="--embed-dim"):
        main(Args(data=str(data), out=str(tmp_path / "bad"), objective="progress", steps=1, embed_dim=16,
                  image_size=64, backbone="patches-8", init=str(out)))
    caches = sorted(path.name for path in (data / "features").iterdir())
    assert caches == ["patches-8-patches-8-64", "patches-8-patches-8-64-x0.5"]
    assert len(list((data / "features" / caches[1]).glob("*.npy"))) == len(read_manifest(data))


def test_rescaled_frames_are_what_a_smaller_render_delivers():
    frame = np.zeros((1, 64, 64, 3), np.uint8)
    frame[0, :32] = 255  # a white top half
    half = rescale_frames(frame, 0.5)
    assert half.shape == (1, 32, 32, 3) and half.dtype == np.uint8
    assert (half[0, :15] == 255).all() and (half[0, 17:] == 0).all()
    assert rescale_frames(frame, 1.0) is frame
    # back at the critic's input size, the half-size frame preprocesses close to the full one
    full, small = (preprocess_frames(f, 64, (0.5,) * 3, (0.25,) * 3) for f in (frame, half))
    assert (full - small).abs().mean() < 0.1


def test_the_patch_tower_turns_each_patch_into_one_cell():
    tower = load_backbone("patches-8")
    pixels = torch.zeros(1, 3, 64, 64)
    pixels[0, 0, 8:16, 24:32] = 1.0  # red in grid cell (row 1, column 3)
    cells = tower(pixels)
    assert cells.shape == (1, 192, 8, 8) and tower.digest == "patches-8"
    assert cells[0, :64].sum(0).nonzero().tolist() == [[1, 3]]  # the red channel's 64 pixels of that patch
    assert not list(tower.parameters())


def test_one_task_whose_failures_performed_other_tasks_trains_without_mismatched_examples(tmp_path):
    """A single-level dataset (KeyCorridorS3R1's "pick up the ball") has no second task to mismatch, and its
    other-task failures performed sentences no row has as its task: validation scores them too."""
    data = tmp_path / "data"
    generate(DataArgs(tasks=["KeyCorridorS3R1"], episodes=8, out=str(data), workers=1, failure_fraction=0.5,
                      failures=["other_task"]))
    performed = {row.get("performed") for row in read_manifest(data)} - {None}
    assert performed - {row["task"] for row in read_manifest(data)}  # sentences that are nobody's task
    out = main(Args(data=str(data), out=str(tmp_path / "progress"), objective="progress", steps=4, batch_size=8,
                    embed_dim=8, image_size=64, backbone="patches-8", eval_every=2, progress_shares=[0.85, 0, 0.15]))
    assert (out / "model.safetensors").is_file()


def test_distillation_lowers_the_students_error_against_a_toy_teacher():
    """A toy teacher that contradicts the labels (its value falls as the task's channel rises): the head distilled
    on its values ends near it, and nearer than a head trained on the labels."""
    rows, features, sentences, tasks = toy_split()
    taught = [1.0 - np.clip(video[:, :2, 0, 0].astype(np.float32).max(1), 0, 1) for video in features]

    def error(head):
        with torch.no_grad():
            return np.mean([np.mean((head(torch.from_numpy(v[:1]).float().expand(len(v), -1, -1, -1),
                                          torch.from_numpy(v).float(), sentences[r["task"]].expand(len(v), -1))
                                     .sigmoid().numpy() - t) ** 2) for r, v, t in zip(rows, features, taught)])

    def trained(own_targets):
        batches = ProgressBatches(rows, features, sentences, (1, 0, 0), tasks, own_targets=own_targets)
        torch.manual_seed(0)
        head = ProgressHead(ProgressConfig(feature_channels=4, hidden=16, conv_layers=1, text_dim=8))
        optimizer, rng = torch.optim.Adam(head.parameters(), lr=3e-3), np.random.default_rng(0)
        untrained = error(head)
        for _ in range(200):
            loss, _ = progress_loss(head, *batches.draw(32, rng, "cpu"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return untrained, error(head)

    untrained, distilled = trained(taught)
    _, on_labels = trained(None)
    assert distilled < 0.02 < untrained / 3 and distilled < on_labels / 5


def test_vlreward_train_distill_caches_the_teachers_values_and_names_it(dataset, tmp_path, monkeypatch):
    from rewards.progress.train import teacher_values

    with pytest.raises(ValueError, match="--teacher"):
        main(Args(data=str(dataset), out=str(tmp_path / "none"), objective="distill"))
    torch.manual_seed(0)
    teacher_dir = save_checkpoint(ProgressHead(ProgressConfig(backbone="patches-8", backbone_digest="patches-8",
                                                              image_size=64, feature_channels=192, hidden=8)),
                                  tmp_path / "teacher")
    out = main(Args(data=str(dataset), out=str(tmp_path / "student"), objective="distill", teacher=str(teacher_dir),
                    backbone="patches-8", steps=4, batch_size=8, embed_dim=8, image_size=64, eval_every=2))
    assert json.loads((out / "config.json").read_text())["teacher"] == str(teacher_dir)
    teacher = rewards.load_model(str(teacher_dir))
    rows = [row for row in read_manifest(dataset) if row.get("split", "train") == "train"]  # what training scored
    expected = teacher.score(decode_video(rows[0]["path"]), rows[0]["task"]).values
    monkeypatch.setattr(type(teacher), "score", lambda *a: pytest.fail("cached values must not be scored again"))
    values = teacher_values(dataset, rows, teacher)
    assert [len(v) for v in values] == [row["num_frames"] for row in rows]
    np.testing.assert_allclose(values[0], expected, atol=1e-6)
