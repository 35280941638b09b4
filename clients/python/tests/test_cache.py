"""The Cache client against a real server: typed calls, and `get_or_load`'s promises — one
load across processes and replicas, a failed or cancelled loader's lease handed on at once,
refresh-ahead serving the cached value while one caller reloads."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from harness import PATIENCE, RedisProcess, ServerProcess

import rookery
from rookery import FetchOutcome, SetCondition

WORKER = Path(__file__).with_name("load_worker.py")


async def test_typed_calls(client: rookery.Client) -> None:
    cache = client.cache
    assert await cache.set("greeting", b"hello", 60, tags=["demo"])
    entry = await cache.get("greeting")
    assert entry is not None and entry.value == b"hello"
    assert timedelta(seconds=50) < entry.ttl <= timedelta(seconds=60)
    assert await cache.get("missing") is None
    assert not await cache.set("greeting", b"other", timedelta(minutes=1), condition=SetCondition.IF_ABSENT)
    assert await cache.set_many([("a:1", b"1"), ("a:2", b"2")], 60) == [True, True]
    assert [e.value if e else None for e in await cache.get_many(["a:1", "nope", "a:2"])] == [
        b"1",
        None,
        b"2",
    ]
    assert await cache.invalidate_prefix("a:") == 2
    assert await cache.invalidate_tags(["demo"]) == 1
    assert await cache.delete(["greeting", "a:1"]) == 0


async def test_the_lease_protocol_by_hand(client: rookery.Client) -> None:
    cache = client.cache
    fetched = await cache.fetch("k", wait=1)
    assert fetched.outcome is FetchOutcome.FILL and fetched.lease_token
    # Another caller waits for the fill and gives up after its wait.
    assert (await cache.fetch("k", wait=0.2)).outcome is FetchOutcome.WAIT_EXPIRED
    await cache.fill("k", fetched.lease_token, b"v", 60)
    hit = await cache.fetch("k")
    assert hit.outcome is FetchOutcome.HIT and hit.entry is not None and hit.entry.value == b"v"
    # A stale lease is refused.
    with pytest.raises(rookery.FailedPrecondition) as refused:
        await cache.fill("k", fetched.lease_token, b"stale", 60)
    assert refused.value.code.name == "FAILED_PRECONDITION" and refused.value.rpc_error is not None


async def test_invalid_input_raises_invalid_argument(client: rookery.Client) -> None:
    with pytest.raises(rookery.InvalidArgument):
        await client.cache.set("", b"x", 60)


async def test_200_callers_in_two_processes_on_two_replicas_load_once(
    redis: RedisProcess, namespace: str
) -> None:
    # Two server replicas on one Redis; this process calls through one, a second process
    # through the other, 100 concurrent callers each.
    first, second = ServerProcess(redis), ServerProcess(redis)
    try:
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), second.address, namespace, "cold-key", "100"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"
        loads = 0

        async def loader() -> bytes:
            nonlocal loads
            loads += 1
            await asyncio.sleep(1.0)
            return b"loaded by the test"

        async with rookery.Client(first.address, namespace=namespace, deadline=120) as client:
            await client.cache.get("warm-up")
            worker.stdin.write("go\n")
            worker.stdin.flush()
            values = await asyncio.gather(
                *(client.cache.get_or_load("cold-key", 300, loader, max_wait=100) for _ in range(100))
            )
        report = json.loads(await asyncio.get_running_loop().run_in_executor(None, worker.stdout.readline))
        assert worker.wait(timeout=PATIENCE) == 0
        # Exactly one loader ran, in one of the two processes, and all 200 got its value.
        assert loads + report["loads"] == 1, (loads, report)
        assert report["count"] == 100 and len(values) == 100
        assert {v.decode() for v in values} == set(report["values"])
        assert len(report["values"]) == 1
    finally:
        first.kill()
        second.kill()


async def test_a_loader_that_raises_hands_the_lease_on_at_once(client: rookery.Client) -> None:
    # With a 60 s lease and a 45 s max wait, a lease that were not given back would make
    # every waiter give up (WaitExpired): the next caller loading proves the hand-over.
    calls = 0

    async def loader() -> bytes:
        nonlocal calls
        calls += 1
        attempt = calls
        await asyncio.sleep(0.5)  # the others are waiting meanwhile
        if attempt == 1:
            raise RuntimeError("the database is down")
        return b"second try"

    results = await asyncio.gather(
        *(client.cache.get_or_load("flaky", 60, loader, lease_ttl=60, max_wait=45) for _ in range(20)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], RuntimeError), failures
    assert calls == 2
    assert [r for r in results if not isinstance(r, BaseException)] == [b"second try"] * 19


async def test_a_cancelled_caller_releases_its_lease(client: rookery.Client) -> None:
    started = asyncio.Event()

    async def stuck() -> bytes:
        started.set()
        await asyncio.Event().wait()  # never returns
        return b"never"

    holder = asyncio.ensure_future(client.cache.get_or_load("slow", 60, stuck, lease_ttl=60))
    await asyncio.wait_for(started.wait(), PATIENCE)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    # The lease lasts 60 s; a waiter that gives up after 45 s loads only if it was released.
    loads = 0

    async def loader() -> bytes:
        nonlocal loads
        loads += 1
        return b"fresh"

    assert await client.cache.get_or_load("slow", 60, loader, max_wait=45) == b"fresh"
    assert loads == 1


async def test_refresh_ahead_serves_the_cached_value_while_one_caller_reloads(client: rookery.Client) -> None:
    await client.cache.set("hot", b"old", 2)
    loads = 0

    async def loader() -> bytes:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.5)
        return b"new"

    results = await asyncio.gather(
        *(client.cache.get_or_load("hot", 60, loader, refresh_ahead=30) for _ in range(10))
    )
    # One caller was granted the refresh lease and returns the fresh value; the others got
    # the cached one without waiting for it.
    assert loads == 1
    assert results.count(b"new") == 1 and results.count(b"old") == 9, results
    entry = await client.cache.get("hot")
    assert entry is not None and entry.value == b"new" and entry.ttl > timedelta(seconds=30)
