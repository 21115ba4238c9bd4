"""Webhook signing secrets at rest: sealed with the master key, apart from ``bt:subs``,
and gone with their subscription; secrets written by older versions still sign."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from redis.asyncio import Redis

from services.channels.subscriptions import (
    SECRETS,
    SUBS,
    SubscriptionCreated,
    SubscriptionDeleted,
    SubscriptionLog,
)
from services.channels.webhooks import new_secret
from shared.sealing import MasterKey, MasterKeys, UnknownMasterKey, new_data_key

pytestmark = pytest.mark.anyio


def _created(sub_id: str, secret: str) -> SubscriptionCreated:
    return SubscriptionCreated(
        sub_id=sub_id,
        clinic_id="clinic-a",
        url="https://clinic.example/hook",
        user_ids=None,
        secret=secret,
        occurred_at=datetime.now(UTC),
    )


async def _everything(redis: Redis) -> bytes:
    """Every byte Redis would persist of the subscription keys (DUMP)."""
    return b"".join([await redis.dump(SUBS) or b"", await redis.dump(SECRETS) or b""])


async def test_a_secret_is_sealed_apart_and_read_back_by_any_process(redis: Redis) -> None:
    masters = MasterKeys(MasterKey(new_data_key()))
    secret = new_secret()
    await SubscriptionLog(redis, masters).append(_created("sub_1", secret))
    assert secret.encode() not in await _everything(redis)
    assert secret.removeprefix("whsec_").encode() not in await _everything(redis)
    ((_, fields),) = await redis.xrange(SUBS)
    assert orjson.loads(fields[b"data"])["secret"] is None
    other = await SubscriptionLog(redis, masters).get("sub_1")  # a process of its own
    assert other is not None
    assert other.secret == secret
    with pytest.raises(UnknownMasterKey):  # another master key opens nothing
        await SubscriptionLog(redis, MasterKeys(MasterKey(new_data_key()))).refresh()


async def test_deleting_a_subscription_deletes_its_secret(redis: Redis) -> None:
    masters = MasterKeys(MasterKey(new_data_key()))
    log = SubscriptionLog(redis, masters)
    await log.append(_created("sub_1", new_secret()))
    await log.append(_created("sub_2", new_secret()))
    await log.append(SubscriptionDeleted(sub_id="sub_1", occurred_at=datetime.now(UTC)))
    assert await redis.hkeys(SECRETS) == [b"sub_2"]
    fresh = await SubscriptionLog(redis, masters).refresh()
    assert (fresh["sub_1"].status, fresh["sub_1"].secret) == ("deleted", "")
    assert fresh["sub_2"].status == "active"
    assert fresh["sub_2"].secret.startswith("whsec_")


async def test_a_secret_written_in_the_stream_by_an_older_version_still_signs(
    redis: Redis,
) -> None:
    legacy = _created("sub_old", new_secret())
    data = legacy.__pydantic_serializer__.to_json(legacy)
    await redis.xadd(SUBS, {"type": legacy.type, "sub_id": legacy.sub_id, "data": data})
    found = await SubscriptionLog(redis, MasterKeys(MasterKey(new_data_key()))).get("sub_old")
    assert found is not None
    assert found.secret == legacy.secret


async def test_older_secrets_move_out_of_the_stream_sealed_and_deleted_ones_go(
    redis: Redis,
) -> None:
    """``seal_legacy_secrets``: entries keep their ids, no secret is left readable in
    ``bt:subs``, a live one still signs (sealed apart), a deleted one's is gone; a second
    run has nothing to do."""
    masters = MasterKeys(MasterKey(new_data_key()))
    kept, gone = _created("sub_kept", new_secret()), _created("sub_gone", new_secret())
    for event in (kept, gone):
        data = event.__pydantic_serializer__.to_json(event)
        await redis.xadd(SUBS, {"type": event.type, "sub_id": event.sub_id, "data": data})
    log = SubscriptionLog(redis, masters)
    await log.append(_created("sub_new", new_secret()))
    await log.append(SubscriptionDeleted(sub_id="sub_gone", occurred_at=datetime.now(UTC)))
    ids = [i for i, _ in await redis.xrange(SUBS)]
    assert await log.seal_legacy_secrets() == 2
    assert [i for i, _ in await redis.xrange(SUBS)] == ids
    everything = await _everything(redis)
    for secret in (kept.secret, gone.secret):
        assert secret is not None
        assert secret.removeprefix("whsec_").encode() not in everything
    assert set(await redis.hkeys(SECRETS)) == {b"sub_kept", b"sub_new"}
    fresh = await SubscriptionLog(redis, masters).refresh()
    assert fresh["sub_kept"].secret == kept.secret
    assert fresh["sub_gone"].status == "deleted"
    assert (await log.refresh())["sub_kept"].secret == kept.secret
    assert await log.seal_legacy_secrets() == 0


async def test_creating_needs_the_master_keys(redis: Redis) -> None:
    with pytest.raises(ValueError, match="master keys"):
        await SubscriptionLog(redis).append(_created("sub_1", new_secret()))
    assert await redis.exists(SUBS, SECRETS) == 0


async def test_on_a_redis_cluster_the_secret_and_its_event_are_one_step(
    cluster_redis: Redis,
) -> None:
    """The stream and the secrets share a slot, so create and delete run as one script."""
    masters = MasterKeys(MasterKey(new_data_key()))
    secret = new_secret()
    log = SubscriptionLog(cluster_redis, masters)
    await log.append(_created("sub_c", secret))
    found = await SubscriptionLog(cluster_redis, masters).get("sub_c")
    assert found is not None
    assert found.secret == secret
    await log.append(SubscriptionDeleted(sub_id="sub_c", occurred_at=datetime.now(UTC)))
    assert await cluster_redis.hlen(SECRETS) == 0
