"""The naive peer: the pattern of common remote reward-model servers, to compare the service against.

FastAPI + uvicorn, the model loaded once in the process, one forward per request (the task is re-embedded
every time), no cross-request batching, no goal cache. It answers the same `/v1/score` multipart call.

    python -m bench.naive_server --port 8311
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile

import rewards
from rewards.video import decode_video
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Serve one reward model the naive way."""

    model: str = arg("babyai-liv", "model name or checkpoint directory")
    host: str = arg("127.0.0.1", "interface to listen on")
    port: int = arg(8311, "port to listen on")
    device: str = arg("auto", "torch device; auto picks cuda when present")


def create_app(model: rewards.RewardModel) -> FastAPI:
    app = FastAPI(title="naive reward server")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/v1/score")
    def score(video: UploadFile | None = File(None), frames: UploadFile | None = File(None), task: str = Form(...)):
        """A plain `def`: FastAPI runs each request on its thread pool, one model call per request."""
        data = (video or frames).file.read()
        array = np.load(io.BytesIO(data), allow_pickle=False) if frames else decode_video(data)
        result = model.score(array, task)
        return {"model": model.name, "num_frames": len(result.values), "values": result.values.tolist(),
                "rewards": result.rewards.tolist(), "return": result.episode_return}

    return app


def main(args: Args) -> None:
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    uvicorn.run(create_app(rewards.load_model(args.model, device=device)), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main(parse_args(Args))
