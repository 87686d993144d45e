"""Security invariants: no pickle loads, checkpoint paths stay under the model root, no route skips the token,
and error messages echo neither secrets nor tracebacks."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rewards import InvalidCheckpointError, UnknownModelError
from rewards.registry import SHIPPED_CHECKPOINTS, load_model, resolve_checkpoint
from serve.api import ApiSettings, create_api

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-Secr3t-value-42"
#: routes that answer without a token, on purpose; a new one must be added here (and to the README) knowingly
PUBLIC = {"/healthz", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


# ---- no pickle: torch.load only with weights_only=True, np.load never with allow_pickle=True ------------------

def python_files():
    skipped = {".venv", "build", "node_modules"}
    return [p for p in REPO.rglob("*.py") if not skipped & set(p.relative_to(REPO).parts)
            and not any(part.startswith(".") for part in p.relative_to(REPO).parts)]


def call_name(node: ast.Call) -> str:
    """`torch.load(...)` -> "torch.load"; `pickle.loads(...)` -> "pickle.loads"."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def keyword(node: ast.Call, name: str):
    """The keyword's literal value, or "<missing>"/"<not a literal>"."""
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a literal>"
    return "<missing>"


def round_trip(node: ast.Call) -> bool:
    """`pickle.loads(pickle.dumps(x))`: bytes this process just made, as a test of picklability; nothing untrusted."""
    return (len(node.args) == 1 and isinstance(node.args[0], ast.Call)
            and call_name(node.args[0]) in ("pickle.dumps", "cloudpickle.dumps"))


