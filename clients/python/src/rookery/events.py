"""The Events service's typed client: publish; subscriptions as async iterators that say
where messages were lost (gaps); durable streams (append, read and follow); and consumer
groups: a `Consumer` (an async iterator of deliveries, acked on its own call) and
`process`, which acks what its handler finished, retries what it failed, and keeps
consuming across server and Redis restarts.

Consumers run on `ConsumeWithAcks`, like the Rust client's `consume` and `process`
(client/src/events.rs): acks travel on the consumer's own call and are answered in order.
An ack that fails ends the call, and once it has ended every ack fails with the status it
ended with: the entries stay pending and come back first to the same consumer name.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

import grpc

from ._client import ServerStream, read
from ._convert import Seconds, from_duration, optional_duration, seconds, to_duration
from .errors import Cancelled, Internal, RookeryError, Unavailable
from .v1 import events_pb2 as pb
from .v1.events_pb2_grpc import EventsStub

if TYPE_CHECKING:
    from ._client import Client

#: First and longest wait before `process` consumes again after losing the server.
RETRY_MIN = 0.1
RETRY_MAX = 5.0


class GapReason(enum.Enum):
    """Why messages were lost to a subscriber."""

    #: The subscriber did not take messages fast enough; `missed` says how many.
    SLOW_SUBSCRIBER = "slow_subscriber"
    #: The server's Redis pub/sub connection was re-established; how many is unknown.
    RECONNECTED = "reconnected"


@dataclass(frozen=True)
class Message:
    """A message of a subscription."""

    channel: str
    payload: bytes
    #: The subscribed pattern it matched, when it came through a pattern.
    pattern: Optional[str] = None


@dataclass(frozen=True)
class Gap:
    """Messages were lost to this subscriber here (`missed` of them, when known; else 0)."""

    reason: GapReason
    missed: int = 0


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a durable stream; pass its `id` as `after` to resume after it."""

    id: str
    fields: Dict[str, bytes]


@dataclass(frozen=True)
class NewEntry:
    """One entry of `append_many`, with its own idempotency key."""

    fields: Mapping[str, bytes]
    idempotency_key: str = ""


@dataclass(frozen=True)
class Delivery:
    """An entry delivered to a consumer: acknowledge it by `id`."""

    id: str
    fields: Dict[str, bytes]
    #: How many times it has been delivered, this time included.
    deliveries: int


@dataclass(frozen=True)
class Deliveries:
    """Entries delivered together, in the order to process them."""

    entries: List[Delivery]
    #: Entries that were pending but had been trimmed from the stream: they are gone.
    trimmed: int = 0


@dataclass(frozen=True)
class GroupSettings:
    """How a consumer group delivers; None follows the server's defaults."""

    #: How long a delivered entry may stay unacknowledged before it goes to another consumer.
    ack_timeout: Optional[Seconds] = None
    #: Deliveries after which an entry moves to the dead-letter stream (0: never).
    max_deliveries: Optional[int] = None

    def _to_pb(self) -> Any:
        settings = pb.EventsGroupSettings(ack_timeout=optional_duration(self.ack_timeout))
        if self.max_deliveries is not None:
            settings.max_deliveries = self.max_deliveries
        return settings


@dataclass(frozen=True)
class ConsumerSettings:
    """The settings a consumer runs with, as the server confirmed them."""

    ack_timeout: timedelta
    max_deliveries: int
    max_in_flight: int


def _message(m: Any) -> Message:
    return Message(m.channel, m.payload, m.pattern or None)


class Subscription(ServerStream):
    """A live subscription: `Message`s and `Gap`s in order. It raises if the subscriber is
    cut (RESOURCE_EXHAUSTED) or the server shuts down (UNAVAILABLE). Closing it
    (`aclose()`, `async with`) unsubscribes."""

    def __init__(self, call: Any) -> None:
        super().__init__(call)
        self._ready: Deque[Union[Message, Gap]] = collections.deque()

    async def __anext__(self) -> Union[Message, Gap]:
        while not self._ready:
            response = await read(self._call)
            if response is None:
                raise StopAsyncIteration
            event = response.WhichOneof("event")
            if event == "message":
                self._ready.append(_message(response.message))
            elif event == "messages":
                self._ready.extend(_message(m) for m in response.messages.messages)
            elif event == "gap":
                reason = (
                    GapReason.RECONNECTED
                    if response.gap.reason == pb.EVENTS_GAP_REASON_RECONNECTED
                    else GapReason.SLOW_SUBSCRIBER
                )
                self._ready.append(Gap(reason, response.gap.missed))
        return self._ready.popleft()


