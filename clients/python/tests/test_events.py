"""The Events client against a real server: subscriptions that report gaps (a Redis restart
is a RECONNECTED gap), durable streams, consumers acking on their own call, and `process`
acking, retrying, dead-lettering and consuming on across a Redis restart."""

from __future__ import annotations

import asyncio
from typing import Dict, Set

import pytest
from harness import PATIENCE, RedisProcess, ServerProcess, eventually

import rookery
from rookery import Gap, GapReason, GroupSettings, Message, NewEntry


async def test_subscribe_publish_and_patterns(client: rookery.Client) -> None:
    async with await client.events.subscribe(["news"], ["jobs.*"]) as subscription:
        assert await client.events.publish("news", b"one") == 1
        await client.events.publish("jobs.build", b"two")
        first = await asyncio.wait_for(subscription.__anext__(), PATIENCE)
        second = await asyncio.wait_for(subscription.__anext__(), PATIENCE)
    assert first == Message("news", b"one")
    assert second == Message("jobs.build", b"two", pattern="jobs.*")


async def test_a_redis_restart_is_a_reconnected_gap(client: rookery.Client, redis: RedisProcess) -> None:
    subscription = await client.events.subscribe(["ticks"])
    async with subscription:
        redis.restart()
        event = await asyncio.wait_for(subscription.__anext__(), PATIENCE)
        assert event == Gap(GapReason.RECONNECTED, 0)

        # Messages published after the reconnect arrive again.
        async def published() -> bool:
            try:
                return await client.events.publish("ticks", b"after") > 0
            except rookery.Unavailable:
                return False

        assert await eventually(published)
        message = await asyncio.wait_for(subscription.__anext__(), PATIENCE)
        assert message == Message("ticks", b"after")


async def test_streams_append_read_and_follow(client: rookery.Client) -> None:
    events = client.events
    first, duplicate = await events.append("log", {"n": b"1"}, idempotency_key="k1")
    again, duplicate = await events.append("log", {"n": b"1"}, idempotency_key="k1")
    assert again == first and duplicate
    appended = await events.append_many("log", [NewEntry({"n": b"2"}), NewEntry({"n": b"3"}, "k3")])
    assert len(appended) == 2 and not any(d for _, d in appended)
    entries = [e async for e in events.read("log")]
    assert [e.fields["n"] for e in entries] == [b"1", b"2", b"3"]
    async with events.read("log", after=entries[-1].id, follow=True) as follow:
        await events.append("log", {"n": b"4"})
        entry = await asyncio.wait_for(follow.__anext__(), PATIENCE)
    assert entry.fields == {"n": b"4"}
    assert (await events.describe("log")).length == 4


async def test_a_consumer_acks_on_its_own_call(client: rookery.Client) -> None:
    events = client.events
    await events.append_many("jobs", [NewEntry({"n": str(i).encode()}) for i in range(3)])
    await events.create_group("jobs", "g", settings=GroupSettings(ack_timeout=60))
    with pytest.raises(rookery.AlreadyExists):
        await events.create_group("jobs", "g")
    async with await events.consume("jobs", "g", "w1") as consumer:
        assert consumer.settings.ack_timeout.total_seconds() == 60
        batch = await asyncio.wait_for(consumer.__anext__(), PATIENCE)
        ids = [d.id for d in batch.entries]
        assert len(ids) == 3 and all(d.deliveries == 1 for d in batch.entries)
        assert await consumer.ack(ids[:2]) == 2
        assert await consumer.ack(ids[:2]) == 0  # acknowledged twice counts once
        assert await consumer.nack(ids[2:], 0) == (1, 0)
        again = await asyncio.wait_for(consumer.__anext__(), PATIENCE)
        assert [d.id for d in again.entries] == ids[2:] and again.entries[0].deliveries == 2
        assert await consumer.ack(ids[2:]) == 1
    assert (await events.describe("jobs")).groups[0].pending == 0
    assert await events.delete_group("jobs", "g")


async def test_acks_after_the_call_ended_fail_with_its_status(server: ServerProcess, namespace: str) -> None:
    async with rookery.Client(server.address, namespace=namespace) as client:
        await client.events.append("jobs", {"n": b"1"})
        consumer = await client.events.consume("jobs", "g", "w", create_group=True)
        batch = await asyncio.wait_for(consumer.__anext__(), PATIENCE)
        server.kill()
        with pytest.raises(rookery.Unavailable):
            await asyncio.wait_for(consumer.__anext__(), PATIENCE)
        with pytest.raises(rookery.Unavailable):
            await consumer.ack([batch.entries[0].id])
        await consumer.aclose()


async def test_process_acks_retries_dead_letters_and_survives_a_redis_restart(namespace: str) -> None:
    # With persistence, as a production Redis would have: the group survives the restart.
    redis = RedisProcess(["--appendonly", "yes", "--appendfsync", "always"])
    server = ServerProcess(redis)
    try:
        async with rookery.Client(
            server.address, namespace=namespace, retries=20, retry_backoff=0.2
        ) as client:
            await run_process_scenario(client, redis)
    finally:
        server.kill()
        redis.stop()


async def run_process_scenario(client: rookery.Client, redis: RedisProcess) -> None:
    events = client.events
    deliveries: Dict[str, int] = {}
    done: Set[str] = set()

    async def handler(delivery: rookery.Delivery) -> None:
        name = delivery.fields["name"].decode()
        deliveries[name] = delivery.deliveries
        if name == "poison" or (name == "flaky" and delivery.deliveries < 2):
            raise RuntimeError(f"cannot handle {name}")
        done.add(name)

    async def append(name: str) -> None:
        # The idempotency key makes the append safe to retry while Redis restarts.
        async def appended() -> bool:
            try:
                await events.append("orders", {"name": name.encode()}, idempotency_key=name)
                return True
            except rookery.Unavailable:
                return False

        assert await eventually(appended), f"append {name}"

    for name in ["a", "flaky", "poison", "b"]:
        await append(name)
    settings = GroupSettings(ack_timeout=30, max_deliveries=3)
    worker = asyncio.ensure_future(
        events.process("orders", "g", "w", handler, create_group=True, settings=settings, retry_delay=0.1)
    )
    try:

        async def settled() -> bool:
            info = await events.describe("orders")
            return bool(info.groups) and info.groups[0].pending == 0 and info.dead_letters == 1

        assert await eventually(settled), (deliveries, done)
        assert done == {"a", "flaky", "b"} and deliveries["flaky"] == 2
        # The poison entry was delivered max_deliveries times, then dead-lettered.
        assert deliveries["poison"] == 3
        dead = [e async for e in events.read("orders", dead_letters=True)]
        assert [e.fields["name"] for e in dead] == [b"poison"]
        assert dead[0].fields["rookery.group"] == b"g" and dead[0].fields["rookery.deliveries"] == b"3"

        redis.restart()
        for name in ["c", "d"]:
            await append(name)

        async def all_done() -> bool:
            return {"c", "d"} <= done

        assert await eventually(all_done), done
        assert not worker.done(), worker
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
