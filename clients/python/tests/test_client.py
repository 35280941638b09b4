"""The connection: TLS with a CA file and a bearer token (refused without it), namespaces as
tenants, statuses mapped to exceptions, retries of idempotent calls across a server restart,
a server slow to answer a new connection, and the lazily opened channel that `async with`
closes."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
from pathlib import Path

import grpc
import pytest
from harness import RedisProcess, ServerProcess

import rookery

REPOSITORY = Path(__file__).resolve().parents[3]


async def test_tls_and_a_bearer_token(redis: RedisProcess, tmp_path: Path, namespace: str) -> None:
    subprocess.run([str(REPOSITORY / "scripts" / "dev-credentials.sh"), str(tmp_path)], check=True)
    token = secrets.token_hex(32)
    config = tmp_path / "rookery.toml"
    config.write_text(
        f"""
[tls]
cert_file = "{tmp_path / "server.crt"}"
key_file = "{tmp_path / "server.key"}"

[auth]
enabled = true

[[auth.tokens]]
identity = "tests"
sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"

[[auth.grants]]
identities = ["tests"]
namespaces = ["*"]
access = "admin"
"""
    )
    server = ServerProcess(redis, env={"ROOKERY_CONFIG": str(config)})
    address = f"localhost:{server.port}"  # the name in the server's certificate
    try:
        async with rookery.Client(
            address, namespace=namespace, ca_file=tmp_path / "ca.crt", token=token
        ) as client:
            assert await client.cache.set("k", b"v", 60)
            entry = await client.cache.get("k")
            assert entry is not None and entry.value == b"v"
        # The token from a file, read again when the file changes and its refresh is due.
        token_file = tmp_path / "token"
        token_file.write_text("wrong\n")
        async with rookery.Client(
            address, namespace=namespace, ca_file=tmp_path / "ca.crt", token_file=token_file, token_refresh=0
        ) as from_file:
            with pytest.raises(rookery.Unauthenticated):
                await from_file.cache.get("k")
            token_file.write_text(token + "\n")
            assert await from_file.cache.get("k") is not None
        async with rookery.Client(address, namespace=namespace, ca_file=tmp_path / "ca.crt") as anonymous:
            with pytest.raises(rookery.Unauthenticated) as refused:
                await anonymous.cache.get("k")
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert isinstance(refused.value.rpc_error, grpc.aio.AioRpcError)
    finally:
        server.kill()


async def test_namespaces_are_separate(server: ServerProcess) -> None:
    async with (
        rookery.Client(server.address, namespace="team-a") as a,
        rookery.Client(server.address, namespace="team-b") as b,
    ):
        await a.cache.set("shared-name", b"a", 60)
        assert await b.cache.get("shared-name") is None
        assert a.metadata == (("x-rookery-namespace", "team-a"),)


async def test_idempotent_calls_are_retried_across_a_server_restart(
    server: ServerProcess, namespace: str
) -> None:
    async with rookery.Client(
        server.address, namespace=namespace, retries=30, retry_backoff=0.2, deadline=120
    ) as client:
        await client.cache.set("k", b"v", 300)
        server.kill()
        # Not idempotent: fails at once.
        with pytest.raises(rookery.Unavailable):
            await client.events.publish("ch", b"x")
        # Idempotent: retried with backoff until the server is back.
        reading = asyncio.ensure_future(client.cache.get("k"))
        await asyncio.sleep(0.5)
        assert not reading.done()
        server.start()
        entry = await reading
        assert entry is not None and entry.value == b"v"


async def test_a_server_slow_to_answer_a_new_connection_is_waited_for(
    server: ServerProcess, namespace: str
) -> None:
    # A server still starting (its port bound, its Redis not yet reached) or far away accepts
    # the TCP connection and sends its HTTP/2 SETTINGS later. A proxy holding every new
    # connection for a second stands in for it; a stream call, which is never retried, must
    # wait for the connection within its deadline instead of failing.
    held = asyncio.Event()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def hold_then_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.set()
        await asyncio.sleep(1.0)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.gather(relay(reader, upstream_writer), relay(upstream_reader, writer))

    proxy = await asyncio.start_server(hold_then_relay, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        async with rookery.Client(f"127.0.0.1:{port}", namespace=namespace, deadline=60) as client:
            subscription = await client.events.subscribe(["slow"])
            async with subscription:
                assert held.is_set()
                assert await client.events.publish("slow", b"hello") == 1
                message = await asyncio.wait_for(subscription.__anext__(), 60)
                assert message.payload == b"hello"
    finally:
        proxy.close()


async def test_the_channel_opens_lazily_and_reopens_after_close(server: ServerProcess) -> None:
    client = rookery.Client(server.address)  # outside any call: nothing is opened yet
    assert client._channel is None
    async with client:
        assert await client.cache.get("nothing") is None
    assert client._channel is None
    assert await client.cache.get("nothing") is None  # a new channel
    await client.close()


def test_an_unknown_status_keeps_its_code() -> None:
    error = rookery.RookeryError("odd", code=grpc.StatusCode.DATA_LOSS)
    assert error.code == grpc.StatusCode.DATA_LOSS and "DATA_LOSS" in str(error)
    assert rookery.Unavailable("x").code == grpc.StatusCode.UNAVAILABLE
