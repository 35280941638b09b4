"""Rookery from Python, with the `rookery` package (pip install ./clients/python).

A short tour of every service: a cache value loaded once, a lock held with its fencing
token, a rate limit, a session with JSON attributes, a subscription and a consumer group
processed by a handler. Exits non-zero if anything goes wrong.

    ROOKERY_ADDRESS=127.0.0.1:50051 python examples/python/rookery_example.py

Against a server with TLS and auth, also set ROOKERY_CA_FILE (PEM of the CA that signed the
server's certificate, which must name the host of ROOKERY_ADDRESS) and ROOKERY_TOKEN (a
bearer token with a grant in the namespace); the example then shows that a call without the
token is refused. scripts/examples.sh runs it that way.
"""

import asyncio
import os
import uuid

import rookery


async def main() -> None:
    address = os.environ.get("ROOKERY_ADDRESS", "127.0.0.1:50051")
    ca_file = os.environ.get("ROOKERY_CA_FILE") or None
    token = os.environ.get("ROOKERY_TOKEN") or None
    namespace = f"example-py-{uuid.uuid4().hex[:8]}"

    if token:
        async with rookery.Client(address, namespace=namespace, ca_file=ca_file) as anonymous:
            try:
                await anonymous.cache.get("greeting")
                raise AssertionError("a call without a token was answered")
            except rookery.Unauthenticated as error:
                print(f"python example: without the token, Cache.Get is refused: {error}")

    async with rookery.Client(address, namespace=namespace, ca_file=ca_file, token=token) as client:
        # Cache: ten concurrent callers, one load.
        loads = 0

        async def load_profile() -> bytes:
            nonlocal loads
            loads += 1
            await asyncio.sleep(0.1)
            return b'{"name": "Ada"}'

        profiles = await asyncio.gather(
            *(client.cache.get_or_load("user:42", 300, load_profile) for _ in range(10))
        )
        assert set(profiles) == {b'{"name": "Ada"}'} and loads == 1, (profiles, loads)
        print(f"python example: 10 callers of get_or_load, {loads} load")

        # Lock: held (and renewed by the server) inside the block, released after it.
        async with client.lock.hold("nightly-report", ttl=10, wait=5) as held:
            assert held.is_held
            print(f"python example: holding nightly-report with fencing token {held.fence}")
        assert not (await client.lock.inspect("nightly-report")).holders

        # RateLimiter: 2 per minute; the third is denied, with headers for an HTTP answer.
        limit = rookery.RateLimit(2, 60)
        decisions = [await client.rate_limiter.check("user:42", limit) for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        print(f"python example: third request denied: {dict(decisions[2].headers('api'))}")

        # Session: JSON attributes, read back.
        created = await client.session.create("ada", rookery.json_attributes({"cart": ["book"]}))
        session = await client.session.get(created.id, touch=True)
        assert session is not None and session.json("cart") == ["book"]
        await client.session.delete(created.id)

        # Events: a live subscription, and a consumer group processed by a handler.
        async with await client.events.subscribe(["greetings"]) as subscription:
            await client.events.publish("greetings", b"hello")
            message = await asyncio.wait_for(subscription.__anext__(), 30)
            assert message == rookery.Message("greetings", b"hello"), message
        for n in range(3):
            await client.events.append("orders", {"n": str(n).encode()})
        handled = []

        async def handle(delivery: rookery.Delivery) -> None:
            handled.append(delivery.fields["n"])

        worker = asyncio.ensure_future(
            client.events.process("orders", "billing", "worker-1", handle, create_group=True)
        )
        while len(handled) < 3 or (await client.events.describe("orders")).groups[0].pending:
            await asyncio.sleep(0.05)
        worker.cancel()
        print(f"python example: processed and acked {len(handled)} entries; all services answered")


if __name__ == "__main__":
    asyncio.run(main())
