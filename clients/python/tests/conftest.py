"""The fixtures of the tests: a Redis and a server of each test's own (see harness.py), and
a client in a namespace of its own."""

from __future__ import annotations

import uuid
from typing import AsyncIterator, Iterator

import pytest
from harness import RedisProcess, ServerProcess

import rookery


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    """A Redis of this test's own, without persistence."""
    process = RedisProcess()
    yield process
    process.stop()


@pytest.fixture
def server(redis: RedisProcess) -> Iterator[ServerProcess]:
    """A server on this test's Redis."""
    process = ServerProcess(redis)
    yield process
    if process.process is not None and process.process.poll() is None:
        process.resume()  # a test that paused it and failed must not leave it frozen
    process.kill()


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own."""
    return f"py-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(server: ServerProcess, namespace: str) -> AsyncIterator[rookery.Client]:
    """A client of `server` in `namespace`."""
    async with rookery.Client(server.address, namespace=namespace) as c:
        yield c
