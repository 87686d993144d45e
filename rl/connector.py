"""RLlib's two adapters over the scoring engine (`rl.submission`): `EpisodeScorer`, an env-runner callback that
submits each episode as it ends (or in segments while it runs), and `ServiceReward`, a learner connector piece that
relabels whole episodes with the scores.

Two ways into the connector: the scores the env runners submitted (a `PendingScore` in `episode.custom_data`),
collected with a wait only for those still in flight; or, when the episodes carry their frames instead, one batch
call here per training batch (the older, blocking path).

Verified in RLlib 2.60 (new API stack), env runner side: with `batch_mode="complete_episodes"` every `sample()`
resets the envs, so episodes never span two calls (`t_started == 0`); `on_episode_end` runs before `to_numpy()`,
when the infos are still the env's own dicts; `custom_data` survives `to_numpy()` and reaches the learner
(in-process with 0 env runners and a local learner; pickled otherwise, when a `PendingScore` resolves to its
outcome first).

Learner side (PPO):
- Added via `config.learners(learner_connector=lambda obs_space, act_space: ServiceReward(...))`; custom pieces run
  after `AddOneTsToEpisodesAndTruncate` (prepended by `PPOLearner.build`) and before the default pieces, so
  `AddColumnsFromEpisodesToTrainBatch` copies `episode.get_rewards()` into the batch and then GAE reads that column.
- `__call__(*, rl_module, batch, episodes, explore, shared_data, metrics)`; `metrics` is the learner's
  MetricsLogger: `metrics.log_value(k, v)` shows up as `result["learners"][k]`.
- Episodes arrive numpy'd and already extended by one masked step (`shared_data["_added_loss_mask_for_valid_
  episode_ts"]`): T real steps give `len(episode) == T+1`, T+1 rewards (last 0.0) and T+2 infos (last repeated).
- Infos survive to the learner (`episode.get_infos()`, reset info first); rewrite with
  `episode.set_rewards(new_data=array, at_indices=slice(0, T))`. Infos never enter the train batch.
"""

from __future__ import annotations

import concurrent.futures
import time
import warnings
from typing import Any, Callable

import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2

from rewards import VLRewardError
from rewards.base import RewardModel, Score, scores_in_segments
from rewards.metrics import RewardAudit
from rl.mix import RewardMix, RunningStd
from rl.submission import EpisodeSubmitter, PendingScore, RunningEpisode

SCORE_KEY = "vlreward_score"  # episode.custom_data key holding the episode's PendingScore
RUNNING_KEY = "vlreward_running"  # a running episode's RunningEpisode (its segments sent so far)
FRAME_STEPS_KEY = "vlreward_frame_steps"  # the steps whose info brought a frame (0: the reset): all, or a stride's
_LEARNER_BATCH = 1 << 16  # the learner path sends an iteration's episodes in one call: no smaller bound

# set by AddOneTsToEpisodesAndTruncate once it has appended the masked bootstrap step to every episode
_EXTRA_STEP_FLAG = "_added_loss_mask_for_valid_episode_ts"


