"""The Lock client against a real server: typed calls, held locks that say when they are
lost (key deleted in Redis, server killed or shut down, server frozen: the local safety
timer), and leader election as async iterators."""

from __future__ import annotations

import asyncio

import pytest
from harness import PATIENCE, RedisProcess, ServerProcess

import rookery
from rookery import Elected, LostReason


async def test_acquire_extend_release_inspect(client: rookery.Client) -> None:
    lock = client.lock
    lease = await lock.acquire("job", ttl=10, owner="test")
    assert lease is not None and lease.fence > 0 and lease.token
    assert await lock.acquire("job", ttl=10) is None  # held: tries once
    assert await lock.extend("job", lease.token, 20) is not None
    info = await lock.inspect("job")
    assert [h.owner for h in info.holders] == ["test"] and info.last_fence == lease.fence
    assert await lock.release("job", lease.token)
    assert not await lock.release("job", lease.token)
    again = await lock.acquire("job", ttl=10, wait=5)
    assert again is not None and again.fence > lease.fence


async def test_hold_releases_on_exit_and_refuses_when_held(client: rookery.Client) -> None:
    async with client.lock.hold("report", ttl=5) as held:
        assert held.is_held and held.fence > 0
        with pytest.raises(rookery.LockNotAcquired):
            async with client.lock.hold("report", ttl=5):
                pass
    assert held.lost_reason is LostReason.RELEASED
    assert not (await client.lock.inspect("report")).holders
    # A semaphore lets `limit` holders in.
    async with client.lock.hold("pool", ttl=5, limit=2), client.lock.hold("pool", ttl=5, limit=2):
        assert len((await client.lock.inspect("pool")).holders) == 2


async def test_a_hold_whose_key_is_deleted_in_redis_signals_lost(
    client: rookery.Client, redis: RedisProcess, namespace: str
) -> None:
    async with client.lock.hold("doomed", ttl=3) as held:
        keys = [k for k in redis.keys(f"*{namespace}*doomed*") if not k.endswith(":fence")]
        assert keys, redis.keys("*")
        redis.cli("DEL", *keys)
        await asyncio.wait_for(held.lost.wait(), PATIENCE)
        # The server's next renewal found the lease gone (REVOKED); a renewal that could not
        # even be sent in time on a crawling machine would be SILENT, still never held.
        assert held.lost_reason in (LostReason.REVOKED, LostReason.SILENT), held.lost_reason
        assert not held.is_held
    # The lock is free for others, with a higher fencing token.
    lease = await client.lock.acquire("doomed", ttl=3)
    assert lease is not None and lease.fence > held.fence


@pytest.mark.parametrize("how", ["kill", "terminate"])
async def test_a_hold_across_a_server_restart_signals_lost(
    server: ServerProcess, namespace: str, how: str
) -> None:
    async with rookery.Client(server.address, namespace=namespace) as client:
        held = await client.lock.hold_lock("across", ttl=3)
        getattr(server, how)()
        # The stream breaks (kill) or ends with UNAVAILABLE after the server released the
        # lease (terminate): either way the holder hears it. Never silently neither.
        await asyncio.wait_for(held.lost.wait(), PATIENCE)
        assert held.lost_reason in (LostReason.STREAM_ENDED, LostReason.SILENT), held.lost_reason
        server.start()
        # Someone else gets the lock: at once after a shutdown's release, within the TTL
        # after a crash.
        lease = await client.lock.acquire("across", ttl=3, wait=30)
        assert lease is not None and lease.fence > held.fence
        await held.release()


async def test_a_silent_server_makes_the_holder_stop_trusting_the_lease(
    server: ServerProcess, namespace: str
) -> None:
    async with rookery.Client(server.address, namespace=namespace) as client:
        held = await client.lock.hold_lock("frozen", ttl=2)
        server.pause()  # the connection stays open; no renewal and no `lost` can arrive
        try:
            await asyncio.wait_for(held.lost.wait(), PATIENCE)
            assert held.lost_reason is LostReason.SILENT
        finally:
            server.resume()
        await held.release()


async def test_campaign_and_observe(client: rookery.Client) -> None:
    lock = client.lock
    observer = lock.observe("leader")
    async with observer:
        assert await asyncio.wait_for(observer.__anext__(), PATIENCE) is None  # no leader yet
        first = lock.campaign("leader", "a", ttl=5)
        event = await asyncio.wait_for(first.__anext__(), PATIENCE)
        assert isinstance(event, Elected) and event.lease.fence > 0
        leader = await asyncio.wait_for(observer.__anext__(), PATIENCE)
        assert leader is not None and leader.candidate == "a"
        second = lock.campaign("leader", "b", ttl=5)
        waiting = asyncio.ensure_future(second.__anext__())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # "a" leads until it resigns
        assert await lock.resign("leader", event.lease.token)
        elected = await asyncio.wait_for(waiting, PATIENCE)
        assert isinstance(elected, Elected) and elected.lease.fence > event.lease.fence
        seen = []
        async for leader in observer:
            seen.append(leader.candidate if leader else None)
            if seen[-1] == "b":
                break
        assert seen[-1] == "b"
        await first.aclose()
        await second.aclose()
