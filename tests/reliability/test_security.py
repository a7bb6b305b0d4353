"""Nobody let in: admin keys, constant-time comparison, no reads outside the store, nothing unpickled."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Site
from tests.reliability.bad_artifacts import percent_encoded
from tests.reliability.conftest import Backend, serve, upload
from tests.reliability.errors import ADMIN_KEY, assert_error

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [REPO / "server", REPO / "prompt_store", REPO / "clients"]

ADMIN_CALLS = [
    ("POST", "/v1/prompts/pt", "files"),
    ("POST", "/v1/prompts/pt/rollback", {"version": 1}),
    ("DELETE", "/v1/prompts/pt", None),
]
WRONG_KEYS = {
    "wrong_key": (f"Bearer {ADMIN_KEY[:-1]}x", 403),  # differs in the last character only
    "first_char_differs": (f"Bearer x{ADMIN_KEY[1:]}", 403),
    "key_prefix": (f"Bearer {ADMIN_KEY[:-3]}", 403),
    "key_with_suffix": (f"Bearer {ADMIN_KEY}0", 403),
    "non_ascii_key": ("Bearer clé-ünïcödé", 403),
    "basic_scheme": (f"Basic {ADMIN_KEY}", 401),
    "no_scheme": (ADMIN_KEY, 401),
    "empty_bearer": ("Bearer", 401),
    "missing": (None, 401),
}


@pytest.mark.parametrize("backend", ["directory", "redis"], indirect=True)
@pytest.mark.parametrize(("method", "path", "payload"), ADMIN_CALLS, ids=["upload", "rollback", "delete"])
@pytest.mark.parametrize(("authorization", "status"), WRONG_KEYS.values(), ids=list(WRONG_KEYS))
def test_admin_routes_refuse_missing_and_wrong_keys(
    backend: Backend, site: Site, method: str, path: str, payload: object, authorization: str | None, status: int
) -> None:
    before = backend.snapshot()
    headers = {"Authorization": authorization.encode("utf-8")} if authorization is not None else {}
    kwargs: dict = {"headers": headers}
    if payload == "files":
        folder = site.artifacts["prefix"]
        kwargs["files"] = {
            n: (n, (folder / n).read_bytes()) for n in ("adapter_config.json", "adapter_model.safetensors")
        }
    elif payload is not None:
        kwargs["json"] = payload
    response = httpx.request(method, f"{backend.url}{path}", **kwargs)
    assert_error(response, status, "forbidden" if status == 403 else "unauthorized")
    assert ADMIN_KEY not in response.text
    assert backend.snapshot() == before


def test_keys_are_compared_in_constant_time() -> None:
    """The only comparison of a presented key is hmac.compare_digest; no ==, !=, `in` or startswith on it."""
    source = (REPO / "server" / "api" / "auth.py").read_text()
    tree = ast.parse(source)
    digests = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "compare_digest"
    ]  # fmt: skip
    assert len(digests) == 1 and ast.unparse(digests[0].func) == "hmac.compare_digest"
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and not all(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"token", "expected", "key"}, ast.unparse(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in {"startswith", "endswith", "find"} or "token" not in ast.unparse(node)
    # Every admin key check in the server goes through that one function.
    for path in (REPO / "server").rglob("*.py"):
        text = path.read_text()
        assert "admin_key ==" not in text and "== self.admin_key" not in text and "inference_key ==" not in text, path


@pytest.mark.parametrize("backend", ["directory"], indirect=True)
def test_no_route_reads_outside_the_store(backend: Backend) -> None:
    """A decoy task planted beside the store directory is never found, whatever the spelling of the name."""
    assert backend.store_dir is not None
    decoy = backend.store_dir.parent / "decoy"
    (decoy / "v1").mkdir(parents=True, exist_ok=True)
    (decoy / "state.json").write_text(json.dumps({"current": 1, "versions": [1]}))
    marker = "DECOY-SECRET-7f3a"
    (decoy / "v1" / "record.json").write_text(json.dumps({"task": marker}))
    names = [
        "../../decoy",
        "..",
        "../decoy",
        "/etc/passwd",
        "..\\..\\decoy",
        "tasks/../../decoy",
        "%2e%2e",
        "decoy\x00",
    ]
    before = backend.snapshot()
    for name in names:
        encoded = percent_encoded(name)
        answers = [
            httpx.get(f"{backend.url}/v1/prompts/{encoded}"),
            httpx.get(f"{backend.url}/v1/prompts/{encoded}", params={"version": 1}),
            httpx.post(f"{backend.url}/v1/generate", json={"task": name, "inputs": "x"}),
            httpx.post(f"{backend.url}/v1/generate", json={"task": name, "version": 1, "inputs": "x"}),
            httpx.post(f"{backend.url}/v1/classify", json={"task": name, "inputs": "x", "labels": ["a", "b"]}),
            httpx.post(f"{backend.url}/v1/completions", json={"model": name, "prompt": "x"}),
            httpx.post(f"{backend.url}/v1/prompts/{encoded}/rollback", json={"version": 1}, headers=admin()),
            httpx.delete(f"{backend.url}/v1/prompts/{encoded}", headers=admin()),
        ]
        for response in answers:
            assert_error(response, (400, 404, 405), echoed=name)
            assert marker not in response.text and "root:" not in response.text
    assert decoy.exists() and backend.snapshot() == before
    listed = httpx.get(f"{backend.url}/v1/prompts").text + httpx.get(f"{backend.url}/v1/models").text
    assert marker not in listed


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


UNPICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
UNPICKLING_CODE = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False")


def test_nothing_unpickles() -> None:
    """No shipped module imports a pickle-like loader or calls torch.load (prose may mention them)."""
    offenders = []
    for path in (path for root in SHIPPED for path in root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [alias.name for alias in node.names]
                if isinstance(node, ast.ImportFrom) and node.module:
                    modules.append(node.module)
                if any(module.split(".")[0] in UNPICKLING_MODULES for module in modules):
                    offenders.append(f"{path}: {ast.unparse(node)}")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if UNPICKLING_CODE.search(line.split("#")[0]):
                offenders.append(f"{path}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("backend", ["directory"], indirect=True)
def test_one_input_past_the_text_limit_is_refused(backend: Backend) -> None:
    response = httpx.post(f"{backend.url}/v1/generate", json={"task": "pt", "inputs": "x" * 200_001}, timeout=60)
    assert_error(response, 400, "invalid_request")


INFERENCE_KEY = "reliability-inference-key"
GENERATE = {"task": "pt", "inputs": "x", "parameters": {"max_new_tokens": 1}}
# Everything a client reads needs a key once --inference-key is set: the inference key or the admin key.
KEYED_READS = [
    ("GET", "/v1/prompts", None),
    ("GET", "/v1/prompts/pt", None),
    ("GET", "/v1/models", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/redoc", None),
    ("POST", "/v1/generate", GENERATE),
    ("POST", "/v1/classify", {"task": "pt", "inputs": "x", "labels": ["a", "b"]}),
    ("POST", "/v1/completions", {"model": "pt", "prompt": "x", "max_tokens": 1}),
]
KEYS = {"inference": INFERENCE_KEY, "admin": ADMIN_KEY}


@pytest.fixture(scope="module", params=["metrics_keyed", "public_metrics"])
def keyed(request: pytest.FixtureRequest, site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A server with both keys; in the second form /metrics is public (--public-metrics)."""
    root = tmp_path_factory.mktemp(request.param)
    extra = ("--inference-key", INFERENCE_KEY) + (("--public-metrics",) if request.param == "public_metrics" else ())
    with serve(site.model_dir, (root / "prompts").as_uri(), root, *extra) as live:
        assert upload(live.url, "pt", site.artifacts["pt"]).status_code == 201
        yield live, request.param == "public_metrics"


