//! The domain error type and its one mapping to gRPC status codes.
//!
//! Domain code returns [`Error`] and knows nothing of tonic; the single `From<Error> for Status`
//! below is the only place a status code is chosen, following the table in DESIGN.md §3 and the
//! README. Redis errors are classified here too: a client developer never sees raw Redis text
//! for a bug, only a message that says what happened and what to do.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tonic::{Code, Status};

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Malformed or out-of-bounds input.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist where it must.
    #[error("{0}")]
    NotFound(String),
    /// A create of something that exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// A version or token mismatch that a retry (after re-reading) may resolve.
    #[error("{0}")]
    Aborted(String),
    /// A version or token mismatch that retrying cannot resolve.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A quota was reached (a subject's cap on sessions, with the refuse policy).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller's deadline passed before the answer was known.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The server is shutting down or cannot serve right now.
    #[error("{0}")]
    Unavailable(String),
    /// A read or a write that was never sent failed on Redis.
    #[error("redis: {0}")]
    Redis(#[source] RedisError),
    /// A write that was sent to Redis but whose answer never came: it may have happened.
    #[error("redis write outcome unknown: {0}")]
    WriteOutcomeUnknown(#[source] RedisError),
    /// A bug: an invariant of the server broke. The text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for results of domain code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<RedisError> for Error {
    fn from(e: RedisError) -> Self {
        Self::Redis(e)
    }
}

impl Error {
    /// A bug: Redis answered a script or command with a shape the server does not expect.
    pub fn unexpected(what: &str, value: &redis::Value) -> Self {
        Self::Internal(format!("unexpected reply to {what}: {value:?}"))
    }

    /// Whether Redis refused the command for lack of memory (maxmemory reached).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Self::Redis(e) | Self::WriteOutcomeUnknown(e) if e.code() == Some("OOM"))
    }

    /// Classifies a failed Redis write: if the command may have reached Redis (a timeout or a
    /// dropped connection after sending), say that it may have happened.
    pub fn from_write(e: RedisError) -> Self {
        if !e.is_connection_refusal() && (e.is_timeout() || e.is_connection_dropped()) {
            Self::WriteOutcomeUnknown(e)
        } else {
            Self::Redis(e)
        }
    }
}

fn redis_status(e: &RedisError, write_unknown: bool) -> Status {
    let unknown = if write_unknown {
        " The write may or may not have been applied; make it again only if it is idempotent."
    } else {
        ""
    };
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        return Status::unavailable(format!(
            "Redis is unreachable or did not answer in time; retry with backoff.{unknown}"
        ));
    }
    match (e.kind(), e.code()) {
        (_, Some("OOM")) => Status::resource_exhausted(
            "Redis is out of memory (maxmemory reached); free space or raise maxmemory.",
        ),
        (_, Some("MISCONF")) => Status::unavailable(
            "Redis refuses writes because it cannot persist (MISCONF); retry once its disk recovers.",
        ),
        (ErrorKind::Server(ServerErrorKind::BusyLoading), _) => {
            Status::unavailable("Redis is loading its dataset; retry shortly.")
        }
        (
            ErrorKind::Server(
                ServerErrorKind::TryAgain
                // A redirect the cluster client could not follow in time: a slot is moving
                // (failover or resharding), not a bug of ours.
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly,
            ),
            _,
        )
        // A blocked read (XREAD BLOCK) that Redis ended because its master became a replica.
        | (_, Some("UNBLOCKED")) => Status::unavailable(format!(
            "Redis cannot take this request right now (failover or resharding); retry with backoff.{unknown}"
        )),
        (ErrorKind::ClusterConnectionNotFound, _) | (_, Some("BUSY")) => Status::unavailable(format!(
            "Redis cannot take this request right now (a node is unreachable or busy running a \
             script); retry with backoff.{unknown}"
        )),
        (ErrorKind::AuthenticationFailed, _) | (ErrorKind::Server(ServerErrorKind::NoPerm), _) => {
            Status::unavailable("The server's Redis credentials were refused; an operator must fix them.")
        }
        _ => Status::internal("Internal error talking to Redis; it has been logged."),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::DeadlineExceeded(m) => Status::deadline_exceeded(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Redis(e) => {
                let status = redis_status(&e, false);
                log_redis(&status, &e);
                status
            }
            Error::WriteOutcomeUnknown(e) => {
                let status = redis_status(&e, true);
                log_redis(&status, &e);
                status
            }
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("Internal server error; it has been logged.")
            }
        }
    }
}

fn log_redis(status: &Status, e: &RedisError) {
    if status.code() == Code::Internal {
        tracing::error!(error = %e, "unexpected redis error");
    } else {
        tracing::warn!(error = %e, "redis error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_map_to_their_codes() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::AlreadyExists("x".into()), Code::AlreadyExists),
            (Error::Aborted("x".into()), Code::Aborted),
            (Error::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (Error::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (Error::ResourceExhausted("x".into()), Code::ResourceExhausted),
            (Error::Unavailable("x".into()), Code::Unavailable),
            (Error::Internal("secret detail".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status = Status::from(Error::Internal("secret detail".into()));
        assert!(!status.message().contains("secret"));
        let redis_err = RedisError::from((ErrorKind::Parse, "weird reply", "raw redis text".to_owned()));
        let status = Status::from(Error::Redis(redis_err));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("raw redis text"));
    }

    #[test]
    fn a_cluster_in_failover_is_unavailable_never_internal() {
        for kind in [
            ServerErrorKind::Moved,
            ServerErrorKind::Ask,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
            ServerErrorKind::ReadOnly,
        ] {
            let error =
                RedisError::from((ErrorKind::Server(kind), "redirect", "3999 127.0.0.1:6381".to_owned()));
            let status = Status::from(Error::Redis(error));
            assert_eq!(status.code(), Code::Unavailable, "{kind:?}: {status:?}");
            assert!(!status.message().contains("127.0.0.1"), "no raw Redis text");
        }
        let unblocked = redis::parse_redis_value(
            b"-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n",
        )
        .unwrap()
        .extract_error()
        .unwrap_err();
        assert_eq!(Status::from(Error::Redis(unblocked)).code(), Code::Unavailable);
    }

    #[test]
    fn io_failures_are_unavailable_and_unknown_writes_say_so() {
        let io = || RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
        assert_eq!(Status::from(Error::Redis(io())).code(), Code::Unavailable);
        let status = Status::from(Error::from_write(io()));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("may or may not have been applied"), "{}", status.message());
    }
}
