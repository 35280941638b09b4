"""A second process for tests/test_cache.py: `get_or_load` callers of its own.

Usage: python load_worker.py ADDRESS NAMESPACE KEY CALLERS. It connects, prints `ready`,
waits for a line on stdin (the test's "go"), runs CALLERS concurrent `get_or_load` calls
of KEY, and prints one JSON line: how many times its loader ran, and the values it got.
"""

from __future__ import annotations

import asyncio
import json
import sys

import rookery


async def main(address: str, namespace: str, key: str, callers: int) -> None:
    loads = 0

    async def loader() -> bytes:
        nonlocal loads
        loads += 1
        await asyncio.sleep(1.0)  # long enough for every caller to be waiting meanwhile
        return b"loaded by the worker"

    async with rookery.Client(address, namespace=namespace, deadline=120) as client:
        await client.cache.get("warm-up")  # the channel is open before the start line
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        values = await asyncio.gather(
            *(client.cache.get_or_load(key, 300, loader, max_wait=100) for _ in range(callers))
        )
    print(
        json.dumps({"loads": loads, "values": sorted({v.decode() for v in values}), "count": len(values)}),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
