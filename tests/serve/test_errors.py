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
