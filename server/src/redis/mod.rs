//! Redis connections: one [`RedisPool`] per configured Redis, plus the start-up checks.
//!
//! Non-blocking commands share a small, fixed set of multiplexed connections
//! (`redis::aio::ConnectionManager`): every request is pipelined onto one of them, so 64
//! concurrent gRPC calls cost a handful of socket writes, not 64 connection checkouts. Each
//! connection reconnects by itself after Redis restarts; calls made while Redis is down fail
//! fast with UNAVAILABLE instead of hanging. The number of connections is `redis.connections`
//! (BENCHMARKS.md shows what it costs: one is as fast as four). With `redis.cluster`, one
//! slot-routing cluster connection (itself one multiplexed connection per node) takes their
//! place. With `redis.sentinel`, the coordination Redis is the master the sentinels name, and
//! `sentinel.rs` follows it across failovers. Blocking commands (XREAD BLOCK, BLPOP) must never
//! run here: they get dedicated connections of their own.

pub mod blocking;
pub mod cluster;
pub mod hub;
pub mod keys;
pub mod scripts;
pub mod sentinel;
pub mod wakeups;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};
use tracing::Instrument;

use crate::config::{RedisConfig, SentinelConfig};

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
    /// The coordination Redis would not say its eviction policy (its user may not run INFO),
    /// so nothing shows that locks, sessions, limits and streams are safe from eviction.
    #[error(
        "cannot verify that the coordination Redis does not evict keys: it refused INFO memory \
         ({refusal}). Allow the server's Redis user `+info` (see \"Least privilege towards \
         Redis\" in README.md), or start with --allow-eviction=true to accept the risk"
    )]
    EvictionPolicyUnverified {
        /// What Redis answered.
        refusal: String,
    },
}

/// A connection handle for non-blocking commands: to a standalone Redis or to a Redis Cluster
/// (which routes each command to the master of its key's slot). Cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// A self-healing multiplexed connection to one Redis.
    Single(ConnectionManager),
    /// A multiplexed, slot-routing connection to a Redis Cluster.
    Cluster(ClusterConnection),
    /// A multiplexed connection to the master the sentinels name.
    Sentinel(sentinel::SentinelConn),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
        }
    }
}

/// One Redis server that a keyspace-wide command (SCAN, INFO) must visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// The only server of a standalone Redis.
    Single,
    /// A Cluster master, by address.
    Master {
        /// Host or IP, as the cluster announces it.
        host: String,
        /// Port.
        port: u16,
    },
}

enum Backend {
    Single {
        connections: Vec<ConnectionManager>,
        next: AtomicUsize,
    },
    Cluster {
        conn: ClusterConnection,
    },
    /// The master the sentinels name; the follower's tasks stop when this is dropped.
    Sentinel {
        link: Arc<sentinel::Link>,
        _follower: sentinel::Follower,
    },
}

/// The connections to one configured Redis (standalone or Cluster), plus the clients for the
/// dedicated connections that must not be shared (pub/sub).
pub struct RedisPool {
    backend: Backend,
    /// One client per seed URL, for pub/sub (on a Cluster, PUBLISH reaches every node, so a
    /// subscriber on any one node hears everything).
    seeds: Vec<Client>,
    role: RedisRole,
    /// Dedicated connections for blocking reads.
    blocking: blocking::BlockingPool,
    /// The replica's one pub/sub connection to this Redis.
    hub: hub::Hub,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mode, connections) = match &self.backend {
            Backend::Single { connections, .. } => ("standalone", connections.len()),
            Backend::Cluster { .. } => ("cluster", 1),
            Backend::Sentinel { link, .. } => ("sentinel", link.connections()),
        };
        f.debug_struct("RedisPool")
            .field("role", &self.role)
            .field("mode", &mode)
            .field("connections", &connections)
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

