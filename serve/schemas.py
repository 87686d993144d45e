"""Pydantic schemas: the REST API's bodies and its OpenAPI documentation in one place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ScoreResponse(BaseModel):
    """Per-frame values and rewards of one trajectory (design §5)."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    model: str
    version: str = Field(description="digest of the model weights that computed this score (as in /v1/models)")
    num_frames: int
    values: list[float]
    rewards: list[float]
    episode_return: float = Field(alias="return", description="sum of rewards")

    @classmethod
    def of(cls, model, score) -> "ScoreResponse":
        """The wire form of a `Score` that `model` (a RewardModel: its name and weights version) computed."""
        return cls(model=model.name, version=model.version, num_frames=len(score.values),
                   values=score.values.tolist(), rewards=score.rewards.tolist(), episode_return=score.episode_return)


class BatchScoreResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    results: list[ScoreResponse]


class TaskAudit(BaseModel):
    """The live audit of one model on one task over its last reported episodes (serve/audit.py)."""

    model_config = ConfigDict(protected_namespaces=())

    model: str
    task: str
    episodes: int
    successes: int
    reward_auroc: float | None = Field(description="AUROC of episode returns, successes against failures")
    false_pay_rate: float | None = Field(description="share of failures paid more than the median success")


class AuditResponse(BaseModel):
    audits: list[TaskAudit]


class StepResponse(BaseModel):
    """The rewards for one new frame per stream, and the state each stream must send with its next frame."""

    model_config = ConfigDict(protected_namespaces=())

    model: str
    rewards: list[float] = Field(description="reward for arriving at each stream's new frame")
    state: str = Field(description="opaque state of every stream (base64 .npz); send it back as `state`")


class EvalLabel(BaseModel):
    """What is known about one uploaded trajectory, for reward-quality evaluation (rewards/evaluate.py)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="the task the video is scored against")
    success: bool = Field(description="whether the video solves the task")
    kind: str | None = Field(None, description="what made it: expert, random, noisy_expert, other_task, ...")
    env: str | None = None
    seed: int | None = None
    performed: str | None = Field(None, description="for a hard negative: the task the video really solves")
    paraphrases: list[str] = Field(default_factory=list, description="rewordings of the task")
    progress: list[float] | None = Field(None, description="ground-truth progress per frame")


class EmbedResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    kind: str
    digest: str
    vector: list[float]


class ModelInfo(BaseModel):
    name: str
    kind: str
    goal_kinds: list[str]
    version: str = Field(description="digest of the model's weights")
    streams: bool = Field(description="whether /v1/score/step serves this model")
    segments: bool = Field(False, description="whether an episode may be scored in segments sent while it runs, "
                           "each behind the episode's first frame (`rewards.join_segments`)")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
