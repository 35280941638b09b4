"""The test harness: `redis-server` and `rookery-server` processes started on free ports by
the tests themselves, restartable, killable and pausable, and a polling helper.

The server binary is `$ROOKERY_SERVER_BIN` (scripts/test-python.sh sets it, building the
server with cargo when it is not given). Nothing is mocked: every test talks gRPC to a real
server that talks to a real Redis, and faults are real (processes killed, paused, restarted).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, List, Optional, Sequence

#: How long anything may take to start or happen on a slow, shared machine.
PATIENCE = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    """Waits until `port` accepts connections, failing if `process` exits first."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {PATIENCE}s")


class RedisProcess:
    """A `redis-server` on a free port, without persistence unless `extra_args` ask for it."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="rookery-py-redis-")
        self.extra_args = list(extra_args)
        self.process: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        """The URL the server connects with."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts (again) on the same port."""
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "no",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, "redis-server")
        # Loading an AOF answers LOADING for a moment: wait for a real answer.
        deadline = time.monotonic() + PATIENCE
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server does not answer PING")
            time.sleep(0.05)

    def kill(self) -> None:
        """Kills it at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """A crash and a restart on the same port (with no persistence, all data is gone)."""
        self.kill()
        self.start()

    def cli(self, *args: str) -> str:
        """Runs one command with redis-cli; its output, stripped."""
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    def keys(self, pattern: str) -> List[str]:
        """The keys matching `pattern` (KEYS: the tests' Redis is small)."""
        return [k for k in self.cli("--raw", "KEYS", pattern).splitlines() if k]

    def stop(self) -> None:
        """Stops it and removes its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_binary() -> str:
    """The rookery-server to test: `$ROOKERY_SERVER_BIN`."""
    path = os.environ.get("ROOKERY_SERVER_BIN")
    if not path or not Path(path).is_file():
        raise RuntimeError("set ROOKERY_SERVER_BIN to a rookery-server binary (scripts/test-python.sh does)")
    return path


class ServerProcess:
    """A `rookery-server` on free ports, using `redis`; restartable on the same port."""

    def __init__(self, redis: RedisProcess, env: Optional[dict] = None) -> None:
        self.redis = redis
        self.port = free_port()
        self.admin_port = free_port()
        self.extra_env = env or {}
        self.process: Optional[subprocess.Popen] = None
        self.start()

    @property
    def address(self) -> str:
        """`host:port` for `rookery.Client`."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts (again) on the same ports and waits until it listens."""
        env = {
            **os.environ,
            "ROOKERY_REDIS_URL": self.redis.url,
            "ROOKERY_LISTEN": self.address,
            "ROOKERY_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
            "ROOKERY_LOG_LEVEL": "error",
            **self.extra_env,
        }
        self.process = subprocess.Popen(
            [server_binary()], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process, "rookery-server")

    def kill(self) -> None:
        """Kills it at once (SIGKILL): its streams break and its leases are not released."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self) -> None:
        """Shuts it down (SIGTERM): it releases its locks and ends its streams."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=PATIENCE)

    def pause(self) -> None:
        """Freezes it (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undoes `pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = PATIENCE, every: float = 0.05
) -> bool:
    """Polls `check` until it is true or `timeout` passes; whether it became true."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    while True:
        if await check():
            return True
        if loop.time() > ends:
            return False
        await asyncio.sleep(every)