class EntryStream(ServerStream):
    """Entries of a durable stream, in order (`read`); with `follow`, never ends by itself."""

    def __init__(self, call: Any) -> None:
        super().__init__(call)
        self._ready: Deque[StreamEntry] = collections.deque()

    async def __anext__(self) -> StreamEntry:
        while not self._ready:
            response = await read(self._call)
            if response is None:
                raise StopAsyncIteration
            self._ready.extend(StreamEntry(e.id, dict(e.fields)) for e in response.entries)
        return self._ready.popleft()


def _again(error: RookeryError) -> RookeryError:
    """A fresh exception like `error`, to raise for each ack after the call ended."""
    return type(error)(error.details, code=error.code, rpc_error=error.rpc_error)


class Consumer:
    """A live consumer of a group: an async iterator of `Deliveries`. The server sends the
    next batch only while fewer than `max_in_flight` entries are unacknowledged, so ack (or
    nack) what you finish. Closing it (`aclose()`, `async with`) stops the consumer; entries
    it had not acknowledged go to other consumers after the ack timeout, or back to this
    consumer name at once when it consumes again."""

    def __init__(
        self,
        events: "EventsClient",
        stream: str,
        group: str,
        name: str,
        call: Any,
        settings: ConsumerSettings,
    ) -> None:
        self._events = events
        self._call = call
        #: The stream, group and consumer name.
        self.stream, self.group, self.name = stream, group, name
        #: The settings it runs with.
        self.settings = settings
        # Deliveries, then the error the call ended with (or None at its end).
        self._deliveries: "asyncio.Queue[Union[Deliveries, RookeryError, None]]" = asyncio.Queue()
        # Acks sent and not answered yet, oldest first; answers come in the order acks went.
        self._awaited: Deque["asyncio.Future[int]"] = collections.deque()
        self._ended: Optional[RookeryError] = None
        # Held while an ack is queued for its answer and written, so answers match acks.
        self._sending = asyncio.Lock()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        """Reads the call: deliveries to the iterator, `acked` answers to the acks awaiting
        them; when the call ends, every ack awaiting an answer (and every later one) fails."""
        ended: RookeryError = Cancelled("the consumer was closed")
        try:
            while True:
                response = await read(self._call)
                if response is None:
                    ended = Unavailable(
                        "the consumer's call has ended; "
                        "unacknowledged entries come back after the ack timeout"
                    )
                    self._deliveries.put_nowait(None)
                    return
                event = response.WhichOneof("event")
                if event == "deliveries":
                    batch = response.deliveries
                    entries = [Delivery(d.id, dict(d.fields), d.deliveries) for d in batch.deliveries]
                    self._deliveries.put_nowait(Deliveries(entries, batch.trimmed))
                elif event == "acked" and self._awaited:
                    answer = self._awaited.popleft()
                    if not answer.done():
                        answer.set_result(response.acked.acked)
        except RookeryError as error:
            # A failed ack ends the call too: the acks awaiting an answer get its status.
            ended = error
            self._deliveries.put_nowait(error)
        finally:
            self._ended = ended
            while self._awaited:
                answer = self._awaited.popleft()
                if not answer.done():
                    answer.set_exception(_again(ended))

    def __aiter__(self) -> "Consumer":
        return self

    async def __anext__(self) -> Deliveries:
        item = await self._deliveries.get()
        if item is None or isinstance(item, RookeryError):
            # Later calls end (or raise) the same way.
            self._deliveries.put_nowait(None if item is None else _again(item))
            if item is None:
                raise StopAsyncIteration
            raise item
        return item

    async def ack(self, ids: Iterable[str]) -> int:
        """Acknowledges entries on the consumer's own call; returns how many were pending.
        After the call has ended (a failed ack ends it), raises the status it ended with."""
        request = pb.EventsConsumeWithAcksRequest(ack=pb.EventsAckIds(ids=list(ids)))
        loop = asyncio.get_running_loop()
        async with self._sending:
            if self._ended is not None:
                raise _again(self._ended)
            answer: "asyncio.Future[int]" = loop.create_future()
            self._awaited.append(answer)
            try:
                await self._call.write(request)
            except Exception as error:  # the call is over: grpc raises its own error types here
                if answer in self._awaited:
                    self._awaited.remove(answer)
                if self._ended is not None:
                    raise _again(self._ended) from error
                raise Unavailable(
                    "the consumer's call has ended; its entries come back after the ack timeout"
                ) from error
        return await answer

    async def nack(self, ids: Iterable[str], delay: Seconds = 0) -> Tuple[int, int]:
        """Gives entries back for delivery after `delay` (at most the ack timeout); returns
        (requeued, moved to the dead letters)."""
        return await self._events.nack(self.stream, self.group, self.name, ids, delay)

    async def aclose(self) -> None:
        """Stops consuming (cancels the call)."""
        self._call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> "Consumer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


