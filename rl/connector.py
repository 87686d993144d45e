"""`ServiceReward`: a learner connector piece that relabels whole episodes with a `RewardModel`'s scores.

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

import time
from typing import Any, Callable

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2

from rewards import ModelNotReadyError
from rewards.base import RewardModel, Score
from rl.mix import RewardMix, RunningStd

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
    """Score whole episodes with one `score_batch` call per training batch and write the rewards back.

    Frames come from `info["frame"]` (uint8 [H, W, 3]; the reset info holds frame 0), the goal from
    `info["mission"]`, success from `info["success"]`; `mix` says how they combine. When the model is
    unreachable the piece waits up to `ready_wait_s` for it, then raises: a batch is never trained on zeros.

    `reward_model_factory` is called lazily in the learner process (once it succeeds), so an HTTP client, a Serve
    deployment handle or an in-process model all work and nothing unpicklable travels with the config.
    After each call `last_scores` holds the `Score`s, `last_rewards` maps episode id -> rewards[T] written and
    `last_cost` the frames' cost (count, bytes, seconds to gather and to score).
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 reward_model_factory: Callable[[], RewardModel], mix: RewardMix = RewardMix(),
                 ready_wait_s: float = 0.0, **kwargs):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.reward_model_factory = reward_model_factory
        self.mix = mix
        self.ready_wait_s = ready_wait_s
        self.return_std = RunningStd()
        self._model: RewardModel | None = None
        self.last_scores: list[Score] = []
        self.last_rewards: dict[str, np.ndarray] = {}
        self.last_cost: dict[str, float] = {}

    def _model_or_factory(self) -> RewardModel:
        if self._model is None:
            self._model = self.reward_model_factory()
        return self._model

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs) -> Any:
        if not episodes:
            return batch
        start = time.perf_counter()
        extra = 1 if (shared_data or {}).get(_EXTRA_STEP_FLAG) else 0
        sa_episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        trajectories, goals, successes = [], [], []
        for episode in sa_episodes:
            if episode.t_started != 0:
                raise ValueError(
                    f"episode {episode.id_} starts at t={episode.t_started}: ServiceReward scores whole episodes, "
                    "use batch_mode='complete_episodes'"
                )
            infos = episode.get_infos(slice(0, len(episode) - extra + 1))
            successes.append(np.array([float(info.get("success", False)) for info in infos[1:]]))
            if self.mix.uses_model:
                trajectories.append(np.stack([info["frame"] for info in infos]))  # [T+1, H, W, 3]
                goals.append(infos[0]["mission"])
        gather_s = time.perf_counter() - start

        scores: list[Score] = []
        if self.mix.uses_model:
            start = time.perf_counter()
            self._model, scores = score_when_ready(self._model_or_factory, trajectories, goals, self.ready_wait_s)
            score_s = time.perf_counter() - start
            if len(scores) != len(sa_episodes):
                raise ValueError(f"reward model returned {len(scores)} scores for {len(sa_episodes)} episodes")
            self.last_cost = {"frames": float(sum(len(t) for t in trajectories)),
                              "frame_bytes": float(sum(t.nbytes for t in trajectories)),
                              "gather_s": gather_s, "score_s": score_s}

        dense = [self._checked_dense(score, len(success)) for score, success in zip(scores, successes)]
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
        return batch

    def _checked_dense(self, score: Score, num_steps: int) -> np.ndarray:
        if len(score.rewards) != num_steps + 1 or len(score.values) != num_steps + 1:
            raise ValueError(f"reward model returned {len(score.rewards)} rewards for {num_steps + 1} frames")
        dense = self.mix.dense(score)
        if not np.all(np.isfinite(dense)):
            raise ValueError("reward model returned non-finite rewards")
        return dense
