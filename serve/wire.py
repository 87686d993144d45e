"""The binary formats on the wire, written and read in one place: .npy frames, .npz batches, packed step states."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Sequence

import numpy as np

from rewards import InvalidStateError, InvalidVideoError, StepState


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(arrays: Sequence[np.ndarray] | dict[str, np.ndarray]) -> bytes:
    """Arrays named 0..N-1 (a sequence) or by their keys (a dict), uncompressed: frames do not compress."""
    named = arrays if isinstance(arrays, dict) else {str(i): a for i, a in enumerate(arrays)}
    buffer = io.BytesIO()
    np.savez(buffer, **named)
    return buffer.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    """A .npy upload -> array, refusing pickled objects."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidVideoError(f"frames is not a readable .npy file: {error}") from None


def load_npz(data: bytes) -> list[np.ndarray]:
    """A .npz upload of trajectories named 0, 1, 2, ... -> list of arrays in that order."""
    try:
        with open_npz(data) as archive:
            if sorted(archive.files, key=int) != [str(i) for i in range(len(archive.files))]:
                raise KeyError("names are not 0..N-1")
            return [archive[str(i)] for i in range(len(archive.files))]
    except (ValueError, OSError, EOFError, KeyError, TypeError) as error:
        raise InvalidVideoError(f"trajectories is not a .npz of arrays named 0..N-1: {error}") from None


def open_npz(data: bytes) -> np.lib.npyio.NpzFile:
    """An .npz archive from bytes; ValueError when the bytes are anything else (e.g. a plain .npy)."""
    archive = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    return archive


def pack_states(states: Sequence[StepState | None]) -> str:
    """Streams' states -> one base64 text (an .npz with arrays named "<stream>.<key>") for a JSON body.

    A stream with no arrays (None, or a model that carries nothing) packs to nothing and unpacks as a new stream.
    """
    named = {f"{i}.{key}": array for i, state in enumerate(states) for key, array in (state or {}).items()}
    return base64.b64encode(npz_bytes(named)).decode() if named else ""


def unpack_states(text: str | None, count: int) -> list[StepState | None]:
    """The inverse of `pack_states` for `count` streams; empty text means every stream starts now."""
    states: list[StepState | None] = [None] * count
    if not text:
        return states
    try:
        with open_npz(base64.b64decode(text, validate=True)) as archive:
            for name in archive.files:
                stream, key = name.split(".", 1)
                if not 0 <= int(stream) < count:
                    raise ValueError(f"state names stream {stream}, but there are {count}")
                states[int(stream)] = {**(states[int(stream)] or {}), key: archive[name]}
    except (ValueError, OSError, EOFError, binascii.Error) as error:
        raise InvalidStateError(f"state is not one this service returned: {error}") from None
    return states
