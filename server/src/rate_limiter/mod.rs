//! The RateLimiter service's domain logic over Redis; `grpc.rs` adapts it to Rookery's API and
//! `envoy.rs` to Envoy's rate limit service.
//!
//! Every decision is `check.lua`: all limits of a request decided in one script on Redis's
//! clock (microseconds), state written only if every non-shadow limit allows, so a denied
//! request consumes nothing. Each limited key keeps one Redis key per algorithm (see
//! `keys::rate_limit`), with a TTL of about one period after its last write.
//!
//! On a Redis Cluster, the limits of one `CheckMany` whose keys fall in different slots cannot
//! share a script: they are decided first as a dry run (nothing written), then, if all allow,
//! for real, one script per slot. A concurrent request between the two steps can make the
//! second step deny after some slots consumed; the proto says so.

mod grpc;

pub mod envoy;

pub use grpc::RateLimiterApi;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use redis::Value;
use redis::cluster_routing::Slot;

use crate::config::{LimitsConfig, RateLimitAlgorithm, RateLimitPolicy, RateLimiterConfig};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::keys;
use crate::redis::scripts::{self, evalsha};
use crate::redis::{RedisPool, timed};

/// Largest limit of the sliding-window log: its sorted set then stays in Redis's compact
/// encoding (`zset-max-listpack-entries`, 128 by default).
pub const MAX_LOG_LIMIT: u64 = 128;
/// Largest limit, burst and cost: `check.lua` counts in Lua numbers (doubles), which hold every
/// integer exactly only up to 2^53. Above it, counts round (a limit of 2^64-1 would answer
/// `remaining` 0), so larger values are refused rather than decided inexactly.
pub const MAX_EXACT: u64 = 1 << 53;
/// Most keys the local over-limit cache remembers per replica.
const LOCAL_CACHE_KEYS: usize = 100_000;
/// Longest period of a limit.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

/// What makes two limits on one key the same limit: a denial under one says nothing of another.
type LimitShape = (u64, Duration, u64);

/// A limit, resolved from a policy or an inline spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// How to count.
    pub algorithm: RateLimitAlgorithm,
    /// Units per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    /// How many may pass at once (GCRA, token bucket); `limit` for the others.
    pub burst: u64,
    /// Always allow, but decide and count.
    pub shadow: bool,
    /// The policy's name, for metrics (`None` for an inline spec).
    pub policy: Option<String>,
}

impl Limit {
    /// A validated limit from an inline spec (`burst` 0 takes `limit`).
    pub fn new(algorithm: RateLimitAlgorithm, limit: u64, period: Duration, burst: u64) -> Result<Self> {
        if limit == 0 {
            return Err(Error::InvalidArgument("limit must be at least 1".into()));
        }
        if period < Duration::from_millis(1) || period > MAX_PERIOD {
            return Err(Error::InvalidArgument("period must be between 1 ms and 366 days".into()));
        }
        if algorithm == RateLimitAlgorithm::SlidingWindowLog && limit > MAX_LOG_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "the sliding-window log stores one entry per request: limits above {MAX_LOG_LIMIT} leave \
                 Redis's compact encoding (about 18 KB per key instead of 24 bytes per entry); use GCRA \
                 or the sliding-window counter"
            )));
        }
        if limit > MAX_EXACT {
            return Err(Error::InvalidArgument(format!(
                "limit must be at most 2^53 ({MAX_EXACT}), got {limit}: Redis's scripts count in doubles, \
                 which are exact only up to there"
            )));
        }
        let burst = match algorithm {
            RateLimitAlgorithm::Gcra | RateLimitAlgorithm::TokenBucket if burst > 0 => burst,
            _ => limit,
        };
        // Only the burst that reaches the script: the other algorithms ignore the field. A
        // request's cost is at most its burst (`check_many`), so this bounds costs too.
        if burst > MAX_EXACT {
            return Err(Error::InvalidArgument(format!(
                "burst must be at most 2^53 ({MAX_EXACT}), got {burst}: Redis's scripts count in doubles, \
                 which are exact only up to there"
            )));
        }
        Ok(Self { algorithm, limit, period, burst, shadow: false, policy: None })
    }

    /// A validated limit from a configured policy.
    pub fn from_policy(policy: &RateLimitPolicy) -> Result<Self> {
        let RateLimitPolicy { algorithm, limit, period, burst, shadow } = policy;
        Ok(Self { shadow: *shadow, ..Self::new(*algorithm, *limit, *period, *burst)? })
    }

    fn shape(&self) -> LimitShape {
        (self.limit, self.period, self.burst)
    }

    /// The most units one request may ask for (more could never be allowed).
    fn capacity(&self) -> u64 {
        self.burst
    }

    /// The script's number for the algorithm, and its short name in state keys.
    fn code(&self) -> (u8, &'static str) {
        match self.algorithm {
            RateLimitAlgorithm::Gcra => (1, "g"),
            RateLimitAlgorithm::TokenBucket => (2, "tb"),
            RateLimitAlgorithm::SlidingWindowLog => (3, "log"),
            RateLimitAlgorithm::SlidingWindowCounter => (4, "swc"),
            RateLimitAlgorithm::FixedWindow => (5, "fw"),
        }
    }

    /// The state-key suffix of this limit: algorithm and parameters, so that two different
    /// limits on one key keep separate state.
    fn state_suffix(&self) -> String {
        format!("{}:{}:{}:{}", self.code().1, self.limit, self.period.as_micros(), self.burst)
    }
}

