"""Video decoding with decord (the one place frames come out of a container) and dataset manifests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from rewards.errors import InvalidTaskError, InvalidVideoError


def decode_video(source: str | Path | bytes, max_frames: int | None = None, stride: int = 1) -> np.ndarray:
    """An mp4/webm/avi/gif file or its bytes -> uint8 frames [T, H, W, 3] (every `stride`-th, at most `max_frames`)."""
    import decord

    if stride < 1:
        raise InvalidVideoError(f"stride must be >= 1, got {stride}")
    if isinstance(source, bytes) and not source:
        raise InvalidVideoError("the video is empty (0 bytes)")
    try:
        reader = decord.VideoReader(io.BytesIO(source) if isinstance(source, bytes) else str(source), ctx=decord.cpu(0))
        indices = list(range(0, len(reader), stride))[:max_frames]
        frames = reader.get_batch(indices).asnumpy() if indices else None
    except (decord.DECORDError, RuntimeError, ValueError) as error:
        raise InvalidVideoError(f"cannot decode the video: {str(error).splitlines()[0][:200]}") from None
    if frames is None or frames.size == 0:
        raise InvalidVideoError("the video has no frames")
    return frames


def decode_image(data: bytes) -> np.ndarray:
    """A goal image (PNG/JPEG or any format Pillow reads) -> uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        raise InvalidTaskError(f"cannot decode the goal image: {error}") from None


def read_manifest(directory: str | Path) -> list[dict]:
    """Rows of a dataset's manifest.jsonl (design §2), with `path` made absolute."""
    directory = Path(directory)
    rows = [json.loads(line) for line in (directory / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [{**row, "path": str(directory / row["path"])} for row in rows]
