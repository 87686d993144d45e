"""Can any generated request make the service fail? Media-path mutations (hypothesis) and the OpenAPI schema
(schemathesis) against a live service: zero 5xx, zero replica deaths, every answer well-formed JSON.

    nice -n 10 python -m bench.fuzz                     # 2,000 media + 500 schema requests, ~4 min
    python -m bench.fuzz --url http://127.0.0.1:8000    # against a running service

The strategies here also drive the CI sample in tests/hardening/.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import re
import struct
import subprocess
import tempfile
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bench.common import babyai_frames, local_service, markdown_table, ray_processes, run_identity, write_result
from serve.client import npy_bytes, npz_bytes
from rewards.args import arg, parse_args

TASK = "go to the red ball"


# ---- a corpus of real media files: each container and codec the decoder may meet -------------------------------

CODECS = {  # name -> ffmpeg output options
    "h264.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "h264-10bit-444.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv444p10le"],
    "hevc.mp4": ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=none"],
    "av1.mp4": ["-c:v", "libaom-av1", "-cpu-used", "8"],
    "vp9.webm": ["-c:v", "libvpx-vp9"],
    "mpeg4.avi": ["-c:v", "mpeg4"],
    "mjpeg.avi": ["-c:v", "mjpeg"],
    "ffv1.mkv": ["-c:v", "ffv1"],
    "prores.mov": ["-c:v", "prores"],
    "theora.ogv": ["-c:v", "libtheora"],
    "animated.gif": [],
    "still.png": ["-frames:v", "1"],
    "still.jpg": ["-frames:v", "1"],
}


def ffmpeg(frames: np.ndarray, name: str, options: list[str]) -> bytes:
    """uint8 frames [T, H, W, 3] -> the bytes of `name` written by imageio's ffmpeg with `options`."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                        "-s", f"{width}x{height}", "-r", "10", "-i", "-", *options, "-y", str(path)],
                       input=frames.tobytes(), check=True, capture_output=True)
        return path.read_bytes()


@functools.cache
def media_corpus() -> dict[str, bytes]:
    """Eight real BabyAI frames in every container/codec of CODECS, plus odd sizes and an audio-only file."""
    frames = babyai_frames(8, 64)
    corpus = {name: ffmpeg(frames, name, options) for name, options in CODECS.items()}
    corpus["odd-63x65.mkv"] = ffmpeg(np.ascontiguousarray(frames[:, :63, :65]), "odd.mkv", ["-c:v", "ffv1"])
    corpus["one-frame.mp4"] = ffmpeg(frames[:1], "one.mp4", CODECS["h264.mp4"])
    with tempfile.TemporaryDirectory() as folder:  # audio only: a container with no video stream
        import imageio_ffmpeg

        path = Path(folder) / "tone.m4a"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                        "sine=duration=0.5", "-y", str(path)], check=True, capture_output=True)
        corpus["audio-only.m4a"] = path.read_bytes()
    return corpus


def npy_header(shape: tuple, descr: str = "|u1", fortran: bool = False) -> bytes:
    """A hand-made .npy v1 header claiming `shape` (the data that follows is up to the caller)."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (a decompression-bomb header)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def mp4_claiming_frames(count: int) -> bytes:
    """The corpus's H.264 mp4 whose time-to-sample table (stts) claims `count` frames; decord's C++ runs out of
    memory on 2**31 and aborts the whole process (std::bad_alloc), found by this fuzzer."""
    video = bytearray(media_corpus()["h264.mp4"])
    first_entry = video.index(b"stts") + 12  # after the box type, version/flags and entry count
    video[first_entry:first_entry + 4] = struct.pack(">I", count)
    return bytes(video)


def deflated_npz(entries: dict[str, bytes]) -> bytes:
    """An .npz (zip) whose members are compressed: a few KB can claim gigabytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ---- hypothesis strategies over the media path ------------------------------------------------------------------

