"""Reward-quality evaluation: known answers through a toy model, then the shipped models on a generated dataset."""

import json

import numpy as np
import pytest

import rewards
from envs.generate import Args as DataArgs
from envs.generate import generate
from rewards.base import GoalEmbedding, Score, goal_digest
from rewards.evaluate import (OVER_REWARD_PROBES, even_clip, evaluate, replayed_demo, select_rows, summary,
                              time_warps)
from vlreward.plot import plot_evaluation


class Brightness:
    """A text-goal reward that ignores the text: value = mean pixel of the frame / 255."""

    name, goal_kinds, version = "brightness", ("text",), "0"

    def embed_goal(self, goal):
        return GoalEmbedding("text", np.zeros(1, np.float32), goal_digest(goal))

    def score_batch(self, trajectories, goals):
        values = [frames.reshape(len(frames), -1).mean(1) / 255.0 for frames in trajectories]
        return [Score(v, np.diff(v, prepend=v[0])) for v in values]

    def score(self, frames, goal):
        return self.score_batch([frames], [goal])[0]


def video(levels):
    return np.repeat(np.asarray(levels, np.uint8)[:, None, None, None], 4, axis=1).repeat(4, 2).repeat(3, 3)


COLOURS = {"red": 0, "green": 1, "blue": 2}


class ColourProgress(Brightness):
    """A text-goal reward that reads the task: value = the mean of the colour channel its last word names / 255.
    Keeps every video it scores in `seen`."""

    name = "colour-progress"

    def __init__(self):
        self.seen = []

    def score_batch(self, trajectories, goals):
        self.seen += trajectories
        values = [frames[..., COLOURS[goal.split()[-1]]].reshape(len(frames), -1).mean(1) / 255.0
                  for frames, goal in zip(trajectories, goals)]
        return [Score(v, np.diff(v, prepend=v[0])) for v in values]


class PerFrame(Brightness):
    """A reward that pays 1 for every frame, whatever it shows: longer videos earn more."""

    name = "per-frame"

    def score_batch(self, trajectories, goals):
        return [Score(np.arange(len(frames), dtype=float), np.ones(len(frames))) for frames in trajectories]


def ramp(colour, length=30):
    """A video whose `colour` channel brightens by 8 a frame (frame k shows 8k); the other channels stay black."""
    frames = np.zeros((length, 4, 4, 3), np.uint8)
    frames[..., COLOURS[colour]] = 8 * np.arange(length)[:, None, None]
    return frames


def colour_rows():
    """Three plain successes of 30 frames (one in an env with no other task), a failure, a time-warped success."""
    return [
        {"frames": ramp("red"), "task": "go to the red", "success": True, "env": "toy"},
        {"frames": ramp("blue"), "task": "go to the blue", "success": True, "env": "toy"},
        {"frames": ramp("red")[::-1], "task": "go to the red", "success": False, "env": "toy", "kind": "random"},
        {"frames": ramp("green"), "task": "go to the green", "success": True, "env": "solo"},
        {"frames": ramp("blue").repeat(2, 0), "task": "go to the blue", "success": True, "env": "toy",
         "warp": "0.5x"},
    ]


def test_known_answers_through_a_toy_model():
    rows = [
        {"frames": video([10, 20, 30, 40]), "task": "go to the red ball", "success": True, "env": "toy",
         "progress": [0.0, 0.2, 0.5, 1.0], "paraphrases": ["walk to the red ball"]},
        {"frames": video([10, 50, 90]), "task": "go to the blue key", "success": True, "env": "toy",
         "progress": [0.0, 0.5, 1.0]},
        {"frames": video([45, 45, 45, 45, 45]), "task": "go to the red ball", "success": False, "env": "toy",
         "policy": "random"},
        {"frames": video([40, 30, 20]), "task": "go to the blue key", "success": False, "env": "toy",
         "kind": "other_task", "performed": "go to the red ball", "seed": 7},
        {"frames": video([0, 0]), "task": "unused", "success": True, "split": "train"},
    ]
    report = evaluate(Brightness(), rows, split="test", progress=False)
    assert report["videos"] == 4 and report["successes"] == 2 and report["failures"] == 2
    assert report["voc"] == pytest.approx(1.0)
    assert report["auroc_return"] == 1.0  # returns 0.118, 0.314 vs 0 and -0.078
    assert report["auroc_final_value"] == 0.75  # final values 0.157, 0.353 vs 0.176, 0.078: 3 of 4 pairs
    assert report["progress_pearson"] > 0.9
    # the toy model ignores the text: rewording changes nothing, and the true task never beats another
    assert report["paraphrase"] == {"pairs": 1, "relative_change": 0.0, "median_abs_change": 0.0}
    assert report["own_task"]["ranked_correctly"] == 0.0
    assert report["hard_negatives"]["same_video"] == {"pairs": 1, "ranked_correctly": 0.0}
    assert report["auroc_by_failure_kind"].keys() == {"random", "other_task"}
    assert report["voc_15"] == report["voc"]  # videos under 15 frames are scored whole
    assert "paraphrase" in summary(report)


