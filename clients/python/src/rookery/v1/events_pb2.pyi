import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventsGapReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENTS_GAP_REASON_UNSPECIFIED: _ClassVar[EventsGapReason]
    EVENTS_GAP_REASON_SLOW_SUBSCRIBER: _ClassVar[EventsGapReason]
    EVENTS_GAP_REASON_RECONNECTED: _ClassVar[EventsGapReason]
EVENTS_GAP_REASON_UNSPECIFIED: EventsGapReason
EVENTS_GAP_REASON_SLOW_SUBSCRIBER: EventsGapReason
EVENTS_GAP_REASON_RECONNECTED: EventsGapReason

class EventsPublishRequest(_message.Message):
    __slots__ = ("channel", "payload")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    channel: str
    payload: bytes
    def __init__(self, channel: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class EventsPublishResponse(_message.Message):
    __slots__ = ("receivers",)
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    receivers: int
    def __init__(self, receivers: _Optional[int] = ...) -> None: ...

class EventsPublishStreamRequest(_message.Message):
    __slots__ = ("sequence", "publish")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    publish: EventsPublishRequest
    def __init__(self, sequence: _Optional[int] = ..., publish: _Optional[_Union[EventsPublishRequest, _Mapping]] = ...) -> None: ...

class EventsPublishStreamResponse(_message.Message):
    __slots__ = ("sequence", "published", "failed")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    published: EventsPublishResponse
    failed: EventsAppendFailure
    def __init__(self, sequence: _Optional[int] = ..., published: _Optional[_Union[EventsPublishResponse, _Mapping]] = ..., failed: _Optional[_Union[EventsAppendFailure, _Mapping]] = ...) -> None: ...

class EventsSubscribeRequest(_message.Message):
    __slots__ = ("channels", "patterns", "batch")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    patterns: _containers.RepeatedScalarFieldContainer[str]
    batch: bool
    def __init__(self, channels: _Optional[_Iterable[str]] = ..., patterns: _Optional[_Iterable[str]] = ..., batch: bool = ...) -> None: ...

class EventsSubscribed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EventsMessage(_message.Message):
    __slots__ = ("channel", "pattern", "payload")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    channel: str
    pattern: str
    payload: bytes
    def __init__(self, channel: _Optional[str] = ..., pattern: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class EventsGap(_message.Message):
    __slots__ = ("reason", "missed")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    reason: EventsGapReason
    missed: int
    def __init__(self, reason: _Optional[_Union[EventsGapReason, str]] = ..., missed: _Optional[int] = ...) -> None: ...

class EventsSubscribeResponse(_message.Message):
    __slots__ = ("subscribed", "message", "gap", "messages")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    subscribed: EventsSubscribed
    message: EventsMessage
    gap: EventsGap
    messages: EventsMessages
    def __init__(self, subscribed: _Optional[_Union[EventsSubscribed, _Mapping]] = ..., message: _Optional[_Union[EventsMessage, _Mapping]] = ..., gap: _Optional[_Union[EventsGap, _Mapping]] = ..., messages: _Optional[_Union[EventsMessages, _Mapping]] = ...) -> None: ...

class EventsMessages(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[EventsMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[EventsMessage, _Mapping]]] = ...) -> None: ...

class EventsAppendRequest(_message.Message):
    __slots__ = ("stream", "fields", "max_len", "max_age", "idempotency_key")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    STREAM_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    stream: str
    fields: _containers.ScalarMap[str, bytes]
    max_len: int
    max_age: _duration_pb2.Duration
    idempotency_key: str
    def __init__(self, stream: _Optional[str] = ..., fields: _Optional[_Mapping[str, bytes]] = ..., max_len: _Optional[int] = ..., max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class EventsAppendResponse(_message.Message):
    __slots__ = ("id", "duplicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    duplicate: bool
    def __init__(self, id: _Optional[str] = ..., duplicate: bool = ...) -> None: ...

class EventsAppendStreamRequest(_message.Message):
    __slots__ = ("sequence", "append")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    append: EventsAppendRequest
    def __init__(self, sequence: _Optional[int] = ..., append: _Optional[_Union[EventsAppendRequest, _Mapping]] = ...) -> None: ...

class EventsAppendFailure(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EventsAppendStreamResponse(_message.Message):
    __slots__ = ("sequence", "appended", "failed")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    APPENDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    appended: EventsAppendResponse
    failed: EventsAppendFailure
    def __init__(self, sequence: _Optional[int] = ..., appended: _Optional[_Union[EventsAppendResponse, _Mapping]] = ..., failed: _Optional[_Union[EventsAppendFailure, _Mapping]] = ...) -> None: ...

class EventsNewEntry(_message.Message):
    __slots__ = ("fields", "idempotency_key")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.ScalarMap[str, bytes]
    idempotency_key: str
    def __init__(self, fields: _Optional[_Mapping[str, bytes]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class EventsAppendManyRequest(_message.Message):
    __slots__ = ("stream", "entries", "max_len", "max_age")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    stream: str
    entries: _containers.RepeatedCompositeFieldContainer[EventsNewEntry]
    max_len: int
    max_age: _duration_pb2.Duration
    def __init__(self, stream: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[EventsNewEntry, _Mapping]]] = ..., max_len: _Optional[int] = ..., max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EventsAppendManyResponse(_message.Message):
    __slots__ = ("appended",)
    APPENDED_FIELD_NUMBER: _ClassVar[int]
    appended: _containers.RepeatedCompositeFieldContainer[EventsAppendResponse]
    def __init__(self, appended: _Optional[_Iterable[_Union[EventsAppendResponse, _Mapping]]] = ...) -> None: ...

class EventsReadRequest(_message.Message):
    __slots__ = ("stream", "after", "follow", "dead_letters")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    after: str
    follow: bool
    dead_letters: bool
    def __init__(self, stream: _Optional[str] = ..., after: _Optional[str] = ..., follow: bool = ..., dead_letters: bool = ...) -> None: ...

class EventsEntry(_message.Message):
    __slots__ = ("id", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    fields: _containers.ScalarMap[str, bytes]
    def __init__(self, id: _Optional[str] = ..., fields: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class EventsReadResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[EventsEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[EventsEntry, _Mapping]]] = ...) -> None: ...

class EventsGroupSettings(_message.Message):
    __slots__ = ("ack_timeout", "max_deliveries")
    ACK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    ack_timeout: _duration_pb2.Duration
    max_deliveries: int
    def __init__(self, ack_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_deliveries: _Optional[int] = ...) -> None: ...

class EventsCreateGroupRequest(_message.Message):
    __slots__ = ("stream", "group", "start", "settings")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    group: str
    start: str
    settings: EventsGroupSettings
    def __init__(self, stream: _Optional[str] = ..., group: _Optional[str] = ..., start: _Optional[str] = ..., settings: _Optional[_Union[EventsGroupSettings, _Mapping]] = ...) -> None: ...

class EventsCreateGroupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EventsDeleteGroupRequest(_message.Message):
    __slots__ = ("stream", "group")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    stream: str
    group: str
    def __init__(self, stream: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class EventsDeleteGroupResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: bool = ...) -> None: ...

class EventsConsumeRequest(_message.Message):
    __slots__ = ("stream", "group", "consumer", "create_group", "settings", "max_in_flight")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    CREATE_GROUP_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    stream: str
    group: str
    consumer: str
    create_group: bool
    settings: EventsGroupSettings
    max_in_flight: int
    def __init__(self, stream: _Optional[str] = ..., group: _Optional[str] = ..., consumer: _Optional[str] = ..., create_group: bool = ..., settings: _Optional[_Union[EventsGroupSettings, _Mapping]] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class EventsConsumeStarted(_message.Message):
    __slots__ = ("ack_timeout", "max_deliveries", "max_in_flight")
    ACK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ack_timeout: _duration_pb2.Duration
    max_deliveries: int
    max_in_flight: int
    def __init__(self, ack_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_deliveries: _Optional[int] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class EventsDelivery(_message.Message):
    __slots__ = ("id", "fields", "deliveries")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    fields: _containers.ScalarMap[str, bytes]
    deliveries: int
    def __init__(self, id: _Optional[str] = ..., fields: _Optional[_Mapping[str, bytes]] = ..., deliveries: _Optional[int] = ...) -> None: ...

class EventsDeliveries(_message.Message):
    __slots__ = ("deliveries", "trimmed")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[EventsDelivery]
    trimmed: int
    def __init__(self, deliveries: _Optional[_Iterable[_Union[EventsDelivery, _Mapping]]] = ..., trimmed: _Optional[int] = ...) -> None: ...

class EventsConsumeResponse(_message.Message):
    __slots__ = ("started", "deliveries", "acked")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    started: EventsConsumeStarted
    deliveries: EventsDeliveries
    acked: EventsAcked
    def __init__(self, started: _Optional[_Union[EventsConsumeStarted, _Mapping]] = ..., deliveries: _Optional[_Union[EventsDeliveries, _Mapping]] = ..., acked: _Optional[_Union[EventsAcked, _Mapping]] = ...) -> None: ...

class EventsConsumeWithAcksRequest(_message.Message):
    __slots__ = ("start", "ack")
    START_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    start: EventsConsumeRequest
    ack: EventsAckIds
    def __init__(self, start: _Optional[_Union[EventsConsumeRequest, _Mapping]] = ..., ack: _Optional[_Union[EventsAckIds, _Mapping]] = ...) -> None: ...

class EventsAckIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EventsAcked(_message.Message):
    __slots__ = ("acked",)
    ACKED_FIELD_NUMBER: _ClassVar[int]
    acked: int
    def __init__(self, acked: _Optional[int] = ...) -> None: ...

class EventsAckRequest(_message.Message):
    __slots__ = ("stream", "group", "ids")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    group: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stream: _Optional[str] = ..., group: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EventsAckResponse(_message.Message):
    __slots__ = ("acked",)
    ACKED_FIELD_NUMBER: _ClassVar[int]
    acked: int
    def __init__(self, acked: _Optional[int] = ...) -> None: ...

class EventsNackRequest(_message.Message):
    __slots__ = ("stream", "group", "consumer", "ids", "delay")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    stream: str
    group: str
    consumer: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    delay: _duration_pb2.Duration
    def __init__(self, stream: _Optional[str] = ..., group: _Optional[str] = ..., consumer: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EventsNackResponse(_message.Message):
    __slots__ = ("requeued", "dead_lettered")
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    requeued: int
    dead_lettered: int
    def __init__(self, requeued: _Optional[int] = ..., dead_lettered: _Optional[int] = ...) -> None: ...

class EventsDescribeStreamRequest(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: str
    def __init__(self, stream: _Optional[str] = ...) -> None: ...

class EventsConsumerInfo(_message.Message):
    __slots__ = ("name", "pending", "idle")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    pending: int
    idle: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., pending: _Optional[int] = ..., idle: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EventsGroupInfo(_message.Message):
    __slots__ = ("name", "settings", "pending", "delayed", "lag", "last_delivered_id", "oldest_pending_age", "consumers", "consumers_omitted")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    LAST_DELIVERED_ID_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_AGE_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    settings: EventsGroupSettings
    pending: int
    delayed: int
    lag: int
    last_delivered_id: str
    oldest_pending_age: _duration_pb2.Duration
    consumers: _containers.RepeatedCompositeFieldContainer[EventsConsumerInfo]
    consumers_omitted: int
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[EventsGroupSettings, _Mapping]] = ..., pending: _Optional[int] = ..., delayed: _Optional[int] = ..., lag: _Optional[int] = ..., last_delivered_id: _Optional[str] = ..., oldest_pending_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., consumers: _Optional[_Iterable[_Union[EventsConsumerInfo, _Mapping]]] = ..., consumers_omitted: _Optional[int] = ...) -> None: ...

class EventsDescribeStreamResponse(_message.Message):
    __slots__ = ("length", "first_id", "last_id", "dead_letters", "groups")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FIRST_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ID_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    length: int
    first_id: str
    last_id: str
    dead_letters: int
    groups: _containers.RepeatedCompositeFieldContainer[EventsGroupInfo]
    def __init__(self, length: _Optional[int] = ..., first_id: _Optional[str] = ..., last_id: _Optional[str] = ..., dead_letters: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[EventsGroupInfo, _Mapping]]] = ...) -> None: ...
