//! The tenant namespace of a request.
//!
//! Every key a request touches lives in its namespace. It comes from the `x-rookery-namespace`
//! metadata header; without one it is `default` (auth off) or the caller's default namespace
//! (auth on). The auth layer (`crate::auth::layer`) decides it once per call, checks it against
//! the caller's grants and puts the [`Namespace`] in the request's extensions, where the
//! fair-share layer and the handlers read it ([`of`]).

use std::sync::Arc;

use tonic::{Request, Status};

/// The metadata header naming the namespace.
pub const NAMESPACE_HEADER: &str = "x-rookery-namespace";
/// The namespace of requests that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// A validated namespace: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Validates a namespace name.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_NAMESPACE_LEN {
            return Err(format!("namespace must be 1 to {MAX_NAMESPACE_LEN} characters, got {}", name.len()));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "namespace may contain only letters, digits, '.', '_' and '-'; found {bad:?}"
            ));
        }
        Ok(Self(name.into()))
    }

    /// The namespace's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Reads and validates the namespace header of a request (`default` when absent).
pub fn resolve(headers: &http::HeaderMap) -> Result<Namespace, Status> {
    // Two values are ambiguous (a proxy appended one?): refused rather than guessed.
    if headers.get_all(NAMESPACE_HEADER).iter().nth(1).is_some() {
        return Err(Status::invalid_argument(format!("{NAMESPACE_HEADER} must be sent once")));
    }
    match headers.get(NAMESPACE_HEADER) {
        None => Ok(Namespace(DEFAULT_NAMESPACE.into())),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Status::invalid_argument(format!("{NAMESPACE_HEADER} must be ASCII")))?;
            Namespace::new(text).map_err(|e| Status::invalid_argument(format!("{NAMESPACE_HEADER}: {e}")))
        }
    }
}

/// The namespace the fair-share layer attached to a request.
pub fn of<T>(request: &Request<T>) -> Result<Namespace, Status> {
    request
        .extensions()
        .get::<Namespace>()
        .cloned()
        .ok_or_else(|| Status::internal("auth layer missing on this service"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_syntax() {
        for ok in ["default", "team-a", "a.b_c", &"x".repeat(64)] {
            assert!(Namespace::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "a{b}", "a*", "a b", "é", &"x".repeat(65)] {
            assert!(Namespace::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_sets_namespace_and_absence_means_default() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(resolve(&headers).unwrap().as_str(), "default");
        headers.insert(NAMESPACE_HEADER, "team-a".parse().unwrap());
        assert_eq!(resolve(&headers).unwrap().as_str(), "team-a");
        headers.insert(NAMESPACE_HEADER, "a:b".parse().unwrap());
        assert_eq!(resolve(&headers).unwrap_err().code(), tonic::Code::InvalidArgument);
        headers.insert(NAMESPACE_HEADER, "team-a".parse().unwrap());
        headers.append(NAMESPACE_HEADER, "team-b".parse().unwrap());
        let twice = resolve(&headers).unwrap_err();
        assert_eq!(twice.code(), tonic::Code::InvalidArgument);
        assert!(twice.message().contains("once"), "{}", twice.message());
    }
}
