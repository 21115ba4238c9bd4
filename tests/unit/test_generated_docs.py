"""The committed API documents under docs/ match what the code generates (the CI check)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import docs

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return docs.generate()


@pytest.mark.parametrize("name", sorted(docs.DOCUMENTS))
def test_committed_document_matches_the_code(name: str, generated: dict[str, str]) -> None:
    """Each committed document equals the one regenerated from the code right now."""
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing: run `make docs`"
    committed = path.read_text(encoding="utf-8")
    assert committed == generated[name], f"docs/{name} does not match the code: run `make docs`"


def test_no_orphan_documents() -> None:
    """Every openapi-*/asyncapi* file in docs/ is still produced by the generator."""
    on_disk = {p.name for p in DOCS.glob("openapi*.json")} | {
        p.name for p in DOCS.glob("asyncapi*.json")
    }
    assert on_disk <= set(docs.DOCUMENTS), "remove the documents the generator no longer writes"


def test_generation_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """BACKTRACK_* variables of the caller do not change the documents (CI and laptops agree)."""
    monkeypatch.setenv("BACKTRACK_MAX_BATCH", "7")
    monkeypatch.setenv("BACKTRACK_PARTITIONS", "3")
    batch = json.dumps(docs.openapi_ingest()["paths"]["/v1/events/batch"])
    assert '"maxItems": 500' in batch
    channels = docs.asyncapi_prescriber()["channels"]
    assert sum(1 for c in channels.values() if c["address"].endswith(":rxfeed")) == 16


def test_documents_describe_the_contract(generated: dict[str, str]) -> None:
    """The documents hold the public routes and streams of DESIGN.md, in the expected formats."""
    ingest = json.loads(generated["openapi-ingest.json"])
    clinic = json.loads(generated["openapi-clinic.json"])
    asyncapi = json.loads(generated["asyncapi.json"])
    assert ingest["openapi"].startswith("3.")
    assert {"/v1/events", "/v1/events/batch", "/healthz", "/readyz"} <= set(ingest["paths"])
    assert {"/v1/users/{user_id}/prescription", "/healthz", "/readyz"} <= set(clinic["paths"])
    assert asyncapi["asyncapi"] == docs.ASYNCAPI_VERSION
    groups = {c["bindings"]["redis"]["groupName"] for c in asyncapi["channels"].values()}
    assert groups == {"channel-log"}
    described = asyncapi["info"]["description"]
    assert "`prescriber` reads the partition feeds `bt:{pNN}:feed`" in described
    webhooks = json.loads(generated["asyncapi-channels.json"])
    groups = {c["bindings"]["redis"]["groupName"] for c in webhooks["channels"].values()}
    assert groups == {"channel-webhook"}


def test_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--check` exits 1 and names a stale file, writes nothing, and passes once regenerated."""
    (tmp_path / "asyncapi.json").write_text("{}\n", encoding="utf-8")
    assert docs.main(["--out", str(tmp_path), "--check"]) == 1
    assert "asyncapi.json is stale: run `make docs`" in capsys.readouterr().err
    assert (tmp_path / "asyncapi.json").read_text(encoding="utf-8") == "{}\n"
    assert docs.main(["--out", str(tmp_path)]) == 0
    assert docs.main(["--out", str(tmp_path), "--check"]) == 0
