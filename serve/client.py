"""RemoteRewardModel: the RewardModel protocol over HTTP, so RL code cannot tell it from a local model."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Sequence

import httpx
import numpy as np

from rewards import Goal, GoalEmbedding, InvalidTaskError, ModelNotReadyError, Score, VLRewardError
from serve.errors import ERROR_STATUS

ERROR_BY_CODE = {cls.code: cls for cls in ERROR_STATUS}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(arrays: Sequence[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{str(i): a for i, a in enumerate(arrays)})
    return buffer.getvalue()


def to_score(result: dict) -> Score:
    return Score(values=np.asarray(result["values"], np.float32), rewards=np.asarray(result["rewards"], np.float32))


class RemoteRewardModel:
    """A model held by a vlreward service. Failures raise (after retries): they never become zero rewards."""

    def __init__(self, url: str = "http://127.0.0.1:8000", model: str | None = None, token: str | None = None,
                 timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0):
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self.http = self._connect()
        infos = self._request("GET", "/v1/models")["models"]
        info = next((m for m in infos if m["name"] == model), None) if model else infos[0]
        if info is None:
            raise ERROR_BY_CODE["unknown_model"](f"the service does not serve {model!r}")
        self.name, self.version, self.goal_kinds = info["name"], info["version"], tuple(info["goal_kinds"])

    def _connect(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s)

    def __getstate__(self) -> dict:
        """Picklable (Ray ships configs holding this to workers): the connection is rebuilt, not copied."""
        return {k: v for k, v in self.__dict__.items() if k != "http"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.http = self._connect()

    def _request(self, method: str, path: str, **kwargs) -> dict:
        """One call with retries on connection errors and 503; 4xx map back to vlreward's error types."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                failure: VLRewardError = ModelNotReadyError(f"cannot reach {self.url}: {error}")
            else:
                if response.is_success:
                    return response.json()
                error_body = response.json().get("error", {}) if "json" in response.headers.get("content-type", "") else {}
                failure = ERROR_BY_CODE.get(error_body.get("code"), VLRewardError)(
                    f"{response.status_code}: {error_body.get('message', response.text[:200])}")
                if response.status_code != 503:
                    raise failure
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise failure

    def _task(self, goal: Goal) -> str:
        if not isinstance(goal, str):
            raise InvalidTaskError("the remote client sends task strings as goals")
        return goal

    def embed_goal(self, goal: Goal) -> GoalEmbedding:
        body = self._request("POST", "/v1/embed", data={"task": self._task(goal), "model": self.name})
        return GoalEmbedding(body["kind"], np.asarray(body["vector"], np.float32), body["digest"])

    def score(self, frames: np.ndarray, goal: Goal) -> Score:
        files = {"frames": ("frames.npy", npy_bytes(frames), "application/octet-stream")}
        return to_score(self._request("POST", "/v1/score", files=files, data={"task": self._task(goal), "model": self.name}))

    def score_video(self, path: str | Path, task: str) -> Score:
        """Upload a video file as it is; the service decodes it."""
        files = {"video": (Path(path).name, Path(path).read_bytes(), "application/octet-stream")}
        return to_score(self._request("POST", "/v1/score", files=files, data={"task": task, "model": self.name}))

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence[Goal]) -> list[Score]:
        """All trajectories in one request: the RL path."""
        files = {"trajectories": ("batch.npz", npz_bytes(trajectories), "application/octet-stream")}
        data = {"tasks": json.dumps([self._task(g) for g in goals]), "model": self.name}
        return [to_score(r) for r in self._request("POST", "/v1/score/batch", files=files, data=data)["results"]]