def call(url: str, method: str, path: str, body: dict | None, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(("method", "path", "body"), KEYED_READS, ids=[p for _, p, _ in KEYED_READS])
def test_with_an_inference_key_every_read_needs_a_key(keyed: tuple, method: str, path: str, body: dict | None) -> None:
    live, _ = keyed
    assert_error(call(live.url, method, path, body, None), 401, "unauthorized")
    assert_error(call(live.url, method, path, body, "not-a-key"), 403, "forbidden")
    for holder, key in KEYS.items():
        answer = call(live.url, method, path, body, key)
        assert answer.status_code == 200, (holder, answer.text[:300])
        assert key not in answer.text


def test_health_and_ready_stay_open_and_metrics_needs_a_key_unless_public(keyed: tuple) -> None:
    live, public = keyed
    for path in ("/health", "/ready"):
        assert httpx.get(f"{live.url}{path}").status_code == 200
    if public:
        assert "promptswap_batch_size" in httpx.get(f"{live.url}/metrics").text
    else:
        assert_error(httpx.get(f"{live.url}/metrics"), 401, "unauthorized")
        assert_error(call(live.url, "GET", "/metrics", None, "not-a-key"), 403, "forbidden")
    for key in KEYS.values():
        assert "promptswap_batch_size" in call(live.url, "GET", "/metrics", None, key).text


def test_a_wrong_admin_key_is_named_plainly(keyed: tuple) -> None:
    live, _ = keyed
    error = assert_error(call(live.url, "DELETE", "/v1/prompts/pt", None, INFERENCE_KEY), 403, "forbidden")
    assert "the the" not in error["message"] and "admin key" in error["message"], error
