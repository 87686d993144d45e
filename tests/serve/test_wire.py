"""serve/wire.py's readers refuse every malformed upload with vlreward's error types, never a foreign exception
(which the API would answer with a 500): plain Python, no models, no Ray."""

from __future__ import annotations

import base64
import io
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import InvalidStateError, InvalidVideoError
from serve.wire import load_npy, load_npz, npy_bytes, npz_bytes, pack_states, unpack_states

#: .npy files whose header numpy's parser fails on with something other than ValueError: a header that is not a
#: Python literal is re-read through `tokenize` (issue 26: "TokenError while serving /v1/score/step")
FOREIGN_ERROR_HEADERS = {
    "TokenError (unclosed bracket)": b"\x93NUMPY\x01\x00" + struct.pack("<H", 17) + b"{'descr': ('<f4'\n",
    "IndentationError": b"\x93NUMPY\x01\x00" + struct.pack("<H", 7) + b"  1\n 2\n",
    "RecursionError": b"\x93NUMPY\x02\x00" + struct.pack("<I", 5001) + b"~" * 5000 + b"1",
    "MemoryError (parser stack)": b"\x93NUMPY\x02\x00" + struct.pack("<I", 9001) + b"-" * 9000 + b"1",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def encrypted(archive: bytes) -> bytes:
    """`archive` with its members flagged as encrypted (zipfile raises RuntimeError on opening them)."""
    flagged = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = flagged.find(signature)
        flagged[start + offset] |= 0x1
    return bytes(flagged)


def corrupt_lzma(member: bytes) -> bytes:
    archive = bytearray(zipped({"0.value.npy": member}, zipfile.ZIP_LZMA))
    start = archive.find(b"0.value.npy") + len("0.value.npy") + 8
    archive[start:start + 8] = b"\xff" * 8
    return bytes(archive)


VALUE = npy_bytes(np.zeros(1, np.float32))


@pytest.mark.parametrize("name", sorted(FOREIGN_ERROR_HEADERS))
def test_a_header_numpy_cannot_parse_is_invalid_frames_trajectories_and_state(name):
    data = FOREIGN_ERROR_HEADERS[name]
    with pytest.raises(InvalidVideoError, match="malformed .npy header"):
        load_npy(data)
    with pytest.raises(InvalidVideoError, match="malformed .npy header"):
        load_npz(zipped({"0.npy": data}))
    with pytest.raises(InvalidStateError, match="malformed .npy header"):
        unpack_states(b64(zipped({"0.value.npy": data})), 1)


def test_no_state_or_an_archive_without_arrays_starts_every_stream():
    """The fuzzer's state in issue 26 was such an empty archive: it is a valid 'all streams start now'."""
    assert unpack_states("", 2) == unpack_states(None, 2) == [None, None]
    assert b64(npz_bytes({})) == "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="
    assert unpack_states("UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==", 2) == [None, None]


def test_states_round_trip_per_stream():
    states = [{"value": np.array([0.5], np.float32)}, None,
              {"recent": np.ones((2, 4), np.float32), "log_coverage": -np.ones(3, np.float32)}]
    back = unpack_states(pack_states(states), 3)
    assert back[1] is None and set(back[0]) == {"value"} and set(back[2]) == {"recent", "log_coverage"}
    np.testing.assert_array_equal(back[2]["recent"], states[2]["recent"])


def object_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"rm": "-rf"}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


MALFORMED_STATES = {
    "not base64": "not base64!",
    "base64 of text": b64(b"hello"),
    "non-ascii text": "état",
    "truncated archive": b64(npz_bytes({"0.value": np.zeros(1, np.float32)})[:40]),
    "member not .npy": b64(zipped({"0.value.txt": b"1.0"})),
    "pickled object array": b64(zipped({"0.value.npy": object_npy()})),
    "encrypted member": b64(encrypted(zipped({"0.value.npy": VALUE}))),
    "corrupt lzma member": b64(corrupt_lzma(VALUE)),
    "stream out of range": b64(zipped({"1.value.npy": VALUE})),
    "stream with a leading zero": b64(zipped({"00.value.npy": VALUE})),
    "stream a superscript digit": b64(zipped({"\u00b3.value.npy": VALUE})),  # str.isdigit() but not int()
    "stream of 5000 digits": b64(zipped({"0" * 5000 + ".value.npy": VALUE})),  # int() refuses > 4300 digits
    "stream not a number": b64(zipped({"x.value.npy": VALUE})),
    "no key": b64(zipped({"0.npy": VALUE})),
    "empty key": b64(zipped({"0..npy": VALUE})),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_STATES))
def test_malformed_state_archives_are_invalid_state(name):
    with pytest.raises(InvalidStateError):
        unpack_states(MALFORMED_STATES[name], 1)


@st.composite
def damaged_states(draw) -> str:
    """A sound state (or a lying member) bit-flipped, truncated or spliced, as base64."""
    sound = draw(st.sampled_from([pack_states([{"value": np.ones(1, np.float32)}, {"start": np.ones(4, np.float32)}]),
                                  b64(zipped({"0.value.npy": VALUE}, zipfile.ZIP_DEFLATED)),
                                  b64(zipped({"1.recent.npy": VALUE}, zipfile.ZIP_BZIP2)),
                                  b64(zipped({"0.value.npy": VALUE}, zipfile.ZIP_LZMA))]
                                 + [b64(zipped({"0.value.npy": h})) for h in FOREIGN_ERROR_HEADERS.values()]))
    data = bytearray(base64.b64decode(sound))
    for position in draw(st.lists(st.integers(0, len(data) - 1), max_size=6)):
        data[position] ^= draw(st.integers(1, 255))
    cut = draw(st.integers(0, len(data)))
    return b64(bytes(data[:cut]) + draw(st.binary(max_size=16)) + bytes(data[cut:]))


@settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(state=damaged_states())
def test_a_damaged_state_unpacks_or_is_invalid_state(state):
    try:
        unpack_states(state, 2)
    except InvalidStateError:
        pass
