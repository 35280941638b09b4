"""`rookery.Client`: the connection to a Rookery server, and how every call is made.

One client holds one grpcio aio channel (one HTTP/2 connection that multiplexes every call),
opened lazily by the first call so a client can be built outside a running event loop. Each
call carries the namespace as `x-rookery-namespace` and the token as
`authorization: Bearer …` in its metadata, the same way over TLS and plaintext. Unary calls
get the client's default deadline; calls that are safe to repeat are retried on UNAVAILABLE
with exponential backoff (a restarting server or Redis), never past that deadline. Streams
(Hold, Subscribe, Consume, ...) live as long as the caller wants, so they get no deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Type, TypeVar, Union, cast

import grpc

from ._convert import Seconds, seconds
from .errors import RookeryError, from_rpc_error

if TYPE_CHECKING:  # the service modules import this one
    from .cache import CacheClient
    from .events import EventsClient
    from .lock import LockClient
    from .rate_limiter import RateLimiterClient
    from .session import SessionClient

#: The metadata header that selects the namespace (tenant) of a call.
NAMESPACE_HEADER = "x-rookery-namespace"

_Stub = TypeVar("_Stub")
_Service = TypeVar("_Service")
_Self = TypeVar("_Self", bound="ServerStream")


class _Default:
    """Marks "use the client's default deadline" apart from None ("no deadline")."""


DEFAULT_DEADLINE = _Default()


class Client:
    """A connection to a Rookery server, with one typed client per service.

    ```python
    async with rookery.Client("localhost:50051", namespace="my-team") as client:
        value = await client.cache.get_or_load("user:42", 300, load_user)
    ```

    Args:
        target: `host:port` of the server (or any grpcio target, e.g. `dns:///host:port`).
        namespace: the namespace (tenant) of every call; the server's default when None.
        token: a bearer token, sent as `authorization: Bearer <token>` with every call.
        token_file: a file holding the token instead, read again when it is older than
            `token_refresh` seconds (Kubernetes rotates projected ServiceAccount tokens in
            place; a client holding the first one would be refused once it expires).
        token_refresh: how often `token_file` is read again (default 60 s).
        ca_file: a PEM file of CA certificates to trust; turns TLS on.
        root_certificates: the same as PEM bytes; turns TLS on.
        tls: TLS with the system's roots when True (implied by `ca_file`/`root_certificates`).
        tls_server_name: the name the server's certificate must carry, when `target`'s host
            is not it.
        deadline: default deadline of each unary call, in seconds or a `timedelta`; None for
            none. Calls that wait on purpose (`Lock.acquire` with a wait, `Cache.fetch`) get
            their wait on top of it.
        retries: how many times a call that is safe to repeat is retried on UNAVAILABLE.
        retry_backoff: first wait between retries (doubling, with jitter, up to 2 s).
        channel_options: extra grpcio channel options.
    """

    def __init__(
        self,
        target: str,
        *,
        namespace: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Union[str, Path, None] = None,
        token_refresh: Seconds = 60.0,
        ca_file: Union[str, Path, None] = None,
        root_certificates: Optional[bytes] = None,
        tls: Optional[bool] = None,
        tls_server_name: Optional[str] = None,
        deadline: Optional[Seconds] = 30.0,
        retries: int = 3,
        retry_backoff: Seconds = 0.05,
        channel_options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        if ca_file is not None and root_certificates is None:
            root_certificates = Path(ca_file).read_bytes()
        self._target = target
        self._tls = bool(tls) or root_certificates is not None
        self._root_certificates = root_certificates
        self._options = [
            # The server bounds every answer; the client takes whatever it sends.
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # Reconnect soon after a server restart (grpc's default backoff grows to 120 s,
            # failing every call meanwhile). `grpc.min_reconnect_backoff_ms` is left at its
            # 20 s default: grpc-core also uses it as the time a connection attempt may take
            # to its first HTTP/2 SETTINGS, and a short one fails every call to a server that
            # is still starting, or slow to reach, however long the call's own deadline.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            *([("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []),
            *channel_options,
        ]
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        self._namespace_metadata: Tuple[Tuple[str, str], ...] = (
            ((NAMESPACE_HEADER, namespace),) if namespace else ()
        )
        self._token_file = Path(token_file) if token_file is not None else None
        self._token_refresh = seconds(token_refresh)
        self._token_read_at = 0.0
        self._metadata: Tuple[Tuple[str, str], ...] = self._namespace_metadata
        if token is not None:
            self._set_token(token)
        elif self._token_file is not None:
            self._read_token_file()  # an unreadable file is an error now, not at the first call
        #: The namespace of every call (None: the server's default).
        self.namespace = namespace
        self._deadline = None if deadline is None else seconds(deadline)
        self._retries = retries
        self._retry_backoff = seconds(retry_backoff)
        self._channel: Optional[grpc.aio.Channel] = None
        self._stubs: Dict[type, Any] = {}
        self._services: Dict[str, Any] = {}

    # --- the services -------------------------------------------------------------------

    @property
    def cache(self) -> "CacheClient":
        """The Cache service: values with TTLs, tags, and `get_or_load` (one load per key)."""
        from .cache import CacheClient

        return self._service("cache", CacheClient)

    @property
    def lock(self) -> "LockClient":
        """The Lock service: leases with fencing tokens, `hold`, semaphores, elections."""
        from .lock import LockClient

        return self._service("lock", LockClient)

    @property
    def rate_limiter(self) -> "RateLimiterClient":
        """The RateLimiter service: checks, fail-open/closed, IETF headers."""
        from .rate_limiter import RateLimiterClient

        return self._service("rate_limiter", RateLimiterClient)

    @property
    def session(self) -> "SessionClient":
        """The Session service: server-side sessions with JSON attribute helpers."""
        from .session import SessionClient

        return self._service("session", SessionClient)

    @property
    def events(self) -> "EventsClient":
        """The Events service: pub/sub, durable streams, consumer groups and `process`."""
        from .events import EventsClient

        return self._service("events", EventsClient)

    def _service(self, name: str, cls: Callable[["Client"], _Service]) -> _Service:
        """The one client of a service, made at first use."""
        if name not in self._services:
            self._services[name] = cls(self)
        return cast(_Service, self._services[name])

    # --- the connection -----------------------------------------------------------------

    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (opened now if it is not yet), for the raw stubs in
        `rookery.v1`; pass `client.metadata` with each call."""
        if self._channel is None:
            if self._tls:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
                self._channel = grpc.aio.secure_channel(self._target, credentials, options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self._target, options=self._options)
        return self._channel

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        """The metadata every call carries: the namespace and the bearer token."""
        if self._token_file is not None and time.monotonic() - self._token_read_at >= self._token_refresh:
            try:
                self._read_token_file()
            except OSError:
                pass  # keep the last token: the server says when it no longer works
        return self._metadata

    def _set_token(self, token: str) -> None:
        self._metadata = (*self._namespace_metadata, ("authorization", f"Bearer {token.strip()}"))

    def _read_token_file(self) -> None:
        assert self._token_file is not None
        self._set_token(self._token_file.read_text())
        self._token_read_at = time.monotonic()

    async def close(self) -> None:
        """Closes the channel, cancelling calls and streams still open. The client may be
        used again afterwards: the next call opens a new channel."""
        channel, self._channel = self._channel, None
        self._stubs.clear()
        if channel is not None:
            await channel.close(grace=None)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()

    # --- making calls -------------------------------------------------------------------

    def stub(self, stub_class: Type[_Stub]) -> _Stub:
        """A generated stub of `rookery.v1` on this client's channel."""
        stub = self._stubs.get(stub_class)
        if stub is None:
            stub = self._stubs[stub_class] = stub_class(self.channel())  # type: ignore[call-arg]
        return cast(_Stub, stub)

    async def unary(
        self,
        stub_class: type,
        method: str,
        request: Any,
        *,
        idempotent: bool = False,
        deadline: Union[Optional[float], _Default] = DEFAULT_DEADLINE,
        extra_time: float = 0.0,
    ) -> Any:
        """Calls `method` of `stub_class` with the client's metadata and deadline, retrying
        UNAVAILABLE when `idempotent`; a failure raises the matching `RookeryError`."""
        loop = asyncio.get_running_loop()
        timeout = self._deadline if isinstance(deadline, _Default) else deadline
        ends = None if timeout is None else loop.time() + timeout + extra_time
        backoff = self._retry_backoff
        attempt = 0
        while True:
            call = getattr(self.stub(stub_class), method)
            remaining = None if ends is None else max(ends - loop.time(), 0.0)
            try:
                return await call(request, metadata=self.metadata, timeout=remaining)
            except grpc.aio.AioRpcError as error:
                pause = backoff * random.uniform(0.5, 1.0)
                retry = (
                    idempotent
                    and error.code() == grpc.StatusCode.UNAVAILABLE
                    and attempt < self._retries
                    and (ends is None or loop.time() + pause < ends)
                )
                if not retry:
                    raise from_rpc_error(error) from error
            attempt += 1
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, 2.0)

    def stream(self, stub_class: type, method: str, request: Any = None) -> Any:
        """Starts a streaming call without a deadline; the caller reads it with `read`."""
        call = getattr(self.stub(stub_class), method)
        if request is None:  # a bidirectional call: the caller writes the requests
            return call(metadata=self.metadata)
        return call(request, metadata=self.metadata)


class ServerStream:
    """The base of the async iterators over server streams (`Campaign`, `Subscription`, ...):
    `aclose()`, or leaving `async with`, cancels the call; subclasses define `__anext__`."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self: _Self) -> _Self:
        return self

    async def aclose(self) -> None:
        """Ends the stream (cancels the call)."""
        self._call.cancel()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def read(call: Any) -> Any:
    """The next message of a streaming call, or None at its end; raises `RookeryError`."""
    try:
        message = await call.read()
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from error
    except asyncio.InvalidStateError as error:
        # Reading a call that has already finished (it was cancelled or ended).
        raise RookeryError("the stream has ended", code=grpc.StatusCode.CANCELLED) from error
    if message is grpc.aio.EOF:
        return None
    return message
