//! The RateLimiter service's typed client: checks, the choice of failing open or closed when
//! the service is unavailable, and the IETF `RateLimit-Policy` / `RateLimit` headers.

use std::time::Duration;

use tonic::{Code, Status};

use crate::ClientChannel;
use crate::convert::{duration, from_duration};
use crate::pb;
use crate::pb::rate_limiter_client::RateLimiterClient as RawRateLimiterClient;

/// How a limit counts (see `rate_limiter.proto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Generic cell rate algorithm (exact, the default).
    #[default]
    Gcra,
    /// Token bucket (exact).
    TokenBucket,
    /// Sliding-window log (exact; limit at most 128).
    SlidingWindowLog,
    /// Sliding-window counter (approximate).
    SlidingWindowCounter,
    /// Fixed window.
    FixedWindow,
}

/// Which limit to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimit {
    /// A policy named in the server's config.
    Policy(String),
    /// An inline limit: `limit` per `period`, up to `burst` at once (0: `limit`).
    Spec {
        /// How to count.
        algorithm: Algorithm,
        /// Units per period.
        limit: u64,
        /// The period.
        period: Duration,
        /// GCRA and token bucket: units at once (0: `limit`).
        burst: u64,
    },
}

impl RateLimit {
    /// A GCRA limit of `limit` per `period`.
    pub fn per(limit: u64, period: Duration) -> Self {
        Self::Spec { algorithm: Algorithm::Gcra, limit, period, burst: 0 }
    }

    fn to_pb(&self) -> pb::rate_limiter_check_request::Limit {
        match self {
            Self::Policy(name) => pb::rate_limiter_check_request::Limit::Policy(name.clone()),
            Self::Spec { algorithm, limit, period, burst } => {
                let algorithm = match algorithm {
                    Algorithm::Gcra => pb::RateLimitAlgorithm::Gcra,
                    Algorithm::TokenBucket => pb::RateLimitAlgorithm::TokenBucket,
                    Algorithm::SlidingWindowLog => pb::RateLimitAlgorithm::SlidingWindowLog,
                    Algorithm::SlidingWindowCounter => pb::RateLimitAlgorithm::SlidingWindowCounter,
                    Algorithm::FixedWindow => pb::RateLimitAlgorithm::FixedWindow,
                };
                pb::rate_limiter_check_request::Limit::Spec(pb::RateLimitSpec {
                    algorithm: algorithm.into(),
                    limit: *limit,
                    period: Some(duration(*period)),
                    burst: *burst,
                })
            }
        }
    }
}

/// One limit of a [`RateLimiterClient::check_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitCheck {
    /// The limited key.
    pub key: String,
    /// The limit.
    pub limit: RateLimit,
    /// Units to consume (0 peeks).
    pub cost: u64,
}

/// What to decide when the rate limiter cannot be reached (UNAVAILABLE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnavailable {
    /// Let the request through (availability over protection).
    Allow,
    /// Refuse the request (protection over availability).
    Deny,
}

/// A rate limit decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Units per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    /// Units left now.
    pub remaining: u64,
    /// Time until the limit is fully available again.
    pub reset_after: Duration,
    /// When denied: wait this long before retrying.
    pub retry_after: Duration,
    /// A shadow-mode policy denied the request (it is allowed anyway).
    pub shadow_denied: bool,
    /// The service could not be reached; this decision is the caller's [`WhenUnavailable`].
    pub unavailable: bool,
}

impl Decision {
    fn from_pb(response: pb::RateLimiterCheckResponse) -> Self {
        let pb::RateLimiterCheckResponse {
            allowed,
            limit,
            remaining,
            reset_after,
            retry_after,
            period,
            shadow_denied,
        } = response;
        Self {
            allowed,
            limit,
            period: from_duration(period).unwrap_or_default(),
            remaining,
            reset_after: from_duration(reset_after).unwrap_or_default(),
            retry_after: from_duration(retry_after).unwrap_or_default(),
            shadow_denied,
            unavailable: false,
        }
    }

