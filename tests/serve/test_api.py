"""The live path: real HTTP to a real Ray Serve application decoding real mp4 files with decord."""

from __future__ import annotations

import io
import json
import socket

import httpx
import numpy as np
import pytest

import rewards
from serve.client import RemoteRewardModel, npy_bytes, npz_bytes


@pytest.fixture(scope="module")
def http(service_url):
    with httpx.Client(base_url=service_url, timeout=60) as client:
        yield client


def post_npy(http, frames, **data):
    return http.post("/v1/score", files={"frames": ("f.npy", npy_bytes(frames))}, data={"task": "go to the red ball", **data})


def test_health_and_models(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    models = http.get("/v1/models").json()["models"]
    assert [(m["name"], m["goal_kinds"]) for m in models] == [("babyai-liv", ["text", "image"]), ("babyai-orca", ["demo"]),
                                                                  (rewards.DEFAULT_MODEL, ["text"])]
    assert all(m["version"] for m in models)


def test_scores_a_real_mp4_like_the_local_model(http, babyai_videos):
    path, episode = babyai_videos["success"][0]
    response = http.post("/v1/score", files={"video": (path.name, path.read_bytes())}, data={"task": episode.mission})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "version", "num_frames", "values", "rewards", "return"}
    assert body["model"] == "babyai-liv" and body["num_frames"] == len(episode.frames)  # the service's first model
    assert len(body["values"]) == len(body["rewards"]) == body["num_frames"] and body["rewards"][0] == 0
    assert body["return"] == pytest.approx(sum(body["rewards"]), abs=1e-5)
    from rewards.video import decode_video

    local = rewards.load_model("babyai-liv").score(decode_video(path), episode.mission)
    np.testing.assert_allclose(body["values"], local.values, atol=1e-4)


def test_npy_frames_and_subsampling(http, babyai_videos):
    frames = babyai_videos["success"][0][1].frames
    body = post_npy(http, frames).json()
    assert body["num_frames"] == len(frames)
    strided = post_npy(http, frames, stride="2", max_frames="3").json()
    assert strided["num_frames"] == min(3, len(frames[::2]))
    np.testing.assert_allclose(strided["values"], np.asarray(body["values"])[::2][:3], atol=1e-5)


def test_expert_success_outscores_random_failure(http, babyai_videos):
    def episode_return(path, episode):
        response = http.post("/v1/score", files={"video": (path.name, path.read_bytes())}, data={"task": episode.mission})
        return response.json()["return"]

    successes = [episode_return(*video) for video in babyai_videos["success"]]
    failures = [episode_return(*video) for video in babyai_videos["failure"]]
    assert len(successes) == len(failures) == 3
    assert np.mean(successes) > np.mean(failures), (successes, failures)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_goal_image_scores_like_the_local_model(http, babyai_videos):
    frames = babyai_videos["success"][1][1].frames
    goal = frames[-1]
    response = http.post("/v1/score", files={"frames": ("f.npy", npy_bytes(frames)), "goal_image": ("g.png", png_bytes(goal))})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["values"], rewards.load_model("babyai-liv").score(frames, goal).values, atol=1e-5)
    assert response.json()["values"][-1] == pytest.approx(1.0, abs=1e-5)  # the goal frame itself: cosine 1


@pytest.mark.parametrize("goal_files, goal_data, message", [
    ({"demo": ("d.npy", npy_bytes(np.zeros((3, 8, 8, 3), np.uint8)))}, {}, "not demo"),
    ({"goal_image": ("g.png", b"not an image")}, {}, "cannot decode the goal image"),
    ({"goal_image": ("g.png", png_bytes(np.zeros((8, 8, 3), np.uint8)))}, {"task": "go"}, "exactly one goal"),
])
def test_wrong_goals_are_named(http, random_frames, goal_files, goal_data, message):
    response = http.post("/v1/score", files={"frames": ("f.npy", npy_bytes(random_frames)), **goal_files}, data=goal_data)
    assert response.status_code == 422 and message in response.json()["error"]["message"]


def test_demo_goal_orca_ranks_a_time_warped_demo_above_a_failure(http, babyai_videos):
    """ORCA over REST: the goal is a demo video; a 2x slowed copy of it must cover the demo, a failure not."""
    demo_path, demo = babyai_videos["success"][1]
    warped = np.repeat(demo.frames, 2, axis=0)
    failure = babyai_videos["failure"][0][1].frames

    def final_reward(frames):
        response = http.post("/v1/score", data={"model": "babyai-orca"}, files={
            "frames": ("f.npy", npy_bytes(frames)), "demo": (demo_path.name, demo_path.read_bytes())})
        assert response.status_code == 200, response.text
        return response.json()["rewards"][-1]

    assert final_reward(warped) > final_reward(failure) + 0.2
    text_goal = http.post("/v1/score", data={"model": "babyai-orca", "task": "go to the red ball"},
                          files={"frames": ("f.npy", npy_bytes(failure))})
    assert text_goal.status_code == 422 and "not text" in text_goal.json()["error"]["message"]


