"""`vlreward`: one command over data, training, serving, scoring, RL and docs. Heavy imports happen per subcommand."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path

from rewards.args import add_dataclass_arguments, from_namespace


def cmd_train(ns):
    from rewards.train import Args, main

    print(f"checkpoint: {main(from_namespace(Args, ns))}")


def cmd_eval(ns):
    import json
    import shlex

    import rewards
    from envs.suites import SUITES, get_suite
    from rewards.checkpoint import record_in_config
    from rewards.evaluate import Args, evaluate, heldout_block, summary
    from rewards.registry import resolve_checkpoint
    from vlreward.plot import plot_evaluation

    def paraphrases(row: dict):  # for rows that carry none: the suite's sentences for the row's task
        return get_suite(row["env"]).sentences(row["env_task"], row["task"]) if row.get("env") in SUITES else ()

    args = from_namespace(Args, ns)
    model = rewards.load_model(args.model, device=args.device)
    report = evaluate(model, args.data, args.split, max_videos=args.max_videos, paraphrases=paraphrases,
                      batch_size=args.batch_size, curves_per_group=args.curves_per_group)
    out = Path(args.out or f"runs/eval/{model.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(summary(report))
    if args.record:  # the figures travel with the weights
        command = "vlreward eval " + shlex.join(sys.argv[2:])
        path = record_in_config(resolve_checkpoint(args.model), args.record_as,
                                heldout_block(report, args.data, args.split, command))
        print(f"held-out figures recorded in {path}")
    print(f"report: {out / 'report.json'}; plots: {', '.join(p.name for p in plot_evaluation(report, out))}")


class _StopNow(BaseException):
    """Raised by `vlreward serve`'s signal handler: a signal while Ray and Serve start, or a second one."""


def cmd_serve(ns):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # embedded single-node Ray; a deployed cluster keeps auth
    import logging
    import signal
    import threading
    import time

    from serve.app import ServeArgs, drain_local, init_ray, replica_per_cpu, run_local, stop_local

    overrides = {"models": ns.models, "model_root": ns.model_root,
                 "api_token": ns.api_token or os.environ.get("VLREWARD_API_TOKEN"),
                 "shutdown_grace_s": ns.shutdown_grace_s, "proxy": ns.proxy, "grpc_port": ns.grpc_port,
                 "access_log": ns.access_log, "replica_per_cpu": ns.replica_per_cpu}
    args = ServeArgs.from_yaml(ns.config, **overrides) if ns.config else ServeArgs(
        **{k: v for k, v in overrides.items() if v is not None})
    if ns.ingress:
        args = args.model_copy(update={"ingress": ns.ingress})
    own_cluster = ns.address is None
    if own_cluster and args.replica_per_cpu:  # the local Ray runs this service alone
        args = replica_per_cpu(args, ns.num_cpus or os.cpu_count() or 1)
    received: list[str] = []  # the signals received, by name
    stop = threading.Event()  # set by the first signal while serving: the main thread drains then
    phase = "starting"  # then serving, draining, stopping

    def on_signal(signum, _frame):
        """SIGTERM (docker stop, systemd, Kubernetes) or SIGINT (Ctrl-C; also when a shell started us in the
        background with SIGINT ignored). Starting: stop now; serving: drain; draining: a second signal stops now."""
        received.append(signal.Signals(signum).name)
        if phase == "starting" or phase == "draining" and len(received) > 1:
            raise _StopNow
        stop.set()

    def handle_signals(handler) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)

    handle_signals(on_signal)
    try:
        init_ray(ns.address, args.proxy,
                 **({"num_cpus": ns.num_cpus} if ns.num_cpus is not None and own_cluster else {}))
        # ray.init replaced our SIGTERM handler with its own (sys.exit(15)), and its core worker put Ray's native
        # crash handler (absl's) on SIGTERM: a stack dump, then that handler, then SIGABRT 3 s later: ours again
        handle_signals(on_signal)
        url = run_local(args, ns.host, ns.port, ns.address, num_cpus=ns.num_cpus)
        phase = "serving"
        grpc = f", gRPC on port {args.grpc_port}" if args.grpc_port else ""
        print(f"vlreward serving {', '.join(spec.key for spec in args.models)} on {url} (docs at {url}/docs)"
              f"{grpc}; Ctrl-C stops", flush=True)
        stop.wait()
    except BaseException as error:
        # a signal (_StopNow, which Ray's Cython code may turn into a SystemError, or SystemExit(SIGTERM) from
        # ray.init's handler while it starts): stop below; anything else (a model that cannot be placed, Ray
        # failing to start): leave nothing running and raise it
        if not (received or isinstance(error, SystemExit) and error.code == signal.SIGTERM):
            handle_signals(signal.SIG_IGN)
            stop_local(own_cluster=own_cluster)
            raise
        received[:] = received or ["SIGTERM"]
        phase = "stopping"  # a further signal (`timeout` forwards its own) no longer raises outside the try below
    # a SIGTERM that met Ray's native handler (inside ray.init, before ours were back) armed absl's 3 s alarm,
    # which aborts the process (SIGABRT) unless it is gone by then: a graceful stop takes longer
    if hasattr(signal, "alarm"):  # (not on Windows)
        signal.alarm(0)
    began, drained = time.monotonic(), None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the one line below tells how the stop went
    try:
        phase = "draining"  # also after a signal while Serve started: its /readyz may have answered already
        if len(received) == 1:
            drained = drain_local(args, args.shutdown_grace_s, own_cluster)
        phase = "stopping"
    except _StopNow:
        phase = "stopping"
    stop_local(own_cluster=own_cluster)  # runs to its end whatever comes: it is what leaves no process behind
    if drained is None or not drained["replicas"]:
        print(f"vlreward serve: {' then '.join(received)}: stopped without waiting for requests", file=sys.stderr)
    else:
        cut = f", {drained['left']} cut off after {args.shutdown_grace_s:g} s" if drained["left"] else ""
        print(f"vlreward serve: {received[0]}: {drained['in_flight'] - drained['left']} requests in flight finished"
              f"{cut}, {drained['refused']} refused (503); stopped in {time.monotonic() - began:.1f} s",
              file=sys.stderr)
    # nothing is left to finalize, and the interpreter's teardown of torch and Ray's modules takes 1.5-2 s
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def read_frames(path: str):
    """A video file or a .npy of uint8 [T, H, W, 3] frames."""
    import numpy as np

    from rewards.video import decode_video

    return np.load(path, allow_pickle=False) if path.endswith(".npy") else decode_video(path)


