"""`ServiceReward`: a learner connector piece that replaces episode rewards with a `RewardModel`'s scores.

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

from rewards.base import RewardModel, Score

MODES = ("sparse", "dense", "dense+sparse")
# set by AddOneTsToEpisodesAndTruncate once it has appended the masked bootstrap step to every episode
_EXTRA_STEP_FLAG = "_added_loss_mask_for_valid_episode_ts"


class ServiceReward(ConnectorV2):
    """Score whole episodes with one `score_batch` call per training batch and write the rewards back.

    Step t (frame t -> frame t+1) gets `scale * score.rewards[t+1]` ("dense"), plus `success_bonus` times the
    env's own reward ("dense+sparse"); "sparse" leaves the env rewards alone and never builds the model.
    Frames come from `info["frame"]` (uint8 [H, W, 3]; the reset info holds frame 0) and the goal from
    `info["mission"]`. Errors from the reward model propagate: a batch is never trained on made-up rewards.

    `reward_model_factory` is called once, lazily, in the learner process, so an HTTP client or an
    in-process model both work and nothing unpicklable travels with the config.
    After each call `last_scores` holds the `Score`s and `last_rewards` maps episode id -> rewards[T] written.
    """

    def __init__(
        self,
        input_observation_space=None,
        input_action_space=None,
        *,
        reward_model_factory: Callable[[], RewardModel],
        mode: str = "dense",
        success_bonus: float = 1.0,
        scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(input_observation_space, input_action_space, **kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown reward mode {mode!r}; valid modes: {', '.join(MODES)}")
        self.reward_model_factory = reward_model_factory
        self.mode = mode
        self.success_bonus = float(success_bonus)
        self.scale = float(scale)
        self._model: RewardModel | None = None
        self.last_scores: list[Score] = []
        self.last_rewards: dict[str, np.ndarray] = {}

    @property
    def model(self) -> RewardModel:
        """The reward model, built by the factory on first use."""
        if self._model is None:
            self._model = self.reward_model_factory()
        return self._model

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs) -> Any:
        if self.mode == "sparse" or not episodes:
            return batch
        extra = 1 if (shared_data or {}).get(_EXTRA_STEP_FLAG) else 0
        sa_episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        trajectories, goals, lengths = [], [], []
        for episode in sa_episodes:
            if episode.t_started != 0:
                raise ValueError(
                    f"episode {episode.id_} starts at t={episode.t_started}: ServiceReward scores whole episodes, "
                    "use batch_mode='complete_episodes'"
                )
            num_steps = len(episode) - extra
            infos = episode.get_infos(slice(0, num_steps + 1))
            trajectories.append(np.stack([info["frame"] for info in infos]))  # [T+1, H, W, 3]
            goals.append(infos[0]["mission"])
            lengths.append(num_steps)

        start = time.perf_counter()
        scores = list(self.model.score_batch(trajectories, goals))
        score_s = time.perf_counter() - start
        if len(scores) != len(sa_episodes):
            raise ValueError(f"reward model returned {len(scores)} scores for {len(sa_episodes)} episodes")

        self.last_scores, self.last_rewards = scores, {}
        for episode, score, num_steps in zip(sa_episodes, scores, lengths):
            served = np.asarray(score.rewards, dtype=np.float64)
            if served.shape != (num_steps + 1,) or not np.all(np.isfinite(served)):
                raise ValueError(
                    f"reward model returned rewards of shape {served.shape} (finite: {np.isfinite(served).all()}) "
                    f"for {num_steps + 1} frames"
                )
            env_rewards = np.asarray(episode.get_rewards(slice(0, num_steps)))
            new = self.scale * served[1:]
            if self.mode == "dense+sparse":
                new = new + self.success_bonus * env_rewards
            new = new.astype(env_rewards.dtype if env_rewards.dtype.kind == "f" else np.float32)
            episode.set_rewards(new_data=new if episode.is_numpy else new.tolist(), at_indices=slice(0, num_steps))
            self.last_rewards[episode.id_] = new

        if metrics is not None:
            returns = [float(r.sum()) for r in self.last_rewards.values()]
            metrics.log_value("vlreward/mean_return", float(np.mean(returns)), window=1)
            metrics.log_value("vlreward/score_s", score_s, window=1)
        return batch
