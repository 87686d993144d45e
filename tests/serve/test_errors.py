"""Invariants of the error types: every one is exported, has a status, and the client maps it back."""

import inspect

import rewards
import rewards.errors
from serve.client import ERROR_BY_CODE
from serve.status import ERROR_STATUS, status_of


def all_error_types():
    modules = (rewards.errors,)
    return {cls for module in modules for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, rewards.VLRewardError)}


def test_every_error_type_has_a_status_and_a_unique_code():
    assert all_error_types() <= set(ERROR_STATUS)
    codes = [cls.code for cls in ERROR_STATUS]
    assert len(codes) == len(set(codes))


def test_rewards_errors_are_exported_from_the_package_root():
    for cls in all_error_types():
        if cls.__module__ == "rewards.errors":
            assert getattr(rewards, cls.__name__) is cls


def test_client_maps_every_code_back_to_its_type():
    for cls in ERROR_STATUS:
        assert ERROR_BY_CODE[cls.code] is cls


def test_subclasses_raised_through_ray_keep_their_status():
    class WrappedInvalidTask(rewards.InvalidTaskError):  # what Ray's RayTaskError.as_instanceof_cause builds
        pass

    assert status_of(WrappedInvalidTask("x")) == 422


def test_ray_errors_of_a_model_call_become_vlreward_errors():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError

    from serve.errors import RAY_ERRORS, from_ray

    assert type(from_ray(BackPressureError(num_queued_requests=3, max_queued_requests=2))) is rewards.OverloadedError
    assert type(from_ray(ReplicaUnavailableError("r1"))) is rewards.ModelNotReadyError
    assert type(from_ray(ActorDiedError())) is rewards.ModelNotReadyError  # a subclass of RayActorError
    assert from_ray(ValueError("a bug")) is None
    assert {status_of(translate(Exception())) for translate in RAY_ERRORS.values()} == {503}


def test_every_503_carries_the_configured_retry_after_and_other_statuses_none():
    """The FastAPI app's handlers answer each error at the table's status; 503s with Retry-After: retry_after_s."""
    from fastapi.testclient import TestClient

    from serve.api import create_api
    from serve.settings import ApiSettings

    app = create_api({}, ApiSettings(default_model="babyai-liv", retry_after_s=7.2))
    raised = {cls.__name__: cls for cls in ERROR_STATUS}

    @app.get("/raise/{name}")
    async def raise_it(name: str):
        raise raised[name]("on purpose")

    client = TestClient(app, raise_server_exceptions=False)
    for name, cls in raised.items():
        response = client.get(f"/raise/{name}")
        assert response.status_code == ERROR_STATUS[cls] and response.json()["error"]["code"] == cls.code
        assert response.headers.get("retry-after") == ("8" if ERROR_STATUS[cls] == 503 else None)
    assert client.get("/readyz").json()["status"] == "ready"  # no models: ready at once
