//! Conversions between protobuf well-known types and Rust types, shared by the service clients.

use std::time::{Duration, SystemTime};

/// A duration as protobuf (saturating at the protobuf maximum).
pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf duration as Rust; `None` when absent or negative.
pub(crate) fn from_duration(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Some(Duration::new(u64::try_from(d.seconds).ok()?, u32::try_from(d.nanos).ok()?)))
}

/// A protobuf timestamp as Rust; the Unix epoch when absent or out of range.
pub(crate) fn from_timestamp(t: Option<prost_types::Timestamp>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or(SystemTime::UNIX_EPOCH)
}