@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` as it arrives from a broken client or network: whole, truncated, bit-flipped, spliced or emptied."""
    kind = draw(st.sampled_from(["whole", "truncated", "flipped", "spliced", "empty"]))
    if kind == "truncated":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "flipped":
        corrupted = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=16)):
            corrupted[position] ^= draw(st.integers(1, 255))
        return bytes(corrupted)
    if kind == "spliced":
        start = draw(st.integers(0, len(data)))
        return data[:start] + draw(st.binary(max_size=256)) + data[start + draw(st.integers(0, 256)):]
    return b"" if kind == "empty" else data


def video_files() -> st.SearchStrategy[bytes]:
    """Every corpus file, mutated, plus lying frame counts, random bytes and an .npy's magic in front of junk."""
    corpus = media_corpus()
    return st.one_of(
        st.sampled_from(sorted(corpus)).flatmap(lambda name: mutated(corpus[name])),
        st.sampled_from([0, 9, 10**6, 0x74000008, 2**32 - 1]).map(mp4_claiming_frames),
        st.binary(max_size=2048),
        st.binary(max_size=512).map(lambda junk: b"\x93NUMPY" + junk),
    )


DTYPES = st.sampled_from(["u1", "i1", "<u2", ">u2", "<i4", "<i8", "<f2", "<f4", "<f8", "?", "<c8", "<U3", "<M8[s]"])


@st.composite
def arrays(draw) -> np.ndarray:
    """Arrays of any small shape and dtype, C or Fortran order (uint8 [T,H,W,3] among them)."""
    dtype = np.dtype(draw(st.one_of(st.just("u1"), DTYPES)))
    shape = draw(st.one_of(
        st.tuples(st.integers(0, 6), st.integers(0, 40), st.integers(0, 40), st.sampled_from([3, 3, 1, 4])),
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=8)))
    array = draw(hnp.arrays(dtype, shape, elements={"allow_nan": True} if dtype.kind == "f" else None))
    return np.asfortranarray(array) if draw(st.booleans()) else array


def object_array_npy() -> bytes:
    """A pickled object array: what allow_pickle=False must refuse."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"rm": "-rf"}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


#: .npy headers that lie about their data; (name, bytes). Each must get a 4xx.
CRAFTED_NPY = [
    ("shape over memory", npy_header((10**7, 512, 512, 3)) + bytes(64)),
    ("shape overflowing int64", npy_header((2**40, 2**20, 3, 3)) + bytes(64)),
    ("negative shape", npy_header((-1, 64, 64, 3)) + bytes(64)),
    ("short data", npy_header((4, 64, 64, 3)) + bytes(100)),
    ("unknown dtype", npy_header((1, 2, 2, 3), descr="|x9") + bytes(12)),
    ("header not a dict", b"\x93NUMPY\x01\x00\x10\x00" + b"[1, 2, 3]      \n"),
    ("unsupported version", b"\x93NUMPY\x09\x00" + npy_header((1, 2, 2, 3))[8:] + bytes(12)),
    ("object array (pickle)", object_array_npy()),
    # not a Python literal: numpy re-reads it through `tokenize` (Python 2 files), which raises TokenError
    ("header with an unclosed bracket", b"\x93NUMPY\x01\x00" + struct.pack("<H", 17) + b"{'descr': ('<f4'\n"),
    ("header nested past the parser's stack", b"\x93NUMPY\x02\x00" + struct.pack("<I", 9001) + b"-" * 9000 + b"1"),
]


@st.composite
def frames(draw) -> np.ndarray:
    """Valid uint8 frames [T, H, W, 3] of any small size: the answer must then be a result, never an error."""
    shape = draw(st.tuples(st.integers(1, 12), st.integers(1, 80), st.integers(1, 80), st.just(3)))
    return np.random.default_rng(draw(st.integers(0, 2**32))).integers(0, 256, shape, dtype=np.uint8)


def npy_files() -> st.SearchStrategy[bytes]:
    return st.one_of(frames().map(npy_bytes), arrays().map(npy_bytes), arrays().map(npy_bytes).flatmap(mutated))


def npz_files() -> st.SearchStrategy[bytes]:
    """.npz batches: arrays under good and bad names, broken archives and deflated lying members."""
    names = st.one_of(st.just(None), st.lists(st.sampled_from(["0", "1", "2", "-1", "x", "0.5", "01"]), max_size=3))

    def archive(pair):
        items, chosen = pair
        keys = chosen if chosen is not None and len(chosen) == len(items) else [str(i) for i in range(len(items))]
        return npz_bytes(dict(zip(keys, items)))

    plain = st.tuples(st.lists(st.one_of(frames(), arrays()), max_size=3), names).map(archive)
    liars = [deflated_npz({"0.npy": data}) for _, data in CRAFTED_NPY]
    return st.one_of(plain, plain.flatmap(mutated), st.sampled_from(liars))


#: the keys the models' step states carry (LIV, progress, VLC, ORCA), and one no model carries
STATE_KEYS = ["value", "start", "first", "frames", "recent", "log_coverage", "other"]


def forged_states() -> st.SearchStrategy[bytes]:
    """Step states as a client could forge them: arrays of any dtype and shape under the models' keys, under stream
    names pack_states never writes, and members with lying headers."""
    streams = st.sampled_from(["0", "0", "1", "00", "\u00b3", "-1", "0" * 5000])
    names = st.tuples(streams, st.sampled_from(STATE_KEYS)).map(".".join)
    float64s = hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8),
                          elements=st.floats())  # beyond float32's range (1e300), nan and inf among them
    plain = st.dictionaries(names, st.one_of(arrays(), float64s), max_size=3).map(npz_bytes)
    liars = st.tuples(st.sampled_from(STATE_KEYS), st.sampled_from([data for _, data in CRAFTED_NPY])).map(
        lambda pair: deflated_npz({f"0.{pair[0]}.npy": pair[1]}))
    return st.one_of(plain, liars)


def goal_images() -> st.SearchStrategy[bytes]:
    corpus = media_corpus()
    return st.one_of(st.sampled_from([corpus["still.png"], corpus["still.jpg"]]).flatmap(mutated),
                     st.tuples(st.integers(1, 30_000), st.integers(1, 30_000)).map(lambda wh: png_claiming(*wh)))


TEXT = st.one_of(st.just(TASK), st.text(max_size=40), st.text(min_size=500, max_size=600),
                 st.sampled_from(["", " ", "\x00", "go to the red ball\n" * 30, "🟥" * 10]))
NUMBER_FIELD = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["0", "1e3", "abc", "", str(10**30), "-1"]))
MODEL_FIELD = st.sampled_from(["babyai-liv", "babyai-orca", "nope", "../babyai-liv", "", "/etc/passwd"])


@dataclass
class FuzzRequest:
    """One generated HTTP request; `kind` names its family in the bench's table."""

    kind: str
    path: str
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        sizes = {name: len(content) for name, (_, content) in self.files.items()}
        return f"FuzzRequest({self.kind} {self.path} files={sizes} data={ {k: v[:60] for k, v in self.data.items()} })"

    def send(self, http: httpx.Client) -> httpx.Response:
        return http.post(self.path, files=self.files or None, data=self.data)

    def save(self, folder: Path) -> Path:
        """The request as files (each upload under its field name, the form as form.json): a repro to replay."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, (_, content) in self.files.items():
            (folder / name).write_bytes(content)
        (folder / "form.json").write_text(json.dumps({"path": self.path, **self.data}))
        return folder


@st.composite
def optional_fields(draw, options: dict) -> dict:
    """Each of `options` (name -> strategy) present or not."""
    fields = {}
    for name, value in options.items():
        if draw(st.booleans()):
            fields[name] = draw(value)
    return fields


@st.composite
def score_requests(draw) -> FuzzRequest:
    """/v1/score with a video or .npy trajectory and a goal, each possibly broken."""
    media = draw(st.sampled_from(["video", "frames"]))
    npy = st.one_of(npy_files(), st.sampled_from([data for _, data in CRAFTED_NPY]))
    content = draw(video_files() if media == "video" else npy)
    files = {media: (f"upload.{'mp4' if media == 'video' else 'npy'}", content)}
    goal = draw(st.sampled_from(["task", "task", "goal_image", "demo", "none", "two"]))
    data = {"task": draw(TEXT)} if goal in ("task", "two") else {}
    if goal in ("goal_image", "two"):
        files["goal_image"] = ("goal.png", draw(goal_images()))
    if goal == "demo":
        files["demo"] = ("demo.mp4", draw(st.one_of(video_files(), npy)))
    data |= draw(optional_fields({"model": MODEL_FIELD, "max_frames": NUMBER_FIELD, "stride": NUMBER_FIELD}))
    return FuzzRequest(f"score {media}", "/v1/score", files, data)


@st.composite
def batch_requests(draw) -> FuzzRequest:
    tasks = draw(st.one_of(st.lists(TEXT, max_size=4).map(json.dumps), st.text(max_size=20),
                           st.sampled_from(['["go"]', "[1, 2]", '{"0": "go"}', "null", "[null]"])))
    data = {"tasks": tasks} | draw(optional_fields({"model": MODEL_FIELD}))
    return FuzzRequest("score batch", "/v1/score/batch", {"trajectories": ("t.npz", draw(npz_files()))}, data)


@st.composite
def step_requests(draw) -> FuzzRequest:
    """/v1/score/step with client-held state: the state is input too, so it is fuzzed like media."""
    import base64

    state = draw(st.one_of(st.just(""), st.text(max_size=40),
                           st.one_of(npz_files(), forged_states()).map(lambda data: base64.b64encode(data).decode())))
    data = {"task": draw(TEXT), "state": state} | draw(optional_fields({"model": MODEL_FIELD}))
    return FuzzRequest("score step", "/v1/score/step", {"frames": ("f.npy", draw(npy_files()))}, data)


@st.composite
def eval_requests(draw) -> FuzzRequest:
    """/v1/eval: labelled trajectories, labels as JSON objects (valid or not) or junk text."""
    label = st.fixed_dictionaries({"task": TEXT, "success": st.booleans()}, optional={
        "progress": st.lists(st.floats(allow_nan=False), max_size=12), "paraphrases": st.lists(TEXT, max_size=2),
        "kind": st.text(max_size=10), "seed": st.integers()})
    labels = draw(st.one_of(st.lists(label, max_size=3).map(json.dumps), st.text(max_size=30),
                            st.sampled_from(["[1]", "{}", "null", '[{"task": 1}]'])))
    data = {"labels": labels} | draw(optional_fields({"model": MODEL_FIELD}))
    return FuzzRequest("eval", "/v1/eval", {"trajectories": ("t.npz", draw(npz_files()))}, data)


@st.composite
def embed_requests(draw) -> FuzzRequest:
    return FuzzRequest("embed", "/v1/embed", {}, {"task": draw(TEXT)} | draw(optional_fields({"model": MODEL_FIELD})))


def fuzz_requests() -> st.SearchStrategy[FuzzRequest]:
    """Every route that takes input, /v1/score twice as often as the others."""
    return st.one_of(score_requests(), score_requests(), batch_requests(), step_requests(), eval_requests(),
                     embed_requests())


# ---- what a well-formed answer is ------------------------------------------------------------------------------

def result_keys(openapi: dict) -> dict[str, set[str]]:
    """path -> the keys the OpenAPI schema requires in a 200 JSON body of its POST (routes with a response model)."""
    keys = {}
    for path, methods in openapi["paths"].items():
        schema = methods.get("post", {}).get("responses", {}).get("200", {}).get("content", {}) \
            .get("application/json", {}).get("schema", {})
        component = openapi.get("components", {}).get("schemas", {}).get(schema.get("$ref", "").split("/")[-1], {})
        keys[path] = set(component.get("required", ()))
    return keys


#: what must never appear in an error message: Python tracebacks and file positions
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|site-packages")
#: a native library's source position, e.g. "/github/workspace/src/video/video_reader.cc:151"
SOURCE_POSITION = re.compile(r"/[\w./-]+\.(?:cc|cpp|c|h|py):\d+")


def problems(response, required: set[str] = frozenset()) -> list[str]:
    """Why `response` (httpx or schemathesis) is not a JSON result with the `required` keys or a JSON error body."""
    if response.status_code >= 500:
        return [f"{response.status_code}: {response.text[:300]}"]
    try:
        body = response.json()
    except ValueError:
        return [f"{response.status_code} not JSON: {response.text[:200]}"]
    if response.status_code == 200:
        missing = required - set(body)
        if missing:
            return [f"result without {sorted(missing)}"]
        if {"values", "rewards", "num_frames"} <= required and not len(body["values"]) == len(body["rewards"]) \
                == body["num_frames"]:
            return ["values, rewards and num_frames disagree"]
        return []
    error = body.get("error") if isinstance(body, dict) and set(body) == {"error"} else None
    if not (isinstance(error, dict) and set(error) == {"code", "message"}
            and all(isinstance(v, str) and v for v in error.values())):
        return [f"{response.status_code} not an error body: {str(body)[:200]}"]
    if TRACEBACK.search(error["message"]):
        return [f"message leaks internals: {error['message'][:200]}"]
    return []


def leaks_source_position(response: httpx.Response) -> bool:
    return response.status_code != 200 and bool(SOURCE_POSITION.search(response.text))


# ---- the bench ---------------------------------------------------------------------------------------------------

@dataclass
class Args:
    """Fuzz a live service; print status counts per request family and every failure."""

    requests: int = arg(2000, "media-path requests generated by hypothesis")
    schema_requests: int = arg(500, "requests generated by schemathesis from /openapi.json")
    url: str = arg("", "fuzz this running service; empty: start one (babyai-liv + babyai-orca)")
    port: int = arg(8312, "port of the service this bench starts")
    seed: int = arg(0, "hypothesis seed")
    out: str = arg("runs/bench/fuzz.json", "JSON result file")


def commit_seed() -> tuple[int, str]:
    """A seed that changes with each commit, and where it came from: HEAD's hash, or the time where there is no git
    checkout. The CI sample draws from it, so every commit fuzzes a new sample (replay one with its printed seed)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    if re.fullmatch(r"[0-9a-f]{40,64}", head):
        return int(head[:8], 16), f"commit {head[:12]}"
    return int(time.time()), "time (no git checkout)"


def run_hypothesis(strategy, examples: int, seed: int, test) -> None:
    """Draw `examples` values from `strategy` into `test`; no shrinking (the bench records, it does not stop)."""
    from hypothesis import seed as with_seed

    run = settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                   suppress_health_check=list(HealthCheck))(given(strategy)(test))
    with_seed(seed)(run)()


def schema_cases(url: str):
    """Every operation of the live /openapi.json, positive and negative cases, as one strategy."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return st.one_of([result.ok().as_strategy(generation_mode=mode) for result in schema.get_all_operations()
                      for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)])


def good_request_succeeds(http: httpx.Client) -> bool:
    trajectory = babyai_frames(8)
    response = http.post("/v1/score", files={"frames": ("f.npy", npy_bytes(trajectory))}, data={"task": TASK})
    return response.status_code == 200 and len(response.json()["values"]) == 8


def serving_pids() -> set[int]:
    """Pids of this process's model replicas and ingress: Serve restarts a dead one under a new pid."""
    return {process.pid for role in ("replica", "ingress") for process in ray_processes()[role]}


def fuzz(args: Args, url: str) -> dict:
    counts: collections.Counter = collections.Counter()
    failures, leaky = [], collections.Counter()
    # Serve restarts a dead replica or ingress under a new pid: after each failure, count the pids that vanished
    serving, dead = (serving_pids() if not args.url else set()), set()
    repro_dir = Path(args.out).with_suffix("") / "failures"
    with httpx.Client(base_url=url, timeout=120) as http:
        required = result_keys(http.get("/openapi.json").json())

        def note_deaths():
            nonlocal serving
            if not args.url:
                time.sleep(1)  # a crashed process needs a moment to leave the process table
                dead.update(serving - serving_pids())
                serving = serving_pids()

        def media_case(request: FuzzRequest):
            response = request.send(http)
            counts[(request.kind, response.status_code)] += 1
            leaky[request.kind] += leaks_source_position(response)
            found = problems(response, required.get(request.path, set()))
            if found:
                saved = request.save(repro_dir / f"{len(failures):03d}")
                failures.extend(f"{request!r} (saved in {saved}): {p}" for p in found)
                note_deaths()

        def schema_case(case):
            response = case.call(base_url=url, timeout=120)
            counts[(f"schema {case.method} {case.path}", response.status_code)] += 1
            found = problems(response, required.get(case.path, set()))
            failures.extend(f"{case.as_curl_command()}: {p}" for p in found)
            if found:
                note_deaths()

        run_hypothesis(fuzz_requests(), args.requests, args.seed, media_case)
        if args.schema_requests:
            run_hypothesis(schema_cases(url), args.schema_requests, args.seed, schema_case)
        still_good = good_request_succeeds(http)
    note_deaths()
    deaths = len(dead) if not args.url else None  # unknown for a service this bench did not start
    kinds = sorted({kind for kind, _ in counts})
    statuses = sorted({status for _, status in counts})
    rows = [{"requests": kind, **{str(s): counts[(kind, s)] for s in statuses},
             "decoder source paths in message": leaky[kind]} for kind in kinds]
    return {"rows": rows, "statuses": statuses, "failures": failures, "good_request_after": still_good,
            "requests_sent": sum(counts.values()), "server_errors": sum(n for (_, s), n in counts.items() if s >= 500),
            "process_deaths": deaths}


def main(args: Args) -> dict:
    print(asdict(args))
    identity = run_identity()
    media_corpus()  # encode before the clock and the service start
    if args.url:
        result = fuzz(args, args.url)
    else:
        with local_service(args.port, models=["babyai-liv", "babyai-orca"], max_frames=512) as url:
            result = fuzz(args, url)
    rows = result.pop("rows")
    print(f"\n{identity['device']}, commit {identity['commit']}\n")
    print(markdown_table(rows, ["requests"] + [str(s) for s in result.pop("statuses")]
                         + ["decoder source paths in message"]))
    print(f"\n{result['requests_sent']} requests, {result['server_errors']} 5xx, {len(result['failures'])} malformed "
          f"or failing answers, at least {result['process_deaths']} replica or ingress deaths, a good request afterwards "
          f"{'succeeds' if result['good_request_after'] else 'FAILS'}")
    for failure in result["failures"][:20]:
        print("  ", failure[:400])
    write_result(args.out, args, identity, rows, **result)
    return result


if __name__ == "__main__":
    main(parse_args(Args))
