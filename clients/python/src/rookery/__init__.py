"""Rookery's Python client: asyncio calls to every service of a Rookery server.

```python
import rookery

async with rookery.Client("localhost:50051", namespace="my-team") as client:
    profile = await client.cache.get_or_load("user:42", 300, load_profile)
    async with client.lock.hold("nightly-report", ttl=10, wait=30) as held:
        await write_report(fence=held.fence)
```

`Client` (in _client.py) is the connection; `client.cache`, `.lock`, `.rate_limiter`,
`.session` and `.events` are the typed service clients (one module each). Failed calls raise
`RookeryError` subclasses (errors.py). The generated stubs are in `rookery.v1`.
"""

from ._client import NAMESPACE_HEADER, Client
from ._convert import Seconds
from .cache import CacheClient, Entry, Fetched, FetchOutcome, SetCondition
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LockNotAcquired,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RookeryError,
    Unauthenticated,
    Unavailable,
    WaitExpired,
)
from .events import (
    Consumer,
    ConsumerSettings,
    Deliveries,
    Delivery,
    EntryStream,
    EventsClient,
    Gap,
    GapReason,
    GroupSettings,
    Message,
    NewEntry,
    StreamEntry,
    Subscription,
)
from .lock import Campaign, Elected, HeldLock, Leader, LeaderStream, Lease, LockClient, Lost, LostReason
from .rate_limiter import Algorithm, Decision, RateLimit, RateLimiterClient, WhenUnavailable
from .session import (
    CreatedSession,
    Session,
    SessionClient,
    SessionSummary,
    SessionUpdate,
    json_attributes,
    session_hint,
)

__all__ = [
    "NAMESPACE_HEADER",
    "Client",
    "Seconds",
    "CacheClient",
    "Entry",
    "Fetched",
    "FetchOutcome",
    "SetCondition",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "LockNotAcquired",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RookeryError",
    "Unauthenticated",
    "Unavailable",
    "WaitExpired",
    "ConsumerSettings",
    "Consumer",
    "Deliveries",
    "Delivery",
    "EntryStream",
    "EventsClient",
    "Gap",
    "GapReason",
    "GroupSettings",
    "Message",
    "NewEntry",
    "StreamEntry",
    "Subscription",
    "Campaign",
    "Elected",
    "HeldLock",
    "Leader",
    "LeaderStream",
    "Lease",
    "LockClient",
    "Lost",
    "LostReason",
    "Algorithm",
    "Decision",
    "RateLimit",
    "RateLimiterClient",
    "WhenUnavailable",
    "CreatedSession",
    "Session",
    "SessionClient",
    "SessionSummary",
    "SessionUpdate",
    "json_attributes",
    "session_hint",
]
