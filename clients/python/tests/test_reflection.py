"""The server's reflection as Python's own tooling sees it: grpcio-reflection's client speaks
only `grpc.reflection.v1alpha`, and builds a descriptor pool from what the server serves, so
every service (Envoy's rate limit service included) can be called without proto files."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from harness import ServerProcess

SERVICES = [
    "rookery.v1.Cache",
    "rookery.v1.Lock",
    "rookery.v1.Session",
    "rookery.v1.RateLimiter",
    "rookery.v1.Events",
    "envoy.service.ratelimit.v3.RateLimitService",
    "grpc.health.v1.Health",
]


def test_grpcio_reflection_lists_and_describes_every_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        listed = set(database.get_services())
        missing = [name for name in SERVICES if name not in listed]
        assert not missing, f"not listed: {missing} (listed: {sorted(listed)})"
        # Each service resolves with every file it imports, fetched through reflection.
        pool = DescriptorPool(database)
        for name in SERVICES:
            service = pool.FindServiceByName(name)
            assert service.methods, name
        envoy = pool.FindServiceByName("envoy.service.ratelimit.v3.RateLimitService")
        assert envoy.methods_by_name["ShouldRateLimit"].input_type.full_name == (
            "envoy.service.ratelimit.v3.RateLimitRequest"
        )
        cache_get = pool.FindServiceByName("rookery.v1.Cache").methods_by_name["Get"]
        assert cache_get.output_type.full_name == "rookery.v1.CacheGetResponse"
