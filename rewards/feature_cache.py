"""Per-frame features of a dataset's videos from a frozen tower, computed once and cached on disk.

Heads on a frozen tower train on these features instead of pixels, so thousands of episodes and many epochs fit
a CPU. The cache lives in `<dataset>/features/<tower>-<weights digest>-<frame size>[-x<scale>]/<video stem>.npy`
(float16 [T, C, h, w]): another tower, other weights, another frame size or another rescale of the videos miss
it; the same ones hit it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rewards.backbones import ImageTower
from rewards.preprocess import preprocess_frames, rescale_frames
from rewards.video import decode_video


def cache_dir(dataset: str | Path, tower: ImageTower, image_size: int, scale: float = 1.0) -> Path:
    """Where features of `tower` (by name and weights digest) at `image_size` px are kept for `dataset`'s videos
    resized by `scale`."""
    rescaled = "" if scale == 1.0 else f"-x{scale:g}"
    return Path(dataset) / "features" / f"{tower.spec.name}-{tower.digest}-{image_size}{rescaled}"


@torch.no_grad()
def tower_features(tower: ImageTower, frames: np.ndarray, image_size: int, device: str = "cpu") -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> feature maps float32 [T, C, h, w] with the tower's own preprocessing."""
    spec = tower.spec
    return tower(preprocess_frames(frames, image_size, spec.mean, spec.std, spec.interpolation, device))


def cache_entries(directory: Path, rows: list[dict]) -> tuple[list[Path], list[int]]:
    """One `.npy` per row's video in `directory` (created), and the indices of the rows whose entry is missing."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{Path(row['path']).stem}.npy" for row in rows]
    return paths, [i for i, path in enumerate(paths) if not path.is_file()]


def save_entry(path: Path, array: np.ndarray) -> None:
    """Write a cache entry whole or not at all: a stopped run never leaves a truncated one."""
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, array)
    os.replace(partial, path)


def dataset_features(dataset: str | Path, rows: list[dict], tower: ImageTower, image_size: int,
                     device: str = "cpu", batch_frames: int = 256, progress: bool = True,
                     scale: float = 1.0) -> list[np.ndarray]:
    """Each row's video (`rows` as `read_manifest(dataset)` gives them), resized by `scale` (`rescale_frames`), as
    cached features float16 [T, C, h, w], computing (with a progress bar) only the missing.

    Short videos are batched together up to `batch_frames` frames per forward pass. Returns them in row order.
    """
    directory = cache_dir(dataset, tower, image_size, scale)
    paths, missing = cache_entries(directory, rows)
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        features = tower_features(tower, np.concatenate([f for _, f in pending]), image_size, device)
        for (i, _), chunk in zip(pending, features.split([len(f) for _, f in pending])):
            save_entry(paths[i], chunk.half().cpu().numpy())
        pending.clear()

    for i in tqdm(missing, desc=f"features {directory.name}", disable=not progress or not missing):
        # read_manifest's rows hold the path under `dataset`
        frames = rescale_frames(decode_video(rows[i]["path"]), scale)
        if pending and frames.shape[1:] != pending[0][1].shape[1:]:  # a batch holds one frame size (merged datasets)
            flush()
        pending.append((i, frames))
        if sum(len(f) for _, f in pending) >= batch_frames:
            flush()
    if pending:
        flush()
    return [np.load(path) for path in paths]
