import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rewards
from envs.generate import Args as DataArgs
from envs.generate import generate
from rewards.train import STATE_FILE, Args, augment, main, sample_liv_batch, sample_vlc_batch
from rewards.video import decode_video, read_manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(DataArgs(tasks=["GoToRedBall", "GoToLocal"], episodes=12, out=str(out), workers=1))
    return out


def tiny(dataset, out, objective, **overrides) -> Args:
    return Args(**{"data": str(dataset), "out": str(out), "objective": objective, "steps": 60, "batch_size": 16,
                   "lr": 1e-3, "embed_dim": 32, "image_size": 32, "layers": 1, "heads": 2, "log_every": 1,
                   "eval_every": 30, "device": "cpu", **overrides})


@pytest.mark.parametrize("objective", ["liv", "vlc"])
def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(dataset, tmp_path, objective):
    checkpoint = main(tiny(dataset, tmp_path / objective, objective, augment=False))  # augmentation: test below

    log = [json.loads(line) for line in (checkpoint / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(1, 61))
    losses = np.array([record["loss"] for record in log])
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < losses[:10].mean() - 0.3  # batches are noisy: compare ten-step means
    validations = [record for record in log if "val_loss" in record]
    assert [record["step"] for record in validations] == [30, 60]
    assert all(-1 <= record["val_voc"] <= 1 and np.isfinite(record["val_loss"]) for record in validations)

    model = rewards.load_model(str(checkpoint))
    assert json.loads((checkpoint / "config.json").read_text())["architecture"] == objective
    row = read_manifest(dataset)[0]
    score = model.score(decode_video(row["path"]), row["task"])
    assert score.values.shape == (row["num_frames"],) and np.isfinite(score.values).all()


def test_resuming_gives_the_same_weights_as_one_run(dataset, tmp_path):
    straight = main(tiny(dataset, tmp_path / "straight", "liv", steps=20, eval_every=10, log_every=10))
    main(tiny(dataset, tmp_path / "split", "liv", steps=10, eval_every=10, log_every=10))
    resumed = main(tiny(dataset, tmp_path / "split", "liv", steps=20, eval_every=10, log_every=10, resume=True))

    state = torch.load(resumed / STATE_FILE, weights_only=True)
    assert state["step"] == 20
    expected, got = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


def test_resume_without_a_run_fails_clearly(dataset, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        main(tiny(dataset, tmp_path / "nothing", "liv", resume=True))


def test_augmentation_moves_every_frame_of_a_video_alike():
    generator = torch.Generator().manual_seed(0)
    frame = torch.randn(1, 1, 3, 16, 16)
    pixels = torch.cat([frame.expand(2, 3, 3, 16, 16), torch.randn(1, 3, 3, 16, 16)])  # [B=3, L=3, 3, 16, 16]
    moved = augment(pixels, generator, shift=2, jitter=0.1)
    assert moved.shape == pixels.shape and not torch.allclose(moved, pixels)
    torch.testing.assert_close(moved[0, 0], moved[0, 2])  # identical frames stay identical within a video
    torch.testing.assert_close(augment(pixels, generator, shift=0, jitter=0.0), pixels)


def test_vlc_batches_can_cut_successes_short_into_failures():
    frames = np.arange(10, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)
    videos = [{"frames": frames, "task": "go to the red ball", "success": True}]
    rng = np.random.default_rng(0)
    whole, picked = sample_vlc_batch(videos, 8, rng, num_frames=4)
    assert all(v["success"] for v in picked) and (whole[:, -1, 0, 0, 0] == 9).all()
    cut, picked = sample_vlc_batch(videos, 8, rng, num_frames=4, cut_fraction=1.0)
    assert cut.shape == whole.shape and not any(v["success"] for v in picked)
    assert (cut[:, -1, 0, 0, 0] <= 6).all() and videos[0]["success"]  # at most 70% kept; the dataset untouched


def test_liv_batches_put_failures_after_the_successes():
    def video(value, success):
        return {"frames": np.full((6, 2, 2, 3), value, np.uint8), "task": "go to the red ball", "success": success}

    wins, losses = [video(1, True), video(2, True)], [video(7, False)]
    frames, picked = sample_liv_batch(wins + losses, 4, np.random.default_rng(0), num_failures=3)
    assert frames.shape == (7, 5, 2, 2, 3) and [v["success"] for v in picked] == [True] * 4 + [False] * 3
    assert (frames[4:] == 7).all()
    # off (or nothing to draw): the successes only, drawn as without failures in the list
    alone, _ = sample_liv_batch(wins, 4, np.random.default_rng(0))
    for videos, num_failures in ((wins + losses, 0), (wins, 3)):
        np.testing.assert_array_equal(sample_liv_batch(videos, 4, np.random.default_rng(0), num_failures)[0], alone)


def test_every_objective_the_cli_offers_has_a_trainer():
    import dataclasses

    from rewards.train import OBJECTIVES, Args

    field = next(f for f in dataclasses.fields(Args) if f.name == "objective")
    assert set(field.metadata["choices"]) == set(OBJECTIVES)