def cmd_score(ns):
    from rewards.video import decode_image

    goals = [g for g in (ns.task, ns.goal_image, ns.demo) if g is not None]
    if len(goals) != 1:
        raise ValueError("give exactly one goal: --task TEXT, --goal-image PNG or --demo VIDEO")
    goal = ns.task if ns.task is not None else (
        decode_image(Path(ns.goal_image).read_bytes()) if ns.goal_image else read_frames(ns.demo))
    if ns.url:
        from serve.grpc_client import connect

        model = connect(ns.url, ns.model, token=ns.api_token or os.environ.get("VLREWARD_API_TOKEN"))
        score = model.score_video(ns.video, goal) if not ns.video.endswith(".npy") else model.score(read_frames(ns.video), goal)
    else:
        import rewards

        model = rewards.load_model(ns.model or rewards.DEFAULT_MODEL)
        score = model.score(read_frames(ns.video), goal)
    print(f"model {model.name}  frames {len(score.values)}  return {score.episode_return:+.4f}")
    print("frame      value     reward")
    for t, (value, reward) in enumerate(zip(score.values, score.rewards)):
        print(f"{t:5d}  {value:+.4f}  {reward:+.4f}")
    if ns.plot:
        from vlreward.plot import plot_reward_curve

        title = f"{model.name}: {ns.task or ns.goal_image or ns.demo}"
        print(f"plot: {plot_reward_curve(score.values, score.rewards, title, ns.plot)}")


def cmd_models(ns):
    if ns.url:
        import httpx

        headers = {"Authorization": f"Bearer {ns.api_token}"} if ns.api_token else {}
        response = httpx.get(f"{ns.url.rstrip('/')}/v1/models", headers=headers, timeout=30)
        if not response.is_success:
            sys.exit(f"vlreward models: error: {response.status_code} {response.text[:300]}")
        rows = [(m["name"], m["kind"], ",".join(m["goal_kinds"]), m["version"]) for m in response.json()["models"]]
    else:
        from rewards import list_models, load_model

        models = [load_model(name) for name in list_models()]
        rows = [(m.name, type(m).__name__, ",".join(m.goal_kinds), m.version) for m in models]
    print(f"{'name':24} {'kind':20} {'goals':12} version")
    for row in rows:
        print(f"{row[0]:24} {row[1]:20} {row[2]:12} {row[3]}")


def cmd_rl(ns):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from rl.train import Args, train

    train(from_namespace(Args, ns))


def cmd_report(ns):
    from vlreward.report import Args, report

    sys.exit(report(from_namespace(Args, ns)))


