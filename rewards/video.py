"""Video decoding with decord (the one place frames come out of a container) and dataset manifests."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import numpy as np

from rewards.errors import InvalidTaskError, InvalidVideoError, PayloadTooLargeError


# decord's messages start with "[hh:mm:ss] /its/build/path/file.cc:61: "; users need only what follows
_DECODER_POSITION = re.compile(r"\[\d\d:\d\d:\d\d\]\s*|\S+\.(?:cc|cpp|c|h|hpp):\d+:\s*")


def decode_video(source: str | Path | bytes, max_frames: int | None = None, stride: int = 1,
                 max_pixels_per_frame: int | None = None) -> np.ndarray:
    """An mp4/webm/avi/gif file or its bytes -> uint8 frames [T, H, W, 3] (every `stride`-th, at most `max_frames`).

    With `max_pixels_per_frame`, larger frames raise PayloadTooLargeError after decoding one, not all.
    """
    import decord

    if stride < 1:
        raise InvalidVideoError(f"stride must be >= 1, got {stride}")
    if isinstance(source, bytes) and not source:
        raise InvalidVideoError("the video is empty (0 bytes)")
    if _is_gif(source):
        return _decode_gif(source, max_frames, stride, max_pixels_per_frame)
    try:
        reader = decord.VideoReader(io.BytesIO(source) if isinstance(source, bytes) else str(source), ctx=decord.cpu(0))
        if max_pixels_per_frame is not None and len(reader):
            height, width = reader[0].shape[:2]
            if height * width > max_pixels_per_frame:
                raise PayloadTooLargeError(f"frames of {height}x{width} exceed {max_pixels_per_frame} pixels")
        indices = list(range(0, len(reader), stride))[:max_frames]
        frames = reader.get_batch(indices).asnumpy() if indices else None
    except (decord.DECORDError, RuntimeError, ValueError) as error:
        message = _DECODER_POSITION.sub("", str(error).splitlines()[0])
        raise InvalidVideoError(f"cannot decode the video: {message[:200]}") from None
    if frames is None or frames.size == 0:
        raise InvalidVideoError("the video has no frames")
    return frames


def _is_gif(source: str | Path | bytes) -> bool:
    if isinstance(source, bytes):
        return source[:4] == b"GIF8"
    try:
        with open(source, "rb") as file:
            return file.read(4) == b"GIF8"
    except OSError:  # a missing file: decord says so
        return False


def _decode_gif(source: str | Path | bytes, max_frames: int | None, stride: int,
                max_pixels_per_frame: int | None) -> np.ndarray:
    """GIFs through Pillow: decord cannot time a GIF read from bytes."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    last = None if max_frames is None else max_frames * stride
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if max_pixels_per_frame is not None and image.width * image.height > max_pixels_per_frame:
                raise PayloadTooLargeError(f"frames of {image.height}x{image.width} exceed {max_pixels_per_frame} pixels")
            frames = [np.asarray(frame.convert("RGB"))
                      for frame in itertools.islice(ImageSequence.Iterator(image), 0, last, stride)]
    except UnidentifiedImageError:
        raise InvalidVideoError("cannot decode the gif: not a readable GIF") from None
    except (Image.DecompressionBombError, OSError, ValueError) as error:
        raise InvalidVideoError(f"cannot decode the gif: {error}") from None
    if not frames:
        raise InvalidVideoError("the video has no frames")
    return np.stack(frames)


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
