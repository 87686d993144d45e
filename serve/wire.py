"""The binary formats on the wire, written and read in one place: .npy frames, .npz batches, packed step states."""

from __future__ import annotations

import base64
import binascii
import io
import lzma
import math
import tokenize
import zipfile
import zlib
from typing import BinaryIO, Sequence

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


#: What numpy's .npy header parser raises besides ValueError. A header that is not a Python literal is re-read
#: through `tokenize` (for files written by Python 2): an unclosed bracket raises TokenError, bad indentation
#: IndentationError; deep nesting in the (at most 10,000-character) header overflows the parser's stack as
#: RecursionError or MemoryError.
HEADER_PARSER_ERRORS = (tokenize.TokenError, SyntaxError, RecursionError, MemoryError)


def check_npy_header(stream: BinaryIO, available: int, name: str = "frames") -> None:
    """Refuse a .npy whose header claims more bytes than it holds, before numpy allocates the claimed shape."""
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, _, dtype = read_header(stream)
    except HEADER_PARSER_ERRORS as error:
        raise ValueError(f"{name} has a malformed .npy header ({type(error).__name__})") from None
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > available - stream.tell():
        raise ValueError(f"{name} claims shape {list(shape)} of {dtype} ({claimed} bytes) but holds "
                         f"{max(0, available - stream.tell())}")


def load_npy(data: bytes) -> np.ndarray:
    """A .npy upload -> array, refusing pickled objects and headers that lie about the size."""
    try:
        check_npy_header(io.BytesIO(data), len(data))
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InvalidVideoError(f"frames is not a readable .npy file: {error}") from None


def read_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz upload by name; ValueError naming `what` for anything that is not a sound archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if sum(member.file_size for member in archive.infolist()) > len(data):  # a zip bomb cannot pass
                raise ValueError("its members unpack to more than the upload: send it uncompressed (np.savez)")
            arrays = {}
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    raise ValueError(f"member {member.filename!r} is not a .npy")
                if member.flag_bits & 0x1:  # zipfile raises RuntimeError on opening it
                    raise ValueError(f"member {member.filename!r} is encrypted")
                with archive.open(member) as stream:
                    check_npy_header(stream, member.file_size, member.filename)
                with archive.open(member) as stream:
                    arrays[member.filename[: -len(".npy")]] = np.lib.format.read_array(stream, allow_pickle=False)
            return arrays
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError, ValueError, OSError,
            EOFError) as error:
        raise ValueError(f"{what} is not a readable .npz archive: {error}") from None


def load_npz(data: bytes) -> list[np.ndarray]:
    """A .npz upload of trajectories named 0, 1, 2, ... -> list of arrays in that order."""
    try:
        arrays = read_npz(data, "trajectories")
    except ValueError as error:
        raise InvalidVideoError(str(error)) from None
    if sorted(arrays) != sorted(str(i) for i in range(len(arrays))):
        raise InvalidVideoError(f"trajectories must be arrays named 0..N-1, got {sorted(arrays)[:5]}")
    return [arrays[str(i)] for i in range(len(arrays))]


def pack_states(states: Sequence[StepState | None]) -> str:
    """Streams' states -> one base64 text (an .npz with arrays named "<stream>.<key>") for a JSON body.

    A stream with no arrays (None, or a model that carries nothing) packs to nothing and unpacks as a new stream.
    """
    named = {f"{i}.{key}": array for i, state in enumerate(states) for key, array in (state or {}).items()}
    return base64.b64encode(npz_bytes(named)).decode() if named else ""


def unpack_states(text: str | None, count: int) -> list[StepState | None]:
    """The inverse of `pack_states` for `count` streams; empty text (or an archive with no arrays) means every
    stream starts now. InvalidStateError for anything `pack_states` cannot have written: not base64, not a sound
    .npz of plain arrays, or an array not named "<stream>.<key>" with <stream> one of "0".."count-1". Whether the
    arrays are the ones a model carries is the model's to check (rewards.base.state_array)."""
    states: list[StepState | None] = [None] * count
    if not text:
        return states
    try:
        arrays = read_npz(base64.b64decode(text, validate=True), "state")
    except (ValueError, binascii.Error) as error:
        raise InvalidStateError(f"state is not one this service returned: {error}") from None
    streams = {str(i): i for i in range(count)}  # the names pack_states writes: no "01", "³" or 5,000 digits
    for name, array in arrays.items():
        stream, _, key = name.partition(".")
        if stream not in streams or not key:
            raise InvalidStateError(f"state names stream {stream[:20]!r} and key {key[:20]!r}, but there are "
                                    f"{count} streams, named 0..{count - 1}")
        states[streams[stream]] = {**(states[streams[stream]] or {}), key: array}
    return states