/// Splits a config URL: one URL, or (for a Cluster) a comma-separated list of seed URLs.
pub fn seed_urls(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

impl RedisPool {
    /// Connects to `url` (several comma-separated seed URLs for a Cluster), retrying for up to
    /// `config.startup_timeout` while Redis is unreachable (it may be starting beside us).
    pub async fn connect(url: &str, config: &RedisConfig, role: RedisRole) -> Result<Self, StartupError> {
        let unreachable = |source| StartupError::Unreachable {
            role: role.label(),
            url: seed_urls(url).into_iter().map(redacted).collect::<Vec<_>>().join(","),
            timeout: config.startup_timeout,
            source,
        };
        // rustls needs a process-wide crypto provider for `rediss://` (installing it twice is
        // harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certificates = match &config.tls_ca_file {
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| unreachable(redis::RedisError::from(e)))?),
            }),
            None => None,
        };
        if let Some(sentinel) = config.sentinel.as_ref().filter(|_| role == RedisRole::Coordination) {
            return Self::connect_sentinel(sentinel, config, role, certificates).await;
        }
        let seeds = seed_urls(url)
            .into_iter()
            .map(|seed| match &certificates {
                Some(certificates) if seed.starts_with("rediss://") => {
                    Client::build_with_tls(seed, certificates.clone())
                }
                _ => Client::open(seed),
            })
            .collect::<RedisResult<Vec<_>>>()
            .map_err(unreachable)?;
        let deadline = Instant::now() + config.startup_timeout;
        let backend = if config.cluster {
            let mut builder = ClusterClientBuilder::new(seed_urls(url));
            if let Some(certificates) = &certificates {
                builder = builder.certs(certificates.clone());
            }
            // Each attempt and the call as a whole (retries included) are bounded by the
            // command timeout; within it, redirects and failovers are retried with short
            // pauses (see `cluster`).
            let client = builder
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.command_timeout)
                .retries(cluster::RETRIES)
                .min_retry_wait(cluster::RETRY_WAIT.0)
                .max_retry_wait(cluster::RETRY_WAIT.1)
                .retry_wait_formula(cluster::RETRY_WAIT_FORMULA.0, cluster::RETRY_WAIT_FORMULA.1)
                .build()
                .map_err(unreachable)?;
            loop {
                match client.get_async_connection().await {
                    Ok(conn) => break Backend::Cluster { conn },
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(redis = role.label(), error = %e, "Redis Cluster not reachable yet; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(unreachable(e)),
                }
            }
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.command_timeout))
                // Reconnection happens in the background after a failure; a few quick
                // attempts per failure keep calls made during an outage failing fast rather
                // than queueing.
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(500));
            let mut connections = Vec::with_capacity(config.connections);
            while connections.len() < config.connections {
                match seeds[0].get_connection_manager_with_config(manager_config.clone()).await {
                    Ok(conn) => connections.push(conn),
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(redis = role.label(), error = %e, "Redis not reachable yet; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(unreachable(e)),
                }
            }
            Backend::Single { connections, next: AtomicUsize::new(0) }
        };
        let manager = if config.cluster {
            let mut builder = ClusterClientBuilder::new(seed_urls(url));
            if let Some(certificates) = &certificates {
                builder = builder.certs(certificates.clone());
            }
            // No response timeout worth the name: each blocking command bounds itself.
            let client = builder
                .connection_timeout(config.connect_timeout)
                .response_timeout(Duration::from_secs(24 * 3600))
                .build()
                .map_err(unreachable)?;
            blocking::BlockingManager::Cluster(client)
        } else {
            blocking::BlockingManager::Single {
                client: seeds[0].clone(),
                connect_timeout: config.connect_timeout,
            }
        };
        let blocking = blocking_pool(manager, config);
        let hub = hub::Hub::start(hub::Target::Seeds(seeds.clone()));
        let pool = Self { backend, seeds, role, blocking, hub };
        let count = match &pool.backend {
            Backend::Single { connections, .. } => connections.len(),
            Backend::Cluster { .. } => 1,
            Backend::Sentinel { link, .. } => link.connections(),
        };
        metrics::gauge!("rookery_redis_connections", "redis" => role.label()).set(count as f64);
        Ok(pool)
    }

    /// Connects to the master that the sentinels of `sentinel` name, and follows it: the
    /// shared connections, the blocking pool and the pub/sub hub all go wherever it moves.
    async fn connect_sentinel(
        sentinel: &SentinelConfig,
        config: &RedisConfig,
        role: RedisRole,
        certificates: Option<redis::TlsCertificates>,
    ) -> Result<Self, StartupError> {
        let (link, follower) =
            sentinel::Link::start(config, sentinel, role, certificates).await.map_err(|source| {
                StartupError::Unreachable {
                    role: role.label(),
                    url: sentinel::describe(sentinel),
                    timeout: config.startup_timeout,
                    source,
                }
            })?;
        let manager = blocking::BlockingManager::Sentinel {
            link: link.clone(),
            connect_timeout: config.connect_timeout,
        };
        let blocking = blocking_pool(manager, config);
        let hub = hub::Hub::start(hub::Target::Sentinel(link.clone()));
        metrics::gauge!("rookery_redis_connections", "redis" => role.label()).set(link.connections() as f64);
        let backend = Backend::Sentinel { link, _follower: follower };
        Ok(Self { backend, seeds: Vec::new(), role, blocking, hub })
    }

    /// A handle to a shared connection (round robin over standalone connections). Cloning is
    /// cheap; the handle may be used for any number of non-blocking commands.
    pub fn conn(&self) -> RedisConn {
        match &self.backend {
            Backend::Single { connections, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % connections.len();
                RedisConn::Single(connections[i].clone())
            }
            Backend::Cluster { conn } => RedisConn::Cluster(conn.clone()),
            Backend::Sentinel { link, .. } => RedisConn::Sentinel(link.conn()),
        }
    }

    /// Clients for dedicated connections (pub/sub): one per seed (none with Sentinel, where
    /// the hub and the blocking pool follow the master instead).
    pub fn seeds(&self) -> &[Client] {
        &self.seeds
    }

    /// The replica's pub/sub hub for this Redis: Events subscriptions and wake-up channels.
    pub fn hub(&self) -> &hub::Hub {
        &self.hub
    }

    /// The pool of dedicated connections for blocking commands.
    pub fn blocking(&self) -> &blocking::BlockingPool {
        &self.blocking
    }

    /// Whether this pool talks to a Redis Cluster (multi-key scripts then need one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// Which Redis this pool talks to.
    pub fn role(&self) -> RedisRole {
        self.role
    }

    /// Whether Redis serves calls now: it answers a PING, or, on a Cluster, every slot has a
    /// master that answers (see [`cluster::serves_every_slot`]).
    pub async fn ping(&self) -> bool {
        if let Backend::Cluster { conn } = &self.backend {
            return cluster::serves_every_slot(conn).await;
        }
        let reply: RedisResult<Value> = redis::cmd("PING").query_async(&mut self.conn()).await;
        reply.is_ok()
    }

    /// The servers a keyspace-wide command must visit: the one server, or every Cluster master.
    pub async fn nodes(&self) -> RedisResult<Vec<Node>> {
        let Backend::Cluster { conn } = &self.backend else {
            return Ok(vec![Node::Single]);
        };
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn.clone()).await?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                // Every master that serves slots, including one suspected down: a keyspace-wide
                // command must fail (UNAVAILABLE) rather than silently skip its keys.
                if !flags.split(',').any(|f| f == "master") || fields.len() < 9 {
                    return None;
                }
                let address = fields.get(1)?.split(['@', ',']).next()?;
                let (host, port) = address.rsplit_once(':')?;
                Some(Node::Master { host: host.to_owned(), port: port.parse().ok()? })
            })
            .collect())
    }

    /// Runs `cmd` on one node of [`Self::nodes`].
    pub async fn query_node<T: FromRedisValue>(&self, node: &Node, cmd: &Cmd) -> RedisResult<T> {
        match (node, &self.backend) {
            (Node::Master { host, port }, Backend::Cluster { conn }) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = conn.clone().route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(value)?)
            }
            _ => cmd.query_async(&mut self.conn()).await,
        }
    }

    /// Runs commands as one round trip and returns each command's own result. On a standalone
    /// Redis they go as one pipeline; on a Cluster, where a pipeline must stay within one slot,
    /// they are sent concurrently and the connection pipelines those bound for the same node.
    pub async fn query_each(&self, cmds: &[&Cmd]) -> RedisResult<Vec<RedisResult<Value>>> {
        match &self.backend {
            Backend::Single { .. } | Backend::Sentinel { .. } => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command((*cmd).clone());
                }
                pipe.ignore_errors().query_async(&mut self.conn()).await
            }
            Backend::Cluster { conn } => Ok(futures::future::join_all(cmds.iter().map(|cmd| {
                let mut conn = conn.clone();
                async move { cmd.query_async::<Value>(&mut conn).await }
            }))
            .await),
        }
    }

    /// Refuses to continue unless Redis runs with `maxmemory-policy noeviction` (every master,
    /// on a Cluster), or `allow_eviction` is set, in which case it only warns. Uses `INFO
    /// memory`, which managed Redis services allow even where `CONFIG` is disabled, and which
    /// the least-privilege ACL (README.md) grants for this check alone.
    ///
    /// A policy that cannot be read is not verified: should Redis refuse INFO to the server's
    /// user (NOPERM), start-up fails like it does for an evicting policy, unless
    /// `allow_eviction` is set, in which case it warns that the policy is unverified. The
    /// check exists so that locks are never silently evicted; passing it without knowing the
    /// policy would defeat it.
    pub async fn check_no_eviction(&self, allow_eviction: bool) -> Result<(), StartupError> {
        let unreachable = |source| StartupError::Unreachable {
            role: self.role.label(),
            url: String::new(),
            timeout: Duration::ZERO,
            source,
        };
        let mut info_cmd = redis::cmd("INFO");
        info_cmd.arg("memory");
        for node in self.nodes().await.map_err(unreachable)? {
            let info: String = match self.query_node(&node, &info_cmd).await {
                Ok(info) => info,
                Err(e) if is_refused(&e) => {
                    if !allow_eviction {
                        return Err(StartupError::EvictionPolicyUnverified { refusal: e.to_string() });
                    }
                    tracing::warn!(
                        error = %e,
                        "cannot read the coordination Redis's maxmemory-policy (INFO refused): it \
                         may EVICT keys, and locks, sessions, limits and streams could vanish under \
                         memory pressure. Started anyway because allow_eviction is set"
                    );
                    continue;
                }
                Err(e) => return Err(unreachable(e)),
            };
            let policy = info
                .lines()
                .find_map(|line| line.strip_prefix("maxmemory_policy:"))
                .unwrap_or("unknown")
                .trim()
                .to_owned();
            if policy == "noeviction" {
                continue;
            }
            if !allow_eviction {
                return Err(StartupError::EvictionPolicy { policy });
            }
            tracing::warn!(
                policy = %policy,
                "the coordination Redis may EVICT keys (maxmemory-policy is not noeviction); \
                 locks, sessions, limits and streams can vanish under memory pressure. Started \
                 anyway because allow_eviction is set"
            );
        }
        Ok(())
    }
}