def build_parser() -> argparse.ArgumentParser:
    from envs.generate import Args as DataArgs, generate
    from envs.merge import MergeArgs, merge
    from envs.rollouts import ImportArgs, import_rollouts
    from rewards.evaluate import Args as EvalArgs
    from rewards.train import Args as TrainArgs
    from rl.train import Args as RLArgs
    from serve.settings import Proxy
    from vlreward.report import Args as ReportArgs

    parser = argparse.ArgumentParser(prog="vlreward", description="Video-language rewards as a service for RL.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets of language-conditioned episodes")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    for name, help_text, args_class, function in (
            ("generate", "roll out experts and failures into mp4 + manifest.jsonl", DataArgs, generate),
            ("import", "append episodes recorded by `vlreward rl --record` to a dataset", ImportArgs, import_rollouts),
            ("merge", "one dataset from several (e.g. the same episodes at two sizes)", MergeArgs, merge)):
        command = data_commands.add_parser(name, help=help_text)
        add_dataclass_arguments(command, args_class)
        command.set_defaults(run=lambda ns, a=args_class, f=function: print(f(from_namespace(a, ns))))

    train = commands.add_parser("train", help="train a critic on a generated dataset")
    add_dataclass_arguments(train, TrainArgs)
    train.set_defaults(run=cmd_train)

    evaluation = commands.add_parser("eval", help="reward-quality metrics and plots of a model on a dataset")
    add_dataclass_arguments(evaluation, EvalArgs)
    evaluation.set_defaults(run=cmd_eval)

    serve = commands.add_parser("serve", help="start the reward service on an embedded local Ray (or --address)")
    serve.add_argument("--config", default=None, help="YAML file of ServeArgs (models with replicas, batching, "
                       "autoscaling; limits; token); flags given here override it")
    serve.add_argument("--models", nargs="+", default=None, help="shipped names or checkpoint dirs (default: the shipped default critic, babyai-goto-progress)")
    serve.add_argument("--model-root", default=None, help="checkpoint paths must resolve under this directory")
    serve.add_argument("--api-token", default=None, help="require this bearer token (or set VLREWARD_API_TOKEN)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=None, help="also answer gRPC (serve/rpc.py's RewardService: "
                       "Score, ScoreBatch, Models, Embed) on this port, e.g. 9000; a client: `--url grpc://HOST:PORT`")
    serve.add_argument("--address", default=None, help="existing Ray cluster address (default: start a local one)")
    serve.add_argument("--ingress", choices=["model", "gateway"], default=None,
                       help="model (default): the first model's replica answers HTTP, no hop for it; gateway: a "
                       "separate ingress deployment, as on a cluster (deploy/serve_config.yaml)")
    serve.add_argument("--proxy", choices=typing.get_args(Proxy), default=None,
                       help="auto (default): haproxy where this starts the local Ray, else the cluster's; haproxy: "
                       "Serve's HAProxy ingress forwards straight to the ingress replicas' own ports, no Python proxy "
                       "on the way; python: Serve's proxy actor takes HTTP (docs/serving.md)")
    serve.add_argument("--replica-per-cpu", action="store_true", default=None,
                       help="a model served alone on CPU gets a replica per CPU of the local Ray, each a process with "
                       "its own GIL (docs/serving.md; a drain on SIGTERM may miss a busy replica)")
    serve.add_argument("--access-log", action="store_true", default=None,
                       help="Serve's access log: a line per request in the replicas' log files (costs replica CPU)")
    serve.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs of the local Ray (default: all); model replicas' CPU requests are sized to fit them")
    serve.add_argument("--shutdown-grace-s", type=float, default=None,
                       help="on SIGTERM or Ctrl-C: how long requests in flight may take to finish, new ones getting "
                       "503, before Ray stops (default 5)")
    serve.set_defaults(run=cmd_serve)

    score = commands.add_parser("score", help="print the per-frame rewards of a video")
    score.add_argument("video", help="video file (mp4/webm/avi/gif) or .npy of uint8 [T,H,W,3] frames")
    score.add_argument("--task", default=None, help="task description, e.g. 'go to the red ball'")
    score.add_argument("--goal-image", default=None, help="goal image (png/jpeg), for image-goal models")
    score.add_argument("--demo", default=None, help="demonstration video or .npy, for demo-goal models (ORCA)")
    score.add_argument("--url", default="", help="service URL, http(s):// or grpc://HOST:PORT (empty: load the model "
                       "in this process)")
    score.add_argument("--model", default=None, help="model name (default: the service's or package's default)")
    score.add_argument("--api-token", default=None, help="bearer token for the service")
    score.add_argument("--plot", default=None, help="write a PNG of the reward curve here")
    score.set_defaults(run=cmd_score)

    models = commands.add_parser("models", help="list the shipped models, or those a service serves (--url)")
    models.add_argument("--url", default="", help="service URL (empty: the models shipped in this package)")
    models.add_argument("--api-token", default=os.environ.get("VLREWARD_API_TOKEN"), help="bearer token")
    models.set_defaults(run=cmd_models)

    rl = commands.add_parser("rl", help="train PPO (RLlib or Stable-Baselines3) with rewards from a critic")
    add_dataclass_arguments(rl, RLArgs)
    rl.set_defaults(run=cmd_rl)

    report = commands.add_parser("report", help="regenerate the tables of README.md and docs/*.md from committed data "
                                 "(--check: exit 1 with a diff when one is stale)")
    add_dataclass_arguments(report, ReportArgs)
    report.set_defaults(run=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> None:
    from rewards import VLRewardError

    ns = build_parser().parse_args(argv)
    try:
        ns.run(ns)
    except (VLRewardError, ValueError, FileNotFoundError) as error:  # user errors: one clear line, no traceback
        sys.exit(f"vlreward {ns.command}: error: {error}")
    except BrokenPipeError:  # the reader went away (`vlreward score ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        sys.exit(1)


if __name__ == "__main__":
    main()
