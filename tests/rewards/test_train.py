import json
import numpy as np
import pytest

import rewards
from envs.generate import Args as DataArgs
from envs.generate import generate
from rewards.train import Args, main
from rewards.video import decode_video, read_manifest


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(DataArgs(tasks=["GoToRedBall", "GoToLocal"], episodes=8, out=str(out), workers=1))
    return out


@pytest.mark.parametrize("objective", ["liv", "vlc"])
def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(dataset, tmp_path, objective):
    args = Args(data=str(dataset), out=str(tmp_path / objective), objective=objective, steps=60, batch_size=16,
                lr=1e-3, embed_dim=32, image_size=32, layers=1, heads=2, log_every=1, device="cpu")
    checkpoint = main(args)

    log = [json.loads(line) for line in (checkpoint / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(1, 61))
    losses = np.array([record["loss"] for record in log])
    assert np.isfinite(losses).all() and "val_loss" in log[-1]
    assert losses[-10:].mean() < losses[:10].mean() - 0.5  # batches are noisy: compare ten-step means

    model = rewards.load_model(str(checkpoint))
    assert json.loads((checkpoint / "config.json").read_text())["architecture"] == objective
    row = read_manifest(dataset)[0]
    score = model.score(decode_video(row["path"]), row["task"])
    assert score.values.shape == (row["num_frames"],) and np.isfinite(score.values).all()
