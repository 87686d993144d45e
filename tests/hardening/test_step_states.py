"""A malformed streaming state costs its sender a 422 `invalid_state`, never the service a 500 (issue 26), for every
model kind that streams (LIV, ORCA, progress critic, VLC). States go the route's way, serve/wire.py's `unpack_states`
then `RewardService.step_many` (the model's state_array checks), in-process and without Ray."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

import rewards
from rewards import InvalidStateError
from serve.service import RewardService
from serve.wire import npy_bytes, npz_bytes, pack_states, unpack_states

MODELS = ["babyai-liv", "babyai-orca", "babyai-progress", "babyai-vlc"]  # one of each kind that streams
TASK = "go to the red ball"
#: numpy re-reads a header that is not a Python literal through `tokenize`: TokenError, the 500 of issue 26
TOKEN_ERROR_NPY = b"\x93NUMPY\x01\x00" + struct.pack("<H", 17) + b"{'descr': ('<f4'\n"


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)


@functools.cache
def loaded(name: str) -> rewards.RewardModel:
    return rewards.load_model(name)


@pytest.fixture(scope="module", params=MODELS)
def service(request) -> RewardService:
    return RewardService(loaded(request.param))


def goal_of(service: RewardService):
    return frames(4, 1) if service.model.goal_kinds == ("demo",) else TASK


def step(service: RewardService, state: str, count: int = 1) -> np.ndarray:
    """One step of `count` streams with `state` as it arrives in the form: decoded, then stepped."""
    goal = goal_of(service)
    (rewards_, _), = service.step_many([(frames(count, 2), [goal] * count, unpack_states(state, count))])
    return rewards_


def sound_state(service: RewardService) -> dict[str, np.ndarray]:
    """The state the model returns after three frames: every key it carries (ORCA: its DP row too)."""
    goal, state = goal_of(service), None
    for frame in frames(3, 3):
        _, state = service.model.score_step(frame, goal, state)
    return state


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def with_key(state: dict, key: str, array) -> str:
    """`state` packed for one stream, `key` replaced by `array` (None: dropped)."""
    changed = {k: v for k, v in state.items() if k != key} | ({} if array is None else {key: array})
    return b64(npz_bytes({f"0.{k}": v for k, v in changed.items()}))


def object_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"rm": "-rf"}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def one_member(name: str, data: bytes) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return b64(buffer.getvalue())


def test_the_sound_state_and_an_empty_archive_step(service):
    state = sound_state(service)
    assert np.isfinite(step(service, pack_states([state]))).all()
    assert np.isfinite(step(service, "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==", 2)).all()  # issue 26's state: streams start


ARRAY_DAMAGE = {  # name -> how a carried array is damaged (None drops it)
    "dropped": lambda a: None,
    "int32": lambda a: a.astype(np.int32),
    "bool": lambda a: a > 0,
    "complex": lambda a: a.astype(np.complex64),
    "text": lambda a: np.array(["x"] * a.size).reshape(a.shape),
    "datetime": lambda a: np.zeros(a.shape, "<M8[s]"),
    "0-d": lambda a: np.float32(1.0),
    "extra axis": lambda a: a[None],
    "wrong width": lambda a: np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), np.float32),
    "nan": lambda a: np.full(a.shape, np.nan, np.float32),
    "inf": lambda a: np.full(a.shape, -np.inf, np.float32),
    "float64 beyond float32": lambda a: np.full(a.shape, 1e300),
}


@pytest.mark.parametrize("damage", sorted(ARRAY_DAMAGE))
def test_each_carried_array_damaged_is_invalid_state(service, damage):
    state = sound_state(service)
    for key, array in state.items():
        forged = with_key(state, key, ARRAY_DAMAGE[damage](array))
        if damage == "dropped" and len(state) == 1:
            continue  # nothing left: an empty archive, which starts the stream (tested above)
        if damage == "dropped" and key == "log_coverage":
            continue  # ORCA carries no DP row until a frame's context is complete: without it, a valid state
        with pytest.raises(InvalidStateError):
            step(service, forged)


ARCHIVE_DAMAGE = {
    "not base64": "not base64!",
    "not a zip": b64(b"not a zip at all"),
    "pickled object array": one_member("0.value.npy", object_npy()),
    "header numpy tokenizes (TokenError)": one_member("0.value.npy", TOKEN_ERROR_NPY),
    "stream out of range": one_member("1.value.npy", npy_bytes(np.zeros(1, np.float32))),
    "stream a superscript digit": one_member("\u00b3.value.npy", npy_bytes(np.zeros(1, np.float32))),
    "stream of 5000 digits": one_member("0" * 5000 + ".value.npy", npy_bytes(np.zeros(1, np.float32))),
}


@pytest.mark.parametrize("damage", sorted(ARCHIVE_DAMAGE))
def test_a_damaged_archive_is_invalid_state(service, damage):
    with pytest.raises(InvalidStateError):
        step(service, ARCHIVE_DAMAGE[damage])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # ORCA's exp(3e38): what is refused
def test_absurd_floats_never_pay_a_non_finite_reward(service):
    """3e38 is finite float32, so it passes state_array; a model fed it pays a finite reward or refuses the state."""
    state = sound_state(service)
    for key, array in state.items():
        try:
            paid = step(service, with_key(state, key, np.full(array.shape, 3e38, np.float32)))
        except InvalidStateError:
            continue
        assert np.isfinite(paid).all(), key


class ServiceHandle:
    """A ModelServer handle's face (`await handle.method.remote(...)`) over a RewardService, without Ray."""

    def __init__(self, service: RewardService):
        self.service = service

    def __getattr__(self, method: str) -> SimpleNamespace:
        async def call(*args):
            if method == "score_steps":  # as ModelReplica.score_steps: goals embedded, one step_many item
                new_frames, goals, states = args
                (paid, next_states), = self.service.step_many(
                    [(new_frames, [self.service.embed_goal(g) for g in goals], states)])
                return paid.tolist(), next_states
            return getattr(self.service, method)(*args)

        return SimpleNamespace(remote=call)


