"""The ingest API over real HTTP (uvicorn on a free port), on MemoryStore and on real Redis."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import structlog
import uvicorn
from fastapi import FastAPI
from redis import Redis as SyncRedis

from services.logging_svc.app import create_app
from services.logging_svc.direct_route import DirectRoutes
from shared.auth import issue
from shared.events import ClinicianReviewed
from shared.keys import Keys
from shared.log import configure_logging
from shared.redis_server import RedisServer, free_port
from shared.settings import Settings
from shared.store import MemoryStore, StoreUnavailable
from tests.sealed import decoded

SECRET = "ingest-e2e-secret"
#: Yesterday: within what a device token may date.
RECENT = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat()
LIMIT = 300_000


def _settings(**overrides: Any) -> Settings:
    return Settings(secret=SECRET, max_body_bytes=LIMIT, partitions=4, **overrides)


@contextmanager
def serving(app: FastAPI) -> Iterator[httpx.Client]:
    """Run ``app`` under uvicorn in a thread on 127.0.0.1 and yield a client for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, http="httptools")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("ingest app did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(params=["memory", "redis"])
def api(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """The ingest app over HTTP, on a MemoryStore or on the test Redis."""
    if request.param == "memory":
        app = create_app(_settings(), store=MemoryStore(partitions=4))
    else:
        app = create_app(_settings(redis_url=request.getfixturevalue("redis_url")))
    with serving(app) as client:
        yield client


def bearer(role: str = "device", subject: str | None = "p-1", **kw: Any) -> dict[str, str]:
    token = issue(role, subject, kw.pop("secret", SECRET), **kw)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def pain(user: str = "p-1", score: Any = 4, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "PainLogged",
        "user_id": user,
        "occurred_at": RECENT,
        "score": score,
        "context": "morning",
        **extra,
    }


def test_event_is_accepted_then_duplicate(api: httpx.Client) -> None:
    """The same event_id posted twice is stored once: accepted, then duplicate, same position."""
    event = pain()
    first = api.post("/v1/events", json=event, headers=bearer())
    assert first.status_code == 202
    assert first.json()["status"] == "accepted"
    assert first.json()["event_id"] == event["event_id"]
    second = api.post("/v1/events", json=event, headers=bearer())
    assert second.status_code == 202
    assert second.json() == first.json() | {"status": "duplicate"}


def test_batch_answers_each_item_in_order(api: httpx.Client) -> None:
    """A batch with a bad, a repeated and a forbidden item stores the others, one result each."""
    ok, later = pain(), pain(score=2)
    items = [ok, pain(score=11), later, ok, pain(user="someone-else"), "nope"]
    reply = api.post("/v1/events/batch", json={"events": items}, headers=bearer())
    assert reply.status_code == 202
    results = reply.json()["results"]
    assert len(results) == len(items)
    assert results[0]["status"] == "accepted"
    assert results[1]["index"] == 1
    assert "events.1.score" in results[1]["error"]
    assert results[2]["status"] == "accepted"
    assert results[3] == results[0] | {"status": "duplicate"}
    assert results[4] == {
        "index": 4,
        "error": "forbidden: this token may not write user someone-else",
    }
    assert results[5]["index"] == 5
    assert "JSON object" in results[5]["error"]


def test_batch_of_more_than_max_batch_is_422(api: httpx.Client) -> None:
    """More than 500 events in one batch is refused as a whole, and nothing is stored."""
    events = [pain() for _ in range(501)]
    reply = api.post("/v1/events/batch", json={"events": events}, headers=bearer())
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "events"]
    again = api.post("/v1/events", json=events[0], headers=bearer())
    assert again.json()["status"] == "accepted"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        bearer(secret="another-secret"),
        bearer(ttl_seconds=60, now=time.time() - 120),
    ],
    ids=["missing", "garbage", "basic", "wrong-secret", "expired"],
)
def test_missing_or_bad_token_is_401(api: httpx.Client, headers: dict[str, str]) -> None:
    """Without a valid bearer token both endpoints answer 401 with a Bearer challenge."""
    for path, body in (("/v1/events", pain()), ("/v1/events/batch", {"events": [pain()]})):
        reply = api.post(path, json=body, headers=headers)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")


