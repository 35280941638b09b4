"""Conversions between protobuf well-known types and Python values, shared by the services.

Durations are accepted as seconds (int or float) or `timedelta`, and returned as
`timedelta`; instants are returned as timezone-aware UTC `datetime`s (Redis's clock).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional, Union

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

#: A length of time: seconds (int or float) or a `timedelta`.
Seconds = Union[int, float, timedelta]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def seconds(value: Seconds) -> float:
    """`value` in seconds, as a float."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def to_duration(value: Seconds) -> Duration:
    """`value` as a protobuf Duration (nanosecond precision, rounded down)."""
    nanos = int(round(seconds(value) * 1e9))
    return Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def optional_duration(value: Optional[Seconds]) -> Optional[Duration]:
    """`to_duration(value)`, or None (the field left unset) for None."""
    return None if value is None else to_duration(value)


def from_duration(value: Duration) -> timedelta:
    """A protobuf Duration as a `timedelta` (zero when unset or negative)."""
    if value.seconds < 0 or value.nanos < 0:
        return timedelta(0)
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def from_timestamp(value: Timestamp) -> datetime:
    """A protobuf Timestamp as an aware UTC `datetime` (the epoch when unset)."""
    return EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
