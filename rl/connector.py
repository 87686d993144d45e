"""`ServiceReward`: a learner connector piece that relabels whole episodes with a `RewardModel`'s scores.

Two ways in: the scores the env runners submitted as episodes ended (`rl.submission.EpisodeScorer`, a
`PendingScore` in `episode.custom_data`), collected here with a wait only for those still in flight; or, when the
episodes carry their frames instead, one `score_batch` call here per training batch (the older, blocking path).

Verified in RLlib 2.60 (new API stack, PPO):
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
from typing import Any, Callable

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2

from rewards import ModelNotReadyError
from rewards.base import RewardModel, Score
from rewards.metrics import RewardAudit
from rl.mix import RewardMix, RunningStd
from rl.submission import SCORE_KEY, PendingScore

# set by AddOneTsToEpisodesAndTruncate once it has appended the masked bootstrap step to every episode
_EXTRA_STEP_FLAG = "_added_loss_mask_for_valid_episode_ts"


def score_when_ready(model_factory: Callable[[], RewardModel], trajectories, goals, wait_s: float,
                     poll_s: float = 1.0) -> tuple[RewardModel, list[Score]]:
    """Build the model if needed and score; on `ModelNotReadyError` retry for up to `wait_s`, then raise.

    The raised error says that the iteration stopped rather than training on made-up rewards.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            model = model_factory()
            return model, list(model.score_batch(trajectories, goals))
        except ModelNotReadyError as error:
            if time.monotonic() >= deadline:
                raise ModelNotReadyError(
                    f"reward model not ready after waiting {wait_s:.0f} s ({error}); stopping this training "
                    "iteration instead of training on missing rewards"
                ) from error
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


class ServiceReward(ConnectorV2):
    """Write a `RewardModel`'s scores into whole episodes as their rewards, combined by `mix`.

    Each episode brings either a `PendingScore` in `custom_data["vlreward_score"]` (submitted by the env runner's
    `EpisodeScorer` as the episode ended: this piece waits only for the ones still in flight, at most
    `collect_timeout_s`), or its frames in `info["frame"]` (uint8 [H, W, 3]; the reset info holds frame 0) with
    the goal in `info["mission"]`, which this piece scores in one `score_batch` call. The sparse signal is
    `info["success"]`, or the env's own reward with `RewardMix(sparse="env_reward")`. A failed or missing score
    raises and fails the iteration: a batch is never trained on zeros. On the frames path an unreachable model is
    waited for up to `ready_wait_s`, then raises.

    `reward_model_factory` (frames path only) is called lazily in the learner process (once it succeeds), so an HTTP
    client, a Serve deployment handle or an in-process model all work and nothing unpicklable travels with the config.
    `audit` (`rewards.metrics.RewardAudit`) keeps the model's episode returns against success over the last episodes;
    its AUROC and false-pay rate reach the curve rows. After each call `last_scores` holds the `Score`s, `last_rewards` maps episode id -> rewards[T] written and
    `last_cost` the frames' cost (count, bytes; seconds to gather and score, or to wait and how many were missing).
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
        self._model: RewardModel | None = None
        self.last_scores: list[Score] = []
        self.last_rewards: dict[str, np.ndarray] = {}
        self.last_cost: dict[str, float] = {}

    def _model_or_factory(self) -> RewardModel:
        if self._model is None:
            if self.reward_model_factory is None:
                raise ValueError("episodes carry frames but ServiceReward has no reward_model_factory to score them; "
                                 "submit them from the env runners with rl.submission.EpisodeScorer")
            self._model = self.reward_model_factory()
        return self._model

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

        dense = [self._checked_dense(score, len(success)) for score, success in zip(scores, successes)]
        for score, success in zip(scores, successes):
            self.audit.add(float(np.sum(score.rewards)), bool(np.any(success > 0)))
        if dense and self.mix.normalize:
            self.return_std.update([float(d.sum()) for d in dense])
            dense = [d / self.return_std.std for d in dense]
        self.last_scores, self.last_rewards = scores, {}
        for i, (episode, success) in enumerate(zip(sa_episodes, successes)):
            new = np.asarray(self.mix.combine(dense[i] if dense else 0.0, success), np.float32)
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
            trajectories.append(np.stack([info["frame"] for info in infos]))  # [T+1, H, W, 3]
            goals.append(infos[0]["mission"])
        gather_s = time.perf_counter() - start
        start = time.perf_counter()
        self._model, scores = score_when_ready(self._model_or_factory, trajectories, goals, self.ready_wait_s)
        self.last_cost = {"frames": float(sum(len(t) for t in trajectories)),
                          "frame_bytes": float(sum(t.nbytes for t in trajectories)),
                          "gather_s": gather_s, "score_s": time.perf_counter() - start}
        return scores

    def _checked_dense(self, score: Score, num_steps: int) -> np.ndarray:
        if len(score.rewards) != num_steps + 1 or len(score.values) != num_steps + 1:
            raise ValueError(f"reward model returned {len(score.rewards)} rewards for {num_steps + 1} frames")
        dense = self.mix.dense(score)
        if not np.all(np.isfinite(dense)):
            raise ValueError("reward model returned non-finite rewards")
        return dense