def unsafe_loads(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        if name.endswith("torch.load") or name == "torch.serialization.load":
            if keyword(node, "weights_only") is not True:
                found.append(f"line {node.lineno}: {name} without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "torch.jit.load"):
            if not round_trip(node):
                found.append(f"line {node.lineno}: {name}")
        elif name.endswith(("np.load", "numpy.load")) and keyword(node, "allow_pickle") not in (False, "<missing>"):
            found.append(f"line {node.lineno}: {name} with allow_pickle={keyword(node, 'allow_pickle')}")
    return found


def test_the_checker_catches_unsafe_loads():
    assert unsafe_loads("import torch\ntorch.load(p)") and unsafe_loads("torch.load(p, weights_only=False)")
    assert unsafe_loads("torch.load(p, weights_only=flag)") and unsafe_loads("pickle.loads(b)")
    assert unsafe_loads("np.load(b, allow_pickle=True)") and unsafe_loads("pickle.loads(received)")
    assert not unsafe_loads("pickle.loads(pickle.dumps(client))")  # a picklability test reads its own bytes
    assert not unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(b, allow_pickle=False)")


def test_no_source_file_loads_pickles():
    files = python_files()
    assert len(files) > 20 and any(p.name == "api.py" for p in files)
    found = {str(p.relative_to(REPO)): hits for p in files if (hits := unsafe_loads(p.read_text()))}
    assert not found


# ---- model paths stay under the model root ---------------------------------------------------------------------

@pytest.fixture
def model_root(tmp_path):
    """root/ with one good checkpoint; outside/ next to it with another."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    shutil.copytree(SHIPPED_CHECKPOINTS / "babyai-liv", root / "inside")
    shutil.copytree(SHIPPED_CHECKPOINTS / "babyai-liv", outside)
    (root / "link-to-outside").symlink_to(outside, target_is_directory=True)
    return root, outside


def test_a_checkpoint_inside_the_root_loads(model_root):
    root, _ = model_root
    assert load_model("inside", model_root=root).name == "inside"
    assert resolve_checkpoint("babyai-liv", model_root=root) == SHIPPED_CHECKPOINTS / "babyai-liv"


@pytest.mark.parametrize("path", ["../outside", "inside/../../outside", "link-to-outside", "/", "{outside}",
                                  "{root}/../outside"])
def test_paths_outside_the_root_are_refused(model_root, path):
    root, outside = model_root
    with pytest.raises(InvalidCheckpointError, match="outside the model root"):
        load_model(path.format(outside=outside, root=root), model_root=root)


@pytest.mark.parametrize("path", ["", ".", "missing"])
def test_paths_without_a_checkpoint_are_unknown(model_root, path):
    with pytest.raises(UnknownModelError):
        load_model(path, model_root=model_root[0])


def test_symlinked_checkpoint_files_cannot_leave_the_root(model_root):
    root, outside = model_root
    (root / "files").mkdir()
    shutil.copy(outside / "config.json", root / "files" / "config.json")
    (root / "files" / "model.safetensors").symlink_to(outside / "model.safetensors")
    with pytest.raises(InvalidCheckpointError):
        load_model("files", model_root=root)


@pytest.mark.parametrize("features_path", ["../outside", "../../outside", "/tmp", ".", "link"])
def test_orca_feature_paths_stay_inside_the_checkpoint(model_root, features_path):
    root, outside = model_root
    orca = root / "orca"
    shutil.copytree(SHIPPED_CHECKPOINTS / "babyai-orca", orca)
    (orca / "link").symlink_to(outside, target_is_directory=True)
    config = json.loads((orca / "config.json").read_text())
    config["features"]["path"] = features_path
    (orca / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidCheckpointError):
        load_model("orca", model_root=root)


# ---- the token guards every route ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured():
    """The real FastAPI app with a token; no model is served, so an authorised call could only reach a 404."""
    app = create_api({}, ApiSettings(default_model="babyai-liv", api_token=TOKEN))
    return app, TestClient(app, raise_server_exceptions=False)


def routes(app):
    return sorted((route.path, method) for route in app.routes for method in getattr(route, "methods", ()) or ()
                  if method != "HEAD")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                                    f"bearer {TOKEN}", f"Basic {TOKEN}", TOKEN, f"Bearer  {TOKEN}", f"Bearer {TOKEN} "])
def test_every_route_but_the_public_ones_refuses_a_wrong_token(secured, header):
    app, client = secured
    headers = {} if header is None else {"Authorization": header}
    open_routes = set()
    for path, method in routes(app):
        response = client.request(method, path, headers=headers)
        if response.status_code == 401:
            assert response.json()["error"]["code"] == "unauthorized" and TOKEN not in response.text
        else:
            open_routes.add(path)
    assert open_routes == PUBLIC


def test_the_right_token_passes_auth(secured):
    app, client = secured
    for path, method in routes(app):
        assert client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code != 401


@pytest.mark.parametrize("path", ["/v1/score/", "//v1/score", "/V1/SCORE", "/v1/./score", "/v1/%73core",
                                  "/v1/score;x", "/v1/score?x=/healthz", "/healthz/../v1/score", "/v1/score%00"])
def test_path_tricks_do_not_reach_a_handler_without_the_token(secured, path):
    _, client = secured
    response = client.post(path, data={"task": "go"}, follow_redirects=True)
    assert response.status_code in (401, 404, 405), response.text


def test_unauthenticated_bodies_are_refused_before_they_are_parsed(secured):
    _, client = secured
    response = client.post("/v1/score", content=b"not multipart", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 401, response.text


# ---- error messages -------------------------------------------------------------------------------------------

def test_a_bug_answers_json_without_traceback_or_secret():
    """A route that raises an unexpected error (a bug) answers 500 JSON naming only the error type."""
    app = create_api({}, ApiSettings(default_model="babyai-liv", api_token=TOKEN))

    @app.get("/bug")
    async def bug():
        raise RuntimeError(f"token {TOKEN} in /work/main/serve/secret.py line 3")

    response = TestClient(app, raise_server_exceptions=False).get("/bug", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    for leak in (TOKEN, "Traceback", "secret.py", "/work/"):
        assert leak not in response.text

