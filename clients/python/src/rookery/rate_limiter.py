"""The RateLimiter service's typed client: checks, the explicit choice of failing open or
closed when the service cannot be reached, and the IETF `RateLimit-Policy` / `RateLimit`
headers (draft-ietf-httpapi-ratelimit-headers) for a decision.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from ._convert import Seconds, from_duration, to_duration
from .errors import Unavailable
from .v1 import rate_limiter_pb2 as pb
from .v1.rate_limiter_pb2_grpc import RateLimiterStub

if TYPE_CHECKING:
    from ._client import Client


class Algorithm(enum.IntEnum):
    """How a limit counts (see rate_limiter.proto)."""

    #: Generic cell rate algorithm: exact, the default.
    GCRA = pb.RATE_LIMIT_ALGORITHM_GCRA
    #: Token bucket: exact.
    TOKEN_BUCKET = pb.RATE_LIMIT_ALGORITHM_TOKEN_BUCKET
    #: Sliding-window log: exact; limit at most 128.
    SLIDING_WINDOW_LOG = pb.RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_LOG
    #: Sliding-window counter: approximate.
    SLIDING_WINDOW_COUNTER = pb.RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_COUNTER
    #: Fixed window.
    FIXED_WINDOW = pb.RATE_LIMIT_ALGORITHM_FIXED_WINDOW


@dataclass(frozen=True)
class RateLimit:
    """An inline limit: `limit` units per `period`, up to `burst` at once (0: `limit`)."""

    limit: int
    period: Seconds
    algorithm: Algorithm = Algorithm.GCRA
    burst: int = 0


#: A limit: a policy named in the server's config, or an inline `RateLimit`.
Limit = Union[str, RateLimit]


class WhenUnavailable(enum.Enum):
    """What to decide when the rate limiter cannot be reached (UNAVAILABLE)."""

    #: Let the request through: availability over protection (fail open).
    ALLOW = "allow"
    #: Refuse the request: protection over availability (fail closed).
    DENY = "deny"


@dataclass(frozen=True)
class Decision:
    """A rate limit decision."""

    #: Whether the request may proceed.
    allowed: bool
    #: Units per period.
    limit: int = 0
    #: The period.
    period: timedelta = timedelta(0)
    #: Units left now.
    remaining: int = 0
    #: Time until the limit is fully available again.
    reset_after: timedelta = timedelta(0)
    #: When denied: wait this long before retrying.
    retry_after: timedelta = timedelta(0)
    #: A shadow-mode policy denied the request (it is allowed anyway).
    shadow_denied: bool = False
    #: The service could not be reached: this decision is the caller's `WhenUnavailable`.
    unavailable: bool = False

    @classmethod
    def _from_pb(cls, r: Any) -> "Decision":
        return cls(
            allowed=r.allowed,
            limit=r.limit,
            period=from_duration(r.period),
            remaining=r.remaining,
            reset_after=from_duration(r.reset_after),
            retry_after=from_duration(r.retry_after),
            shadow_denied=r.shadow_denied,
        )

    def headers(self, policy: str) -> List[Tuple[str, str]]:
        """The IETF rate limit headers for this decision under the policy name `policy`:
        `RateLimit-Policy`, `RateLimit`, and `Retry-After` when denied. Seconds are rounded
        up, so a client that waits them is allowed."""

        def secs(d: timedelta) -> int:
            return math.ceil(d / timedelta(microseconds=1) / 1_000_000)

        name = policy.replace('"', "").replace("\\", "")
        headers = [
            ("RateLimit-Policy", f'"{name}";q={self.limit};w={max(secs(self.period), 1)}'),
            ("RateLimit", f'"{name}";r={self.remaining};t={secs(self.reset_after)}'),
        ]
        if not self.allowed:
            headers.append(("Retry-After", str(secs(self.retry_after))))
        return headers


def _check_pb(key: str, limit: Limit, cost: int) -> Any:
    if isinstance(limit, str):
        return pb.RateLimiterCheckRequest(key=key, policy=limit, cost=cost)
    spec = pb.RateLimitSpec(
        algorithm=pb.RateLimitAlgorithm.Name(limit.algorithm),
        limit=limit.limit,
        period=to_duration(limit.period),
        burst=limit.burst,
    )
    return pb.RateLimiterCheckRequest(key=key, spec=spec, cost=cost)


class RateLimiterClient:
    """Typed calls to `rookery.v1.RateLimiter`; get it as `client.rate_limiter`."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    async def check(
        self, key: str, limit: Limit, cost: int = 1, *, when_unavailable: Optional[WhenUnavailable] = None
    ) -> Decision:
        """Checks and (if allowed) consumes `cost` units of `limit` for `key`; cost 0 peeks.

        With `when_unavailable`, a service that cannot be reached (UNAVAILABLE) gives that
        decision (with `unavailable=True`) instead of raising: fail open (`ALLOW`) or closed
        (`DENY`) is the caller's explicit choice. Other errors (a bad request) still raise."""
        try:
            r = await self._client.unary(RateLimiterStub, "Check", _check_pb(key, limit, cost))
        except Unavailable:
            if when_unavailable is None:
                raise
            return Decision(allowed=when_unavailable is WhenUnavailable.ALLOW, unavailable=True)
        return Decision._from_pb(r)

    async def check_many(self, checks: Sequence[Tuple[str, Limit, int]]) -> Tuple[bool, List[Decision]]:
        """Checks several `(key, limit, cost)` limits for one request: allowed only if all
        allow, and nothing is consumed when one denies. Returns (allowed, one decision per
        check)."""
        request = pb.RateLimiterCheckManyRequest(checks=[_check_pb(k, lim, c) for k, lim, c in checks])
        r = await self._client.unary(RateLimiterStub, "CheckMany", request)
        return r.allowed, [Decision._from_pb(x) for x in r.results]

    async def reset(self, key: str) -> int:
        """Forgets `key`'s state under every algorithm; returns how many states existed."""
        r = await self._client.unary(
            RateLimiterStub, "Reset", pb.RateLimiterResetRequest(key=key), idempotent=True
        )
        return int(r.removed)
