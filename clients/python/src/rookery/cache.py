"""The Cache service's typed client, and `get_or_load`: one load per key across every
caller, process and server replica (the Fetch/Fill lease protocol of cache.proto).

`get_or_load` mirrors the Rust client's: the one caller granted a lease runs the loader and
fills the key while the others wait on the server, without polling; a loader that raises,
or a caller cancelled while it holds the lease, gives the lease back at once so the next
waiter loads without waiting for the lease's TTL; with `refresh_ahead`, one caller reloads a
key close to expiry while everyone else keeps getting the cached value.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, List, Optional, Sequence, Set, Tuple

from ._convert import Seconds, from_duration, optional_duration, seconds
from .errors import FailedPrecondition, Internal, RookeryError, WaitExpired
from .v1 import cache_pb2 as pb
from .v1.cache_pb2_grpc import CacheStub

if TYPE_CHECKING:
    from ._client import Client

#: An async function that produces a key's value when it is missing.
Loader = Callable[[], Awaitable[bytes]]


class SetCondition(enum.IntEnum):
    """When a write takes effect."""

    ALWAYS = pb.CACHE_SET_CONDITION_ALWAYS
    IF_ABSENT = pb.CACHE_SET_CONDITION_IF_ABSENT
    IF_PRESENT = pb.CACHE_SET_CONDITION_IF_PRESENT


@dataclass(frozen=True)
class Entry:
    """A cached value and the time it has left to live."""

    value: bytes
    ttl: timedelta


class FetchOutcome(enum.Enum):
    """What `CacheClient.fetch` returned."""

    #: The key exists: `entry` is set.
    HIT = "hit"
    #: The key exists and is close to expiry: `entry` is set, and this caller holds a refresh
    #: lease (`lease_token`): reload, then `fill`.
    REFRESH = "refresh"
    #: The key is missing and this caller holds the fill lease (`lease_token`): load, then
    #: `fill`, or `release_lease` if loading failed.
    FILL = "fill"
    #: Another caller holds the lease and did not fill within the wait.
    WAIT_EXPIRED = "wait_expired"


@dataclass(frozen=True)
class Fetched:
    """The answer of `CacheClient.fetch`."""

    outcome: FetchOutcome
    entry: Optional[Entry] = None
    lease_token: str = ""
    lease_ttl: timedelta = field(default=timedelta(0))


def _entry(found: bool, value: bytes, ttl: Any) -> Optional[Entry]:
    return Entry(value, from_duration(ttl)) if found else None


class CacheClient:
    """Typed calls to `rookery.v1.Cache`; get it as `client.cache`."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        # Lease releases of cancelled callers, kept referenced until they finish.
        self._releases: Set["asyncio.Task[object]"] = set()

    async def _call(
        self, method: str, request: object, *, idempotent: bool = False, extra: float = 0.0
    ) -> Any:
        return await self._client.unary(CacheStub, method, request, idempotent=idempotent, extra_time=extra)

    async def get(self, key: str) -> Optional[Entry]:
        """Reads a key; None on a miss."""
        r = await self._call("Get", pb.CacheGetRequest(key=key), idempotent=True)
        return _entry(r.found, r.value, r.ttl)

    async def get_many(self, keys: Iterable[str]) -> List[Optional[Entry]]:
        """Reads many keys in one call; results in the order of `keys` (None for misses)."""
        r = await self._call("GetMany", pb.CacheGetManyRequest(keys=list(keys)), idempotent=True)
        return [_entry(x.found, x.value, x.ttl) for x in r.results]

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: Optional[Seconds],
        *,
        ttl_jitter: Optional[Seconds] = None,
        condition: SetCondition = SetCondition.ALWAYS,
        tags: Sequence[str] = (),
    ) -> bool:
        """Writes a key with a TTL (None: the server's `cache.default_ttl`); returns whether it
        was written (False only when `condition` did not hold)."""
        request = pb.CacheSetRequest(
            key=key,
            value=value,
            ttl=optional_duration(ttl),
            ttl_jitter=optional_duration(ttl_jitter),
            condition=pb.CacheSetCondition.Name(condition),
            tags=list(tags),
        )
        # An unconditional write is safe to repeat; a conditional one could answer "not
        # stored" for its own first attempt.
        r = await self._call("Set", request, idempotent=condition == SetCondition.ALWAYS)
        return bool(r.stored)

    async def set_many(
        self,
        entries: Iterable[Tuple[str, bytes]],
        ttl: Optional[Seconds],
        *,
        ttl_jitter: Optional[Seconds] = None,
        condition: SetCondition = SetCondition.ALWAYS,
        tags: Sequence[str] = (),
    ) -> List[bool]:
        """Writes many `(key, value)` pairs in one call; returns per entry whether it was
        written."""
        request = pb.CacheSetManyRequest(
            entries=[pb.CacheEntry(key=k, value=v) for k, v in entries],
            ttl=optional_duration(ttl),
            ttl_jitter=optional_duration(ttl_jitter),
            condition=pb.CacheSetCondition.Name(condition),
            tags=list(tags),
        )
        r = await self._call("SetMany", request, idempotent=condition == SetCondition.ALWAYS)
        return list(r.stored)

    async def delete(self, keys: Iterable[str]) -> int:
        """Deletes keys (cancelling their fill leases); returns how many existed."""
        r = await self._call("Delete", pb.CacheDeleteRequest(keys=list(keys)), idempotent=True)
        return int(r.deleted)

    async def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Removes every key written with any of `tags`; returns how many were removed."""
        request = pb.CacheInvalidateRequest(tags=pb.CacheTags(tags=list(tags)))
        r = await self._call("Invalidate", request, idempotent=True)
        return int(r.removed)

    async def invalidate_prefix(self, prefix: str) -> int:
        """Removes every key whose name starts with `prefix` (matched literally: `*` is a
        plain character); returns how many were removed."""
        r = await self._call("Invalidate", pb.CacheInvalidateRequest(prefix=prefix), idempotent=True)
        return int(r.removed)

    async def fetch(
        self,
        key: str,
        *,
        wait: Optional[Seconds] = None,
        lease_ttl: Optional[Seconds] = None,
        refresh_ahead: Optional[Seconds] = None,
    ) -> Fetched:
        """Reads a key with the lease protocol (`Cache.Fetch` in cache.proto): a hit, a
        refresh lease, a fill lease, or the end of the wait for another caller's fill."""
        request = pb.CacheFetchRequest(
            key=key,
            wait=optional_duration(wait),
            lease_ttl=optional_duration(lease_ttl),
            refresh_ahead=optional_duration(refresh_ahead),
        )
        # The server waits up to `wait` on purpose: the deadline comes on top of it.
        r = await self._call("Fetch", request, extra=seconds(wait) if wait is not None else 10.0)
        entry = Entry(r.value, from_duration(r.ttl))
        token, lease_ttl = r.lease_token, from_duration(r.lease_ttl)
        outcome = r.outcome
        if outcome == pb.CACHE_FETCH_OUTCOME_HIT:
            return Fetched(FetchOutcome.HIT, entry)
        if outcome == pb.CACHE_FETCH_OUTCOME_REFRESH:
            return Fetched(FetchOutcome.REFRESH, entry, token, lease_ttl)
        if outcome == pb.CACHE_FETCH_OUTCOME_FILL:
            return Fetched(FetchOutcome.FILL, None, token, lease_ttl)
        if outcome == pb.CACHE_FETCH_OUTCOME_WAIT_EXPIRED:
            return Fetched(FetchOutcome.WAIT_EXPIRED)
        raise Internal(f"unknown fetch outcome {outcome}")

    async def fill(
        self,
        key: str,
        lease_token: str,
        value: bytes,
        ttl: Optional[Seconds],
        *,
        ttl_jitter: Optional[Seconds] = None,
        tags: Sequence[str] = (),
    ) -> None:
        """Stores a value with a lease from `fetch` and wakes the waiters. Raises
        `FailedPrecondition` when the lease was no longer current (nothing stored)."""
        request = pb.CacheFillRequest(
            key=key,
            lease_token=lease_token,
            value=value,
            ttl=optional_duration(ttl),
            ttl_jitter=optional_duration(ttl_jitter),
            tags=list(tags),
        )
        await self._call("Fill", request)

    async def release_lease(self, key: str, lease_token: str) -> bool:
        """Gives a lease back without filling, so the next waiter gets it at once; False if it
        was no longer current."""
        request = pb.CacheReleaseLeaseRequest(key=key, lease_token=lease_token)
        r = await self._call("ReleaseLease", request, idempotent=True)
        return bool(r.released)

    async def get_or_load(
        self,
        key: str,
        ttl: Seconds,
        loader: Loader,
        *,
        ttl_jitter: Optional[Seconds] = None,
        lease_ttl: Optional[Seconds] = None,
        refresh_ahead: Optional[Seconds] = None,
        max_wait: Seconds = 30.0,
        tags: Sequence[str] = (),
    ) -> bytes:
        """The cached value of `key`, or the value `loader()` produces, such that the loader
        runs once per key across every caller and server replica while the others wait.

        - The caller granted the lease runs `loader` and fills the key with `ttl`. If the fill
          is rejected (the key was written meanwhile) or fails, its value is still returned.
        - If `loader` raises, the lease is given back at once (the next waiter loads without
          waiting for `lease_ttl`) and the exception propagates. If the caller is cancelled
          while holding the lease, the lease is given back in the background.
        - With `refresh_ahead`, when the value has less than that left, one caller reloads it
          (returning the fresh value, or the cached one if its loader raises) while the others
          get the cached value at once.
        - `lease_ttl` should exceed the loader's worst-case time (server default: 10 s).
        - After waiting `max_wait` in total for another caller's load, raises `WaitExpired`.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        limit = seconds(max_wait)
        while True:
            wait = limit - (loop.time() - started)
            if wait <= 0:
                raise WaitExpired(f"gave up after waiting {limit:.1f}s for another caller to load {key!r}")
            fetched = await self.fetch(key, wait=wait, lease_ttl=lease_ttl, refresh_ahead=refresh_ahead)
            if fetched.outcome is FetchOutcome.HIT:
                assert fetched.entry is not None
                return fetched.entry.value
            if fetched.outcome is not FetchOutcome.WAIT_EXPIRED:
                break
        token = fetched.lease_token
        cached = fetched.entry.value if fetched.entry is not None else None
        try:
            value = await loader()
        except Exception:
            # Hand the lease on now rather than after its TTL; if this fails, it expires.
            await self._release_quietly(key, token)
            if cached is not None:
                return cached
            raise
        except BaseException:
            # Cancelled (or interrupted) while holding the lease: release it in the
            # background, since this task may not await anything any more.
            self._release_in_background(key, token)
            raise
        try:
            await self.fill(key, token, value, ttl, ttl_jitter=ttl_jitter, tags=tags)
        except FailedPrecondition:
            pass  # the key changed meanwhile: the value is right for this caller, not cached
        except RookeryError:
            await self._release_quietly(key, token)
        except BaseException:
            self._release_in_background(key, token)
            raise
        return value

    async def _release_quietly(self, key: str, token: str) -> None:
        try:
            await self.release_lease(key, token)
        except RookeryError:
            pass  # best effort: the lease still ends by its TTL

    def _release_in_background(self, key: str, token: str) -> None:
        task: "asyncio.Task[object]" = asyncio.ensure_future(self._release_quietly(key, token))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
