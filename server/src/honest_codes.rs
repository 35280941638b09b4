//! Status codes for bad requests that tonic itself rejects, made to agree with the README's
//! table.
//!
//! tonic answers a request it cannot decode (malformed protobuf, invalid UTF-8 in a string
//! field, a truncated or ill-flagged frame) with INTERNAL, and one over the message size limit
//! with OUT_OF_RANGE. INTERNAL is the code Rookery keeps for its own bugs (alerts watch it), and
//! OUT_OF_RANGE is in no table, so [`honest_codes`] rewrites these answers before anything
//! else sees them: undecodable input becomes INVALID_ARGUMENT, too large becomes
//! RESOURCE_EXHAUSTED naming `limits.max_message_bytes`.
//!
//! These rejections happen before any handler runs, so they always travel "trailers-only", in
//! the response headers, which is where this layer looks. They are recognised by tonic's own
//! messages; Rookery's INTERNAL answers use other, fixed texts (see `error.rs`), so a real bug
//! is never disguised as bad input.

use tonic::{Code, Status};

/// The starts of tonic's messages for a request it could not decode.
const UNDECODABLE: [&str; 5] = [
    "failed to decode Protobuf message",
    "protocol error: received message",
    "Unexpected EOF decoding stream",
    "Missing request message",
    "Error decompressing",
];
/// The start of tonic's message for a request over the size limit.
const TOO_LARGE: &str = "Error, decoded message length too large: ";

/// The honest status for one of tonic's own rejections, or `None` to leave it as it is.
fn honest(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::Internal if UNDECODABLE.iter().any(|start| message.starts_with(start)) => {
            Some(Status::invalid_argument(format!("the request could not be decoded: {message}")))
        }
        Code::OutOfRange if message.starts_with(TOO_LARGE) => Some(Status::resource_exhausted(format!(
            "the request message is too large (limits.max_message_bytes): {}; send less per call",
            &message[TOO_LARGE.len()..]
        ))),
        _ => None,
    }
}

/// The honest status for an error a streaming call's request side gave a handler (a message
/// that could not be decoded comes as tonic's INTERNAL): `status` rewritten as [`honest_codes`]
/// rewrites a rejected call's answer, or unchanged.
pub fn honest_request_error(status: Status) -> Status {
    honest(&status).unwrap_or(status)
}

/// Rewrites tonic's codes for undecodable and oversized requests in one response; the server
/// applies it to every response with `tower::util::MapResponseLayer`.
pub fn honest_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let rewritten = Status::from_header_map(response.headers()).as_ref().and_then(honest);
    if let Some(status) = rewritten {
        let headers = response.headers_mut();
        headers.remove("grpc-status-details-bin");
        if let Err(e) = status.add_header(headers) {
            tracing::warn!(error = %e, "could not rewrite a status code");
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_rejections_get_the_tables_codes() {
        let decode = Status::internal("failed to decode Protobuf message: invalid wire type value: 7");
        assert_eq!(honest(&decode).unwrap().code(), Code::InvalidArgument);
        let eof = Status::internal("Unexpected EOF decoding stream.");
        assert_eq!(honest(&eof).unwrap().code(), Code::InvalidArgument);
        let large = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        let large = honest(&large).unwrap();
        assert_eq!(large.code(), Code::ResourceExhausted);
        assert!(large.message().contains("limits.max_message_bytes"), "{}", large.message());
        assert!(large.message().contains("found 5000000 bytes"), "{}", large.message());
    }

    #[test]
    fn our_own_codes_are_left_alone() {
        assert!(honest(&Status::internal("Internal server error; it has been logged.")).is_none());
        assert!(honest(&Status::out_of_range("something else")).is_none());
        assert!(honest(&Status::invalid_argument("failed to decode Protobuf message")).is_none());
    }
}
