import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LockLostReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCK_LOST_REASON_UNSPECIFIED: _ClassVar[LockLostReason]
    LOCK_LOST_REASON_REVOKED: _ClassVar[LockLostReason]
    LOCK_LOST_REASON_UNREACHABLE: _ClassVar[LockLostReason]
    LOCK_LOST_REASON_REDIS_OUT_OF_MEMORY: _ClassVar[LockLostReason]
LOCK_LOST_REASON_UNSPECIFIED: LockLostReason
LOCK_LOST_REASON_REVOKED: LockLostReason
LOCK_LOST_REASON_UNREACHABLE: LockLostReason
LOCK_LOST_REASON_REDIS_OUT_OF_MEMORY: LockLostReason

class LockAcquireRequest(_message.Message):
    __slots__ = ("name", "ttl", "wait", "limit", "owner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl: _duration_pb2.Duration
    wait: _duration_pb2.Duration
    limit: int
    owner: str
    def __init__(self, name: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., limit: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class LockAcquireResponse(_message.Message):
    __slots__ = ("acquired", "token", "fence", "expires_at", "ttl")
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    acquired: bool
    token: str
    fence: int
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, acquired: bool = ..., token: _Optional[str] = ..., fence: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LockReleaseRequest(_message.Message):
    __slots__ = ("name", "token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class LockReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: bool = ...) -> None: ...

class LockExtendRequest(_message.Message):
    __slots__ = ("name", "token", "ttl")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    ttl: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LockExtendResponse(_message.Message):
    __slots__ = ("extended", "expires_at")
    EXTENDED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    extended: bool
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, extended: bool = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LockHoldRequest(_message.Message):
    __slots__ = ("name", "ttl", "wait", "limit", "owner")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl: _duration_pb2.Duration
    wait: _duration_pb2.Duration
    limit: int
    owner: str
    def __init__(self, name: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., limit: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class LockAcquired(_message.Message):
    __slots__ = ("token", "fence", "expires_at", "ttl")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    token: str
    fence: int
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, token: _Optional[str] = ..., fence: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LockRenewed(_message.Message):
    __slots__ = ("expires_at", "ttl")
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LockLost(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: LockLostReason
    message: str
    def __init__(self, reason: _Optional[_Union[LockLostReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class LockNotAcquired(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LockHoldResponse(_message.Message):
    __slots__ = ("acquired", "renewed", "lost", "not_acquired")
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    NOT_ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    acquired: LockAcquired
    renewed: LockRenewed
    lost: LockLost
    not_acquired: LockNotAcquired
    def __init__(self, acquired: _Optional[_Union[LockAcquired, _Mapping]] = ..., renewed: _Optional[_Union[LockRenewed, _Mapping]] = ..., lost: _Optional[_Union[LockLost, _Mapping]] = ..., not_acquired: _Optional[_Union[LockNotAcquired, _Mapping]] = ...) -> None: ...

class LockInspectRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LockHolder(_message.Message):
    __slots__ = ("owner", "fence", "acquired_at", "expires_at")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    owner: str
    fence: int
    acquired_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, owner: _Optional[str] = ..., fence: _Optional[int] = ..., acquired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LockInspectResponse(_message.Message):
    __slots__ = ("holders", "limit", "last_fence")
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LAST_FENCE_FIELD_NUMBER: _ClassVar[int]
    holders: _containers.RepeatedCompositeFieldContainer[LockHolder]
    limit: int
    last_fence: int
    def __init__(self, holders: _Optional[_Iterable[_Union[LockHolder, _Mapping]]] = ..., limit: _Optional[int] = ..., last_fence: _Optional[int] = ...) -> None: ...

class LockCampaignRequest(_message.Message):
    __slots__ = ("election", "candidate", "ttl")
    ELECTION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    election: str
    candidate: str
    ttl: _duration_pb2.Duration
    def __init__(self, election: _Optional[str] = ..., candidate: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LockElected(_message.Message):
    __slots__ = ("token", "fence", "expires_at", "ttl")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    token: str
    fence: int
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, token: _Optional[str] = ..., fence: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LockCampaignResponse(_message.Message):
    __slots__ = ("elected", "lost")
    ELECTED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    elected: LockElected
    lost: LockLost
    def __init__(self, elected: _Optional[_Union[LockElected, _Mapping]] = ..., lost: _Optional[_Union[LockLost, _Mapping]] = ...) -> None: ...

class LockObserveRequest(_message.Message):
    __slots__ = ("election",)
    ELECTION_FIELD_NUMBER: _ClassVar[int]
    election: str
    def __init__(self, election: _Optional[str] = ...) -> None: ...

class LockLeader(_message.Message):
    __slots__ = ("candidate", "fence", "elected_at")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    ELECTED_AT_FIELD_NUMBER: _ClassVar[int]
    candidate: str
    fence: int
    elected_at: _timestamp_pb2.Timestamp
    def __init__(self, candidate: _Optional[str] = ..., fence: _Optional[int] = ..., elected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LockObserveResponse(_message.Message):
    __slots__ = ("leader",)
    LEADER_FIELD_NUMBER: _ClassVar[int]
    leader: LockLeader
    def __init__(self, leader: _Optional[_Union[LockLeader, _Mapping]] = ...) -> None: ...

class LockResignRequest(_message.Message):
    __slots__ = ("election", "token")
    ELECTION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    election: str
    token: str
    def __init__(self, election: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class LockResignResponse(_message.Message):
    __slots__ = ("resigned",)
    RESIGNED_FIELD_NUMBER: _ClassVar[int]
    resigned: bool
    def __init__(self, resigned: bool = ...) -> None: ...
