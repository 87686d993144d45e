"""Which bounds the mp4 path, decoding or the model? decord frames/s at 64/128/224 px against the model's
frames/s on the same frames (the model resizes to its own input size), both in this process.

    nice -n 10 python -m bench.decode           # ~1 min
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

import rewards
from bench.common import TASK, babyai_frames, markdown_table, mp4_bytes, run_identity, write_result
from rewards.video import decode_video
from rewards.args import arg, parse_args


@dataclass
class Args:
    """Decode and score the same H.264 clip at several frame sizes."""

    model: str = arg("babyai-liv", "shipped model name or checkpoint directory")
    sizes: list[int] = arg([64, 128, 224], "rendered frame sides in pixels (multiples of 16)")
    frames: int = arg(128, "frames per clip")
    seconds: float = arg(3.0, "measured seconds per number")
    torch_threads: int = arg(1, "torch threads for the model: 1 is what a replica gets (Ray sets OMP_NUM_THREADS to "
                                "the actor's num_cpus); 0 keeps torch's default")
    out: str = arg("runs/bench/decode.json", "JSON result file")


def frames_per_s(work, frames: int, seconds: float) -> float:
    """`frames` / the median time of `work()` over about `seconds` (after one warm-up call)."""
    work()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        work()
        times.append(time.perf_counter() - begin)
    return frames / float(np.median(times))


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = rewards.load_model(args.model, device=device)
    goal = model.embed_goal(TASK)
    rows = []
    for size in args.sizes:
        frames = babyai_frames(args.frames, size)
        video = mp4_bytes(frames)
        decode = frames_per_s(lambda: decode_video(video), args.frames, args.seconds)
        score = frames_per_s(lambda: model.score_batch([frames], [goal]), args.frames, args.seconds)
        bound = "decode" if decode < score else "model"
        rows.append({"frame px": size, "mp4 KB": len(video) / 1024, "decode frames/s": decode,
                     "model frames/s": score, "bound": bound, "by": max(decode, score) / min(decode, score),
                     "both in series frames/s": 1 / (1 / decode + 1 / score)})
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\n{identity['device']}, commit {identity['commit']}, {args.frames}-frame H.264 clips of BabyAI, "
          f"model {args.model} on {torch.get_num_threads()} torch thread(s)\n")
    print(markdown_table(rows))
    write_result(args.out, args, identity, rows)
    return {"rows": rows}


if __name__ == "__main__":
    main(parse_args(Args))
