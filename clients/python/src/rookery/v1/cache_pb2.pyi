import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheSetCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_SET_CONDITION_UNSPECIFIED: _ClassVar[CacheSetCondition]
    CACHE_SET_CONDITION_ALWAYS: _ClassVar[CacheSetCondition]
    CACHE_SET_CONDITION_IF_ABSENT: _ClassVar[CacheSetCondition]
    CACHE_SET_CONDITION_IF_PRESENT: _ClassVar[CacheSetCondition]

class CacheFetchOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_FETCH_OUTCOME_UNSPECIFIED: _ClassVar[CacheFetchOutcome]
    CACHE_FETCH_OUTCOME_HIT: _ClassVar[CacheFetchOutcome]
    CACHE_FETCH_OUTCOME_REFRESH: _ClassVar[CacheFetchOutcome]
    CACHE_FETCH_OUTCOME_FILL: _ClassVar[CacheFetchOutcome]
    CACHE_FETCH_OUTCOME_WAIT_EXPIRED: _ClassVar[CacheFetchOutcome]
CACHE_SET_CONDITION_UNSPECIFIED: CacheSetCondition
CACHE_SET_CONDITION_ALWAYS: CacheSetCondition
CACHE_SET_CONDITION_IF_ABSENT: CacheSetCondition
CACHE_SET_CONDITION_IF_PRESENT: CacheSetCondition
CACHE_FETCH_OUTCOME_UNSPECIFIED: CacheFetchOutcome
CACHE_FETCH_OUTCOME_HIT: CacheFetchOutcome
CACHE_FETCH_OUTCOME_REFRESH: CacheFetchOutcome
CACHE_FETCH_OUTCOME_FILL: CacheFetchOutcome
CACHE_FETCH_OUTCOME_WAIT_EXPIRED: CacheFetchOutcome

class CacheGetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class CacheGetResponse(_message.Message):
    __slots__ = ("found", "value", "ttl")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    ttl: _duration_pb2.Duration
    def __init__(self, found: bool = ..., value: _Optional[bytes] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CacheGetManyRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class CacheLookup(_message.Message):
    __slots__ = ("found", "value", "ttl")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    ttl: _duration_pb2.Duration
    def __init__(self, found: bool = ..., value: _Optional[bytes] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CacheGetManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CacheLookup]
    def __init__(self, results: _Optional[_Iterable[_Union[CacheLookup, _Mapping]]] = ...) -> None: ...

class CacheSetRequest(_message.Message):
    __slots__ = ("key", "value", "ttl", "ttl_jitter", "condition", "tags", "origin")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    TTL_JITTER_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    ttl: _duration_pb2.Duration
    ttl_jitter: _duration_pb2.Duration
    condition: CacheSetCondition
    tags: _containers.RepeatedScalarFieldContainer[str]
    origin: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttl_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., condition: _Optional[_Union[CacheSetCondition, str]] = ..., tags: _Optional[_Iterable[str]] = ..., origin: _Optional[int] = ...) -> None: ...

class CacheSetResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    def __init__(self, stored: bool = ...) -> None: ...

class CacheEntry(_message.Message):
    __slots__ = ("key", "value", "ttl")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    ttl: _duration_pb2.Duration
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CacheSetManyRequest(_message.Message):
    __slots__ = ("entries", "ttl", "ttl_jitter", "condition", "tags")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    TTL_JITTER_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[CacheEntry]
    ttl: _duration_pb2.Duration
    ttl_jitter: _duration_pb2.Duration
    condition: CacheSetCondition
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entries: _Optional[_Iterable[_Union[CacheEntry, _Mapping]]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttl_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., condition: _Optional[_Union[CacheSetCondition, str]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class CacheSetManyResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, stored: _Optional[_Iterable[bool]] = ...) -> None: ...

class CacheDeleteRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class CacheDeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class CacheTags(_message.Message):
    __slots__ = ("tags",)
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tags: _Optional[_Iterable[str]] = ...) -> None: ...

class CacheInvalidateRequest(_message.Message):
    __slots__ = ("tags", "prefix")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    tags: CacheTags
    prefix: str
    def __init__(self, tags: _Optional[_Union[CacheTags, _Mapping]] = ..., prefix: _Optional[str] = ...) -> None: ...

class CacheInvalidateResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class CacheFetchRequest(_message.Message):
    __slots__ = ("key", "wait", "lease_ttl", "refresh_ahead")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    REFRESH_AHEAD_FIELD_NUMBER: _ClassVar[int]
    key: str
    wait: _duration_pb2.Duration
    lease_ttl: _duration_pb2.Duration
    refresh_ahead: _duration_pb2.Duration
    def __init__(self, key: _Optional[str] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., refresh_ahead: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CacheFetchResponse(_message.Message):
    __slots__ = ("outcome", "value", "ttl", "lease_token", "lease_ttl")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    outcome: CacheFetchOutcome
    value: bytes
    ttl: _duration_pb2.Duration
    lease_token: str
    lease_ttl: _duration_pb2.Duration
    def __init__(self, outcome: _Optional[_Union[CacheFetchOutcome, str]] = ..., value: _Optional[bytes] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease_token: _Optional[str] = ..., lease_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CacheFillRequest(_message.Message):
    __slots__ = ("key", "lease_token", "value", "ttl", "ttl_jitter", "tags")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    TTL_JITTER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    key: str
    lease_token: str
    value: bytes
    ttl: _duration_pb2.Duration
    ttl_jitter: _duration_pb2.Duration
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., lease_token: _Optional[str] = ..., value: _Optional[bytes] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttl_jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class CacheFillResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheReleaseLeaseRequest(_message.Message):
    __slots__ = ("key", "lease_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    lease_token: str
    def __init__(self, key: _Optional[str] = ..., lease_token: _Optional[str] = ...) -> None: ...

class CacheReleaseLeaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: bool = ...) -> None: ...

class CacheTrackRequest(_message.Message):
    __slots__ = ("track", "probe")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    track: _containers.RepeatedScalarFieldContainer[int]
    probe: int
    def __init__(self, track: _Optional[_Iterable[int]] = ..., probe: _Optional[int] = ...) -> None: ...

class CacheTrackResponse(_message.Message):
    __slots__ = ("bucket_count", "heartbeat_interval", "gap", "keys", "origins", "tracked", "confirmed")
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ORIGINS_FIELD_NUMBER: _ClassVar[int]
    TRACKED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    bucket_count: int
    heartbeat_interval: _duration_pb2.Duration
    gap: bool
    keys: _containers.RepeatedScalarFieldContainer[str]
    origins: _containers.RepeatedScalarFieldContainer[int]
    tracked: _containers.RepeatedScalarFieldContainer[int]
    confirmed: int
    def __init__(self, bucket_count: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., gap: bool = ..., keys: _Optional[_Iterable[str]] = ..., origins: _Optional[_Iterable[int]] = ..., tracked: _Optional[_Iterable[int]] = ..., confirmed: _Optional[int] = ...) -> None: ...