/// One limit to decide for one key.
#[derive(Debug, Clone)]
pub struct Check {
    /// The limited key.
    pub key: String,
    /// The limit.
    pub limit: Limit,
    /// Units to consume; 0 peeks.
    pub cost: u64,
}

/// One limit's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed under this limit (true for a shadow policy).
    pub allowed: bool,
    /// The limit.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    /// Units left now.
    pub remaining: u64,
    /// Time until fully available.
    pub reset_after: Duration,
    /// When denied, the wait after which the same request would be allowed.
    pub retry_after: Duration,
    /// A shadow policy denied it (and it was allowed anyway).
    pub shadow_denied: bool,
}

/// The decision counters of one policy (or of inline limits): allowed, denied, shadow-denied.
/// Registered once, so that a decision costs no metric lookup.
#[derive(Clone)]
struct DecisionCounters([metrics::Counter; 3]);

impl DecisionCounters {
    fn new(policy: &str) -> Self {
        let counter = |outcome: &'static str| metrics::counter!("rookery_rate_limit_decisions_total", "policy" => policy.to_owned(), "outcome" => outcome);
        Self([counter("allowed"), counter("denied"), counter("shadow_denied")])
    }

    fn record(&self, decision: &Decision) {
        let index = match (decision.allowed, decision.shadow_denied) {
            (_, true) => 2,
            (true, false) => 0,
            (false, false) => 1,
        };
        self.0[index].increment(1);
    }
}

