"""Train a LIV critic on a dataset from `vlreward data generate` (design §4.1); CleanRL-style, top to bottom."""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rewards.liv.load import load_critic, save_critic
from rewards.liv.model import LIVConfig, LIVCritic, liv_loss
from rewards.preprocess import preprocess_frames
from rewards.text import shared_minilm
from rewards.video import decode_video, read_manifest
from vlreward.args import arg


@dataclass
class Args:
    """Train a LIV critic (image encoder + text projection) on successful videos of a dataset."""

    data: str = arg("data/babyai", "dataset directory with manifest.jsonl and videos")
    out: str = arg("runs/liv", "checkpoint directory to write (config.json + model.safetensors)")
    objective: str = arg("liv", "training objective", choices=["liv"])
    init: str = arg("", "checkpoint directory to fine-tune from (empty: random init)")
    steps: int = arg(1500, "gradient steps")
    batch_size: int = arg(32, "videos per step")
    lr: float = arg(3e-4, "Adam learning rate (1e-4..3e-4 from scratch, 1e-5 to fine-tune)")
    embed_dim: int = arg(128, "embedding size of the shared image-text space")
    image_size: int = arg(64, "side of the square frames the image encoder sees")
    seed: int = arg(0, "seed of torch, numpy and random")
    device: str = arg("cuda" if torch.cuda.is_available() else "cpu", "torch device")


def load_videos(directory: str, split: str) -> list[dict]:
    """Decode the successful videos of one split into memory: [{frames [T,H,W,3], task}]."""
    rows = [r for r in read_manifest(directory) if r["success"] and r.get("split", "train") == split]
    return [{"frames": decode_video(r["path"]), "task": r["task"]} for r in tqdm(rows, desc=f"decode {split}", leave=False)]


def sample_batch(videos: list[dict], batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Per video: (o_0, o_g, o_t, o_{t+1}, o_end) with o_0 a random start, o_g the last frame, t in [start, end)."""
    stacks, tasks = [], []
    for index in rng.integers(len(videos), size=batch_size):
        frames, end = videos[index]["frames"], len(videos[index]["frames"]) - 1
        start = int(rng.integers(0, max(end, 1)))
        t = int(rng.integers(start, max(end, start + 1)))
        caption_frame = int(rng.integers(max(end - 1, 0), end + 1))
        stacks.append(frames[[start, end, t, min(t + 1, end), caption_frame]])
        tasks.append(videos[index]["task"])
    return np.stack(stacks), tasks


def main(args: Args) -> Path:
    # --- seeding ---
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    print(json.dumps(asdict(args)))

    # --- data: successful videos and their frozen sentence features ---
    train_videos = load_videos(args.data, "train")
    val_videos = load_videos(args.data, "val") or train_videos
    if not train_videos:
        raise ValueError(f"{args.data} has no successful training videos")
    sentence_encoder = shared_minilm().to(args.device)
    tasks = sorted({v["task"] for v in train_videos + val_videos})
    sentence_features = dict(zip(tasks, sentence_encoder(tasks)))

    # --- critic and optimiser ---
    if args.init:
        critic, _ = load_critic(args.init)
    else:
        critic = LIVCritic(LIVConfig(embed_dim=args.embed_dim, image_size=args.image_size))
    critic.to(args.device)
    config = critic.config
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.lr)

    def batch_loss(videos):
        frames, batch_tasks = sample_batch(videos, args.batch_size, rng)
        pixels = preprocess_frames(frames.reshape(-1, *frames.shape[2:]), config.image_size, config.mean, config.std,
                                   device=args.device)
        features = torch.stack([sentence_features[t] for t in batch_tasks])
        return liv_loss(critic, pixels.view(*frames.shape[:2], *pixels.shape[1:]), features)

    # --- training loop ---
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    progress = tqdm(range(1, args.steps + 1), desc="train liv")
    started = time.time()
    for step in progress:
        critic.train()
        loss, metrics = batch_loss(train_videos)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            critic.eval()
            with torch.no_grad():
                _, val_metrics = batch_loss(val_videos)
            record = {"step": step, "seconds": round(time.time() - started, 1), **metrics,
                      **{f"val_{k}": v for k, v in val_metrics.items()}}
            log.write(json.dumps(record) + "\n")
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", val=f"{val_metrics['loss']:.3f}")
    log.close()

    command = "vlreward train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else ""
    return save_critic(critic.cpu(), out, extra={"trained_with": command, "steps": args.steps, "dataset": str(args.data)})