class EpisodeScorer(RLlibCallback):
    """Env-runner callback: take each episode's frames out of its infos and (when `submit` is set) submit them with
    the mission; the episode's `PendingScore` goes to `episode.custom_data[SCORE_KEY]` at its end.

    With `segment` > 0 and a model that scores in segments (`rewards.scores_in_segments`: LIV, the progress
    critic), a running episode's frames go out every `segment` steps (`rl.submission.RunningEpisode`) while sampling
    goes on, so at the end of a `sample()` only the last few frames of each episode are still in flight. Other
    models get whole episodes.

    Frames come from `info["frame"]` (uint8 [H, W, 3], the reset info holds frame 0), the goal from the reset
    info's `info["mission"]`; segments and episodes queued together share one request (`coalesce`, HTTP only).
    Give it to RLlib as `config.callbacks(functools.partial(EpisodeScorer, ...))`
    (settings do not reach remote env runners as class attributes). Logs `vlreward/submit_s` (time the sampler
    spent submitting, backpressure included), `vlreward/frames_submitted` and `vlreward/frame_bytes_submitted`.
    """

    def __init__(self, *, reward_model_factory: Callable[[], RewardModel] | None = None, submit: bool = True,
                 ready_wait_s: float = 0.0, max_in_flight: int = 64, coalesce: int = 16, segment: int = 0):
        super().__init__()
        if submit and reward_model_factory is None:
            raise ValueError("EpisodeScorer needs a reward_model_factory to submit episodes")
        self.submitter = (EpisodeSubmitter(reward_model_factory, ready_wait_s, max_in_flight, coalesce=coalesce)
                          if submit else None)
        self.segment = segment
        self._segments: bool | None = None  # whether the model scores in segments; asked once, at the first one

    def on_episode_step(self, *, episode, metrics_logger=None, **kwargs) -> None:
        if self.submitter is None or not self.segment or episode.is_done or len(episode) % self.segment:
            return
        if self._segments is None:
            try:
                self._segments = scores_in_segments(self.submitter.model())
            except VLRewardError:  # not reachable yet: whole episodes for now, and their submission says why
                return
        if self._segments:
            start = time.perf_counter()
            if RUNNING_KEY not in episode.custom_data:
                episode.custom_data[RUNNING_KEY] = RunningEpisode(self._goal(episode), in_segments=True)
            running = episode.custom_data[RUNNING_KEY]
            self._send(episode, running, metrics_logger, start)

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        start = time.perf_counter()
        if episode.t_started != 0:
            raise ValueError(f"episode {episode.id_} starts at t={episode.t_started}: EpisodeScorer scores whole "
                             "episodes, use batch_mode='complete_episodes'")
        running = episode.custom_data.pop(RUNNING_KEY, None)
        if self.submitter is None:  # sparse: the frames only leave the infos
            for info in episode.get_infos():
                info.pop("frame", None)
            return
        running = running or RunningEpisode(self._goal(episode), in_segments=False)
        self._send(episode, running, metrics_logger, start)
        episode.custom_data[SCORE_KEY] = running.score()

    @staticmethod
    def _goal(episode):
        return episode.get_infos(0)["mission"]

    def _send(self, episode, running: RunningEpisode, metrics_logger, start: float) -> None:
        """Pop the frames not sent yet out of the infos, noting the steps that brought them, and send them (stacked
        off this thread)."""
        infos, steps = episode.get_infos(), episode.custom_data.setdefault(FRAME_STEPS_KEY, [])
        frames = []
        for step in range(steps[-1] + 1 if steps else 0, len(infos)):
            if (frame := infos[step].pop("frame", None)) is not None:
                frames.append(frame)
                steps.append(step)
        if not steps or steps[0] != 0:
            raise KeyError("EpisodeScorer needs info['frame'] in the reset info and then at every step, or every "
                           "stride-th one and the last (envs.<suite>.make_env renders them, envs.wrappers.FrameStride "
                           "strides them)")
        if not frames:  # a segment's steps all between two frames of a stride
            return
        running.add(frames)
        part = self.submitter.send([running])[0]
        if metrics_logger is not None:
            metrics_logger.log_value("vlreward/submit_s", time.perf_counter() - start, reduce="sum")
            metrics_logger.log_value("vlreward/frames_submitted", part.num_frames, reduce="sum")
            metrics_logger.log_value("vlreward/frame_bytes_submitted", part.nbytes, reduce="sum")


