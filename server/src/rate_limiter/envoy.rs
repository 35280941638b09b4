//! `envoy.service.ratelimit.v3.RateLimitService` over the RateLimiter, so that an Envoy or Istio
//! gateway can use Rookery as its rate limit service.
//!
//! Configuration mirrors envoy's own ratelimit service: per domain, a tree of descriptor
//! levels, each matching an entry key and optionally its value, with a policy where a
//! descriptor may end. A request descriptor is matched entry by entry (an exact value beats a
//! level without one); the policy of the level its last entry reached limits it, keyed by the
//! domain and every entry (so each distinct value of a value-less level is limited separately).
//! A descriptor that matches no configured policy is not limited. All descriptors of one request
//! are decided together (`CheckMany`): when one is over its limit, none is consumed. Cost is the
//! descriptor's `hits_addend`, else the request's, else 1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};

use super::{Check, RateLimiter};
use crate::config::{EnvoyDescriptor, EnvoyDomain, RateLimitPolicy};
use crate::namespace;

/// Checks one configured domain: a name, entry keys, and policies that exist.
pub fn check_domain(
    domain: &EnvoyDomain,
    policies: &BTreeMap<String, RateLimitPolicy>,
) -> Result<(), String> {
    fn check_level(
        level: &[EnvoyDescriptor],
        policies: &BTreeMap<String, RateLimitPolicy>,
    ) -> Result<(), String> {
        for descriptor in level {
            if descriptor.key.is_empty() {
                return Err("a descriptor has an empty key".into());
            }
            if let Some(policy) = &descriptor.policy
                && !policies.contains_key(policy)
            {
                return Err(format!(
                    "descriptor {:?} names policy {policy:?}, which is not configured",
                    descriptor.key
                ));
            }
            check_level(&descriptor.descriptors, policies)?;
        }
        Ok(())
    }
    if domain.domain.is_empty() {
        return Err("a domain has an empty name".into());
    }
    check_level(&domain.descriptors, policies)
}

/// The policy limiting `descriptor` in `domain`, if any.
fn matching_policy<'a>(domain: &'a EnvoyDomain, descriptor: &RateLimitDescriptor) -> Option<&'a str> {
    let mut level = domain.descriptors.as_slice();
    let mut reached = None;
    for entry in &descriptor.entries {
        let node = level
            .iter()
            .find(|d| d.key == entry.key && d.value.as_deref() == Some(entry.value.as_str()))
            .or_else(|| level.iter().find(|d| d.key == entry.key && d.value.is_none()))?;
        reached = Some(node);
        level = &node.descriptors;
    }
    reached?.policy.as_deref()
}

/// The limited key of a descriptor: the domain and every entry, length-prefixed so that no two
/// different descriptors share a key.
fn limited_key(domain: &str, descriptor: &RateLimitDescriptor) -> String {
    let mut key = format!("envoy:{}:{domain}", domain.len());
    for entry in &descriptor.entries {
        key.push_str(&format!("|{}:{}={}:{}", entry.key.len(), entry.key, entry.value.len(), entry.value));
    }
    key
}

/// The Envoy unit of a period, when it is exactly one.
fn unit(period: Duration) -> Unit {
    match period.as_secs() {
        _ if period.subsec_nanos() != 0 => Unit::Unknown,
        1 => Unit::Second,
        60 => Unit::Minute,
        3600 => Unit::Hour,
        86_400 => Unit::Day,
        604_800 => Unit::Week,
        _ => Unit::Unknown,
    }
}

/// `envoy.service.ratelimit.v3.RateLimitService` over the domain [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct EnvoyRateLimitApi {
    limiter: Arc<RateLimiter>,
    domains: Arc<Vec<EnvoyDomain>>,
}

impl EnvoyRateLimitApi {
    /// Serves the configured `domains` with `limiter`.
    pub fn new(limiter: Arc<RateLimiter>, domains: Vec<EnvoyDomain>) -> Self {
        Self { limiter, domains: Arc::new(domains) }
    }
}

