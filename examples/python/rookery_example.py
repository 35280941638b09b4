"""Rookery from Python, through stubs generated from proto/ with grpcio-tools.

Uses every service: Cache, Lock (including the server-streaming Hold), Session,
RateLimiter and Events (a Subscribe stream, and a consumer group: Append, Consume, Ack). Exits non-zero if any call fails or returns something unexpected.

    python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN proto/rookery/v1/*.proto
    PYTHONPATH=GEN ROOKERY_ADDRESS=127.0.0.1:50051 python examples/python/rookery_example.py

Against a server with TLS and auth (its [tls] and [auth] config sections), also set
ROOKERY_CA_FILE (PEM of the CA that signed the server's certificate; the certificate must name
the host of ROOKERY_ADDRESS) and ROOKERY_TOKEN (a bearer token whose sha256 is in
[[auth.tokens]], with a grant in the namespace). The example then connects with TLS, sends
`authorization: Bearer <token>` with every call, and shows a call without the token refused
with UNAUTHENTICATED. Without them it connects in plaintext, the simplest case: a server on
loopback with auth off. scripts/examples.sh runs it with TLS and a token: a throwaway CA and
server certificate from scripts/dev-credentials.sh, and a random token.
"""

import os
import uuid

import grpc
from google.protobuf.duration_pb2 import Duration

from rookery.v1 import cache_pb2, cache_pb2_grpc
from rookery.v1 import events_pb2, events_pb2_grpc
from rookery.v1 import lock_pb2, lock_pb2_grpc
from rookery.v1 import rate_limiter_pb2, rate_limiter_pb2_grpc
from rookery.v1 import session_pb2, session_pb2_grpc


def seconds(n):
    return Duration(seconds=n)


def connect(address, ca_file, token):
    """A channel to the server: TLS when there is a CA to trust, plaintext otherwise.

    Returns the channel and the metadata to add to each call (the token, where gRPC cannot
    attach it: it sends call credentials over TLS only)."""
    if ca_file is None:
        extra = [("authorization", f"Bearer {token}")] if token else []
        return grpc.insecure_channel(address), extra
    with open(ca_file, "rb") as file:
        credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
    if token:
        # Adds `authorization: Bearer <token>` to every call on the channel.
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(address, credentials), []


def show_refused_without_token(address, ca_file, metadata):
    """A call that carries no token is refused: UNAUTHENTICATED, before any handler runs."""
    channel, _ = connect(address, ca_file, token=None)
    with channel:
        try:
            cache_pb2_grpc.CacheStub(channel).Get(cache_pb2.CacheGetRequest(key="greeting"), metadata=metadata)
            raise AssertionError("a call without a token was answered")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            print(f"python example: without the token, Cache.Get is refused: {error.code().name}: {error.details()}")


