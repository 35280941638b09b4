//! Conversions between protobuf well-known types and Rust types, shared by every service's
//! gRPC adapter.

use std::time::Duration;

use crate::error::{Error, Result};

/// Converts an optional protobuf duration; negative or malformed values are INVALID_ARGUMENT
/// naming `field`.
pub fn duration_in(field: &str, value: Option<prost_types::Duration>) -> Result<Option<Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return Err(Error::InvalidArgument(format!(
            "{field} must be a non-negative duration, got {}s {}ns",
            value.seconds, value.nanos
        )));
    }
    Ok(Some(Duration::new(value.seconds as u64, value.nanos as u32)))
}

/// Converts a duration to protobuf (saturating at the protobuf maximum).
pub fn duration_out(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: value.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_negative() {
        let d = Duration::from_millis(1500);
        assert_eq!(duration_in("ttl", Some(duration_out(d))).unwrap(), Some(d));
        assert_eq!(duration_in("ttl", None).unwrap(), None);
        let err = duration_in("ttl", Some(prost_types::Duration { seconds: -1, nanos: 0 })).unwrap_err();
        assert!(err.to_string().contains("ttl"));
    }
}
