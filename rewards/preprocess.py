"""Frame checks and the one preprocessing function per backbone (uint8 frames in, float pixels out)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rewards.errors import InvalidVideoError


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Return `frames` if they are a non-empty uint8 [T, H, W, 3] array, else raise InvalidVideoError."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise InvalidVideoError(f"frames must be a uint8 array, got {dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidVideoError(f"frames must have shape [T, H, W, 3], got {list(frames.shape)}")
    if min(frames.shape[:3]) == 0:
        raise InvalidVideoError(f"frames must be non-empty, got shape {list(frames.shape)}")
    return frames


def preprocess_frames(
    frames: np.ndarray,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bilinear",
    device: str = "cpu",
) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> normalised pixels float32 [T, 3, S, S] (antialiased resize).

    The one preprocessing path: each backbone's config carries its size, mean, std and interpolation
    (small CNN: 64 px, 0.5/0.25; CLIP: 224 px bicubic, CLIP's mean/std; ImageNet ResNet: 224 px bilinear).
    """
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if pixels.shape[-2:] != (image_size, image_size):
        pixels = F.interpolate(pixels, size=(image_size, image_size), mode=interpolation, antialias=True)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def rescale_frames(frames: np.ndarray, scale: float) -> np.ndarray:
    """uint8 frames [T, H, W, 3] resized by `scale` (sides rounded) as uint8: the frames a camera or a cheaper render
    at that size would deliver. Shrinking averages pixel areas, as a renderer's supersampling does (BabyAI's 32 px
    render is 1.5x closer to a 64 px one shrunk by area than by antialiased bilinear); growing is bilinear. A no-op
    at scale 1."""
    if scale == 1.0:
        return frames
    height, width = (max(1, round(side * scale)) for side in frames.shape[1:3])
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    pixels = (F.interpolate(pixels, size=(height, width), mode="area") if scale < 1 else
              F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False))
    return pixels.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def embed_videos(embed: Callable[[np.ndarray], torch.Tensor], trajectories: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Per-video frame embeddings [T_i, D] from one `embed` pass over all frames when sizes agree (the batching
    that pays), else one pass per video."""
    lengths = [len(check_frames(frames)) for frames in trajectories]
    if len({frames.shape[1:] for frames in trajectories}) == 1:
        return list(embed(np.concatenate(trajectories)).split(lengths))
    return [embed(frames) for frames in trajectories]


def embed_in_chunks(embed: Callable[[np.ndarray], torch.Tensor], frames: np.ndarray, chunk_size: int) -> torch.Tensor:
    """`embed` over frames [T, H, W, 3] in chunks of at most `chunk_size` frames, concatenated: bounds memory."""
    check_frames(frames)
    return torch.cat([embed(chunk) for chunk in np.array_split(frames, max(1, -(-len(frames) // chunk_size)))])