/// The pool of dedicated connections for blocking reads: up to `redis.blocking_connections`,
/// made on demand, none kept idle.
fn blocking_pool(manager: blocking::BlockingManager, config: &RedisConfig) -> blocking::BlockingPool {
    bb8::Pool::builder()
        .max_size(config.blocking_connections)
        .min_idle(Some(0))
        .connection_timeout(config.connect_timeout)
        .build_unchecked(manager)
}

/// Whether Redis refused a command to the server's user (NOPERM: its ACL does not allow it).
fn is_refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
}

/// The Redis settings that make Redis free large values in a background thread instead of in
/// the one thread that serves every namespace: when a key expires, when Redis itself deletes
/// one (a RENAME over it, a FLUSH), and when a DEL of a client deletes one.
pub const LAZY_FREE_SETTINGS: [&str; 3] =
    ["lazyfree-lazy-expire", "lazyfree-lazy-server-del", "lazyfree-lazy-user-del"];

impl RedisPool {
    /// Warns (once per node, at start-up) when Redis frees large values in its main thread:
    /// while it frees one, every namespace's commands wait. Rookery keeps its own keys bounded
    /// (tag indexes in buckets, UNLINK for deletes), but a large stream or pending list that
    /// expires is still freed in one step unless `lazyfree-lazy-expire` is on. Only warns, never
    /// changes the setting: the Redis may be shared, and its operator decides. Returns the
    /// settings found off.
    ///
    /// Reads them with CONFIG GET, which the least-privilege ACL (README.md) does not grant:
    /// CONFIG GET reads every setting, passwords (`requirepass`, `masterauth`) included. Where
    /// Redis refuses it (that ACL, or a managed Redis that disables CONFIG), the settings are
    /// unverified: it says so in one warning, naming them, and carries on, since lazy freeing
    /// affects latency, not correctness.
    pub async fn check_lazy_free(&self) -> Vec<String> {
        let mut off = Vec::new();
        let Ok(nodes) = self.nodes().await else { return off };
        let mut unverified = None;
        for node in nodes {
            let mut get = redis::cmd("CONFIG");
            get.arg("GET").arg("lazyfree-lazy-*");
            let settings: RedisResult<std::collections::HashMap<String, String>> =
                self.query_node(&node, &get).await;
            let settings = match settings {
                Ok(settings) => settings,
                Err(e) => {
                    unverified.get_or_insert(e);
                    continue;
                }
            };
            for name in LAZY_FREE_SETTINGS {
                if settings.get(name).is_some_and(|value| value == "no") && !off.iter().any(|o| o == name) {
                    off.push(name.to_owned());
                }
            }
        }
        if let Some(e) = unverified {
            tracing::warn!(
                redis = self.role.label(),
                error = %e,
                settings = %LAZY_FREE_SETTINGS.join(", "),
                "cannot read Redis's lazy-freeing settings (CONFIG GET failed; the \
                 least-privilege ACL and some managed Redis services refuse it), so they are \
                 unverified: check that they are yes on the Redis itself, or large values that \
                 expire are freed in Redis's main thread"
            );
        }
        if !off.is_empty() {
            tracing::warn!(
                redis = self.role.label(),
                off = %off.join(", "),
                "Redis frees large values in its main thread, holding every namespace's commands \
                 meanwhile (a large stream expiring, say); set these to yes (CONFIG SET or \
                 redis.conf)"
            );
        }
        off
    }
}

/// Runs one Redis operation, recording its latency as `rookery_redis_command_duration_seconds`
/// labelled by operation, and counting failures. While spans are exported, it runs in a child
/// span of the call's, named after `op` (`telemetry::otel::redis_span`): every operation of a
/// call passes here, so this is the one place that traces Redis.
pub async fn timed<T>(op: &'static str, fut: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    let start = Instant::now();
    let result = match crate::telemetry::otel::redis_span(op) {
        Some(span) => {
            let result = fut.instrument(span.clone()).await;
            if result.is_err() {
                span.record("otel.status_code", "ERROR");
            }
            result
        }
        None => fut.await,
    };
    metrics::histogram!("rookery_redis_command_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("rookery_redis_errors_total", "op" => op).increment(1);
        tracing::debug!(op, error = %e, "redis operation failed");
    }
    result
}
