"""Bad input never breaks the live service: a small CI sample of bench/fuzz.py's generated requests, the OpenAPI
schema's cases, every codec of the media corpus and hand-made lying headers. Each answer is a well-formed
result or JSON 4xx, and the replica that served them is the same process afterwards.

The sample's seed changes with each commit (bench.fuzz.commit_seed), so every commit fuzzes new requests; it is
printed and named in every failure. Replay a failure with the seed it names:

    VLREWARD_FUZZ_SEED=<seed> pytest tests/hardening/test_fuzz.py -k "generated or schema"
"""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings

from bench.fuzz import (CRAFTED_NPY, SOURCE_POSITION, commit_seed, deflated_npz, fuzz_requests, good_request_succeeds,
                        media_corpus, problems, result_keys, schema_cases, serving_pids)
from serve.client import npy_bytes, npz_bytes

# ---- the sample's seed: VLREWARD_FUZZ_SEED replays one; otherwise each commit draws its own ----------------------
FUZZ_SEED, SEED_SOURCE = ((int(os.environ["VLREWARD_FUZZ_SEED"]), "VLREWARD_FUZZ_SEED")
                          if os.environ.get("VLREWARD_FUZZ_SEED") else commit_seed())
REPLAY = f'fuzz seed {FUZZ_SEED} ({SEED_SOURCE}); replay: VLREWARD_FUZZ_SEED={FUZZ_SEED} pytest ' \
         f'tests/hardening/test_fuzz.py -k "generated or schema"'
CI_SAMPLE = settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
#: decord reads these from bytes (GIFs go through Pillow); the rest of the corpus must be refused with a 422
DECODABLE = {"h264.mp4", "h264-10bit-444.mp4", "hevc.mp4", "vp9.webm", "mpeg4.avi", "mjpeg.avi", "ffv1.mkv",
             "prores.mov", "odd-63x65.mkv", "one-frame.mp4", "animated.gif"}


@pytest.fixture(scope="module", autouse=True)
def announce_seed(request):
    """The seed on the terminal, past pytest's capture, whether the run passes or fails."""
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{REPLAY}")


@pytest.fixture(scope="module")
def http(service_url):
    with httpx.Client(base_url=service_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def required(http):
    """Keys each route's 200 body must hold, from the live OpenAPI schema."""
    return result_keys(http.get("/openapi.json").json())


@pytest.fixture(scope="module", autouse=True)
def replicas_survive(service_url, http):
    """After everything in this module, the same replica and ingress processes serve, and serve a good request."""
    before = serving_pids()
    yield
    assert good_request_succeeds(http)
    assert before and before == serving_pids()


@seed(FUZZ_SEED)
@CI_SAMPLE
@given(request=fuzz_requests())
def test_generated_requests_get_results_or_json_errors(http, required, request):
    found = problems(request.send(http), required[request.path])
    assert not found, f"{request!r}: {found} ({REPLAY})"


def test_schema_cases_get_results_or_json_errors(service_url, required):
    @seed(FUZZ_SEED)
    @CI_SAMPLE
    @given(case=schema_cases(service_url))
    def check(case):
        found = problems(case.call(base_url=service_url, timeout=120), required.get(case.path, set()))
        assert not found, f"{case.as_curl_command()}: {found} ({REPLAY})"

    check()


@pytest.mark.parametrize("name", sorted(media_corpus()))
def test_every_container_and_codec_scores_or_is_refused(http, name):
    response = http.post("/v1/score", files={"video": (name, media_corpus()[name])}, data={"task": "go"})
    assert not problems(response)
    assert response.status_code == (200 if name in DECODABLE else 422), response.text


@pytest.mark.parametrize("name, data", CRAFTED_NPY)
def test_lying_npy_headers_are_refused(http, name, data):
    response = http.post("/v1/score", files={"frames": ("f.npy", data)}, data={"task": "go to the red ball"})
    assert not problems(response)
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("name, data", CRAFTED_NPY)
def test_lying_npz_members_are_refused(http, name, data):
    response = http.post("/v1/score/batch", files={"trajectories": ("t.npz", deflated_npz({"0.npy": data}))},
                         data={"tasks": '["go to the red ball"]'})
    assert not problems(response)
    assert 400 <= response.status_code < 500


def broken_archives() -> dict[str, bytes]:
    """A valid one-array .npz broken three ways: truncated, corrupt deflate stream, unknown compression method."""
    array = np.zeros((2, 8, 8, 3), np.uint8)
    stored = npz_bytes([array])
    deflated = bytearray(deflated_npz({"0.npy": npy_bytes(array)}))
    start = deflated.find(b"0.npy") + 5 + 10
    deflated[start:start + 4] = b"\xff\xff\xff\xff"
    method_99 = bytearray(stored)
    central = method_99.find(b"PK\x01\x02")
    method_99[8:10] = method_99[central + 10:central + 12] = (99).to_bytes(2, "little")
    return {"truncated": stored[: len(stored) // 2], "corrupt deflate": bytes(deflated), "method 99": bytes(method_99)}


@pytest.mark.parametrize("name", sorted(broken_archives()))
def test_broken_npz_archives_are_refused(http, name):
    response = http.post("/v1/score/batch", files={"trajectories": ("t.npz", broken_archives()[name])},
                         data={"tasks": '["go to the red ball"]'})
    assert response.status_code == 422, response.text


def test_a_broken_step_state_is_refused(http):
    import base64

    state = base64.b64encode(broken_archives()["truncated"]).decode()
    response = http.post("/v1/score/step", files={"frames": ("f.npy", npy_bytes(np.zeros((1, 8, 8, 3), np.uint8)))},
                         data={"task": "go to the red ball", "state": state})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("name, data", CRAFTED_NPY)
def test_lying_step_state_members_are_refused(http, name, data):
    """A state member with a lying header (issue 26: one numpy tokenizes raised TokenError, a 500)."""
    import base64

    state = base64.b64encode(deflated_npz({"0.value.npy": data})).decode()
    response = http.post("/v1/score/step", files={"frames": ("f.npy", npy_bytes(np.zeros((1, 8, 8, 3), np.uint8)))},
                         data={"task": "go to the red ball", "state": state})
    assert not problems(response)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_state", response.text


def test_decoder_errors_name_no_source_positions(http):
    response = http.post("/v1/score", files={"video": ("a.png", media_corpus()["still.png"])}, data={"task": "go"})
    assert response.status_code == 422 and not SOURCE_POSITION.search(response.text), response.text