/// The RateLimiter service's domain logic.
pub struct RateLimiter {
    redis: Arc<RedisPool>,
    limits: LimitsConfig,
    policies: BTreeMap<String, Limit>,
    counters: HashMap<String, DecisionCounters>,
    inline_counters: DecisionCounters,
    /// State key -> until when one unit of which limit is known to be denied
    /// (`local_over_limit_cache`).
    over_limit: Option<Mutex<HashMap<String, (Instant, LimitShape)>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("policies", &self.policies.keys()).finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Builds the service; the config was validated at start-up.
    pub fn new(redis: Arc<RedisPool>, limits: LimitsConfig, config: &RateLimiterConfig) -> Result<Self> {
        let policies = config
            .policies
            .iter()
            .map(|(name, policy)| {
                Ok((name.clone(), Limit { policy: Some(name.clone()), ..Limit::from_policy(policy)? }))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let counters = policies.keys().map(|name| (name.clone(), DecisionCounters::new(name))).collect();
        Ok(Self {
            redis,
            limits,
            policies,
            counters,
            inline_counters: DecisionCounters::new("inline"),
            over_limit: config.local_over_limit_cache.then(|| Mutex::new(HashMap::new())),
        })
    }

    /// The Redis this service uses.
    pub fn redis(&self) -> &Arc<RedisPool> {
        &self.redis
    }

    /// The configured policy `name`.
    pub fn policy(&self, name: &str) -> Result<Limit> {
        self.policies.get(name).cloned().ok_or_else(|| {
            Error::NotFound(format!("no rate limit policy named {name:?} in the server's config"))
        })
    }

    fn check_key(&self, key: &str) -> Result<()> {
        self.limits.check_name("key", key)
    }

    /// Decides every check for one request: allowed only if all allow; nothing consumed when one
    /// denies (see the module doc for Clusters). Returns (allowed, one decision per check).
    pub async fn check_many(&self, ns: &Namespace, checks: &[Check]) -> Result<(bool, Vec<Decision>)> {
        if checks.is_empty() {
            return Err(Error::InvalidArgument("at least one check is required".into()));
        }
        if checks.len() > self.limits.max_batch_keys {
            return Err(Error::InvalidArgument(format!(
                "{} checks in one call; the limit is {} (limits.max_batch_keys)",
                checks.len(),
                self.limits.max_batch_keys
            )));
        }
        for check in checks {
            self.check_key(&check.key)?;
            if check.cost > check.limit.capacity() {
                return Err(Error::InvalidArgument(format!(
                    "cost {} exceeds what the limit can ever allow at once ({})",
                    check.cost,
                    check.limit.capacity()
                )));
            }
        }
        let state_keys: Vec<String> =
            checks.iter().map(|c| keys::rate_limit(ns.as_str(), &c.key, &c.limit.state_suffix())).collect();
        let mut distinct: Vec<&String> = state_keys.iter().collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != state_keys.len() {
            return Err(Error::InvalidArgument(
                "the same limit appears twice for the same key; give it once with the summed cost".into(),
            ));
        }
        // Checks grouped by slot: one script per group (one group unless on a Cluster).
        let mut groups: Vec<Vec<usize>> = Vec::new();
        if self.redis.is_cluster() {
            let mut by_slot: HashMap<Slot, usize> = HashMap::new();
            for (i, key) in state_keys.iter().enumerate() {
                let slot = Slot::for_key(key);
                let group = *by_slot.entry(slot).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[group].push(i);
            }
        } else {
            groups.push((0..checks.len()).collect());
        }
        if let Some(decision) = self.known_over_limit(checks, &state_keys) {
            metrics::counter!("rookery_rate_limit_local_denials_total").increment(1);
            let counters = checks[0].limit.policy.as_ref().and_then(|name| self.counters.get(name));
            counters.unwrap_or(&self.inline_counters).record(&decision);
            return Ok((false, vec![decision]));
        }
        let (allowed, decisions) = if groups.len() == 1 {
            self.decide(checks, &state_keys, &groups, false).await?
        } else {
            let (would_allow, dry_decisions) = self.decide(checks, &state_keys, &groups, true).await?;
            if would_allow {
                self.decide(checks, &state_keys, &groups, false).await?
            } else {
                (false, dry_decisions)
            }
        };
        for (check, decision) in checks.iter().zip(&decisions) {
            let counters = check.limit.policy.as_ref().and_then(|name| self.counters.get(name));
            counters.unwrap_or(&self.inline_counters).record(decision);
        }
        self.remember_over_limit(checks, &state_keys, &decisions);
        Ok((allowed, decisions))
    }

    /// With the local cache on: the denial of a single check whose key is known to be over its
    /// limit, without asking Redis.
    fn known_over_limit(&self, checks: &[Check], state_keys: &[String]) -> Option<Decision> {
        let (over_limit, [check], [key]) = (self.over_limit.as_ref()?, checks, state_keys) else {
            return None;
        };
        if check.cost == 0 || check.limit.shadow {
            return None;
        }
        // A request for more units than the one that was denied waits at least as long.
        let (until, shape) = *over_limit.lock().expect("over-limit cache poisoned").get(key)?;
        if shape != check.limit.shape() {
            return None;
        }
        let left = until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())?;
        Some(Decision {
            allowed: false,
            limit: check.limit.limit,
            period: check.limit.period,
            remaining: 0,
            reset_after: left,
            retry_after: left,
            shadow_denied: false,
        })
    }

    /// With the local cache on: remembers single checks that Redis denied, until their
    /// `retry_after`.
    fn remember_over_limit(&self, checks: &[Check], state_keys: &[String], decisions: &[Decision]) {
        let (Some(over_limit), [check], [key], [decision]) =
            (self.over_limit.as_ref(), checks, state_keys, decisions)
        else {
            return;
        };
        // Only a one-unit denial tells when any request will be allowed again.
        if decision.allowed || check.cost != 1 || check.limit.shadow || decision.retry_after.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut over_limit = over_limit.lock().expect("over-limit cache poisoned");
        if over_limit.len() >= LOCAL_CACHE_KEYS {
            over_limit.retain(|_, (until, _)| *until > now);
            if over_limit.len() >= LOCAL_CACHE_KEYS {
                return;
            }
        }
        over_limit.insert(key.clone(), (now + decision.retry_after, check.limit.shape()));
    }

    /// Runs the check script once per group of checks (a dry run writes nothing); returns
    /// whether every group allowed, and the decisions in check order.
    async fn decide(
        &self,
        checks: &[Check],
        state_keys: &[String],
        groups: &[Vec<usize>],
        dry: bool,
    ) -> Result<(bool, Vec<Decision>)> {
        let cmds: Vec<redis::Cmd> = groups
            .iter()
            .map(|group| {
                let group_keys: Vec<&str> = group.iter().map(|&i| state_keys[i].as_str()).collect();
                let mut cmd = evalsha(&scripts::RATE_LIMIT_CHECK, &group_keys);
                cmd.arg(if dry { "1" } else { "0" });
                for &i in group {
                    let Check { limit, cost, .. } = &checks[i];
                    cmd.arg(limit.code().0)
                        .arg(limit.limit)
                        .arg(u64::try_from(limit.period.as_micros()).unwrap_or(u64::MAX))
                        .arg(limit.burst)
                        .arg(*cost)
                        .arg(if limit.shadow { "1" } else { "0" });
                }
                cmd
            })
            .collect();
        let replies =
            timed("rate_limit.check", scripts::run_batch(&self.redis, &cmds, &[&scripts::RATE_LIMIT_CHECK]))
                .await
                .map_err(Error::from_write)?;
        let mut allowed = true;
        let mut decisions: Vec<Option<Decision>> = vec![None; checks.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let reply = reply.map_err(Error::from_write)?;
            let (group_allowed, group_decisions) =
                parse_reply(&reply, group.iter().map(|&i| &checks[i].limit))?;
            allowed &= group_allowed;
            for (&i, decision) in group.iter().zip(group_decisions) {
                decisions[i] = Some(decision);
            }
        }
        let decisions: Vec<Decision> = decisions.into_iter().flatten().collect();
        if decisions.len() != checks.len() {
            return Err(Error::Internal("the check script answered for fewer limits than asked".into()));
        }
        Ok((allowed, decisions))
    }

    /// Decides one check.
    pub async fn check(&self, ns: &Namespace, check: Check) -> Result<Decision> {
        let (_, mut decisions) = self.check_many(ns, std::slice::from_ref(&check)).await?;
        decisions.pop().ok_or_else(|| Error::Internal("no decision for a check".into()))
    }

    /// Forgets a key's state under every limit; returns how many states existed. Finds them
    /// with SCAN (on every master of a Cluster): an operator's call, whose cost grows with the
    /// number of keys in Redis.
    pub async fn reset(&self, ns: &Namespace, key: &str) -> Result<u64> {
        self.check_key(key)?;
        let pattern = keys::rate_limit_pattern(ns.as_str(), key);
        let mut found = Vec::new();
        for node in self.redis.nodes().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) =
                    timed("rate_limit.scan", self.redis.query_node(&node, &scan)).await?;
                found.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        if let Some(over_limit) = &self.over_limit {
            let mut over_limit = over_limit.lock().expect("over-limit cache poisoned");
            for state in &found {
                over_limit.remove(state);
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        // One hash tag: a single UNLINK, even on a Cluster (UNLINK: whatever is large is freed
        // in the background, not while every namespace's commands wait).
        let mut conn = self.redis.conn();
        let removed: u64 = timed("rate_limit.reset", redis::cmd("UNLINK").arg(&found).query_async(&mut conn))
            .await
            .map_err(Error::from_write)?;
        Ok(removed)
    }
}

fn micros(value: &Value) -> Option<Duration> {
    match value {
        Value::Int(n) => Some(Duration::from_micros(u64::try_from(*n).unwrap_or(0))),
        _ => None,
    }
}

/// Parses `{all_allowed, (allowed, remaining, reset_us, retry_us) per limit}`.
fn parse_reply<'a>(reply: &Value, limits: impl Iterator<Item = &'a Limit>) -> Result<(bool, Vec<Decision>)> {
    let bad = || Error::unexpected("rate limit check", reply);
    let Value::Array(items) = reply else { return Err(bad()) };
    let (Some(Value::Int(all)), rest) = (items.first(), items.get(1..).unwrap_or_default()) else {
        return Err(bad());
    };
    let mut decisions = Vec::new();
    for (limit, fields) in limits.zip(rest.chunks(4)) {
        let [Value::Int(allowed), Value::Int(remaining), reset, retry] = fields else { return Err(bad()) };
        let allowed = *allowed == 1;
        let shadow_denied = !allowed && limit.shadow;
        decisions.push(Decision {
            allowed: allowed || limit.shadow,
            limit: limit.limit,
            period: limit.period,
            remaining: u64::try_from(*remaining).unwrap_or(0),
            reset_after: micros(reset).ok_or_else(bad)?,
            retry_after: if allowed { Duration::ZERO } else { micros(retry).ok_or_else(bad)? },
            shadow_denied,
        });
    }
    Ok((*all == 1, decisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated_and_burst_defaults_to_limit() {
        let minute = Duration::from_secs(60);
        assert_eq!(Limit::new(RateLimitAlgorithm::Gcra, 10, minute, 0).unwrap().burst, 10);
        assert_eq!(Limit::new(RateLimitAlgorithm::Gcra, 10, minute, 3).unwrap().burst, 3);
        assert_eq!(Limit::new(RateLimitAlgorithm::FixedWindow, 10, minute, 3).unwrap().burst, 10);
        assert!(Limit::new(RateLimitAlgorithm::Gcra, 0, minute, 0).is_err());
        assert!(Limit::new(RateLimitAlgorithm::Gcra, 1, Duration::ZERO, 0).is_err());
        assert!(Limit::new(RateLimitAlgorithm::SlidingWindowLog, 129, minute, 0).is_err());
        assert!(Limit::new(RateLimitAlgorithm::SlidingWindowLog, 128, minute, 0).is_ok());
    }

    #[test]
    fn limits_and_bursts_above_2_pow_53_are_refused_naming_the_bound() {
        let minute = Duration::from_secs(60);
        let refused = |r: Result<Limit>| match r {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        for algorithm in [
            RateLimitAlgorithm::Gcra,
            RateLimitAlgorithm::TokenBucket,
            RateLimitAlgorithm::SlidingWindowCounter,
            RateLimitAlgorithm::FixedWindow,
        ] {
            assert_eq!(Limit::new(algorithm, MAX_EXACT, minute, 0).unwrap().burst, MAX_EXACT);
            let message = refused(Limit::new(algorithm, MAX_EXACT + 1, minute, 0));
            assert!(message.starts_with("limit must be at most 2^53 (9007199254740992)"), "{message}");
            assert!(refused(Limit::new(algorithm, u64::MAX, minute, 0)).contains("2^53"));
        }
        // A burst counts where it is used; the other algorithms ignore it.
        for algorithm in [RateLimitAlgorithm::Gcra, RateLimitAlgorithm::TokenBucket] {
            assert_eq!(Limit::new(algorithm, 10, minute, MAX_EXACT).unwrap().burst, MAX_EXACT);
            let message = refused(Limit::new(algorithm, 10, minute, MAX_EXACT + 1));
            assert!(message.starts_with("burst must be at most 2^53"), "{message}");
        }
        assert_eq!(Limit::new(RateLimitAlgorithm::FixedWindow, 10, minute, u64::MAX).unwrap().burst, 10);
        // Configured policies go through the same check (config validation calls this).
        let policy = |limit, burst| RateLimitPolicy {
            algorithm: RateLimitAlgorithm::Gcra,
            limit,
            period: minute,
            burst,
            shadow: false,
        };
        assert!(Limit::from_policy(&policy(MAX_EXACT, 0)).is_ok());
        assert!(refused(Limit::from_policy(&policy(MAX_EXACT + 1, 0))).contains("2^53"));
        assert!(refused(Limit::from_policy(&policy(10, MAX_EXACT + 1))).contains("2^53"));
    }
}