def main():
    address = os.environ.get("ROOKERY_ADDRESS", "127.0.0.1:50051")
    ca_file = os.environ.get("ROOKERY_CA_FILE") or None
    token = os.environ.get("ROOKERY_TOKEN") or None
    # Every call carries the namespace (tenant) in metadata.
    namespace = [("x-rookery-namespace", f"example-py-{uuid.uuid4().hex[:8]}")]
    if token:
        show_refused_without_token(address, ca_file, namespace)
    channel, extra = connect(address, ca_file, token)
    metadata = namespace + extra
    with channel:
        cache = cache_pb2_grpc.CacheStub(channel)
        cache.Set(cache_pb2.CacheSetRequest(key="greeting", value=b"hello", ttl=seconds(60)), metadata=metadata)
        got = cache.Get(cache_pb2.CacheGetRequest(key="greeting"), metadata=metadata)
        assert got.found and got.value == b"hello", got
        assert not cache.Get(cache_pb2.CacheGetRequest(key="missing"), metadata=metadata).found

        lock = lock_pb2_grpc.LockStub(channel)
        lease = lock.Acquire(lock_pb2.LockAcquireRequest(name="report", ttl=seconds(10), owner="python"), metadata=metadata)
        assert lease.acquired and lease.fence > 0, lease
        held = lock.Acquire(lock_pb2.LockAcquireRequest(name="report", ttl=seconds(10)), metadata=metadata)
        assert not held.acquired, "a held lock must not be granted twice"
        assert lock.Release(lock_pb2.LockReleaseRequest(name="report", token=lease.token), metadata=metadata).released
        # Hold: the lock lives as long as the stream; cancelling the stream releases it.
        stream = lock.Hold(lock_pb2.LockHoldRequest(name="report", ttl=seconds(5)), metadata=metadata)
        first = next(stream)
        assert first.WhichOneof("event") == "acquired" and first.acquired.fence > lease.fence, first
        stream.cancel()

        sessions = session_pb2_grpc.SessionStub(channel)
        created = sessions.Create(
            session_pb2.SessionCreateRequest(subject="user-1", attributes={"role": b"admin"}), metadata=metadata
        )
        session = sessions.Get(session_pb2.SessionGetRequest(id=created.id, touch=True), metadata=metadata).session
        assert session.subject == "user-1" and session.attributes["role"] == b"admin", session
        assert sessions.Delete(session_pb2.SessionDeleteRequest(id=created.id), metadata=metadata).deleted
        try:
            sessions.Get(session_pb2.SessionGetRequest(id=created.id), metadata=metadata)
            raise AssertionError("a deleted session was found")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error

        limiter = rate_limiter_pb2_grpc.RateLimiterStub(channel)
        spec = rate_limiter_pb2.RateLimitSpec(limit=2, period=seconds(60))
        decisions = [
            limiter.Check(rate_limiter_pb2.RateLimiterCheckRequest(key="client-a", spec=spec), metadata=metadata)
            for _ in range(3)
        ]
        assert [d.allowed for d in decisions] == [True, True, False], decisions
        assert decisions[2].retry_after.seconds > 0 or decisions[2].retry_after.nanos > 0

        events = events_pb2_grpc.EventsStub(channel)
        subscription = events.Subscribe(events_pb2.EventsSubscribeRequest(channels=["greetings"]), metadata=metadata)
        # The first message confirms the subscription: a publish after it is delivered.
        assert next(subscription).WhichOneof("event") == "subscribed"
        receivers = events.Publish(events_pb2.EventsPublishRequest(channel="greetings", payload=b"hi"), metadata=metadata)
        assert receivers.receivers >= 1, receivers
        delivered = next(subscription)
        assert delivered.message.channel == "greetings" and delivered.message.payload == b"hi", delivered
        subscription.cancel()

        # A work queue: append jobs, consume them as one consumer of a group, ack each batch.
        for n in range(3):
            events.Append(events_pb2.EventsAppendRequest(stream="jobs", fields={"n": str(n).encode()}), metadata=metadata)
        consumer = events.Consume(
            events_pb2.EventsConsumeRequest(stream="jobs", group="workers", consumer="py-1", create_group=True),
            metadata=metadata,
        )
        assert next(consumer).WhichOneof("event") == "started"
        done = []
        while len(done) < 3:
            batch = next(consumer).deliveries
            done += [delivery.fields["n"] for delivery in batch.deliveries]
            ids = [delivery.id for delivery in batch.deliveries]
            acked = events.Ack(events_pb2.EventsAckRequest(stream="jobs", group="workers", ids=ids), metadata=metadata)
            assert acked.acked == len(ids), acked
        consumer.cancel()
        assert done == [b"0", b"1", b"2"], done
        described = events.DescribeStream(events_pb2.EventsDescribeStreamRequest(stream="jobs"), metadata=metadata)
        assert described.length == 3 and described.groups[0].pending == 0, described
    how = ("TLS" if ca_file else "plaintext") + (", bearer token" if token else ", no token")
    print(f"python example ({how}): every call answered as expected")


if __name__ == "__main__":
    main()