def test_batch_route_matches_single_scores(http, babyai_videos):
    trajectories = [episode.frames for _, episode in babyai_videos["success"] + babyai_videos["failure"]]
    tasks = [episode.mission for _, episode in babyai_videos["success"] + babyai_videos["failure"]]
    response = http.post("/v1/score/batch", files={"trajectories": ("b.npz", npz_bytes(trajectories))},
                         data={"tasks": json.dumps(tasks)})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for frames, task, result in zip(trajectories, tasks, results):
        np.testing.assert_allclose(result["values"], post_npy(http, frames, task=task).json()["values"], atol=1e-5)


def bad_npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize("files, data, status, code", [
    ({"video": ("v.mp4", b"this is not a video")}, {"task": "go"}, 422, "invalid_video"),
    ({"video": ("v.mp4", b"")}, {"task": "go"}, 422, "invalid_video"),
    ({"frames": ("f.npy", b"\x93NUMPY garbage")}, {"task": "go"}, 422, "invalid_video"),
    ({"frames": ("f.npy", bad_npy(np.zeros((4, 8, 8, 3), np.float32)))}, {"task": "go"}, 422, "invalid_video"),
    ({"frames": ("f.npy", bad_npy(np.zeros((4, 8, 8), np.uint8)))}, {"task": "go"}, 422, "invalid_video"),
    ({"frames": ("f.npy", bad_npy(np.array([{"a": 1}], dtype=object)))}, {"task": "go"}, 422, "invalid_video"),
    ({"frames": ("f.npy", bad_npy(np.zeros((600, 8, 8, 3), np.uint8)))}, {"task": "go"}, 413, "payload_too_large"),
    ({"frames": ("f.npy", bad_npy(np.zeros((2, 8, 8, 3), np.uint8)))}, {}, 422, "invalid_task"),
    ({"frames": ("f.npy", bad_npy(np.zeros((2, 8, 8, 3), np.uint8)))}, {"task": "   "}, 422, "invalid_task"),
    ({"frames": ("f.npy", bad_npy(np.zeros((2, 8, 8, 3), np.uint8)))}, {"task": "x" * 600}, 422, "invalid_task"),
    ({"frames": ("f.npy", bad_npy(np.zeros((2, 8, 8, 3), np.uint8)))}, {"task": "go", "model": "nope"}, 404, "unknown_model"),
    ({}, {"task": "go"}, 422, "invalid_video"),
])
def test_bad_input_gets_4xx_json_and_service_keeps_serving(http, random_frames, files, data, status, code):
    response = http.post("/v1/score", files=files or None, data=data)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]
    assert post_npy(http, random_frames).status_code == 200


def post_raw_npy(http, frames, **params):
    return http.post("/v1/score", content=npy_bytes(frames), params={"task": "go to the red ball", **params},
                     headers={"Content-Type": "application/x-npy"})


def test_raw_npy_body_with_query_options_scores_like_multipart(http, babyai_videos):
    frames = babyai_videos["success"][0][1].frames
    raw = post_raw_npy(http, frames, stride="2", max_frames="3", model="babyai-liv")
    assert raw.status_code == 200, raw.text
    multipart = post_npy(http, frames, stride="2", max_frames="3").json()
    assert raw.json()["num_frames"] == multipart["num_frames"] == min(3, len(frames[::2]))
    np.testing.assert_allclose(raw.json()["values"], multipart["values"], atol=1e-6)
    # the query string also carries options of a multipart request, but one option may come from one place only
    assert http.post("/v1/score", files={"frames": ("f.npy", npy_bytes(frames))},
                     params={"task": "go to the red ball"}).json()["values"] == pytest.approx(
        post_npy(http, frames).json()["values"], abs=1e-6)
    twice = http.post("/v1/score", files={"frames": ("f.npy", npy_bytes(frames))}, data={"task": "a"},
                      params={"task": "b"})
    assert twice.status_code == 422 and "both in the query string and in the form" in twice.json()["error"]["message"]


