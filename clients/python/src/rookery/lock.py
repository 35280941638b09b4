"""The Lock service's typed client: one-shot leases, leases held by a stream (`hold`),
semaphores, and leader election (`campaign`, `observe`) as async iterators.

A held lock is watched by a task that reads the `Hold` stream. The lock counts as lost when
the server says so, when the stream breaks, or when no renewal has confirmed it until its
time left, as last heard, less a safety margin (TTL/20, between 50 ms and TTL/4): the server
or the network may be gone, and the lease may end on Redis's clock before this client hears
anything. That is the Rust client's rule (client/src/lock.rs). Code that writes under a lock
passes the fencing token to the resource, and may stop early when `lost` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Tuple, Union

from ._client import ServerStream, read
from ._convert import Seconds, from_duration, from_timestamp, optional_duration, seconds, to_duration
from .errors import Aborted, Internal, LockNotAcquired, RookeryError
from .v1 import lock_pb2 as pb
from .v1.lock_pb2_grpc import LockStub

if TYPE_CHECKING:
    from ._client import Client


class LostReason(enum.Enum):
    """Why a held lock (or a leadership) was lost."""

    #: The server found the lease gone from Redis (expired, released, deleted, data lost).
    REVOKED = "revoked"
    #: The server could not reach Redis to renew the lease before it expired.
    UNREACHABLE = "unreachable"
    #: Redis refused the renewals for lack of memory until the lease expired.
    REDIS_OUT_OF_MEMORY = "redis_out_of_memory"
    #: The stream to the server broke or ended.
    STREAM_ENDED = "stream_ended"
    #: No renewal confirmed the lease before its time left, less the safety margin.
    SILENT = "silent"
    #: This holder released the lock.
    RELEASED = "released"


def _lost_reason(lost: Any) -> LostReason:
    if lost.reason == pb.LOCK_LOST_REASON_UNREACHABLE:
        return LostReason.UNREACHABLE
    if lost.reason == pb.LOCK_LOST_REASON_REDIS_OUT_OF_MEMORY:
        return LostReason.REDIS_OUT_OF_MEMORY
    return LostReason.REVOKED


@dataclass(frozen=True)
class Lease:
    """A granted lease (or leadership term)."""

    #: The holder's secret, for `release` and `extend` (or `resign`). Never log it.
    token: str
    #: The grant's fencing token: pass it to the protected resource.
    fence: int
    #: When the lease ends unless renewed, on Redis's clock.
    expires_at: datetime
    #: The lease's time left when the server answered.
    ttl: timedelta


def _lease(message: Any) -> Lease:
    return Lease(message.token, message.fence, from_timestamp(message.expires_at), from_duration(message.ttl))


@dataclass(frozen=True)
class Leader:
    """A leader seen by `observe`."""

    candidate: str
    fence: int
    elected_at: datetime


@dataclass(frozen=True)
class Elected:
    """A `campaign` event: this candidate leads."""

    lease: Lease


@dataclass(frozen=True)
class Lost:
    """A `campaign` event: leadership is lost; the iteration ends after it."""

    reason: LostReason
    message: str


def safety_margin(ttl: float) -> float:
    """How long before a lease's end, as last heard, the holder stops trusting it: the
    server's own margin (TTL/20, at least 50 ms, at most TTL/4), which covers the delay of the
    message that carried the time left and clock drift over one TTL."""
    return min(max(ttl / 20, 0.05), ttl / 4)


class HeldLock:
    """A lock held by a `Hold` stream, renewed by the server while the stream is open.

    `lost` is set (and `lost_reason` says why) as soon as the lock can no longer be trusted.
    Leaving `async with client.lock.hold(...)` releases it.
    """

    def __init__(self, client: "LockClient", name: str, call: Any, lease: Lease) -> None:
        self._client = client
        self._call = call
        #: The lock's name.
        self.name = name
        #: The grant: its token, fencing token, expiry and TTL.
        self.lease = lease
        #: Set once the lock is lost (or released); see `lost_reason`.
        self.lost = asyncio.Event()
        #: Why the lock was lost, once `lost` is set.
        self.lost_reason: Optional[LostReason] = None
        #: The server's or the transport's words about the loss, once `lost` is set.
        self.lost_message = ""
        loop = asyncio.get_running_loop()
        ttl = lease.ttl.total_seconds()
        self._margin = safety_margin(ttl)
        self._valid_until = loop.time() + ttl - self._margin
        self._watcher = asyncio.ensure_future(self._watch())

    @property
    def fence(self) -> int:
        """The fencing token of this grant: pass it with every write to the resource."""
        return self.lease.fence

    @property
    def token(self) -> str:
        """The holder's secret (works with `release` and `extend` too). Never log it."""
        return self.lease.token

    @property
    def is_held(self) -> bool:
        """Whether the lock is still held, as far as this client knows."""
        return not self.lost.is_set()

    async def wait_lost(self) -> LostReason:
        """Waits until the lock is lost (or released) and returns why."""
        await self.lost.wait()
        assert self.lost_reason is not None
        return self.lost_reason

    async def release(self) -> bool:
        """Releases the lock now; returns whether the lease was still held."""
        if self.lost_reason is LostReason.RELEASED:
            return False
        self._set_lost(LostReason.RELEASED, "released by its holder")
        try:
            # Release by token before closing the stream, so the answer says whether the lease
            # was still held (closing first would race the server's own release).
            return await self._client.release(self.name, self.lease.token)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._watcher.cancel()
        self._call.cancel()

    def _set_lost(self, reason: LostReason, message: str) -> None:
        if not self.lost.is_set():
            self.lost_reason, self.lost_message = reason, message
            self.lost.set()

    async def _read(self) -> Tuple[LostReason, str]:
        """Reads the stream until it says the lock is lost; moves the local deadline on each
        renewal to its arrival plus the lease's time left, less the margin."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await read(self._call)
            except RookeryError as error:
                return LostReason.STREAM_ENDED, str(error)
            if message is None:
                return LostReason.STREAM_ENDED, "the server ended the stream"
            event = message.WhichOneof("event")
            if event == "renewed":
                ttl = from_duration(message.renewed.ttl).total_seconds()
                self._valid_until = loop.time() + ttl - self._margin
            elif event == "lost":
                return _lost_reason(message.lost), message.lost.message

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.ensure_future(self._read())
        try:
            while not reader.done():
                # Silence past the deadline means the lease may be over on Redis's clock.
                await asyncio.wait({reader}, timeout=max(self._valid_until - loop.time(), 0))
                if not reader.done() and loop.time() >= self._valid_until:
                    self._set_lost(LostReason.SILENT, "no renewal arrived within the lease's time left")
                    break
            else:
                self._set_lost(*reader.result())
        finally:
            reader.cancel()
            # A lock that is lost is not held: stop the stream (the server releases if needed).
            self._call.cancel()


class Campaign(ServerStream):
    """The events of a `campaign`: `Elected` when this candidate leads, then `Lost` if it
    stops leading (the iteration ends after it). Closing it resigns."""

    async def __anext__(self) -> Union[Elected, Lost]:
        while True:
            message = await read(self._call)
            if message is None:
                raise StopAsyncIteration
            event = message.WhichOneof("event")
            if event == "elected":
                return Elected(_lease(message.elected))
            if event == "lost":
                return Lost(_lost_reason(message.lost), message.lost.message)


class LeaderStream(ServerStream):
    """The leaders of an election from `observe`: the current one first (None while it has
    none), then every new leader in order."""

    async def __anext__(self) -> Optional[Leader]:
        message = await read(self._call)
        if message is None:
            raise StopAsyncIteration
        if not message.HasField("leader"):
            return None
        leader = message.leader
        return Leader(leader.candidate, leader.fence, from_timestamp(leader.elected_at))


class LockClient:
    """Typed calls to `rookery.v1.Lock`; get it as `client.lock`."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    async def acquire(
        self,
        name: str,
        *,
        ttl: Optional[Seconds] = None,
        wait: Optional[Seconds] = None,
        limit: int = 0,
        owner: str = "",
    ) -> Optional[Lease]:
        """Acquires a lease for `ttl` (server default when None), waiting up to `wait`
        (None: try once); None if others still hold the lock. `limit` > 1 makes a semaphore."""
        request = pb.LockAcquireRequest(
            name=name, ttl=optional_duration(ttl), wait=optional_duration(wait), limit=limit, owner=owner
        )
        extra = seconds(wait) if wait is not None else 0.0
        r = await self._client.unary(LockStub, "Acquire", request, extra_time=extra)
        return _lease(r) if r.acquired else None

    async def release(self, name: str, token: str) -> bool:
        """Releases a lease; False if the token held no live lease."""
        r = await self._client.unary(LockStub, "Release", pb.LockReleaseRequest(name=name, token=token))
        return bool(r.released)

    async def extend(self, name: str, token: str, ttl: Seconds) -> Optional[datetime]:
        """Sets a live lease's time left to `ttl`; the new expiry, or None if it had ended."""
        request = pb.LockExtendRequest(name=name, token=token, ttl=to_duration(ttl))
        r = await self._client.unary(LockStub, "Extend", request)
        return from_timestamp(r.expires_at) if r.extended else None

    async def renew(self, name: str, token: str, ttl: Seconds) -> Optional[datetime]:
        """Another name for `extend`."""
        return await self.extend(name, token, ttl)

    async def inspect(self, name: str) -> pb.LockInspectResponse:
        """A lock's holders (never their tokens), permits and last fencing token."""
        request = pb.LockInspectRequest(name=name)
        response: pb.LockInspectResponse = await self._client.unary(
            LockStub, "Inspect", request, idempotent=True
        )
        return response

    @contextlib.asynccontextmanager
    async def hold(
        self,
        name: str,
        *,
        ttl: Optional[Seconds] = None,
        wait: Optional[Seconds] = None,
        limit: int = 0,
        owner: str = "",
    ) -> AsyncIterator[HeldLock]:
        """Holds a lock for the body of `async with`, renewed by the server, released after:

        ```python
        async with client.lock.hold("report", ttl=10, wait=30) as held:
            await write(report, fence=held.fence)
        ```

        Raises `LockNotAcquired` if others still hold it after `wait` (None: try once).
        `held.lost` is set when the lock is lost meanwhile; the body keeps running and decides
        whether to stop."""
        held = await self.hold_lock(name, ttl=ttl, wait=wait, limit=limit, owner=owner)
        try:
            yield held
        finally:
            # A failed release only delays the next holder until the lease's TTL.
            with contextlib.suppress(RookeryError):
                await held.release()

    async def hold_lock(
        self,
        name: str,
        *,
        ttl: Optional[Seconds] = None,
        wait: Optional[Seconds] = None,
        limit: int = 0,
        owner: str = "",
    ) -> HeldLock:
        """`hold` without `async with`: the caller calls `release()` when done."""
        request = pb.LockHoldRequest(
            name=name, ttl=optional_duration(ttl), wait=optional_duration(wait), limit=limit, owner=owner
        )
        call = self._client.stream(LockStub, "Hold", request)
        try:
            first = await read(call)
            event = first.WhichOneof("event") if first is not None else None
            if event == "acquired":
                return HeldLock(self, name, call, _lease(first.acquired))
            call.cancel()
            if event == "not_acquired":
                raise LockNotAcquired(f"the lock {name!r} is held by others")
            if event == "lost":
                raise Aborted(first.lost.message)
            raise Internal("the hold stream did not start with a grant")
        except BaseException:
            call.cancel()
            raise

    def campaign(self, election: str, candidate: str, ttl: Seconds) -> Campaign:
        """Campaigns for leadership of `election` as `candidate` (the call starts now):
        iterate for `Elected` and `Lost` events; closing the iterator (`aclose()`, leaving
        `async with`) resigns.

        ```python
        async with client.lock.campaign("scheduler", hostname, ttl=10) as campaign:
            async for event in campaign:
                ...
        ```"""
        request = pb.LockCampaignRequest(election=election, candidate=candidate, ttl=to_duration(ttl))
        return Campaign(self._client.stream(LockStub, "Campaign", request))

    def observe(self, election: str) -> LeaderStream:
        """Streams the leaders of `election` (the call starts now): the current state first,
        then every new leader; None when the election is found without one."""
        return LeaderStream(
            self._client.stream(LockStub, "Observe", pb.LockObserveRequest(election=election))
        )

    async def resign(self, election: str, token: str) -> bool:
        """Gives up leadership; False if the token did not lead."""
        r = await self._client.unary(LockStub, "Resign", pb.LockResignRequest(election=election, token=token))
        return bool(r.resigned)
