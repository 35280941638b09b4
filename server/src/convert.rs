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

/// Milliseconds of a duration for Redis, at least 1 (Redis rejects 0 in PX).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// How long a server-side wait may last within a caller's `deadline`: long enough before it
/// (a tenth, at least 20 ms) that the server's own answer reaches the caller before the call
/// times out (tonic answers CANCELLED on its own at the deadline).
pub fn wait_within(deadline: Duration) -> Duration {
    deadline.saturating_sub((deadline / 10).max(Duration::from_millis(20)))
}

/// The time left before the caller's deadline, from the `grpc-timeout` header (gRPC over
/// HTTP/2: up to 8 digits and a unit, `H` `M` `S` `m` `u` `n`); `None` without a deadline.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&metadata), None);
        for (text, expected) in [
            ("250m", Duration::from_millis(250)),
            ("3S", Duration::from_secs(3)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("700u", Duration::from_micros(700)),
            ("5n", Duration::from_nanos(5)),
        ] {
            metadata.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout(&metadata), Some(expected), "{text}");
        }
        metadata.insert("grpc-timeout", "12x".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), None);
    }

    #[test]
    fn round_trip_and_rejects_negative() {
        let d = Duration::from_millis(1500);
        assert_eq!(duration_in("ttl", Some(duration_out(d))).unwrap(), Some(d));
        assert_eq!(duration_in("ttl", None).unwrap(), None);
        let err = duration_in("ttl", Some(prost_types::Duration { seconds: -1, nanos: 0 })).unwrap_err();
        assert!(err.to_string().contains("ttl"));
    }
}