def test_voc_15_scores_a_15_frame_clip_of_each_success():
    model = ColourProgress()
    report = evaluate(model, colour_rows(), progress=False, batch_size=2)
    assert report["voc_15"] == pytest.approx(1.0)
    clips = [frames for frames in model.seen if len(frames) == 15]
    assert len(clips) == 3  # one per plain success: not the failure, not the warped replay
    for clip in clips:  # frames 0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27, 29 of 30
        assert clip.max(axis=(1, 2, 3)).tolist() == [8 * k for k in np.linspace(0, 29, 15).round().astype(int)]
    assert even_clip(ramp("red", 8)).shape == (8, 4, 4, 3)  # fewer than 15 frames: all of them


def test_own_task_counts_every_success():
    report = evaluate(ColourProgress(), colour_rows(), progress=False, batch_size=2)
    assert report["own_task"] == {"pairs": 3, "ranked_correctly": 1.0}  # green's env has no other task: still in
    assert evaluate(PerFrame(), colour_rows(), progress=False)["own_task"] == {"pairs": 3, "ranked_correctly": 0.0}


def test_over_reward_probes_are_built_as_specified():
    frames = video(range(10))
    probes = {name: make(frames)[:, 0, 0, 0].tolist() for name, make in OVER_REWARD_PROBES.items()}
    assert probes["stall"] == [0, 1] + [1] * 8  # the first fifth, then held to length T
    assert probes["loop"] == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5]  # never reaches frame 9
    assert probes["reversed"] == list(range(9, -1, -1))
    assert OVER_REWARD_PROBES["stall"](video([7]))[:, 0, 0, 0].tolist() == [7]


def test_over_reward_passes_a_progress_reward_and_catches_a_per_frame_one():
    progress = evaluate(ColourProgress(), colour_rows(), progress=False, batch_size=2)["over_reward"]
    assert progress == {"all": 1.0, **{name: {"pairs": 3, "below_success": 1.0}
                                       for name in ["stall", "loop", "reversed", "other_success"]}}
    per_frame = evaluate(PerFrame(), colour_rows(), progress=False, batch_size=2)
    # same-length probes earn as much as the success, the loop (46 frames) more: none is strictly below
    assert per_frame["over_reward"] == {"all": 0.0, **{name: {"pairs": 3, "below_success": 0.0}
                                                       for name in ["stall", "loop", "reversed", "other_success"]}}
    lines = summary(per_frame).splitlines()
    assert "over-reward all          0.000" in lines and "over-reward loop         0.000" in lines
    assert any(line.startswith("voc_15 ") for line in lines) and any(line.startswith("own task") for line in lines)
    limited = evaluate(ColourProgress(), colour_rows(), progress=False, max_videos=2)["over_reward"]
    assert limited["reversed"]["pairs"] == 2 and limited["other_success"]["pairs"] == 2


def test_time_warps_keep_the_demo_order():
    demo = video([0, 1, 2, 3, 4])
    warps = time_warps(demo)
    assert warps["slow_0.5x"][:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert warps["fast_2x"][:, 0, 0, 0].tolist() == [0, 2, 4]
    assert time_warps(video([0, 1, 2, 3]))["fast_2x"][:, 0, 0, 0].tolist() == [0, 2, 3]


def test_a_warped_replay_gives_back_its_recording_unless_frames_were_dropped():
    paused = video([0, 1, 1, 1, 2, 3])
    demo = replayed_demo({"source_frames": [0, 1, 1, 1, 2, 3]}, paused)
    assert demo[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert replayed_demo({"source_frames": [0, 2, 3]}, video([0, 2, 3])) is None  # 2x: frame 1 was dropped
    assert replayed_demo({}, paused) is None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate(DataArgs(tasks=["GoToRedBall", "GoToLocal"], episodes=12, out=str(out), failure_fraction=0.5,
                      workers=1))
    return out


def test_shipped_text_model_on_a_generated_dataset(dataset, tmp_path):
    report = evaluate(rewards.load_model("babyai-liv"), dataset, split="all", progress=False)
    assert report["videos"] == len(select_rows(dataset, "all")) == 12
    assert report["successes"] > 0 and report["failures"] > 0
    assert -1.0 <= report["voc"] <= 1.0
    assert 0.0 <= report["auroc_return"] <= 1.0 and 0.0 <= report["auroc_final_value"] <= 1.0
    assert 0.0 <= report["own_task"]["ranked_correctly"] <= 1.0
    assert -1.0 <= report["voc_15"] <= 1.0
    plain_successes = sum(r["success"] and not r.get("warp") for r in select_rows(dataset, "all"))
    assert report["own_task"]["pairs"] == report["over_reward"]["stall"]["pairs"] == plain_successes
    assert 0.0 <= report["over_reward"]["all"] <= 1.0
    assert report["paraphrase"]["relative_change"] >= 0.0  # BabyAI rows carry reworded missions
    json.dumps(report)  # the report is JSON as it stands

    written = plot_evaluation(report, tmp_path)
    assert {p.name for p in written} == {"curves_GoToRedBall.png", "curves_GoToLocal.png", "histogram.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_shipped_demo_model_ranks_time_warped_demos_above_failures(dataset):
    report = evaluate(rewards.load_model("babyai-orca"), dataset, split="all", progress=False)
    assert report["demos"] > 0 and set(report["time_warp"]) == {"slow_0.5x", "fast_2x"}
    for result in report["time_warp"].values():
        assert result["ranked_above_failures"] >= 0.9
    assert report["final_reward_mean"]["fast_2x"] > report["final_reward_mean"]["stopped_early"]
