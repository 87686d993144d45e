"""Train a LIV (design §4.1) or VLC (§4.3) critic on a dataset from `vlreward data generate`; CleanRL-style.

Each epoch (one pass worth of batches over the training videos) ends with a validation loss and the
reward-quality metrics of rewards/evaluate.py on the val split, written to train_log.jsonl. The out folder
also holds the optimizer state and the step (train_state.pt, tensors and numbers only), so `--resume`
continues where a run stopped.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rewards.checkpoint import save_checkpoint
from rewards.evaluate import evaluate, task_key
from rewards.liv.load import load_critic
from rewards.liv.model import LIVConfig, LIVCritic, liv_loss
from rewards.liv.reward import LIVReward
from rewards.preprocess import preprocess_frames
from rewards.progress.train import train_progress
from rewards.text import shared_minilm
from rewards.video import decode_video, read_manifest
from rewards.vlc.load import load_vlc_critic
from rewards.vlc.model import VideoLanguageCritic, VLCConfig, even_indices, vlc_loss
from rewards.vlc.reward import VLCReward
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Train a critic: LIV on successful videos (failures' end frames as negatives), or VLC on successes and
    failures (failures as negatives)."""

    data: str = arg("data/babyai", "dataset directory with manifest.jsonl and videos")
    out: str = arg("", "checkpoint directory to write, config.json + model.safetensors (empty: runs/<objective>)")
    objective: str = arg("liv", "training objective (and critic): liv and vlc train a small CNN on pixels; progress "
                                "a head on a frozen pretrained tower's cached features; distill the same head on "
                                "--teacher's per-frame values", choices=["liv", "vlc", "progress", "distill"])
    teacher: str = arg("", "distill: the critic to imitate (a shipped name or checkpoint directory); it scores each "
                           "training video once, cached in the dataset")
    backbone: str = arg("efficientnet-lite0-s16", "progress: the frozen pretrained image tower (rewards/backbones.py)")
    dropout: float = arg(0.1, "progress: dropout on the head's frame embeddings")
    weight_decay: float = arg(1e-2, "progress: AdamW weight decay of the head")
    rank_weight: float = arg(1.0, "progress: weight of the ranking term over time-ordered frame pairs (0: off)")
    done_margin: float = arg(0.0, "progress: labels before a success's last frame stay below 1 - m, so completing "
                             "the task pays at least m (0: time along the recording)")
    progress_shares: list[float] = arg([0.6, 0.25, 0.15], "progress: shares of own-task, mismatched-sentence, rewound "
                                                         "and (a 4th, 0 if left out) performed examples per batch")
    init: str = arg("", "checkpoint directory of the same objective to fine-tune from (empty: random init)")
    steps: int = arg(1500, "gradient steps")
    batch_size: int = arg(32, "videos per step")
    lr: float = arg(3e-4, "Adam learning rate (1e-4..3e-4 from scratch, 1e-5 to fine-tune)")
    num_negatives: int = arg(0, "LIV: extra shuffled-transition negatives in the VIP terms")
    learn_temperature: bool = arg(True, "LIV: learn the InfoNCE temperature (CLIP's); off: raw cosines, as the reference")
    liv_negatives: bool = arg(True, "LIV: each step also draws batch_size failed videos, whose end frames every caption "
                                    "must score below its successes' (InfoNCE negatives); off: successes only")
    embed_dim: int = arg(128, "embedding size of the image encoder (LIV: the shared space; VLC: the transformer width; "
                              "progress: the head's width)")
    image_size: int = arg(64, "side of the square frames the image encoder sees (progress: the tower's input, e.g. 128)")
    cut_fraction: float = arg(0.0, "VLC: share of sampled successes cut short and used as failures (early stops)")
    layers: int = arg(2, "VLC: transformer layers")
    heads: int = arg(4, "VLC: attention heads")
    vlc_paraphrases: bool = arg(True, "VLC: a paraphrase of a video's task is a positive of it, not a negative (same "
                                      "task_key); off: only its own caption")
    frame_scales: list[float] = arg([1.0], "progress: train on every video at each of these sizes (factors of its "
                                    "recorded size, e.g. 1 0.5), so frames arriving smaller than the render still "
                                    "score; validation averages over them")
    augment: bool = arg(True, "random shift (pad + crop) and brightness/contrast jitter of training videos")
    shift: int = arg(4, "augmentation: largest shift in pixels (at image_size)")
    jitter: float = arg(0.1, "augmentation: largest brightness offset and contrast change (fraction of the range)")
    log_every: int = arg(100, "steps between training losses written to train_log.jsonl")
    eval_every: int = arg(0, "steps between validations (val loss + metrics); 0: once per epoch")
    val_videos: int = arg(200, "validation: at most this many val videos are scored for the metrics")
    resume: bool = arg(False, "continue the run in --out (weights, optimizer, step and RNG states)")
    seed: int = arg(0, "seed of torch, numpy and random")
    device: str = arg("cuda" if torch.cuda.is_available() else "cpu", "torch device")