#[tonic::async_trait]
impl RateLimitService for EnvoyRateLimitApi {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let ns = namespace::of(&request)?;
        let RateLimitRequest { domain, descriptors, hits_addend } = request.into_inner();
        let Some(config) = self.domains.iter().find(|d| d.domain == domain) else {
            return Err(Status::invalid_argument(format!("rate limit domain {domain:?} is not configured")));
        };
        let request_cost = u64::from(hits_addend.max(1));
        // Descriptors with a policy, and the check each one's decision comes from (a descriptor
        // repeated in one request adds its cost to the same check).
        let mut checks: Vec<Check> = Vec::new();
        let mut positions: Vec<(usize, usize)> = Vec::new();
        for (position, descriptor) in descriptors.iter().enumerate() {
            let Some(policy) = matching_policy(config, descriptor) else { continue };
            let cost = descriptor.hits_addend.as_ref().map_or(request_cost, |h| h.value);
            let key = limited_key(&domain, descriptor);
            let limit = self.limiter.policy(policy)?;
            let index = match checks.iter().position(|c| c.key == key && c.limit == limit) {
                Some(index) => {
                    checks[index].cost += cost;
                    index
                }
                None => {
                    checks.push(Check { key, limit, cost });
                    checks.len() - 1
                }
            };
            positions.push((position, index));
        }
        let mut statuses = vec![
            DescriptorStatus { code: Code::Ok.into(), ..DescriptorStatus::default() };
            descriptors.len()
        ];
        let mut over = false;
        if !checks.is_empty() {
            let (_, decisions) = self.limiter.check_many(&ns, &checks).await?;
            for (position, index) in positions {
                let (check, decision) = (&checks[index], decisions[index].clone());
                over |= !decision.allowed;
                statuses[position] = DescriptorStatus {
                    code: if decision.allowed { Code::Ok } else { Code::OverLimit }.into(),
                    current_limit: Some(RateLimit {
                        name: check.limit.policy.clone().unwrap_or_default(),
                        requests_per_unit: u32::try_from(decision.limit).unwrap_or(u32::MAX),
                        unit: unit(decision.period).into(),
                    }),
                    limit_remaining: u32::try_from(decision.remaining).unwrap_or(u32::MAX),
                    duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: i64::try_from(decision.reset_after.as_secs()).unwrap_or(i64::MAX),
                        nanos: decision.reset_after.subsec_nanos() as i32,
                    }),
                    ..DescriptorStatus::default()
                };
            }
        }
        Ok(Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok }.into(),
            statuses,
            ..RateLimitResponse::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries.iter().map(|(k, v)| Entry { key: (*k).into(), value: (*v).into() }).collect(),
            ..RateLimitDescriptor::default()
        }
    }

    fn level(
        key: &str,
        value: Option<&str>,
        policy: Option<&str>,
        nested: Vec<EnvoyDescriptor>,
    ) -> EnvoyDescriptor {
        EnvoyDescriptor {
            key: key.into(),
            value: value.map(Into::into),
            policy: policy.map(Into::into),
            descriptors: nested,
        }
    }

    #[test]
    fn descriptors_match_like_envoys_ratelimit_service() {
        let domain = EnvoyDomain {
            domain: "edge".into(),
            descriptors: vec![
                level(
                    "remote_address",
                    None,
                    Some("per_ip"),
                    vec![level("path", Some("/login"), Some("login"), vec![])],
                ),
                level("path", Some("/login"), Some("login_global"), vec![]),
                level("path", None, Some("per_path"), vec![]),
            ],
        };
        assert_eq!(matching_policy(&domain, &descriptor(&[("remote_address", "1.2.3.4")])), Some("per_ip"));
        assert_eq!(
            matching_policy(&domain, &descriptor(&[("remote_address", "1.2.3.4"), ("path", "/login")])),
            Some("login")
        );
        assert_eq!(
            matching_policy(&domain, &descriptor(&[("remote_address", "1.2.3.4"), ("path", "/other")])),
            None
        );
        assert_eq!(matching_policy(&domain, &descriptor(&[("path", "/login")])), Some("login_global"));
        assert_eq!(matching_policy(&domain, &descriptor(&[("path", "/x")])), Some("per_path"));
        assert_eq!(matching_policy(&domain, &descriptor(&[("user", "x")])), None);
    }

    #[test]
    fn limited_keys_are_unambiguous() {
        let a = limited_key("d", &descriptor(&[("a", "b=c")]));
        let b = limited_key("d", &descriptor(&[("a=b", "c")]));
        assert_ne!(a, b);
        assert_ne!(
            limited_key("d", &descriptor(&[("k", "v")])),
            limited_key("d2", &descriptor(&[("k", "v")]))
        );
    }

    #[test]
    fn whole_units_map_to_envoy_units() {
        assert_eq!(unit(Duration::from_secs(60)), Unit::Minute);
        assert_eq!(unit(Duration::from_millis(1500)), Unit::Unknown);
        assert_eq!(unit(Duration::from_secs(7)), Unit::Unknown);
    }
}
