"""Train a LIV (design §4.1) or VLC (§4.3) critic on a dataset from `vlreward data generate`; CleanRL-style."""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rewards.checkpoint import save_checkpoint
from rewards.liv.load import load_critic
from rewards.liv.model import LIVConfig, LIVCritic, liv_loss
from rewards.preprocess import preprocess_frames
from rewards.text import shared_minilm
from rewards.video import decode_video, read_manifest
from rewards.vlc.load import load_vlc_critic
from rewards.vlc.model import VideoLanguageCritic, VLCConfig, even_indices, vlc_loss
from vlreward.args import arg


@dataclass
class Args:
    """Train a critic: LIV on successful videos, or VLC on successes and failures (failures as negatives)."""

    data: str = arg("data/babyai", "dataset directory with manifest.jsonl and videos")
    out: str = arg("", "checkpoint directory to write, config.json + model.safetensors (empty: runs/<objective>)")
    objective: str = arg("liv", "training objective (and critic)", choices=["liv", "vlc"])
    init: str = arg("", "checkpoint directory of the same objective to fine-tune from (empty: random init)")
    steps: int = arg(1500, "gradient steps")
    batch_size: int = arg(32, "videos per step")
    lr: float = arg(3e-4, "Adam learning rate (1e-4..3e-4 from scratch, 1e-5 to fine-tune)")
    num_negatives: int = arg(0, "LIV: extra shuffled-transition negatives in the VIP terms")
    embed_dim: int = arg(128, "embedding size of the image encoder (LIV: the shared space; VLC: the transformer width)")
    image_size: int = arg(64, "side of the square frames the image encoder sees")
    layers: int = arg(2, "VLC: transformer layers")
    heads: int = arg(4, "VLC: attention heads")
    log_every: int = arg(100, "steps between validation losses written to train_log.jsonl")
    seed: int = arg(0, "seed of torch, numpy and random")
    device: str = arg("cuda" if torch.cuda.is_available() else "cpu", "torch device")


def load_videos(directory: str, split: str, failures: bool) -> list[dict]:
    """Decode the videos of one split into memory: [{frames [T,H,W,3], task, success}]; failures only if asked."""
    rows = [r for r in read_manifest(directory) if (failures or r["success"]) and r.get("split", "train") == split]
    return [{"frames": decode_video(r["path"]), "task": r["task"], "success": bool(r["success"])}
            for r in tqdm(rows, desc=f"decode {split}", leave=False)]


def sample_liv_batch(videos: list[dict], batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Per video: (o_0, o_g, o_t, o_{t+1}, o_end) with o_0 a random start, o_g the last frame, t in [start, end)."""
    stacks, picked = [], []
    for index in rng.integers(len(videos), size=batch_size):
        frames, end = videos[index]["frames"], len(videos[index]["frames"]) - 1
        start = int(rng.integers(0, max(end, 1)))
        t = int(rng.integers(start, max(end, start + 1)))
        caption_frame = int(rng.integers(max(end - 1, 0), end + 1))
        stacks.append(frames[[start, end, t, min(t + 1, end), caption_frame]])
        picked.append(videos[index])
    return np.stack(stacks), picked


def sample_vlc_batch(videos: list[dict], batch_size: int, rng: np.random.Generator,
                     num_frames: int) -> tuple[np.ndarray, list[dict]]:
    """Per video: `num_frames` frames spread evenly from a random start in its first quarter to its last frame.

    Only the start is cropped: cutting the end off a successful video would cut off the success its label claims.
    """
    stacks, picked = [], []
    for index in rng.integers(len(videos), size=batch_size):
        frames = videos[index]["frames"]
        start = int(rng.integers(0, len(frames) // 4 + 1))
        stacks.append(frames[even_indices(start, len(frames) - 1, num_frames)])
        picked.append(videos[index])
    return np.stack(stacks), picked


def main(args: Args) -> Path:
    # --- seeding ---
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    print(json.dumps(asdict(args)))

    # --- data: videos (VLC also learns from failures) and their frozen sentence features ---
    failures = args.objective == "vlc"
    train_videos = load_videos(args.data, "train", failures)
    val_videos = load_videos(args.data, "val", failures)
    if not any(v["success"] for v in train_videos):
        raise ValueError(f"{args.data} has no successful training videos")
    if not any(v["success"] for v in val_videos):  # a tiny dataset may have no successful validation video
        val_videos = train_videos
    sentence_encoder = shared_minilm().to(args.device)
    tasks = sorted({v["task"] for v in train_videos + val_videos})
    sentence_features = dict(zip(tasks, sentence_encoder(tasks)))

    # --- the objective picks the critic, the batch sampler, the loss and the checkpoint writer ---
    if args.objective == "liv":
        critic = load_critic(args.init)[0] if args.init else LIVCritic(LIVConfig(
            embed_dim=args.embed_dim, image_size=args.image_size, num_negatives=args.num_negatives))
        sample = sample_liv_batch

        def loss_fn(pixels, features, success):  # LIV sees successful videos only: `success` is all True
            return liv_loss(critic, pixels, features)
    else:
        critic = load_vlc_critic(args.init)[0] if args.init else VideoLanguageCritic(VLCConfig(
            embed_dim=args.embed_dim, image_size=args.image_size, layers=args.layers, heads=args.heads))
        sample = partial(sample_vlc_batch, num_frames=critic.config.num_frames)

        def loss_fn(pixels, features, success):
            return vlc_loss(critic, pixels, features, success)
    critic.to(args.device)
    config = critic.config
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.lr)

    def batch_loss(videos):
        frames, picked = sample(videos, args.batch_size, rng)
        pixels = preprocess_frames(frames.reshape(-1, *frames.shape[2:]), config.image_size, config.mean, config.std,
                                   device=args.device)
        features = torch.stack([sentence_features[v["task"]] for v in picked])
        success = torch.tensor([v["success"] for v in picked], device=args.device)
        return loss_fn(pixels.view(*frames.shape[:2], *pixels.shape[1:]), features, success)

    # --- training loop ---
    out = Path(args.out or f"runs/{args.objective}")
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    progress = tqdm(range(1, args.steps + 1), desc=f"train {args.objective}")
    started = time.time()
    for step in progress:
        critic.train()
        loss, metrics = batch_loss(train_videos)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps:
            critic.eval()
            with torch.no_grad():
                _, val_metrics = batch_loss(val_videos)
            record = {"step": step, "seconds": round(time.time() - started, 1), **metrics,
                      **{f"val_{k}": v for k, v in val_metrics.items()}}
            log.write(json.dumps(record) + "\n")
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", val=f"{val_metrics['loss']:.3f}")
    log.close()

    command = "vlreward train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else ""
    return save_checkpoint(critic.cpu(), out, extra={"trained_with": command, "steps": args.steps, "dataset": str(args.data)})