@pytest.mark.parametrize("content, params, status, code", [
    (b"not an npy", {"task": "go"}, 422, "invalid_video"),
    (b"", {"task": "go"}, 422, "invalid_video"),
    (npy_bytes(np.zeros((2, 8, 8, 3), np.uint8)), {}, 422, "invalid_task"),
    (npy_bytes(np.zeros((2, 8, 8, 3), np.uint8)), {"task": "go", "model": "nope"}, 404, "unknown_model"),
    (npy_bytes(np.zeros((2, 8, 8, 3), np.uint8)), {"task": "go", "stride": "0"}, 422, "invalid_request"),
    (npy_bytes(np.zeros((2, 8, 8), np.uint8)), {"task": "go"}, 422, "invalid_video"),
    (npy_bytes(np.zeros((600, 8, 8, 3), np.uint8)), {"task": "go"}, 413, "payload_too_large"),
])
def test_bad_raw_bodies_get_4xx_json(http, content, params, status, code):
    response = http.post("/v1/score", content=content, params=params, headers={"Content-Type": "application/x-npy"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_oversized_body_is_refused_before_parsing(service_url):
    """Declare 65 MiB and send none of it: the answer must come from the headers alone."""
    host, port = service_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"POST /v1/score HTTP/1.1\r\nHost: {host}\r\nContent-Length: {65 * 2**20}\r\n"
                           "Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
        response = b""
        while b"payload_too_large" not in response:  # the status line and the JSON body may come apart
            chunk = connection.recv(65536)
            if not chunk:
                break
            response += chunk
        response = response.decode()
    assert response.startswith("HTTP/1.1 413") and '"payload_too_large"' in response


def test_openapi_docs_and_web_page(http):
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/score", "/v1/score/batch", "/v1/score/step", "/v1/models", "/v1/embed", "/v1/eval"} <= set(paths)
    score = paths["/v1/score"]["post"]
    assert set(score["requestBody"]["content"]) == {"multipart/form-data", "application/x-npy"}
    assert {p["name"] for p in score["parameters"] if p["in"] == "query"} == {"task", "model", "max_frames", "stride"}
    assert {"401", "404", "408", "413", "422", "503"} <= set(score["responses"])
    assert http.get("/docs").status_code == 200
    assert "<form" in http.get("/").text


def test_remote_model_speaks_the_protocol(service_url, random_frames):
    remote = RemoteRewardModel(service_url)
    assert isinstance(remote, rewards.RewardModel) and remote.name == "babyai-liv"
    local = rewards.load_model("babyai-liv")
    np.testing.assert_allclose(remote.score(random_frames, "go to the red ball").values,
                               local.score(random_frames, "go to the red ball").values, atol=1e-5)
    np.testing.assert_allclose(remote.embed_goal("go to the red ball").vector,
                               local.embed_goal("go to the red ball").vector, atol=1e-5)
    with pytest.raises(rewards.InvalidTaskError):
        remote.score(random_frames, "")


def test_unreachable_service_raises_not_ready_instead_of_returning_zeros():
    with pytest.raises(rewards.ModelNotReadyError):
        RemoteRewardModel("http://127.0.0.1:9", retries=1, backoff_s=0.01)


def test_the_default_critic_serves_scores_and_streams_like_the_local_model(service_url, babyai_videos):
    from rewards.video import decode_video

    path, episode = babyai_videos["success"][0]
    frames = decode_video(path)
    remote, local = RemoteRewardModel(service_url, rewards.DEFAULT_MODEL), rewards.load_model()
    served = remote.score(frames, episode.mission)
    np.testing.assert_allclose(served.values, local.score(frames, episode.mission).values, atol=1e-4)
    state, streamed = None, []
    for frame in frames:
        reward, state = remote.score_step(frame, episode.mission, state)
        streamed.append(reward)
    np.testing.assert_allclose(streamed, served.rewards, atol=1e-4)


def test_readyz_names_a_model_that_cannot_be_placed_within_bounded_time(service_url):
    """A model whose replica never starts (it asks for more CPUs than the cluster has): /readyz answers 503 in
    about `ready_timeout_s` and names it, instead of hanging."""
    import time

    from ray import serve
    from ray.serve.api import _run

    from serve.app import ModelSpec, ServeArgs, build_app

    args = ServeArgs(models=[ModelSpec(model="babyai-orca", num_cpus=64)], retry_after_s=2, ingress="gateway")
    _run(build_app(args), _blocking=False, name="vlreward-unplaced", route_prefix="/unplaced")
    try:
        url = f"{service_url}/unplaced"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the ingress starts (Serve routes /unplaced to it); the model never does
            try:
                if httpx.get(f"{url}/healthz", timeout=30).status_code == 200:
                    start = time.monotonic()
                    response = httpx.get(f"{url}/readyz", timeout=60)
                    elapsed = time.monotonic() - start
                    if response.status_code != 404:  # 404: the main app's, before the route reached the proxy
                        break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert response.status_code == 503, response.text
        assert response.json()["not_ready"] == ["babyai-orca"] and "babyai-orca" in response.json()["error"]["message"]
        assert response.json()["error"]["code"] == "model_not_ready" and response.headers["retry-after"] == "2"
        assert 4 < elapsed < 10  # the 5 s wait for each model (in parallel), then the answer
    finally:
        serve.delete("vlreward-unplaced")  # and wait, so the next tests see only their own processes
