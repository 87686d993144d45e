"""CLIP reward models, with tiny random weights saved in the real on-disk formats and loaded back by the real loaders."""

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rewards
from rewards.clip import (
    CLIPGoalBaselineReward,
    GoalBaselineConfig,
    LIVCLIPConfig,
    OpenAICLIP,
    OpenAICLIPConfig,
    load_clip_goal_baseline,
    load_liv_openai,
    save_clip_goal_baseline,
    write_config,
)
from rewards.clip.openai_model import CLIP_MEAN, CLIP_STD
from rewards.preprocess import preprocess_frames

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MERGES = ["t h", "th e</w>", "r e", "o p", "op e"]
VOCAB = [*LETTERS, *(c + "</w>" for c in LETTERS), *("".join(m.split()) for m in MERGES), "<|startoftext|>", "<|endoftext|>"]
START, END = len(VOCAB) - 2, len(VOCAB) - 1  # OpenAI's layout: <end> has the highest id
TINY_RN = OpenAICLIPConfig(embed_dim=16, image_size=64, vision_layers=(1, 2, 1, 1), vision_width=8,
                           context_length=16, vocab_size=len(VOCAB), text_width=64, text_layers=1)


def write_bpe(directory):
    """A CLIP BPE tokenizer folder in HF's format (vocab.json + merges.txt), lower-case letters only."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return directory


def random_frames(n, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# --- VLM-RM goal-baseline reward on a tiny HF CLIP -------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=START, eos_token_id=END,
                         pad_token_id=END),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(write_bpe(tmp_path_factory.mktemp("bpe"))), local_files_only=True)
    reward_config = GoalBaselineConfig(baseline_prompts=("a robot", "the robot"), alpha=0.5)
    return save_clip_goal_baseline(tmp_path_factory.mktemp("ckpt") / "tiny-vlmrm", reward_config, CLIPModel(config), tokenizer)


@pytest.fixture(scope="module")
def goal_baseline(hf_checkpoint):
    return load_clip_goal_baseline("tiny-vlmrm", hf_checkpoint)


def test_goal_baseline_matches_the_formula_in_numpy(hf_checkpoint, goal_baseline):
    """Embeddings straight from the saved HF model, then R = 1 − ½‖(x − t)P‖² with P built as a matrix."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(hf_checkpoint / "clip"), local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(hf_checkpoint / "clip"), local_files_only=True)

    def unit_text(prompts):
        with torch.no_grad():
            features = model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt")).pooler_output
        features = features.numpy().astype(np.float64)
        return features / np.linalg.norm(features, axis=-1, keepdims=True)

    frames = random_frames(5)
    with torch.no_grad():
        pixels = preprocess_frames(frames, 32, CLIP_MEAN, CLIP_STD, "bicubic")
        x = model.get_image_features(pixel_values=pixels).pooler_output.numpy().astype(np.float64)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    t = unit_text(["pick up the red ball", "the red ball"]).mean(0)
    b = unit_text(["a robot", "the robot"]).mean(0)
    d = (t - b)[:, None]
    alpha = 0.5
    projection = alpha * (d @ d.T) / (d.T @ d) + (1 - alpha) * np.eye(len(d))
    expected = 1 - 0.5 * np.linalg.norm((x - t) @ projection, axis=-1) ** 2

    score = goal_baseline.score(frames, "pick up the red ball | the red ball")
    np.testing.assert_allclose(score.values, expected, atol=1e-5)
    np.testing.assert_array_equal(score.rewards, score.values)  # VLM-RM rewards each state by R itself


def test_alpha_zero_is_half_squared_distance_to_the_target(goal_baseline):
    plain = CLIPGoalBaselineReward("plain", goal_baseline.backbone, dataclasses.replace(goal_baseline.config, alpha=0.0),
                                   version="test")
    frames = random_frames(4, seed=1)
    x = F.normalize(plain.embed_frames(frames), dim=-1).numpy()
    t = plain.embed_goal("open the red door").vector
    np.testing.assert_allclose(plain.score(frames, "open the red door").values,
                               1 - 0.5 * ((x - t) ** 2).sum(-1), atol=1e-6)


def test_goal_baseline_batch_equals_single_scores_and_cached_goals(goal_baseline):
    videos = [random_frames(n, seed=n) for n in (3, 1, 2)]
    goals = ["go to the red ball", goal_baseline.embed_goal("open the door"), "open the door"]
    for video, goal, score in zip(videos, goals, goal_baseline.score_batch(videos, goals)):
        np.testing.assert_allclose(score.values, goal_baseline.score(video, goal).values, atol=1e-6)
    assert goal_baseline.goal_kinds == ("text",) and isinstance(goal_baseline, rewards.RewardModel)


def test_goal_baseline_streams_its_per_frame_rewards(goal_baseline, streaming_check):
    video = np.random.default_rng(2).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    streaming_check(goal_baseline, video, "pick up the red ball")


@pytest.mark.parametrize("goal", ["", "  ", "open | ", "x" * 600, "a robot | the robot", random_frames(1)[0], 3])
def test_goal_baseline_bad_goals_raise_invalid_task(goal_baseline, goal):
    with pytest.raises(rewards.InvalidTaskError):
        goal_baseline.score(random_frames(2), goal)


