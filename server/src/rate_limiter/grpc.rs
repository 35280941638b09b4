//! The gRPC adapter of the RateLimiter service: converts messages to domain calls and back.
//!
//! Handlers destructure each request message completely, so a field added to the proto is a
//! compile error here until it is handled.

use std::sync::Arc;

use rookery::v1 as pb;
use rookery::v1::rate_limiter_server;
use tonic::{Request, Response, Status};

use super::{Check, Decision, Limit, RateLimiter};
use crate::config::RateLimitAlgorithm;
use crate::convert::{duration_in, duration_out};
use crate::error::Error;
use crate::namespace;

/// `rookery.v1.RateLimiter` over the domain [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct RateLimiterApi {
    limiter: Arc<RateLimiter>,
}

impl RateLimiterApi {
    /// Serves `limiter` over gRPC.
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        Self { limiter }
    }

    fn check_in(&self, request: pb::RateLimiterCheckRequest) -> Result<Check, Error> {
        let pb::RateLimiterCheckRequest { key, limit, cost } = request;
        let limit = match limit {
            Some(pb::rate_limiter_check_request::Limit::Policy(name)) => self.limiter.policy(&name)?,
            Some(pb::rate_limiter_check_request::Limit::Spec(pb::RateLimitSpec {
                algorithm,
                limit,
                period,
                burst,
            })) => {
                let algorithm = match pb::RateLimitAlgorithm::try_from(algorithm) {
                    Ok(pb::RateLimitAlgorithm::Unspecified | pb::RateLimitAlgorithm::Gcra) => {
                        RateLimitAlgorithm::Gcra
                    }
                    Ok(pb::RateLimitAlgorithm::TokenBucket) => RateLimitAlgorithm::TokenBucket,
                    Ok(pb::RateLimitAlgorithm::SlidingWindowLog) => RateLimitAlgorithm::SlidingWindowLog,
                    Ok(pb::RateLimitAlgorithm::SlidingWindowCounter) => {
                        RateLimitAlgorithm::SlidingWindowCounter
                    }
                    Ok(pb::RateLimitAlgorithm::FixedWindow) => RateLimitAlgorithm::FixedWindow,
                    Err(_) => return Err(Error::InvalidArgument(format!("unknown algorithm {algorithm}"))),
                };
                let period = duration_in("spec.period", period)?
                    .ok_or_else(|| Error::InvalidArgument("spec.period is required".into()))?;
                Limit::new(algorithm, limit, period, burst)?
            }
            None => return Err(Error::InvalidArgument("give either policy or spec".into())),
        };
        Ok(Check { key, limit, cost: cost.unwrap_or(1) })
    }
}

fn decision_out(decision: Decision) -> pb::RateLimiterCheckResponse {
    let Decision { allowed, limit, period, remaining, reset_after, retry_after, shadow_denied } = decision;
    pb::RateLimiterCheckResponse {
        allowed,
        limit,
        remaining,
        reset_after: Some(duration_out(reset_after)),
        retry_after: Some(duration_out(retry_after)),
        period: Some(duration_out(period)),
        shadow_denied,
    }
}

#[tonic::async_trait]
impl rate_limiter_server::RateLimiter for RateLimiterApi {
    async fn check(
        &self,
        request: Request<pb::RateLimiterCheckRequest>,
    ) -> Result<Response<pb::RateLimiterCheckResponse>, Status> {
        let ns = namespace::of(&request)?;
        let check = self.check_in(request.into_inner())?;
        Ok(Response::new(decision_out(self.limiter.check(&ns, check).await?)))
    }

    async fn check_many(
        &self,
        request: Request<pb::RateLimiterCheckManyRequest>,
    ) -> Result<Response<pb::RateLimiterCheckManyResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::RateLimiterCheckManyRequest { checks } = request.into_inner();
        let checks = checks.into_iter().map(|c| self.check_in(c)).collect::<Result<Vec<_>, _>>()?;
        let (allowed, decisions) = self.limiter.check_many(&ns, &checks).await?;
        Ok(Response::new(pb::RateLimiterCheckManyResponse {
            allowed,
            results: decisions.into_iter().map(decision_out).collect(),
        }))
    }

    async fn reset(
        &self,
        request: Request<pb::RateLimiterResetRequest>,
    ) -> Result<Response<pb::RateLimiterResetResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::RateLimiterResetRequest { key } = request.into_inner();
        Ok(Response::new(pb::RateLimiterResetResponse { removed: self.limiter.reset(&ns, &key).await? }))
    }
}
