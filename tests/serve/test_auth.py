"""With a token configured, every route but /healthz needs `Authorization: Bearer <token>`."""

import httpx
import numpy as np
import pytest

from serve.client import RemoteRewardModel, npy_bytes

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secure_url(service_url, served_route):
    from ray import serve

    from serve.app import ServeArgs, build_app

    serve.run(build_app(ServeArgs(api_token=TOKEN)), name="vlreward-secure", route_prefix="/secure")
    served_route(f"{service_url}/secure")  # /healthz is open without the token
    yield f"{service_url}/secure"
    serve.delete("vlreward-secure")


@pytest.mark.parametrize("method, path", [("GET", "/readyz"), ("GET", "/v1/models"), ("POST", "/v1/score"),
                                          ("POST", "/v1/score/batch"), ("POST", "/v1/score/step"),
                                          ("POST", "/v1/eval"), ("POST", "/v1/embed")])
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_routes_refuse_missing_or_wrong_tokens(secure_url, method, path, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, secure_url + path, headers=headers, timeout=30)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_healthz_stays_open(secure_url):
    assert httpx.get(secure_url + "/healthz").status_code == 200


def test_the_right_token_scores(secure_url):
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    response = httpx.post(secure_url + "/v1/score", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                          files={"frames": ("f.npy", npy_bytes(frames))}, data={"task": "go to the red ball"})
    assert response.status_code == 200, response.text
    assert RemoteRewardModel(secure_url, token=TOKEN).score(frames, "go to the red ball").values.shape == (3,)



@pytest.mark.parametrize("token", [None, "wrong"])
def test_grpc_refuses_missing_or_wrong_tokens(secure_url, grpc_url, token):
    from rewards import UnauthorizedError
    from serve.grpc_client import GrpcRewardModel

    with pytest.raises(UnauthorizedError, match="UNAUTHENTICATED"):
        GrpcRewardModel(grpc_url, token=token, application="vlreward-secure", retries=0)


def test_grpc_with_the_right_token_scores(secure_url, grpc_url):
    from serve.grpc_client import GrpcRewardModel

    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    client = GrpcRewardModel(grpc_url, token=TOKEN, application="vlreward-secure")
    assert len(client.score(frames, "go to the red ball").rewards) == 3