def test_the_step_route_answers_a_header_numpy_tokenizes_with_422_not_500():
    """Issue 26's 500 over HTTP, in-process: `TokenError while serving /v1/score/step`. numpy's header parser raised
    tokenize.TokenError (not ValueError) for a .npy header that is not a Python literal, in the frames or in a
    member of the state, and no reader caught it."""
    from fastapi.testclient import TestClient

    from serve.api import ApiSettings, create_api

    handles = {name: ServiceHandle(RewardService(loaded(name))) for name in ("babyai-liv", "babyai-orca")}
    client = TestClient(create_api(handles, ApiSettings(default_model="babyai-liv")), raise_server_exceptions=False)
    empty = "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="
    good, demo = ("f.npy", npy_bytes(frames(1))), ("d.npy", npy_bytes(frames(4, 1)))
    cases = [  # (files, form, status, code)
        ({"frames": ("f.npy", TOKEN_ERROR_NPY)}, {"model": "babyai-orca", "task": TASK, "state": empty},
         422, "invalid_video"),
        ({"frames": good}, {"task": TASK, "state": one_member("0.value.npy", TOKEN_ERROR_NPY)}, 422, "invalid_state"),
        ({"frames": good, "demo": demo}, {"model": "babyai-orca", "state": one_member("0.recent.npy", TOKEN_ERROR_NPY)},
         422, "invalid_state"),
        ({"frames": good}, {"model": "babyai-orca", "task": TASK, "state": empty}, 422, "invalid_task"),
        ({"frames": good, "demo": demo}, {"model": "babyai-orca", "state": empty}, 200, None),
    ]
    for files, form, status, code in cases:
        response = client.post("/v1/score/step", files=files, data=form)
        assert response.status_code == status, (form, response.text)
        assert code is None or response.json()["error"]["code"] == code, response.text