def test_token_for_another_user_is_403(api: httpx.Client) -> None:
    """A device writes only its own user, a clinic no pain log; an operator writes anyone."""
    assert api.post("/v1/events", json=pain("p-2"), headers=bearer()).status_code == 403
    clinic = bearer("clinic", "clinic-a")
    assert api.post("/v1/events", json=pain("p-1"), headers=clinic).status_code == 403
    operator = bearer("operator", None)
    assert api.post("/v1/events", json=pain("p-2"), headers=operator).status_code == 202


def test_body_too_large_is_413(api: httpx.Client) -> None:
    """A body over the limit is refused, declared by Content-Length or streamed without one."""
    big = orjson.dumps(pain(notes="x" * LIMIT))
    headers = bearer() | {"Content-Type": "application/json"}
    assert api.post("/v1/events", content=big, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    streamed = api.post("/v1/events/batch", content=chunks(), headers=headers)
    assert streamed.status_code == 413


def test_invalid_event_is_422_with_field_paths(api: httpx.Client) -> None:
    """Bad fields, unknown types, non-objects and non-JSON bodies are 422 naming the field."""
    reply = api.post("/v1/events", json=pain(score=11), headers=bearer())
    assert reply.status_code == 422
    assert reply.json()["detail"] == [
        {
            "loc": ["body", "score"],
            "msg": "Input should be less than or equal to 10",
            "type": "less_than_equal",
        }
    ]
    unknown = api.post("/v1/events", json=pain() | {"type": "Nope"}, headers=bearer())
    assert unknown.json()["detail"][0]["loc"] == ["body", "type"]
    for body in (b"{not json", b"[1, 2]", b""):
        reply = api.post("/v1/events", content=body, headers=bearer())
        assert reply.status_code == 422
        assert reply.json()["detail"][0]["loc"] == ["body"]


def test_health_metrics_and_openapi(api: httpx.Client) -> None:
    """Probes answer, metrics count requests and events, and OpenAPI documents bodies and codes."""
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200
    api.post("/v1/events", json=pain(), headers=bearer())
    api.post("/v1/events", json=pain(score=-1), headers=bearer())
    text = api.get("/metrics").text
    assert 'backtrack_ingest_events_total{outcome="accepted"} 1.0' in text
    assert 'backtrack_ingest_events_total{outcome="rejected"} 1.0' in text
    assert 'backtrack_ingest_requests_total{endpoint="/v1/events",status="202"} 1.0' in text
    assert "backtrack_ingest_request_duration_seconds_bucket" in text
    doc = api.get("/openapi.json").json()
    post = doc["paths"]["/v1/events"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["discriminator"]
    assert {"202", "401", "403", "413", "422", "503"} <= set(post["responses"])
    batch = doc["paths"]["/v1/events/batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["properties"]["events"]["maxItems"] == 500
    assert {"PainLogged", "RehabStarted", "SessionCompleted"} <= set(doc["components"]["schemas"])


class _DownStore(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def append_many(self, events: Any, *, enrols: bool = True) -> Any:
        raise self.error


@pytest.mark.parametrize("error", [StoreUnavailable("down"), RuntimeError("bug")])
def test_failing_store_is_503_never_500(error: Exception) -> None:
    """Any failure of the store's append answers 503 with Retry-After, never 500 or 202."""
    with serving(create_app(_settings(), store=_DownStore(error))) as api:
        for path, body in (("/v1/events", pain()), ("/v1/events/batch", {"events": [pain()]})):
            reply = api.post(path, json=body, headers=bearer())
            assert reply.status_code == 503
            assert int(reply.headers["retry-after"]) >= 1
        assert 'outcome="unavailable"} 2.0' in api.get("/metrics").text


def test_redis_down_is_503_and_readyz_follows_it(
    own_redis_server: Callable[..., RedisServer],
) -> None:
    """With Redis absent, killed or back, /readyz and appends say 503 or 202 accordingly."""
    port = free_port()
    app = create_app(_settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    event = pain()
    with serving(app) as api:
        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").status_code == 503
        down = api.post("/v1/events", json=event, headers=bearer())
        assert down.status_code == 503
        assert down.headers["retry-after"] == "1"

        server = own_redis_server(port=port, appendfsync="always")
        assert api.get("/readyz").status_code == 200
        first = api.post("/v1/events", json=event, headers=bearer())
        assert first.json()["status"] == "accepted"

        server.kill()
        assert api.get("/readyz").status_code == 503
        batch = api.post("/v1/events/batch", json={"events": [pain()]}, headers=bearer())
        assert batch.status_code == 503
        assert "retry-after" in batch.headers

        server.restart()
        assert api.get("/readyz").status_code == 200
        again = api.post("/v1/events", json=event, headers=bearer())
        assert again.json() == first.json() | {"status": "duplicate"}


def test_request_log_line_has_no_scores_or_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    """Each request logs one JSON line with method, path, status, count and duration, no secrets."""
    saved = structlog.get_config()
    configure_logging("INFO", json=True)
    try:
        token = bearer()
        event = pain(score=7)
        with serving(create_app(_settings(), store=MemoryStore())) as api:
            api.post("/v1/events/batch", json={"events": [event, pain(score=9)]}, headers=token)
        err = capsys.readouterr().err
    finally:
        structlog.configure(**saved)
        import logging  # noqa: PLC0415

        logging.getLogger().handlers.clear()
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["method"] == "POST"
    assert line["path"] == "/v1/events/batch"
    assert line["status"] == 202
    assert line["count"] == 2
    assert line["accepted"] == 2
    assert line["duration_ms"] >= 0
    assert line["level"] == "info"
    assert "timestamp" in line
    assert "request_id" in line
    assert token["Authorization"].split()[1] not in err
    assert '"score"' not in err


def event(kind: str, user: str = "p-1", **fields: Any) -> dict[str, Any]:
    """A ``kind`` event of ``user`` with only the common fields and ``fields``."""
    common = {k: v for k, v in pain(user).items() if k in ("event_id", "user_id", "occurred_at")}
    return common | {"type": kind, **fields}


@pytest.fixture(params=["direct", "router"])
def served(request: pytest.FixtureRequest, redis_url: str) -> Iterator[httpx.Client]:
    """The ingest app on the test Redis, its POSTs reached by DirectRoutes or by the router."""
    app = create_app(_settings(redis_url=redis_url))
    if request.param == "router":
        kept = [m for m in app.user_middleware if m.cls is not DirectRoutes]
        assert len(kept) == len(app.user_middleware) - 1
        app.user_middleware = kept
    with serving(app) as client:
        yield client


def _reviewers(redis_url: str, user: str) -> list[str | None]:
    with SyncRedis.from_url(redis_url) as client:
        stored = [decoded(client, f, 4) for _, f in client.xrange(Keys(4).history(user))]
    return [e.reviewed_by for e in stored if isinstance(e, ClinicianReviewed)]


def test_both_paths_apply_who_may_write_what(served: httpx.Client, redis_url: str) -> None:
    """Via DirectRoutes or the router, both POSTs refuse devices and strangers, stamp reviewers."""
    started = event("RehabStarted", clinic_id="clinic-a")
    assert served.post("/v1/events", json=started, headers=bearer("operator", None)).is_success
    mine = event("ClinicianReviewed", action="hold", reviewed_by="clinic-b")
    clinic = bearer("clinic", "clinic-a")
    assert served.post("/v1/events", json=mine, headers=clinic).status_code == 202
    for stranger in (bearer("clinic", "clinic-b"), bearer()):
        assert served.post("/v1/events", json=mine, headers=stranger).status_code == 403
    items = [mine | {"event_id": str(uuid.uuid4())}, pain()]
    results = served.post("/v1/events/batch", json={"events": items}, headers=clinic).json()
    assert results["results"][0]["status"] == "accepted"
    assert results["results"][1]["error"] == "forbidden: clinic tokens may not write PainLogged"
    assert _reviewers(redis_url, "p-1") == ["clinic-a", "clinic-a"]


class _NoClinics(MemoryStore):
    """A store whose users' clinics cannot be read (appends still work)."""

    async def clinic_of(self, user_id: str) -> str | None:
        raise StoreUnavailable("down")


def test_unreadable_clinics_are_503_for_clinics_and_unseen_by_devices() -> None:
    """A clinic write whose user's clinic cannot be read is 503; device writes never read it."""
    measure = event("OutcomeRecorded", instrument="pgic", score=6)
    with serving(create_app(_settings(), store=_NoClinics())) as api:
        clinic = bearer("clinic", "clinic-a")
        for path, body in (("/v1/events", measure), ("/v1/events/batch", {"events": [measure]})):
            reply = api.post(path, json=body, headers=clinic)
            assert reply.status_code == 503
            assert reply.headers["retry-after"] == "1"
        assert api.post("/v1/events", json=measure, headers=bearer()).status_code == 202
        operator = bearer("operator", None)
        reviewed = event("ClinicianReviewed", action="release")
        assert api.post("/v1/events", json=reviewed, headers=operator).status_code == 202
