"""A video that crashes the native decoder must cost its sender a 422, not the service its ingress.

decord aborts the whole process (C++ std::bad_alloc, not a Python exception) on an mp4 whose stts box claims
2**31 frames: one flipped byte in a 2.4 KB file, found by bench/fuzz.py.
"""

from __future__ import annotations

import time

import httpx

from bench.fuzz import good_request_succeeds, mp4_claiming_frames, serving_pids


def test_a_video_that_aborts_the_decoder_is_refused_and_the_ingress_survives(service_url):
    before = serving_pids()
    with httpx.Client(base_url=service_url, timeout=120) as http:
        try:
            response = http.post("/v1/score", files={"video": ("v.mp4", mp4_claiming_frames(0x74000008))},
                                 data={"task": "go to the red ball"})
        finally:
            deadline = time.monotonic() + 120  # leave the service serving for the tests after this one
            while not good_request_succeeds(http) and time.monotonic() < deadline:
                time.sleep(1)
    assert response.status_code == 422, response.text
    assert serving_pids() == before
