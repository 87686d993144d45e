"""Every error type of vlreward. They know nothing about HTTP: serve/status.py maps them to statuses."""


class VLRewardError(Exception):
    """Root of every error vlreward raises on purpose."""

    code = "vlreward_error"


class UnknownModelError(VLRewardError, KeyError):
    """Raised when a model name is neither registered nor a checkpoint directory under the model root."""

    code = "unknown_model"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else self.code


class InvalidVideoError(VLRewardError, ValueError):
    """Raised when frames are not a decodable, non-empty uint8 [T, H, W, 3] video."""

    code = "invalid_video"


class PayloadTooLargeError(VLRewardError):
    """Raised when a body, a video's frame count or a frame's pixel count exceeds the configured limit."""

    code = "payload_too_large"


class InvalidTaskError(VLRewardError, ValueError):
    """Raised when a goal is missing, empty, too long, or of a kind the model does not accept."""

    code = "invalid_task"


class InvalidStateError(VLRewardError, ValueError):
    """Raised when a streaming state sent back by a client is not one this model produced for this goal."""

    code = "invalid_state"


class InvalidCheckpointError(VLRewardError, ValueError):
    """Raised when a checkpoint is malformed, outside the model root, or not weights-only."""

    code = "invalid_checkpoint"


class ModelNotReadyError(VLRewardError, RuntimeError):
    """Raised when a reward model (local or remote) cannot answer right now; retry later."""

    code = "model_not_ready"


class OverloadedError(ModelNotReadyError):
    """Raised when a model's request queue or the service's body budget is full: retry after a pause."""

    code = "overloaded"


class UnauthorizedError(VLRewardError):
    """Raised when a token is configured and the request lacks the matching bearer token."""

    code = "unauthorized"


class RequestTimeoutError(VLRewardError):
    """Raised when a client sends its headers or body too slowly (no progress within the read timeout)."""

    code = "request_timeout"
