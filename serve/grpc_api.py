"""The gRPC routes (serve/rpc.py's RewardService) on an ingress replica, through the same `Edge` as the HTTP routes:
the same checks, limits, token and graceful drain, and the same error table."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Awaitable, Callable

from rewards.base import check_task_text
from rewards.errors import PayloadTooLargeError, VLRewardError
from serve import rpc
from serve.errors import error_body, error_message
from serve.guards import Admission, check_bearer
from serve.intake import Edge, success_flags, task_texts
from serve.schemas import ScoreResponse
from serve.status import status_of
from serve.wire import load_npy


def score_reply(result: ScoreResponse) -> rpc.ScoreReply:
    return rpc.ScoreReply(**result.model_dump())


class GrpcRoutes:
    """RewardService's methods, by name, on an ingress deployment that has an `api` (its FastAPI app, whose state
    holds the Edge) and an `admission` (serve.deployments.Draining)."""

    api: object
    admission: Admission

    async def Score(self, request: rpc.ScoreRequest, grpc_context) -> rpc.ScoreReply:
        async def score(edge: Edge) -> rpc.ScoreReply:
            _, handle = edge.model(request.model or None)
            frames = await edge.media(request.media, request.max_frames or None, request.stride or 1)
            return score_reply(await edge.ask(handle.score.remote(frames, check_task_text(request.task))))

        return await self._answer(request, grpc_context, score)

    async def ScoreBatch(self, request: rpc.BatchScoreRequest, grpc_context) -> rpc.BatchScoreReply:
        async def score(edge: Edge) -> rpc.BatchScoreReply:
            name, handle = edge.model(request.model or None)
            arrays = await asyncio.to_thread(lambda: [load_npy(npy) for npy in request.trajectories])
            trajectories = edge.checked(arrays)
            goals = task_texts(list(request.tasks), len(trajectories))
            successes = success_flags(list(request.successes), len(trajectories)) if request.successes else None
            response = await edge.score_many(name, handle, trajectories, goals, successes)
            return rpc.BatchScoreReply(model=response.model, results=[score_reply(r) for r in response.results])

        return await self._answer(request, grpc_context, score)

    async def Models(self, request: rpc.ModelsRequest, grpc_context) -> rpc.ModelsReply:
        async def models(edge: Edge) -> rpc.ModelsReply:
            return rpc.ModelsReply(models=[rpc.ModelInfo(**info.model_dump()) for info in await edge.model_infos()])

        return await self._answer(request, grpc_context, models)

    async def Embed(self, request: rpc.EmbedRequest, grpc_context) -> rpc.EmbedReply:
        async def embed(edge: Edge) -> rpc.EmbedReply:
            _, handle = edge.model(request.model or None)
            return rpc.EmbedReply(**(await edge.ask(handle.embed.remote(check_task_text(request.task)))).model_dump())

        return await self._answer(request, grpc_context, embed)

    async def _answer(self, request, grpc_context, call: Callable[[Edge], Awaitable]):
        """call(edge) once the token, the size and the admission pass; an error ends the call with its status and
        the HTTP API's JSON body as details (a bug: INTERNAL, its type named, the traceback in the replica's log).
        Counted in the request metrics as route `grpc:<message>` with the HTTP status it stands for."""
        edge: Edge = self.api.state.edge
        admitted, status, start = False, 200, time.perf_counter()
        try:
            if edge.settings.api_token is not None:
                check_bearer(dict(grpc_context.invocation_metadata()).get("authorization", ""), edge.settings.api_token)
            if request.ByteSize() > edge.settings.max_body_bytes:
                raise PayloadTooLargeError(f"message of {request.ByteSize()} bytes exceeds the limit of "
                                           f"{edge.settings.max_body_bytes}")
            self.admission.admit()
            admitted = True
            return await call(edge)
        except VLRewardError as error:
            status = status_of(error)
            self._fail(grpc_context, status, error.code, error_message(error))
            raise
        except Exception as error:
            status = 500
            self._fail(grpc_context, status, "internal_error",
                       f"{type(error).__name__} while serving {type(request).__name__}")
            raise
        finally:
            if admitted:
                self.admission.done()
            if edge.metrics is not None:
                edge.metrics.request(f"grpc:{type(request).__name__}", status, time.perf_counter() - start)

    @staticmethod
    def _fail(grpc_context, status: int, code: str, message: str) -> None:
        grpc_context.set_code(rpc.GRPC_CODES[status])
        grpc_context.set_details(json.dumps(error_body(code, message)))
