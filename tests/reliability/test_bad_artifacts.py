"""Every bad upload of the table gets a 4xx with API.md's error body and leaves the registry byte-identical."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import Site
from tests.factories import make_artifact
from tests.reliability.bad_artifacts import CASES, Case, Good
from tests.reliability.conftest import Backend
from tests.reliability.errors import ADMIN, assert_error


@pytest.fixture(scope="module")
def good(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Good:
    cpt = make_artifact(site.base, "cpt", 5, tmp_path_factory.mktemp("cpt") / "cpt", seed=11)
    return Good(
        {"pt": site.artifacts["pt"], "prefix": site.artifacts["prefix"], "mpt": site.artifacts["mpt"], "cpt": cpt}
    )


def test_the_table_is_wide_enough() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 30


def test_the_good_files_are_accepted(backend: Backend, good: Good) -> None:
    """The cases are edits of these files, so a refusal below is caused by the edit alone."""
    for name in ("pt", "prefix", "mpt", "cpt"):
        files = {part: (part, data) for part, data in good.parts(name).items()}
        response = httpx.post(f"{backend.url}/v1/prompts/good-{name}", files=files, headers=ADMIN, timeout=60)
        assert response.status_code == 201, response.text


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_upload_is_refused_and_changes_nothing(backend: Backend, good: Good, case: Case) -> None:
    before = backend.snapshot()
    listed = httpx.get(f"{backend.url}/v1/prompts").json()
    files = {part: (part, data) for part, data in case.build(good).items()}
    response = httpx.post(f"{backend.url}/v1/prompts/{case.task}", files=files, headers=ADMIN, timeout=60)
    assert_error(response, case.status)
    assert backend.snapshot() == before
    assert httpx.get(f"{backend.url}/v1/prompts").json() == listed
    served = httpx.post(
        f"{backend.url}/v1/generate", json={"task": "pt", "inputs": "still", "parameters": {"max_new_tokens": 2}}
    )
    assert served.status_code == 200, served.text