class ServiceReward(ConnectorV2):
    """Write a `RewardModel`'s scores into whole episodes as their rewards, combined by `mix`.

    Each episode brings either a `PendingScore` in `custom_data["vlreward_score"]` (submitted by the env runner's
    `EpisodeScorer` as the episode ended: this piece waits only for the ones still in flight, at most
    `collect_timeout_s`), or its frames in `info["frame"]` (uint8 [H, W, 3]; the reset info holds frame 0) with
    the goal in `info["mission"]`, which this piece scores in one batch call. The sparse signal is
    `info["success"]`, or the env's own reward with `RewardMix(sparse="env_reward")`. A failed or missing score
    raises and fails the iteration: a batch is never trained on zeros. On the frames path an unreachable model is
    waited for up to `ready_wait_s`, then raises.

    `reward_model_factory` (frames path only) is called lazily in the learner process (once it succeeds), so an HTTP
    client, a Serve deployment handle or an in-process model all work and nothing unpicklable travels with the config.
    `audit` (`rewards.metrics.RewardAudit`) keeps the model's episode returns against success over the last episodes;
    its AUROC and false-pay rate reach the curve rows. After each call `last_scores` holds the `Score`s,
    `last_rewards` maps episode id -> rewards[T] written and `last_cost` the frames' cost (count, bytes; seconds to
    gather and score, or to wait and how many were missing).
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 reward_model_factory: Callable[[], RewardModel] | None = None, mix: RewardMix = RewardMix(),
                 ready_wait_s: float = 0.0, collect_timeout_s: float = 300.0, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.reward_model_factory = reward_model_factory
        self.mix = mix
        self.ready_wait_s = ready_wait_s
        self.collect_timeout_s = collect_timeout_s
        self.return_std = RunningStd()
        self.audit = RewardAudit()  # the model's episode returns against success: the policy finding blind spots
        self._submitter: EpisodeSubmitter | None = None  # the frames path's, made at its first use
        self.last_scores: list[Score] = []
        self.last_rewards: dict[str, np.ndarray] = {}
        self.last_cost: dict[str, float] = {}

    def _frames_submitter(self) -> EpisodeSubmitter:
        if self._submitter is None:
            if self.reward_model_factory is None:
                raise ValueError("episodes carry frames but ServiceReward has no reward_model_factory to score them; "
                                 "submit them from the env runners with rl.connector.EpisodeScorer")
            self._submitter = EpisodeSubmitter(self.reward_model_factory, self.ready_wait_s,
                                               max_in_flight=_LEARNER_BATCH, coalesce=_LEARNER_BATCH)
        return self._submitter

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs) -> Any:
        if not episodes:
            return batch
        extra = 1 if (shared_data or {}).get(_EXTRA_STEP_FLAG) else 0
        sa_episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        for episode in sa_episodes:
            if episode.t_started != 0:
                raise ValueError(
                    f"episode {episode.id_} starts at t={episode.t_started}: ServiceReward scores whole episodes, "
                    "use batch_mode='complete_episodes'"
                )
        successes = [self._sparse(episode, len(episode) - extra) for episode in sa_episodes]
        scores: list[Score] = []
        if self.mix.uses_model:
            pending = [episode.custom_data.get(SCORE_KEY) for episode in sa_episodes]
            if all(p is not None for p in pending):
                scores = self._collect(pending, sa_episodes)
            elif any(p is not None for p in pending):
                raise ValueError("some episodes carry a submitted score and some do not: every env runner needs the "
                                 "EpisodeScorer callback")
            else:
                scores = self._score_frames(sa_episodes, extra)
            if len(scores) != len(sa_episodes):
                raise ValueError(f"reward model returned {len(scores)} scores for {len(sa_episodes)} episodes")

        dense = [self._dense(score, episode.custom_data.get(FRAME_STEPS_KEY) or range(len(success) + 1), len(success))
                 for score, success, episode in zip(scores, successes, sa_episodes)]
        for score, success in zip(scores, successes):
            self.audit.add(float(np.sum(score.rewards)), bool(np.any(success > 0)))
        if dense and self.mix.normalize:
            self.return_std.update([float(d.sum()) for d in dense])
            dense = [d / self.return_std.std for d in dense]
        self.last_scores, self.last_rewards = scores, {}
        for i, (episode, success) in enumerate(zip(sa_episodes, successes)):
            new = np.asarray(self.mix.combine(dense[i] if dense else 0.0, success), np.float32)
            with warnings.catch_warnings():  # RLlib checks each reward (a numpy scalar) against a Box, which warns
                warnings.filterwarnings("ignore", message=".*Casting input x to numpy array")
                episode.set_rewards(new_data=new if episode.is_numpy else new.tolist(), at_indices=slice(0, len(new)))
            self.last_rewards[episode.id_] = new

        if metrics is not None:
            returns = [float(r.sum()) for r in self.last_rewards.values()]
            metrics.log_value("vlreward/mean_return", float(np.mean(returns)), window=1)
            for key, value in self.last_cost.items():
                metrics.log_value(f"vlreward/{key}", value, window=1)
            if scores:
                metrics.log_value("vlreward/reward_auroc", self.audit.reward_auroc, window=1)
                metrics.log_value("vlreward/false_pay_rate", self.audit.false_pay_rate, window=1)
        return batch

    def _sparse(self, episode, num_steps: int) -> np.ndarray:
        """The sparse signal [T]: `info["success"]` per step, or the env's own rewards (`RewardMix.sparse`)."""
        if getattr(self.mix, "sparse", "success") == "env_reward":
            return np.asarray(episode.get_rewards(slice(0, num_steps)), np.float64)
        return np.array([float(info.get("success", False)) for info in episode.get_infos(slice(1, num_steps + 1))])

    def _collect(self, pending: list[PendingScore], episodes) -> list[Score]:
        """The env runners' scores, in episode order; blocks only on those still in flight."""
        start = time.perf_counter()
        missing = sum(not p.done() for p in pending)
        deadline = time.monotonic() + self.collect_timeout_s
        scores = []
        for p, episode in zip(pending, episodes):
            try:
                scores.append(p.result(timeout=max(0.0, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                raise TimeoutError(f"the score of episode {episode.id_} did not arrive within "
                                   f"{self.collect_timeout_s:.0f} s; stopping this training iteration instead of "
                                   "training on missing rewards") from None
            except Exception as error:
                error.add_note(f"vlreward: scoring episode {episode.id_} failed; this training iteration stops "
                               "instead of training on missing rewards")
                raise
        self.last_cost = {"frames": float(sum(p.num_frames for p in pending)),
                          "frame_bytes": float(sum(p.nbytes for p in pending)),
                          "wait_s": time.perf_counter() - start, "missing": float(missing)}
        return scores

    def _score_frames(self, episodes, extra: int) -> list[Score]:
        """Frames from the episodes' infos, scored in one batched call (waiting up to `ready_wait_s` for the model)."""
        start = time.perf_counter()
        trajectories, goals = [], []
        for episode in episodes:
            infos = episode.get_infos(slice(0, len(episode) - extra + 1))
            if "frame" not in infos[0]:
                raise KeyError(f"episode {episode.id_} has neither a submitted score nor frames in its infos: add the "
                               "EpisodeScorer callback to the env runners, or render info['frame'] in the env")
            steps = episode.custom_data[FRAME_STEPS_KEY] = [t for t, info in enumerate(infos) if "frame" in info]
            trajectories.append(np.stack([infos[t]["frame"] for t in steps]))  # [T+1 (or a stride's), H, W, 3]
            goals.append(infos[0]["mission"])
        gather_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = [pending.result() for pending in self._frames_submitter().submit_all(trajectories, goals)]
        self.last_cost = {"frames": float(sum(len(t) for t in trajectories)),
                          "frame_bytes": float(sum(t.nbytes for t in trajectories)),
                          "gather_s": gather_s, "score_s": time.perf_counter() - start}
        return scores

    def _dense(self, score: Score, frame_steps, num_steps: int) -> np.ndarray:
        """The dense rewards [T] of an episode whose frames came at `frame_steps` (0: the reset): each frame's on
        the step that brought it, 0 on the steps between two frames of a stride."""
        if len(score.rewards) != len(frame_steps) or len(score.values) != len(frame_steps):
            raise ValueError(f"reward model returned {len(score.rewards)} rewards for {len(frame_steps)} frames")
        dense = np.zeros(num_steps)
        dense[np.asarray(frame_steps[1:], int) - 1] = self.mix.dense(score)
        if not np.all(np.isfinite(dense)):
            raise ValueError("reward model returned non-finite rewards")
        return dense
