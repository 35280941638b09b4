"""The RateLimiter client against a real server: decisions, several limits at once, the IETF
headers, and the explicit fail-open / fail-closed choice while the server is down."""

from __future__ import annotations

from datetime import timedelta

import pytest
from harness import ServerProcess, eventually

import rookery
from rookery import Algorithm, Decision, RateLimit, WhenUnavailable


async def test_checks_deny_over_the_limit_and_consume_nothing_then(client: rookery.Client) -> None:
    limiter = client.rate_limiter
    limit = RateLimit(2, 60)
    assert (await limiter.check("user:1", limit)).allowed
    second = await limiter.check("user:1", limit)
    assert second.allowed and second.remaining == 0
    denied = await limiter.check("user:1", limit)
    assert not denied.allowed and denied.retry_after > timedelta(0)
    assert (await limiter.check("user:1", limit, cost=0)).remaining == 0
    assert await limiter.reset("user:1") >= 1
    assert (await limiter.check("user:1", RateLimit(5, 1, Algorithm.SLIDING_WINDOW_LOG))).allowed


async def test_check_many_consumes_from_none_when_one_denies(client: rookery.Client) -> None:
    limiter = client.rate_limiter
    allowed, decisions = await limiter.check_many(
        [("ip", RateLimit(10, 60), 1), ("user", RateLimit(1, 60), 1)]
    )
    assert allowed and len(decisions) == 2
    allowed, decisions = await limiter.check_many(
        [("ip", RateLimit(10, 60), 1), ("user", RateLimit(1, 60), 1)]
    )
    assert not allowed and not decisions[1].allowed
    assert (await limiter.check("ip", RateLimit(10, 60), cost=0)).remaining == 9


def test_headers_follow_the_ietf_draft_and_round_up() -> None:
    decision = Decision(
        allowed=False,
        limit=100,
        period=timedelta(seconds=60),
        remaining=0,
        reset_after=timedelta(milliseconds=59_001),
        retry_after=timedelta(milliseconds=600),
    )
    assert decision.headers("api") == [
        ("RateLimit-Policy", '"api";q=100;w=60'),
        ("RateLimit", '"api";r=0;t=60'),
        ("Retry-After", "1"),
    ]
    allowed = Decision(allowed=True, limit=100, period=timedelta(seconds=60))
    assert allowed.headers('a"b') == [("RateLimit-Policy", '"ab";q=100;w=60'), ("RateLimit", '"ab";r=0;t=0')]


async def test_fail_open_or_closed_while_the_server_is_down(server: ServerProcess, namespace: str) -> None:
    async with rookery.Client(server.address, namespace=namespace, deadline=60) as client:
        limiter = client.rate_limiter
        assert (await limiter.check("k", RateLimit(1, 60), when_unavailable=WhenUnavailable.DENY)).allowed
        server.kill()
        opened = await limiter.check("k", RateLimit(1, 60), when_unavailable=WhenUnavailable.ALLOW)
        assert opened.allowed and opened.unavailable
        closed = await limiter.check("k", RateLimit(1, 60), when_unavailable=WhenUnavailable.DENY)
        assert not closed.allowed and closed.unavailable
        # Without a choice, the caller sees the failure itself.
        with pytest.raises(rookery.Unavailable):
            await limiter.check("k", RateLimit(1, 60))
        server.start()
        # Back up (once the channel has reconnected): a real decision again, and the key's one
        # unit was consumed before the outage.
        decisions = []

        async def answered() -> bool:
            decisions.append(
                await limiter.check("k", RateLimit(1, 60), when_unavailable=WhenUnavailable.ALLOW)
            )
            return not decisions[-1].unavailable

        assert await eventually(answered)
        assert not decisions[-1].allowed