STATE_FILE = "train_state.pt"


def load_videos(directory: str, split: str) -> list[dict]:
    """Decode the videos of one split into memory: [{frames [T,H,W,3], task, success, env, task_key}]."""
    rows = [r for r in read_manifest(directory) if r.get("split", "train") == split]
    return [{"frames": decode_video(r["path"]), "task": r["task"], "success": bool(r["success"]), "env": r.get("env"),
             "task_key": task_key(r)} for r in tqdm(rows, desc=f"decode {split}", leave=False)]


def sample_liv_batch(videos: list[dict], batch_size: int, rng: np.random.Generator,
                     num_failures: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Per video: (o_0, o_g, o_t, o_{t+1}, o_end) with o_0 a random start, o_g the last frame, t in [start, end).

    `batch_size` successes, then `num_failures` failures (none if `videos` has none), whose o_end only the loss uses.
    """
    successes, failures = [v for v in videos if v["success"]], [v for v in videos if not v["success"]]
    picked = [successes[i] for i in rng.integers(len(successes), size=batch_size)]
    if failures and num_failures:
        picked += [failures[i] for i in rng.integers(len(failures), size=num_failures)]
    stacks = []
    for video in picked:
        frames, end = video["frames"], len(video["frames"]) - 1
        start = int(rng.integers(0, max(end, 1)))
        t = int(rng.integers(start, max(end, start + 1)))
        caption_frame = int(rng.integers(max(end - 1, 0), end + 1))
        stacks.append(frames[[start, end, t, min(t + 1, end), caption_frame]])
    return np.stack(stacks), picked


def sample_vlc_batch(videos: list[dict], batch_size: int, rng: np.random.Generator, num_frames: int,
                     cut_fraction: float = 0.0) -> tuple[np.ndarray, list[dict]]:
    """Per video: `num_frames` frames spread evenly from a random start in its first quarter to its last frame.

    Only the start is cropped: cutting the end off a successful video would cut off the success its label claims.
    With probability `cut_fraction` a success of >= 3 frames is instead cut to its first 30-70% and becomes a
    failure (an early stop): scores that ignore time then cost contrastive loss, so the critic cannot satisfy the
    ranking term with flat scores.
    """
    stacks, picked = [], []
    for index in rng.integers(len(videos), size=batch_size):
        video = videos[index]
        frames = video["frames"]
        if video["success"] and len(frames) >= 3 and rng.random() < cut_fraction:
            frames = frames[: max(2, int(len(frames) * rng.uniform(0.3, 0.7)))]
            video = {**video, "success": False}
        start = int(rng.integers(0, len(frames) // 4 + 1))
        stacks.append(frames[even_indices(start, len(frames) - 1, num_frames)])
        picked.append(video)
    return np.stack(stacks), picked


def command_line() -> str:
    """How this run was started (`vlreward train ...` or `python -m rewards.train ...`), for config.json."""
    if sys.argv[1:2] == ["train"]:
        return "vlreward train " + " ".join(sys.argv[2:])
    if sys.argv[0].endswith("train.py"):
        return "python -m rewards.train " + " ".join(sys.argv[1:])
    return ""


def augment(pixels: torch.Tensor, generator: torch.Generator, shift: int, jitter: float) -> torch.Tensor:
    """pixels [B, L, 3, S, S] -> the same with one random shift and brightness/contrast change per video.

    All L frames of a video move alike, so the differences between them (what the value learns) stay.
    Hue is left alone: colours name the objects in the tasks ("the red ball"). Shifts pad by repeating edges.
    """
    batch, length, channels, side, _ = pixels.shape
    padded = F.pad(pixels.flatten(0, 1), (shift,) * 4, mode="replicate").view(batch, length, channels,
                                                                              side + 2 * shift, -1)
    dx, dy = torch.randint(0, 2 * shift + 1, (2, batch), generator=generator).tolist()
    shifted = torch.stack([padded[b, ..., dy[b]:dy[b] + side, dx[b]:dx[b] + side] for b in range(batch)])
    contrast, brightness = ((torch.rand(2, batch, 1, 1, 1, 1, generator=generator) * 2 - 1) * jitter).to(pixels.device)
    mean = shifted.mean(dim=(1, 2, 3, 4), keepdim=True)
    # brightness is a fraction of the [0, 1] range; normalised pixels span about 1/0.25 = 4 units
    return (shifted - mean) * (1 + contrast) + mean + brightness * 4


@dataclass(frozen=True)
class PixelObjective:
    """A critic trained end to end on pixels: how it is built or resumed, the batches it draws, its loss and the
    reward that validates it."""

    build: Callable[[Args], torch.nn.Module]
    load: Callable[[str], tuple[torch.nn.Module, str]]
    sample: Callable[[Args, torch.nn.Module], Callable]  # -> sample(videos, batch_size, rng) -> (frames, picked)
    loss: Callable[[Args, torch.nn.Module], Callable]  # -> loss(pixels, features, success, same_task)
    reward_cls: type
    learns_from_failures: Callable[[Args], bool]
    fills_batches: Callable[[dict], bool]  # the videos an epoch passes over (LIV: successes; failures come on top)


PIXEL_OBJECTIVES = {
    "liv": PixelObjective(
        build=lambda args: LIVCritic(LIVConfig(embed_dim=args.embed_dim, image_size=args.image_size,
                                               num_negatives=args.num_negatives,
                                               learn_temperature=args.learn_temperature)),
        load=load_critic,
        sample=lambda args, critic: partial(sample_liv_batch, num_failures=args.batch_size if args.liv_negatives else 0),
        # failures lend only their end frames, as negatives
        loss=lambda args, critic: lambda pixels, features, success, same_task: liv_loss(critic, pixels, features,
                                                                                        same_task, success),
        reward_cls=LIVReward,
        learns_from_failures=lambda args: args.liv_negatives,
        fills_batches=lambda video: video["success"],
    ),
    "vlc": PixelObjective(
        build=lambda args: VideoLanguageCritic(VLCConfig(embed_dim=args.embed_dim, image_size=args.image_size,
                                                         layers=args.layers, heads=args.heads)),
        load=load_vlc_critic,
        sample=lambda args, critic: partial(sample_vlc_batch, num_frames=critic.config.num_frames,
                                            cut_fraction=args.cut_fraction),
        # VLC dedupes captions by their features itself
        loss=lambda args, critic: lambda pixels, features, success, same_task: vlc_loss(
            critic, pixels, features, success, same_task if args.vlc_paraphrases else None),
        reward_cls=VLCReward,
        learns_from_failures=lambda args: True,
        fills_batches=lambda video: True,
    ),
}


def main(args: Args) -> Path:
    """Train the critic of `args.objective` (OBJECTIVES); returns its checkpoint directory."""
    return OBJECTIVES[args.objective](args, command_line())


def train_pixel_critic(args: Args, command_line: str, objective: PixelObjective) -> Path:
    # --- seeding ---
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = True
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)  # augmentation draws, on the CPU for every device
    print(json.dumps(asdict(args)))

    # --- data: videos (failures too when the objective learns from them) and frozen sentence features ---
    learns_from = (lambda v: True) if objective.learns_from_failures(args) else (lambda v: v["success"])
    train_all, val_all = load_videos(args.data, "train"), load_videos(args.data, "val")
    if not any(v["success"] for v in train_all):
        raise ValueError(f"{args.data} has no successful training videos")
    if not any(v["success"] for v in val_all):  # a tiny dataset may have no successful validation video
        val_all = train_all
    train_videos = [v for v in train_all if learns_from(v)]
    val_videos = [v for v in val_all if learns_from(v)]  # for the val loss; the metrics see all of val_all
    sentence_encoder = shared_minilm(args.device)
    tasks = sorted({v["task"] for v in train_all + val_all})
    sentence_features = dict(zip(tasks, sentence_encoder(tasks)))

    # --- the objective gives the critic, the batch sampler, the loss and the reward used for validation ---
    out = Path(args.out or f"runs/{args.objective}")
    if args.resume and not (out / STATE_FILE).is_file():
        raise ValueError(f"--resume: {out / STATE_FILE} does not exist")
    init = str(out) if args.resume else args.init
    critic = objective.load(init)[0] if init else objective.build(args)
    sample, loss_fn, reward_cls = objective.sample(args, critic), objective.loss(args, critic), objective.reward_cls
    critic.to(args.device)
    config = critic.config
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.lr)
    first_step = 1
    if args.resume:  # tensors and numbers only: loads with weights_only=True
        state = torch.load(out / STATE_FILE, weights_only=True, map_location=args.device)
        optimizer.load_state_dict(state["optimizer"])
        first_step = state["step"] + 1
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        generator.set_state(state["augment_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())

    def batch_loss(videos, draw, train: bool):
        frames, picked = sample(videos, args.batch_size, draw)
        pixels = preprocess_frames(frames.reshape(-1, *frames.shape[2:]), config.image_size, config.mean, config.std,
                                   device=args.device).view(*frames.shape[:2], -1, config.image_size, config.image_size)
        if train and args.augment:
            pixels = augment(pixels, generator, args.shift, args.jitter)
        features = torch.stack([sentence_features[v["task"]] for v in picked])
        success = torch.tensor([v["success"] for v in picked], device=args.device)
        same_task = torch.tensor([[a["task_key"] == b["task_key"] for b in picked] for a in picked], device=args.device)
        return loss_fn(pixels, features, success, same_task)

    val_rows = val_all[: args.val_videos]

    @torch.no_grad()
    def validate(step: int) -> dict:
        """Mean loss over 4 val batches drawn the same way every time, plus evaluate()'s headline metrics."""
        critic.eval()
        draw = np.random.default_rng(args.seed + 1)
        losses = [batch_loss(val_videos, draw, train=False)[1]["loss"] for _ in range(4)]
        reward = reward_cls(f"{args.objective}@{step}", critic, sentence_encoder, version=str(step), device=args.device)
        report = evaluate(reward, val_rows, split="all", progress=False)
        critic.train()
        return {"val_loss": float(np.mean(losses)), "val_voc": report["voc"], "val_auroc": report["auroc_return"],
                "val_own_task": (report["own_task"] or {}).get("ranked_correctly")}

    def save(step: int) -> Path:
        directory = save_checkpoint(critic, out, extra={"trained_with": command_line, "steps": step,
                                                        "dataset": str(args.data)})
        torch.save({"optimizer": optimizer.state_dict(), "step": step, "numpy_rng": json.dumps(rng.bit_generator.state),
                    "augment_rng": generator.get_state(), "torch_rng": torch.get_rng_state()}, out / STATE_FILE)
        return directory

    # --- training loop ---
    out.mkdir(parents=True, exist_ok=True)
    # an epoch passes over the videos that fill `batch_size`: LIV's are the successes (its failures come on top)
    epoch_size = sum(map(objective.fills_batches, train_videos))
    eval_every = args.eval_every or max(1, epoch_size // args.batch_size)
    log = (out / "train_log.jsonl").open("a" if args.resume else "w")
    progress = tqdm(range(first_step, args.steps + 1), desc=f"train {args.objective}", initial=first_step - 1,
                    total=args.steps)
    started = time.time()
    critic.train()
    for step in progress:
        loss, metrics = batch_loss(train_videos, rng, train=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"step": step, "seconds": round(time.time() - started, 1), **metrics}
        if step % eval_every == 0 or step == args.steps:
            record |= {"epoch": round(step * args.batch_size / epoch_size, 2), **validate(step)}
            save(step)
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", val=f"{record['val_loss']:.3f}",
                                 voc=record["val_voc"], auroc=record["val_auroc"])
        if step % args.log_every == 0 or "val_loss" in record:
            log.write(json.dumps(record) + "\n")
            log.flush()
    log.close()
    return out


# objective name -> trainer(args, command_line) -> checkpoint directory; `vlreward train --objective` picks one
OBJECTIVES: dict[str, Callable[[Args, str], Path]] = {
    **{name: partial(train_pixel_critic, objective=objective) for name, objective in PIXEL_OBJECTIVES.items()},
    "progress": train_progress,
    "distill": partial(train_progress, distill=True),
}


if __name__ == "__main__":
    main(parse_args(Args))