#: A handler for `process`: returns when the entry is done; raises to have it retried.
Handler = Callable[[Delivery], Awaitable[None]]


class EventsClient:
    """Typed calls to `rookery.v1.Events`; get it as `client.events`."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    async def _call(self, method: str, request: Any, idempotent: bool = False) -> Any:
        return await self._client.unary(EventsStub, method, request, idempotent=idempotent)

    async def publish(self, channel: str, payload: bytes) -> int:
        """Publishes a message (at most once); returns how many server replicas received it."""
        r = await self._call("Publish", pb.EventsPublishRequest(channel=channel, payload=payload))
        return int(r.receivers)

    async def subscribe(self, channels: Iterable[str] = (), patterns: Iterable[str] = ()) -> Subscription:
        """Subscribes, and returns once the subscription is live: anything published after
        this returns is delivered, or reported lost by a `Gap`."""
        request = pb.EventsSubscribeRequest(channels=list(channels), patterns=list(patterns), batch=True)
        call = self._client.stream(EventsStub, "Subscribe", request)
        try:
            first = await read(call)
            if first is None or first.WhichOneof("event") != "subscribed":
                raise Internal("the subscription did not start with its confirmation")
        except BaseException:
            call.cancel()
            raise
        return Subscription(call)

    async def append(
        self,
        stream: str,
        fields: Mapping[str, bytes],
        *,
        max_len: int = 0,
        max_age: Optional[Seconds] = None,
        idempotency_key: str = "",
    ) -> Tuple[str, bool]:
        """Appends an entry; returns its ID and whether it was a retry of an earlier append
        with the same `idempotency_key` (with one, the call is retried on UNAVAILABLE)."""
        request = pb.EventsAppendRequest(
            stream=stream,
            fields=dict(fields),
            max_len=max_len,
            max_age=optional_duration(max_age),
            idempotency_key=idempotency_key,
        )
        r = await self._call("Append", request, idempotent=bool(idempotency_key))
        return r.id, r.duplicate

    async def append_many(
        self, stream: str, entries: Iterable[NewEntry], *, max_len: int = 0, max_age: Optional[Seconds] = None
    ) -> List[Tuple[str, bool]]:
        """Appends entries to one stream in one call, in order, all or none; returns each
        entry's ID and whether it was a retry, in order."""
        news = [pb.EventsNewEntry(fields=dict(e.fields), idempotency_key=e.idempotency_key) for e in entries]
        request = pb.EventsAppendManyRequest(
            stream=stream, entries=news, max_len=max_len, max_age=optional_duration(max_age)
        )
        r = await self._call("AppendMany", request, idempotent=all(e.idempotency_key for e in news))
        return [(a.id, a.duplicate) for a in r.appended]

    def read(
        self, stream: str, after: str = "", *, follow: bool = False, dead_letters: bool = False
    ) -> EntryStream:
        """Reads a stream (the call starts now; iterate the entries): from the start (`after`
        empty), after an entry ID, or (`$`) only new entries; with `follow`, keeps delivering
        new ones; `dead_letters` reads the stream's dead letters (with `rookery.id`,
        `rookery.group`, `rookery.deliveries`, `rookery.reason`)."""
        request = pb.EventsReadRequest(stream=stream, after=after, follow=follow, dead_letters=dead_letters)
        return EntryStream(self._client.stream(EventsStub, "Read", request))

    async def create_group(
        self, stream: str, group: str, start: str = "", settings: Optional[GroupSettings] = None
    ) -> None:
        """Creates a consumer group at the first entry (`start` empty), at new entries (`$`) or
        after an entry ID; raises `AlreadyExists` if it exists."""
        request = pb.EventsCreateGroupRequest(
            stream=stream, group=group, start=start, settings=(settings or GroupSettings())._to_pb()
        )
        await self._call("CreateGroup", request)

    async def delete_group(self, stream: str, group: str) -> bool:
        """Deletes a consumer group with its pending entries; False when there was none."""
        r = await self._call(
            "DeleteGroup", pb.EventsDeleteGroupRequest(stream=stream, group=group), idempotent=True
        )
        return bool(r.deleted)

    async def consume(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        create_group: bool = False,
        settings: Optional[GroupSettings] = None,
        max_in_flight: int = 0,
    ) -> Consumer:
        """Starts consuming as `consumer` of `group`, and returns once the server confirmed
        it. With `create_group`, a missing group is created at the first entry."""
        start = pb.EventsConsumeRequest(
            stream=stream,
            group=group,
            consumer=consumer,
            create_group=create_group,
            settings=(settings or GroupSettings())._to_pb(),
            max_in_flight=max_in_flight,
        )
        call = self._client.stream(EventsStub, "ConsumeWithAcks")
        try:
            await call.write(pb.EventsConsumeWithAcksRequest(start=start))
            first = await read(call)
            if first is None or first.WhichOneof("event") != "started":
                raise Internal("the consumer did not start with its confirmation")
        except BaseException:
            call.cancel()
            raise
        s = first.started
        confirmed = ConsumerSettings(from_duration(s.ack_timeout), s.max_deliveries, s.max_in_flight)
        return Consumer(self, stream, group, consumer, call, confirmed)

    async def process(
        self,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        *,
        create_group: bool = False,
        settings: Optional[GroupSettings] = None,
        max_in_flight: int = 0,
        retry_delay: Seconds = 0,
    ) -> None:
        """Consumes with `handler`, one entry at a time in delivery order: entries it finishes
        are acknowledged; entries it raises on are given back for delivery after
        `retry_delay`, and reach the dead letters after the group's `max_deliveries`.

        Runs until cancelled: when the server or Redis is unavailable (a restart, a replica
        shutting down) it consumes again with backoff, getting back first the entries it had
        not settled. It raises only what retrying cannot fix: the group was deleted, bad
        arguments, or `Aborted` when another call took the consumer name over. The handler
        logs its own errors: here an exception only means "deliver this entry again"."""
        backoff = RETRY_MIN
        while True:
            started: List[bool] = []
            try:
                await self._process_once(
                    stream,
                    group,
                    consumer,
                    handler,
                    create_group,
                    settings,
                    max_in_flight,
                    retry_delay,
                    started,
                )
            except RookeryError as error:
                # UNAVAILABLE: the server or Redis is restarting (or the call just ended); an
                # UNKNOWN status is a broken connection. Anything else is for the caller.
                if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                    raise
            if started:
                backoff = RETRY_MIN
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX)

    async def _process_once(
        self,
        stream: str,
        group: str,
        name: str,
        handler: Handler,
        create_group: bool,
        settings: Optional[GroupSettings],
        max_in_flight: int,
        retry_delay: Seconds,
        started: List[bool],
    ) -> None:
        """One consumer's life for `process`; appends to `started` once it got going."""
        loop = asyncio.get_running_loop()
        consumer = await self.consume(
            stream, group, name, create_group=create_group, settings=settings, max_in_flight=max_in_flight
        )
        started.append(True)
        async with consumer:
            ack_timeout = consumer.settings.ack_timeout.total_seconds()
            delay = min(seconds(retry_delay), ack_timeout)
            # A slow batch acks as it goes, well within the ack timeout of its first entries.
            flush_every = ack_timeout / 4
            async for batch in consumer:
                done: List[str] = []
                failed: List[str] = []
                since_flush = loop.time()
                for delivery in batch.entries:
                    try:
                        await handler(delivery)
                        done.append(delivery.id)
                    except Exception:
                        failed.append(delivery.id)
                    if done and loop.time() - since_flush >= flush_every:
                        await consumer.ack(done)
                        done, since_flush = [], loop.time()
                if done:
                    await consumer.ack(done)
                if failed:
                    await consumer.nack(failed, delay)

    async def ack(self, stream: str, group: str, ids: Iterable[str]) -> int:
        """Acknowledges entries of a group with a call of its own; returns how many were
        pending."""
        r = await self._call(
            "Ack", pb.EventsAckRequest(stream=stream, group=group, ids=list(ids)), idempotent=True
        )
        return int(r.acked)

    async def nack(
        self, stream: str, group: str, consumer: str, ids: Iterable[str], delay: Seconds = 0
    ) -> Tuple[int, int]:
        """Gives entries pending for `consumer` back for delivery after `delay`; returns
        (requeued, moved to the dead letters)."""
        request = pb.EventsNackRequest(
            stream=stream, group=group, consumer=consumer, ids=list(ids), delay=to_duration(delay)
        )
        r = await self._call("Nack", request)
        return int(r.requeued), int(r.dead_lettered)

    async def describe(self, stream: str) -> pb.EventsDescribeStreamResponse:
        """Describes a stream: length, dead letters, and each group's pending entries, lag and
        consumers."""
        request = pb.EventsDescribeStreamRequest(stream=stream)
        response: pb.EventsDescribeStreamResponse = await self._call(
            "DescribeStream", request, idempotent=True
        )
        return response
