"""The shared sentence encoder: one per device, never moved by a caller."""

import torch

import rewards
from rewards.text import shared_minilm


def test_one_encoder_per_device_and_another_device_leaves_the_first_alone():
    cpu = shared_minilm("cpu")
    before = cpu(["go to the red ball"])
    other = shared_minilm("meta")  # a second device (no memory): what a GPU replica beside a CPU one would do
    assert other is not cpu and shared_minilm("cpu") is cpu
    assert next(other.model.parameters()).device.type == "meta"
    assert next(cpu.model.parameters()).device.type == "cpu"
    torch.testing.assert_close(cpu(["go to the red ball"]), before)


def test_a_loaded_critic_uses_the_encoder_of_its_device():
    model = rewards.load_model("babyai-liv", device="cpu")
    assert model.sentence_encoder is shared_minilm("cpu")


def test_loading_the_encoder_prints_no_progress_bar_and_leaves_transformers_setting(capfd):
    """Every CLI call used to print transformers' "Loading weights" bar for a load of milliseconds."""
    from transformers.utils import logging

    from rewards.text import SentenceEncoder, minilm_path

    for shown in (True, False):
        (logging.enable_progress_bar if shown else logging.disable_progress_bar)()
        SentenceEncoder(minilm_path())
        assert logging.is_progress_bar_enabled() == shown
    logging.enable_progress_bar()
    assert "Loading weights" not in capfd.readouterr().err
