import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RateLimitAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_LIMIT_ALGORITHM_UNSPECIFIED: _ClassVar[RateLimitAlgorithm]
    RATE_LIMIT_ALGORITHM_GCRA: _ClassVar[RateLimitAlgorithm]
    RATE_LIMIT_ALGORITHM_TOKEN_BUCKET: _ClassVar[RateLimitAlgorithm]
    RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_LOG: _ClassVar[RateLimitAlgorithm]
    RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_COUNTER: _ClassVar[RateLimitAlgorithm]
    RATE_LIMIT_ALGORITHM_FIXED_WINDOW: _ClassVar[RateLimitAlgorithm]
RATE_LIMIT_ALGORITHM_UNSPECIFIED: RateLimitAlgorithm
RATE_LIMIT_ALGORITHM_GCRA: RateLimitAlgorithm
RATE_LIMIT_ALGORITHM_TOKEN_BUCKET: RateLimitAlgorithm
RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_LOG: RateLimitAlgorithm
RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_COUNTER: RateLimitAlgorithm
RATE_LIMIT_ALGORITHM_FIXED_WINDOW: RateLimitAlgorithm

class RateLimitSpec(_message.Message):
    __slots__ = ("algorithm", "limit", "period", "burst")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    algorithm: RateLimitAlgorithm
    limit: int
    period: _duration_pb2.Duration
    burst: int
    def __init__(self, algorithm: _Optional[_Union[RateLimitAlgorithm, str]] = ..., limit: _Optional[int] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., burst: _Optional[int] = ...) -> None: ...

class RateLimiterCheckRequest(_message.Message):
    __slots__ = ("key", "policy", "spec", "cost")
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    key: str
    policy: str
    spec: RateLimitSpec
    cost: int
    def __init__(self, key: _Optional[str] = ..., policy: _Optional[str] = ..., spec: _Optional[_Union[RateLimitSpec, _Mapping]] = ..., cost: _Optional[int] = ...) -> None: ...

class RateLimiterCheckResponse(_message.Message):
    __slots__ = ("allowed", "limit", "remaining", "reset_after", "retry_after", "period", "shadow_denied")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DENIED_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    limit: int
    remaining: int
    reset_after: _duration_pb2.Duration
    retry_after: _duration_pb2.Duration
    period: _duration_pb2.Duration
    shadow_denied: bool
    def __init__(self, allowed: bool = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., reset_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., shadow_denied: bool = ...) -> None: ...

class RateLimiterCheckManyRequest(_message.Message):
    __slots__ = ("checks",)
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[RateLimiterCheckRequest]
    def __init__(self, checks: _Optional[_Iterable[_Union[RateLimiterCheckRequest, _Mapping]]] = ...) -> None: ...

class RateLimiterCheckManyResponse(_message.Message):
    __slots__ = ("allowed", "results")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    results: _containers.RepeatedCompositeFieldContainer[RateLimiterCheckResponse]
    def __init__(self, allowed: bool = ..., results: _Optional[_Iterable[_Union[RateLimiterCheckResponse, _Mapping]]] = ...) -> None: ...

class RateLimiterResetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class RateLimiterResetResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...
