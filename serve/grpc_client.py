"""`GrpcRewardModel`: the RewardModel protocol over the service's gRPC port (serve/rpc.py), e.g. for RL code that
scores many trajectories per call: `vlreward rl --url grpc://127.0.0.1:9000`.

It retries what is transient (the service not ready, overloaded or stopping; a dropped connection; a timeout) with
the HTTP client's policy (`serve.client.Attempts`), raises vlreward's own errors from the JSON the service sends as
details, and counts its calls in the HTTP client's Prometheus metrics (route `grpc:<method>`). A failed score
raises: it never becomes a reward of 0. Text goals only: image and demo goals go over HTTP (`RemoteRewardModel`).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Sequence

import grpc
import numpy as np

from rewards import GoalEmbedding, InvalidTaskError, ModelNotReadyError, Score, VLRewardError
from serve import rpc
from serve.client import Attempts, RemoteRewardModel, choose_model
from serve.status import ERROR_BY_CODE
from serve.wire import npy_bytes

SCHEME = "grpc://"
#: codes worth another try: not ready, overloaded or stopping (UNAVAILABLE), a timeout, a bug that may not recur
#: (as the HTTP client retries 5xx), and Serve's own backpressure (RESOURCE_EXHAUSTED without our JSON details)
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL})


def failure_of(error: grpc.RpcError, target: str) -> tuple[VLRewardError, bool]:
    """A failed call -> (the vlreward error its JSON details name, whether to try again)."""
    code, details = error.code(), error.details() or ""
    try:
        body = json.loads(details)["error"]
        return ERROR_BY_CODE.get(body["code"], VLRewardError)(f"{code.name}: {body['message']}"), code in TRANSIENT
    except (ValueError, KeyError, TypeError):  # not the service's own answer: the channel's, or Serve's proxy's
        failure = ModelNotReadyError(f"{target}: {code.name}: {details[:200]}")
        return failure, code in TRANSIENT or code == grpc.StatusCode.RESOURCE_EXHAUSTED


class GrpcRewardModel:
    """A model held by a vlreward service, called over gRPC. Failures raise (after retries), never 0."""

    remote = True  # as RemoteRewardModel's

    def __init__(self, url: str = "grpc://127.0.0.1:9000", model: str | None = None, token: str | None = None,
                 application: str = "vlreward", timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 0.5):
        if not url.startswith(SCHEME):
            raise ValueError(f"a gRPC url is {SCHEME}HOST:PORT, got {url!r}")
        self.url, self.token, self.application = url.rstrip("/"), token, application
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._connect()
        infos = self._call("Models", rpc.ModelsRequest()).models
        plain = lambda value: value if isinstance(value, (str, bool, int, float)) else list(value)  # noqa: E731
        choose_model(self, [{field.name: plain(getattr(info, field.name)) for field in info.DESCRIPTOR.fields}
                            for info in infos], model)  # plain values: the client pickles (rl.offload)

    def _connect(self) -> None:
        unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(self.url[len(SCHEME):], options=unlimited)  # the service sets the limit
        self._stubs = {method: self.channel.unary_unary(f"/{rpc.SERVICE}/{method}",
                                                        request_serializer=lambda message: message.SerializeToString(),
                                                        response_deserializer=reply.FromString)
                       for method, reply in rpc.REPLIES.items()}
        self._metadata = [("application", self.application)] + (
            [("authorization", f"Bearer {self.token}")] if self.token else [])

    def __getstate__(self) -> dict:
        """Picklable (Ray ships configs holding this to workers): the channel is rebuilt, not copied."""
        return {k: v for k, v in self.__dict__.items() if k not in ("channel", "_stubs", "_metadata")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._connect()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _call(self, method: str, request):
        attempts = Attempts(f"grpc:{method}", self.url, self.retries, self.backoff_s)
        for attempt in itertools.count():
            try:
                return attempts.succeeded(self._stubs[method](request, metadata=self._metadata,
                                                              timeout=self.timeout_s))
            except grpc.RpcError as error:
                time.sleep(attempts.failed(attempt, *failure_of(error, self.url)))

    @staticmethod
    def _task(goal) -> str:
        if not isinstance(goal, str):
            raise InvalidTaskError("the gRPC service takes task strings; send image or demo goals over HTTP")
        return goal

    def embed_goal(self, goal) -> GoalEmbedding:
        reply = self._call("Embed", rpc.EmbedRequest(model=self.name, task=self._task(goal)))
        return GoalEmbedding(reply.kind, np.asarray(reply.vector, np.float32), reply.digest)

    def score(self, frames: np.ndarray, goal) -> Score:
        reply = self._call("Score", rpc.ScoreRequest(model=self.name, task=self._task(goal), media=npy_bytes(frames)))
        return to_score(reply)

    def score_video(self, path: str | Path, goal) -> Score:
        """Send a video file as it is; the service decodes it."""
        reply = self._call("Score", rpc.ScoreRequest(model=self.name, task=self._task(goal),
                                                     media=Path(path).read_bytes()))
        return to_score(reply)

    def score_batch(self, trajectories: Sequence[np.ndarray], goals: Sequence, successes: Sequence[bool] | None = None
                    ) -> list[Score]:
        """One call for all trajectories; `successes` (one per trajectory) feeds the service's live reward audit."""
        request = rpc.BatchScoreRequest(model=self.name, trajectories=[npy_bytes(frames) for frames in trajectories],
                                        tasks=[self._task(goal) for goal in goals],
                                        successes=[bool(s) for s in successes] if successes is not None else [])
        return [to_score(result) for result in self._call("ScoreBatch", request).results]


def connect(url: str, model: str | None = None, token: str | None = None) -> GrpcRewardModel | RemoteRewardModel:
    """The client of the service at `url`: gRPC for grpc://HOST:PORT, else HTTP (`serve.client`)."""
    if url.startswith(SCHEME):
        return GrpcRewardModel(url, model, token=token)
    return RemoteRewardModel(url, model, token=token)


def to_score(reply: rpc.ScoreReply) -> Score:
    return Score(values=np.asarray(reply.values, np.float32), rewards=np.asarray(reply.rewards, np.float32))
