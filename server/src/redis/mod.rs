//! Redis connections: one [`RedisPool`] per configured Redis, plus the start-up checks.
//!
//! Non-blocking commands share a small, fixed set of multiplexed connections
//! (`redis::aio::ConnectionManager`): every request is pipelined onto one of them, so 64
//! concurrent gRPC calls cost a handful of socket writes, not 64 connection checkouts. Each
//! connection reconnects by itself after Redis restarts; calls made while Redis is down fail
//! fast with UNAVAILABLE instead of hanging. The number of connections is `redis.connections`
//! (BENCHMARKS.md shows what it costs). Blocking commands (XREAD BLOCK, BLPOP) must never run
//! here: they get dedicated connections of their own.

pub mod keys;
pub mod pubsub;
pub mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};

use crate::config::RedisConfig;

/// Which configured Redis a pool talks to; a label on its metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisRole {
    /// The coordination Redis (locks, sessions, limits, streams); must not evict.
    Coordination,
    /// A Redis dedicated to the Cache service; may evict.
    Cache,
}

impl RedisRole {
    /// The label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Coordination => "coordination",
            Self::Cache => "cache",
        }
    }
}

/// A start-up failure: the server cannot serve with this Redis.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Redis did not answer within `redis.startup_timeout`.
    #[error("cannot reach the {role} Redis at {url} within {timeout:?}: {source}")]
    Unreachable {
        /// Which Redis.
        role: &'static str,
        /// Its URL, without credentials.
        url: String,
        /// How long start-up tried.
        timeout: Duration,
        /// The last error.
        source: redis::RedisError,
    },
    /// The coordination Redis may evict keys.
    #[error(
        "the coordination Redis has maxmemory-policy {policy:?}; locks, sessions, limits and \
         streams would be silently evicted under memory pressure. Set `maxmemory-policy \
         noeviction` on it (or give the cache its own Redis with redis.cache_url), or start with \
         --allow-eviction=true to accept the risk"
    )]
    EvictionPolicy {
        /// The policy Redis reported.
        policy: String,
    },
}

/// A fixed set of self-healing multiplexed connections to one Redis.
pub struct RedisPool {
    client: Client,
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    role: RedisRole,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("role", &self.role)
            .field("connections", &self.connections.len())
            .finish()
    }
}

/// The URL with any password replaced, for messages.
fn redacted(url: &str) -> String {
    match redis::parse_redis_url(url) {
        Some(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl RedisPool {
    /// Connects `config.connections` connections to `url`, retrying for up to
    /// `config.startup_timeout` while Redis is unreachable (it may be starting beside us).
    pub async fn connect(url: &str, config: &RedisConfig, role: RedisRole) -> Result<Self, StartupError> {
        let unreachable = |source| StartupError::Unreachable {
            role: role.label(),
            url: redacted(url),
            timeout: config.startup_timeout,
            source,
        };
        let client = Client::open(url).map_err(unreachable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Reconnection happens in the background after a failure; a few quick attempts
            // per failure keep calls made during an outage failing fast rather than queueing.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let deadline = Instant::now() + config.startup_timeout;
        let mut connections = Vec::with_capacity(config.connections);
        while connections.len() < config.connections {
            match client.get_connection_manager_with_config(manager_config.clone()).await {
                Ok(conn) => connections.push(conn),
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(redis = role.label(), error = %e, "Redis not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
        metrics::gauge!("rookery_redis_connections", "redis" => role.label()).set(connections.len() as f64);
        Ok(Self { client, connections, next: AtomicUsize::new(0), role })
    }

    /// A handle to one of the shared connections (round robin). Cloning is cheap; the handle
    /// may be used for any number of non-blocking commands.
    pub fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    /// The client, for connections that must not be shared (pub/sub, blocking reads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Which Redis this pool talks to.
    pub fn role(&self) -> RedisRole {
        self.role
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        let reply: RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        reply.is_ok()
    }

    /// Refuses to continue unless Redis runs with `maxmemory-policy noeviction` (or
    /// `allow_eviction` is set, in which case it only warns). Uses `INFO memory`, which managed
    /// Redis services allow even where `CONFIG` is disabled.
    pub async fn check_no_eviction(&self, allow_eviction: bool) -> Result<(), StartupError> {
        let info: String =
            redis::cmd("INFO").arg("memory").query_async(&mut self.conn()).await.map_err(|source| {
                StartupError::Unreachable {
                    role: self.role.label(),
                    url: String::new(),
                    timeout: Duration::ZERO,
                    source,
                }
            })?;
        let policy = info
            .lines()
            .find_map(|line| line.strip_prefix("maxmemory_policy:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        if policy == "noeviction" {
            return Ok(());
        }
        if allow_eviction {
            tracing::warn!(
                policy = %policy,
                "the coordination Redis may EVICT keys (maxmemory-policy is not noeviction); \
                 locks, sessions, limits and streams can vanish under memory pressure. Started \
                 anyway because allow_eviction is set"
            );
            return Ok(());
        }
        Err(StartupError::EvictionPolicy { policy })
    }
}

/// Runs one Redis operation, recording its latency as `rookery_redis_command_duration_seconds`
/// labelled by operation, and counting failures.
pub async fn timed<T>(op: &'static str, fut: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    let start = Instant::now();
    let result = fut.await;
    metrics::histogram!("rookery_redis_command_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("rookery_redis_errors_total", "op" => op).increment(1);
    }
    result
}