@pytest.mark.parametrize("change", [{"alpha": 1.5}, {"baseline_prompts": []}, {"backbone": "../elsewhere"}])
def test_goal_baseline_bad_configs_are_invalid_checkpoints(hf_checkpoint, tmp_path, change):
    config = json.loads((hf_checkpoint / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(rewards.InvalidCheckpointError):
        load_clip_goal_baseline("bad", tmp_path)


# --- LIV's public checkpoint format: OpenAI ResNet CLIP under {"liv": {"module.model." + key: tensor}} -----------


@pytest.fixture(scope="module")
def rn_model():
    torch.manual_seed(0)
    model = OpenAICLIP(TINY_RN).eval()
    for module in model.modules():  # non-trivial batch-norm statistics, so they must round-trip too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def write_liv_checkpoint(directory, state, **extra):
    """LIV's layout: DataParallel(LIV) state dict under "liv", plus the trainer's other entries."""
    write_config(directory, LIVCLIPConfig())
    torch.save({"liv": state, "global_step": 1000, **extra}, directory / "model.pt")
    write_bpe(directory / "tokenizer")
    return directory


@pytest.fixture(scope="module")
def liv_checkpoint(rn_model, tmp_path_factory):
    state = {"module.model." + key: value for key, value in rn_model.state_dict().items()}
    return write_liv_checkpoint(tmp_path_factory.mktemp("liv") / "tiny-liv-rn", state)


def test_sizes_are_inferred_from_the_weights(rn_model):
    assert OpenAICLIPConfig.from_state_dict(rn_model.state_dict()) == TINY_RN


def test_liv_checkpoint_round_trips_with_identical_outputs(rn_model, liv_checkpoint):
    liv = load_liv_openai("tiny-liv-rn", liv_checkpoint)
    loaded = liv.critic.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in rn_model.state_dict().items())

    frames = random_frames(6)
    tokens = torch.zeros(1, TINY_RN.context_length, dtype=torch.long)
    tokens[0, :4] = torch.tensor([START, VOCAB.index("ope"), VOCAB.index("n</w>"), END])  # "open" by the merges
    with torch.no_grad():
        images = rn_model.encode_images(preprocess_frames(frames, 64, CLIP_MEAN, CLIP_STD, "bilinear"))
        text = rn_model.encode_text(tokens)
    expected = F.cosine_similarity(images, text).numpy()
    score = liv.score(frames, "open")
    np.testing.assert_allclose(score.values, expected, atol=1e-6)
    np.testing.assert_allclose(score.rewards, np.diff(expected, prepend=expected[0]), atol=1e-6)

    goal_image = liv.embed_goal(frames[-1])
    assert goal_image.kind == "image" and goal_image.vector.shape == (16,)
    assert liv.score(frames, frames[-1]).values[-1] == pytest.approx(1.0, abs=1e-5)


def test_liv_tokens_follow_openai_layout(liv_checkpoint):
    tokens = load_liv_openai("tiny-liv-rn", liv_checkpoint).sentence_encoder(["the", "a" * 40])
    assert tokens[0, :3].tolist() == [START, VOCAB.index("the</w>"), END] and tokens[0, 3:].eq(0).all()
    assert tokens[1, 0] == START and tokens[1, -1] == END  # too long: cut, keeping <end> last


def test_fp16_liv_weights_load_as_float32(rn_model, tmp_path):
    state = {"module.model." + key: value.half() if value.is_floating_point() else value
             for key, value in rn_model.state_dict().items()}
    liv = load_liv_openai("half", write_liv_checkpoint(tmp_path, state))
    assert liv.critic.text_projection.dtype == torch.float32
    assert np.isfinite(liv.score(random_frames(2), "open").values).all()


def test_pickle_that_is_not_weights_only_is_refused(rn_model, tmp_path):
    state = {"module.model." + key: value for key, value in rn_model.state_dict().items()}
    write_liv_checkpoint(tmp_path, state, args=argparse.Namespace(lr=1e-5))
    with pytest.raises(rewards.InvalidCheckpointError, match="weights-only"):
        load_liv_openai("pickled", tmp_path)


@pytest.mark.parametrize("state, message", [
    ({"model.visual.conv1.weight": torch.zeros(1)}, "prefix"),
    ({"module.model.visual.conv1.weight": torch.zeros(1)}, "ResNet CLIP"),
    ({}, "state dict"),
])
def test_malformed_liv_checkpoints_are_refused(tmp_path, state, message):
    with pytest.raises(rewards.InvalidCheckpointError, match=message):
        load_liv_openai("bad", write_liv_checkpoint(tmp_path, state))


def test_liv_parts_must_stay_inside_the_checkpoint(liv_checkpoint, tmp_path):
    write_config(tmp_path, dataclasses.replace(LIVCLIPConfig(), weights=str(liv_checkpoint / "model.pt")))
    with pytest.raises(rewards.InvalidCheckpointError, match="outside"):
        load_liv_openai("escape", tmp_path)


@pytest.mark.parametrize("goal", ["", "x" * 600, np.zeros((4, 4), np.uint8), 3])
def test_liv_bad_goals_raise_invalid_task(liv_checkpoint, goal):
    with pytest.raises(rewards.InvalidTaskError):
        load_liv_openai("tiny-liv-rn", liv_checkpoint).score(random_frames(2), goal)
