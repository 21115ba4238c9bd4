"""One HTTP auth dependency for every API; the channels stand on shared, not on the prescriber."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase

from shared import http_auth
from shared.auth import Principal, issue
from shared.settings import Settings
from shared.store import MemoryStore

SECRET = "http-auth-secret"
INVALID = 'Bearer error="invalid_token"'
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A device, clinic or operator token (backtrack token).",
}


def _apps() -> Iterator[tuple[str, FastAPI]]:
    from services.channels.app import create_app as channels  # noqa: PLC0415
    from services.logging_svc.app import create_app as ingest  # noqa: PLC0415
    from services.prescriber.bootstrap import create_app as clinic  # noqa: PLC0415

    settings = Settings(secret=SECRET, redis_url="redis://127.0.0.1:1/0")  # never connected
    yield "ingest", ingest(settings, store=MemoryStore())
    yield "clinic", clinic(settings)
    yield "channels", channels(settings)


def _schemes(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, SecurityBase):
            yield dependency.call
        yield from _schemes(dependency)


def test_every_api_checks_tokens_with_the_one_shared_dependency() -> None:
    """Every ingest, clinic and channels route that takes a token takes it from http_auth.bearer."""
    from services.channels.api import router as channels  # noqa: PLC0415
    from services.logging_svc.app import router as ingest  # noqa: PLC0415
    from services.prescriber.entrypoints.clinic_api import router as clinic  # noqa: PLC0415

    apps = dict(_apps())
    routes = [*apps["ingest"].routes, *ingest.routes, *clinic.routes, *channels.routes]
    schemes = [s for r in routes if isinstance(r, APIRoute) for s in _schemes(r.dependant)]
    assert len(schemes) == 9
    assert all(scheme is http_auth.bearer for scheme in schemes)
    for name, app in apps.items():
        document = app.openapi()
        assert document["components"]["securitySchemes"] == {"HTTPBearer": BEARER_SCHEME}, name
        for operations in document["paths"].values():
            for operation in operations.values():
                assert operation.get("security", [{"HTTPBearer": []}]) == [{"HTTPBearer": []}]


def test_the_channels_import_nothing_of_the_prescriber() -> None:
    """Importing the channels' app (and so its API) loads no module of services.prescriber."""
    code = (
        "import sys, services.channels.app, services.channels.api;"
        "print(sorted(m for m in sys.modules if m.startswith('services.prescriber')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("header", "challenge", "detail"),
    [
        (None, "Bearer", "unauthorised: missing token"),
        ("Basic dXNlcjpwdw==", INVALID, "unauthorised: expected"),
        (f"Bearer {issue('operator', None, 'another')}", INVALID, "unauthorised: unknown key id"),
    ],
)
def test_refusals_are_401_with_a_bearer_challenge(
    header: str | None, challenge: str, detail: str
) -> None:
    """No token asks for one; a bad one says invalid_token (RFC 6750); both are 401."""
    with pytest.raises(HTTPException) as refused:
        http_auth.authenticate(http_auth.build_verifier(Settings(secret=SECRET)), header)
    assert refused.value.status_code == 401
    assert refused.value.headers == {"WWW-Authenticate": challenge}
    assert str(refused.value.detail).startswith(detail)


def test_a_good_token_is_its_principal_and_each_app_keeps_one_verifier() -> None:
    """An app builds its remembering verifier once, from its settings; a token is its principal."""
    token = issue("clinic", "clinic-a", SECRET)
    apps = dict(_apps())
    request = Request({"type": "http", "app": apps["clinic"]})
    check = http_auth.verifier(request)
    assert http_auth.verifier(request) is check
    assert http_auth.verifier(Request({"type": "http", "app": apps["ingest"]})) is not check
    assert http_auth.authenticate(check, f"Bearer {token}") == Principal("clinic", "clinic-a")