    /// The IETF rate limit headers for this decision under the policy name `policy`
    /// (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy`, `RateLimit`, and
    /// `Retry-After` when denied. Seconds are rounded up, so a client waiting them is allowed.
    pub fn headers(&self, policy: &str) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let name = policy.replace(['"', '\\'], "");
        let mut headers = vec![
            ("RateLimit-Policy", format!("\"{name}\";q={};w={}", self.limit, secs(self.period).max(1))),
            ("RateLimit", format!("\"{name}\";r={};t={}", self.remaining, secs(self.reset_after))),
        ];
        if !self.allowed {
            headers.push(("Retry-After", secs(self.retry_after).to_string()));
        }
        headers
    }

    fn unavailable(when: WhenUnavailable) -> Self {
        Self {
            allowed: when == WhenUnavailable::Allow,
            limit: 0,
            period: Duration::ZERO,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
            shadow_denied: false,
            unavailable: true,
        }
    }
}

/// Typed calls to `rookery.v1.RateLimiter`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimiterClient {
    raw: RawRateLimiterClient<ClientChannel>,
}

fn check_pb(key: String, limit: &RateLimit, cost: u64) -> pb::RateLimiterCheckRequest {
    pb::RateLimiterCheckRequest { key, limit: Some(limit.to_pb()), cost: Some(cost) }
}

impl RateLimiterClient {
    pub(crate) fn new(channel: ClientChannel) -> Self {
        Self { raw: RawRateLimiterClient::new(channel) }
    }

    /// The generated stub, for calls with options this API does not expose.
    pub fn raw(&self) -> RawRateLimiterClient<ClientChannel> {
        self.raw.clone()
    }

    /// Checks and (if allowed) consumes `cost` units of `limit` for `key`; cost 0 peeks.
    pub async fn check(
        &self,
        key: impl Into<String>,
        limit: &RateLimit,
        cost: u64,
    ) -> Result<Decision, Status> {
        let response = self.raw.clone().check(check_pb(key.into(), limit, cost)).await?.into_inner();
        Ok(Decision::from_pb(response))
    }

    /// [`check`](Self::check), deciding `when_unavailable` if the service cannot be reached
    /// (the decision then has `unavailable: true`). Other errors (a bad request) still fail.
    pub async fn check_or(
        &self,
        key: impl Into<String>,
        limit: &RateLimit,
        cost: u64,
        when_unavailable: WhenUnavailable,
    ) -> Result<Decision, Status> {
        match self.check(key, limit, cost).await {
            Err(status) if status.code() == Code::Unavailable => Ok(Decision::unavailable(when_unavailable)),
            other => other,
        }
    }

    /// Checks several limits for one request: allowed only if all allow, and nothing consumed
    /// when one denies. Returns (allowed, one decision per check).
    pub async fn check_many(&self, checks: &[RateLimitCheck]) -> Result<(bool, Vec<Decision>), Status> {
        let request = pb::RateLimiterCheckManyRequest {
            checks: checks.iter().map(|c| check_pb(c.key.clone(), &c.limit, c.cost)).collect(),
        };
        let response = self.raw.clone().check_many(request).await?.into_inner();
        Ok((response.allowed, response.results.into_iter().map(Decision::from_pb).collect()))
    }

    /// Forgets `key`'s state under every algorithm; returns how many states existed.
    pub async fn reset(&self, key: impl Into<String>) -> Result<u64, Status> {
        Ok(self
            .raw
            .clone()
            .reset(pb::RateLimiterResetRequest { key: key.into() })
            .await?
            .into_inner()
            .removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_ietf_draft_and_round_up() {
        let decision = Decision {
            allowed: false,
            limit: 100,
            period: Duration::from_secs(60),
            remaining: 0,
            reset_after: Duration::from_millis(59_001),
            retry_after: Duration::from_millis(600),
            shadow_denied: false,
            unavailable: false,
        };
        assert_eq!(
            decision.headers("api"),
            vec![
                ("RateLimit-Policy", "\"api\";q=100;w=60".to_owned()),
                ("RateLimit", "\"api\";r=0;t=60".to_owned()),
                ("Retry-After", "1".to_owned()),
            ]
        );
        let allowed = Decision { allowed: true, ..decision };
        assert_eq!(allowed.headers("a\"b").len(), 2);
        assert_eq!(allowed.headers("a\"b")[0].1, "\"ab\";q=100;w=60");
    }

    #[test]
    fn unavailable_decisions_follow_the_callers_choice() {
        assert!(Decision::unavailable(WhenUnavailable::Allow).allowed);
        assert!(!Decision::unavailable(WhenUnavailable::Deny).allowed);
        assert!(Decision::unavailable(WhenUnavailable::Deny).unavailable);
    }
}
