//! The server's one configuration struct, and how it is assembled.
//!
//! Precedence, lowest first: built-in defaults < a TOML file (`--config` / `ROOKERY_CONFIG`) <
//! `ROOKERY_*` environment variables < command-line flags. Flags and environment variables are
//! declared together in [`Cli`] (clap resolves flag over env); the file is merged under them.
//! Durations are written the human way (`"250ms"`, `"10s"`, `"12h"`).
//!
//! Every field is checked by [`Config::validate`] at start-up, and a bad value stops the server
//! with a message naming the field, so a typo never turns into a surprising runtime behaviour.
//!
//! One room on purpose: every setting, its default and its check side by side, so that the
//! README's table can be checked against one file. (Each namespace's share lives with the layer
//! that enforces it, `fair_share`, and is referenced from here.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration problem, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`Config`] (the message names the field).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file at fault.
        path: PathBuf,
        /// The parser's explanation, which names the key and line.
        message: String,
    },
    /// A field has a value the server cannot run with.
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// The dotted path of the field, as written in the TOML file.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Everything the server can be configured with. The TOML file mirrors this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC listener.
    pub listen: SocketAddr,
    /// Address of the admin HTTP listener (`/metrics`, `/healthz`).
    pub admin_listen: SocketAddr,
    /// Redis connections.
    pub redis: RedisConfig,
    /// Bounds on requests.
    pub limits: LimitsConfig,
    /// The Cache service.
    pub cache: CacheConfig,
    /// The Lock service.
    pub lock: LockConfig,
    /// The Session service.
    pub session: SessionConfig,
    /// The RateLimiter service (and its Envoy rate limit service).
    pub rate_limiter: RateLimiterConfig,
    /// The Events service.
    pub events: EventsConfig,
    /// The async runtime.
    pub runtime: RuntimeConfig,
    /// Logging.
    pub log: LogConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Each namespace's share of a replica (see `fair_share`).
    pub fair_share: crate::fair_share::FairShareConfig,
    /// TLS on the gRPC listener (see `tls`); absent means plaintext.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Authentication and authorization (see `auth`).
    pub auth: crate::auth::AuthConfig,
    /// Traces (see `telemetry::otel`).
    pub telemetry: TelemetryConfig,
}

/// Where Redis is and how the server talks to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// The coordination Redis (`redis://[user:pass@]host:port[/db]`, or `rediss://` for TLS);
    /// with `cluster`, a comma-separated list of seed nodes. Must run with `maxmemory-policy
    /// noeviction` unless `allow_eviction` is set.
    pub url: String,
    /// Whether the Redis URLs name a Redis Cluster.
    pub cluster: bool,
    /// A PEM file of the CA certificates to trust for `rediss://` URLs (a private CA); unset
    /// trusts the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Optional separate Redis for the Cache service; it may use any eviction policy.
    pub cache_url: Option<String>,
    /// Dedicated connections per Redis for blocking reads (Events `Read` with `follow`, and
    /// `Consume`): each caught-up reader or consumer holds one while it waits for new entries;
    /// past this many, they poll instead.
    pub blocking_connections: u32,
    /// Multiplexed connections per Redis (requests are pipelined over each).
    pub connections: usize,
    /// Timeout of one connection attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of one command's response.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long start-up keeps retrying an unreachable Redis before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Start even if the coordination Redis may evict keys (locks and sessions could vanish).
    pub allow_eviction: bool,
    /// Find the coordination Redis through Redis Sentinel: it is then whichever master the
    /// sentinels name, followed across failovers, and `url` is not used.
    pub sentinel: Option<SentinelConfig>,
}

/// A coordination Redis run by Redis Sentinel (`[redis.sentinel]`): the server asks the
/// sentinels for the master, and follows it when they fail it over (see `redis::sentinel`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The sentinels, each `host:port` (Sentinel's default port is 26379). List all of them:
    /// any that answers will do, and the most recent configuration among the answers wins.
    pub addresses: Vec<String>,
    /// The user to authenticate as on the sentinels (ACL users, Redis 6.2 and later); unset,
    /// the default user.
    pub username: Option<String>,
    /// The sentinels' password (`requirepass` in sentinel.conf); unset, none.
    pub password: Option<String>,
    /// The user to authenticate as on the master (and on whichever replica replaces it).
    pub master_username: Option<String>,
    /// The master's password (what the sentinels know as `sentinel auth-pass`); unset, none.
    pub master_password: Option<String>,
    /// The database number on the master.
    pub db: i64,
    /// TLS to the sentinels and to the master, trusting `redis.tls_ca_file` (or the system's
    /// roots when it is unset).
    pub tls: bool,
}

/// Bounds on what one request may carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest key or name, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest gRPC message, in bytes (must leave room for the largest value).
    pub max_message_bytes: usize,
    /// Largest answer a call whose size depends on stored data (GetMany) may give, in bytes;
    /// checked before values are read. At least `max_value_bytes` + 1 KiB, at most
    /// `max_message_bytes` − 64 KiB, which is the default.
    pub max_response_bytes: Option<usize>,
    /// Most keys in one batch call (GetMany, SetMany, Delete).
    pub max_batch_keys: usize,
    /// Most concurrent HTTP/2 streams (calls) per client connection.
    pub max_concurrent_streams: u32,
}

/// Defaults and bounds of the Cache service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// TTL for writes that carry none; when unset, every write must give its TTL.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Option<Duration>,
    /// Longest TTL a write may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Default lifetime of a fill or refresh lease.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Default and upper bound of how long `Fetch` waits for another caller's fill.
    #[serde(with = "humantime_serde")]
    pub max_fetch_wait: Duration,
    /// How often near caches (`Cache.Track`) get a heartbeat confirmed through Redis. Their
    /// staleness bound must be longer; shorter costs one pub/sub message per replica and one
    /// stream message per near cache each time.
    #[serde(with = "humantime_serde")]
    pub near_heartbeat_interval: Duration,
    /// Changed keys queued for one near cache's stream before the queue is dropped and the
    /// client told of a gap (it then empties its cache).
    pub near_queue_keys: usize,
}

/// Defaults and bounds of the Lock service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockConfig {
    /// Lease TTL of requests that carry none.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest lease TTL a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Longest wait an `Acquire` or `Hold` may ask for (`Campaign` waits as long as its stream
    /// is open).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(3600),
        }
    }
}

/// A rate-limit algorithm, as named in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitAlgorithm {
    /// Generic cell rate algorithm (exact, one timestamp per key).
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

/// A named limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// How to count.
    #[serde(default)]
    pub algorithm: RateLimitAlgorithm,
    /// Requests per period.
    pub limit: u64,
    /// The period.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// GCRA and token bucket: how many may pass at once (0 or absent: `limit`).
    #[serde(default)]
    pub burst: u64,
    /// Decide and count, but always allow (to roll a new limit out safely).
    #[serde(default)]
    pub shadow: bool,
}

/// One level of an Envoy domain's descriptor tree, as envoy's own ratelimit service configures
/// it: an entry key, optionally a value, and a policy and/or nested descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyDescriptor {
    /// The descriptor entry's key.
    pub key: String,
    /// The entry's value; absent matches any value (each value is limited separately).
    #[serde(default)]
    pub value: Option<String>,
    /// The policy that limits requests whose descriptor ends here.
    #[serde(default)]
    pub policy: Option<String>,
    /// Deeper levels.
    #[serde(default)]
    pub descriptors: Vec<EnvoyDescriptor>,
}

/// The descriptors of one Envoy rate limit domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyDomain {
    /// The domain Envoy sends.
    pub domain: String,
    /// Its descriptor tree.
    #[serde(default)]
    pub descriptors: Vec<EnvoyDescriptor>,
}

/// Policies of the RateLimiter service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Named limits, used by `Check { policy }` and by Envoy descriptors.
    pub policies: std::collections::BTreeMap<String, RateLimitPolicy>,
    /// Envoy domains served by `envoy.service.ratelimit.v3.RateLimitService`.
    pub envoy: Vec<EnvoyDomain>,
    /// Remember, in each replica, keys that are over their limit, and deny single `Check`s of
    /// them without asking Redis until their `retry_after` has passed. Answers stay exact for
    /// GCRA, token bucket and windows (a denial consumes nothing, so the wait cannot shorten),
    /// except that a `Reset` made through another replica is noticed only then.
    pub local_over_limit_cache: bool,
}

/// Bounds of the Events service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Messages queued per subscriber before further ones are dropped (and reported as a gap).
    pub subscriber_buffer: usize,
    /// Messages a subscriber may miss in a row before it is cut with RESOURCE_EXHAUSTED.
    pub max_missed: u64,
    /// Channels plus patterns in one subscription.
    pub max_topics: usize,
    /// Entries a stream keeps when an append gives no `max_len` nor `max_age`.
    pub stream_max_len: u64,
    /// How long an idempotency key remembers its append.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Ack timeout of consumer groups created without one.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Longest ack timeout a group may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ack_timeout: Duration,
    /// Deliveries after which an entry moves to the dead-letter stream, for groups created
    /// without a limit (0: never).
    pub max_deliveries: u32,
    /// Largest `max_in_flight` a consumer may ask for.
    pub max_in_flight: u32,
    /// How long a stream lives after its last append (or group creation), with its dead
    /// letters and groups' settings; each append starts it again.
    #[serde(with = "humantime_serde")]
    pub stream_idle_ttl: Duration,
    /// Streams a namespace may have at once; an append (or group creation) that would create
    /// one more is refused with RESOURCE_EXHAUSTED.
    pub max_streams_per_namespace: u64,
    /// Consumer groups one stream may have; a CreateGroup past it is refused with
    /// RESOURCE_EXHAUSTED.
    pub max_groups_per_stream: u32,
    /// Consumers one group may have; a Consume with a new name past it is refused with
    /// RESOURCE_EXHAUSTED (returning consumers are always let in).
    pub max_consumers_per_group: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            subscriber_buffer: 1024,
            max_missed: 100_000,
            max_topics: 100,
            stream_max_len: 1_000_000,
            idempotency_window: Duration::from_secs(24 * 3600),
            ack_timeout: Duration::from_secs(30),
            max_ack_timeout: Duration::from_secs(12 * 3600),
            max_deliveries: 10,
            max_in_flight: 10_000,
            stream_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            max_streams_per_namespace: 10_000,
            max_groups_per_stream: 100,
            max_consumers_per_group: 1000,
        }
    }
}

/// What `Session.Create` does when a subject is at its cap on live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionLimitPolicy {
    /// End the subject's least recently used session.
    EvictOldest,
    /// Refuse the new session (RESOURCE_EXHAUSTED).
    Refuse,
}

/// Defaults and bounds of the Session service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Idle timeout of sessions created without one.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Absolute timeout of sessions created without one.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// Longest absolute timeout a session may ask for.
    #[serde(with = "humantime_serde")]
    pub max_absolute_timeout: Duration,
    /// Live sessions per subject (a call may ask for another cap); at most 1000.
    pub max_per_subject: u32,
    /// What happens at the cap.
    pub on_limit: SessionLimitPolicy,
    /// Attributes per session.
    pub max_attributes: u32,
    /// Longest grace period of a rotated ID.
    #[serde(with = "humantime_serde")]
    pub max_rotation_grace: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            max_absolute_timeout: Duration::from_secs(30 * 24 * 3600),
            max_per_subject: 100,
            on_limit: SessionLimitPolicy::EvictOldest,
            max_attributes: 64,
            max_rotation_grace: Duration::from_secs(5 * 60),
        }
    }
}

/// The tokio runtime.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per core. 1 runs tokio's single-threaded scheduler, which
    /// batches the socket writes of concurrent calls (one write per batch to Redis and to each
    /// client instead of one per call): on a machine shared with Redis it is the fastest
    /// setting (see BENCHMARKS.md).
    pub worker_threads: usize,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `rookery_server=debug,info`.
    pub level: String,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Traces (`[telemetry]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Export spans over OTLP/gRPC (`[telemetry.otlp]`); absent, nothing is exported (the
    /// default) and incoming trace context is not read.
    pub otlp: Option<OtlpConfig>,
}

/// Where and how spans are exported (`[telemetry.otlp]`, see `telemetry::otel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://otel-collector:4317` (plaintext).
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0. Parent-based: a call that carries a
    /// `traceparent` is recorded exactly when its caller's trace is (its sampled flag).
    pub sampling_ratio: f64,
    /// How long one export to the collector may take before it is abandoned (its spans are
    /// dropped, the server carries on).
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".to_owned(),
            service_name: "rookery".to_owned(),
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM/SIGINT, how long in-flight calls get to finish before the process exits.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// After SIGTERM/SIGINT, how long the server keeps accepting calls while health already
    /// says NOT_SERVING, so that load balancers and Kubernetes readiness stop sending traffic
    /// before the listener closes. Zero by default; add it to the pod's termination grace
    /// period.
    #[serde(with = "humantime_serde")]
    pub pre_drain_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // Loopback: a first run serves nobody but its own machine (auth is off by default).
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            redis: RedisConfig::default(),
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
            lock: LockConfig::default(),
            session: SessionConfig::default(),
            rate_limiter: RateLimiterConfig::default(),
            events: EventsConfig::default(),
            runtime: RuntimeConfig::default(),
            log: LogConfig::default(),
            shutdown: ShutdownConfig::default(),
            fair_share: crate::fair_share::FairShareConfig::default(),
            tls: None,
            auth: crate::auth::AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            cluster: false,
            tls_ca_file: None,
            cache_url: None,
            blocking_connections: 256,
            connections: 1,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            startup_timeout: Duration::from_secs(30),
            allow_eviction: false,
            sentinel: None,
        }
    }
}

/// Passwords are never printed.
impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |password: &Option<String>| password.as_ref().map(|_| "***");
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field("addresses", &self.addresses)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("master_username", &self.master_username)
            .field("master_password", &secret(&self.master_password))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SentinelConfig {
    /// Checks the section; the error names the field at fault.
    fn validate(&self, cluster: bool) -> Result<(), (&'static str, String)> {
        if cluster {
            return Err((
                "redis.sentinel",
                "a Redis Cluster fails over by itself; drop redis.cluster or redis.sentinel".into(),
            ));
        }
        if self.master_name.is_empty() || self.master_name.contains(char::is_whitespace) {
            return Err((
                "redis.sentinel.master_name",
                "give the name the sentinels monitor the master under (one word, as in `sentinel monitor <name> ...`)"
                    .into(),
            ));
        }
        if self.addresses.is_empty() {
            return Err(("redis.sentinel.addresses", "list the sentinels, each `host:port`".into()));
        }
        for address in &self.addresses {
            if crate::redis::sentinel::parse_address(address).is_none() {
                return Err((
                    "redis.sentinel.addresses",
                    format!("{address:?} is not `host:port` (e.g. \"sentinel-0.sentinel:26379\")"),
                ));
            }
        }
        if self.db < 0 {
            return Err(("redis.sentinel.db", "must be 0 or more".into()));
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// Checks a user-given name (key, lock, subject): 1 to `max_key_bytes` bytes. The error
    /// names `field`.
    pub fn check_name(&self, field: &str, name: &str) -> crate::error::Result<()> {
        if name.is_empty() {
            return Err(crate::error::Error::InvalidArgument(format!("{field} must not be empty")));
        }
        if name.len() > self.max_key_bytes {
            return Err(crate::error::Error::InvalidArgument(format!(
                "{field} is {} bytes; the limit is {} (limits.max_key_bytes)",
                name.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// The response budget: `max_response_bytes`, or what `max_message_bytes` leaves after
    /// 64 KiB of room for message framing.
    pub fn response_budget(&self) -> usize {
        self.max_response_bytes.unwrap_or(self.max_message_bytes.saturating_sub(64 * 1024))
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_value_bytes: 1024 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            max_response_bytes: None,
            max_batch_keys: 1000,
            max_concurrent_streams: 10_000,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_ttl: None,
            max_ttl: Duration::from_secs(365 * 24 * 3600),
            lease_ttl: Duration::from_secs(10),
            max_fetch_wait: Duration::from_secs(10),
            near_heartbeat_interval: Duration::from_millis(100),
            near_queue_keys: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".to_owned() }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_timeout: Duration::from_secs(10), pre_drain_delay: Duration::ZERO }
    }
}

/// Command-line flags; each also reads a `ROOKERY_*` environment variable. A flag given on the
/// command line beats the variable, which beats the config file.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "rookery-server", version, about = "Rookery gRPC coordination server")]
pub struct Cli {
    /// TOML config file.
    #[arg(long, env = "ROOKERY_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "ROOKERY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin (metrics) listen address.
    #[arg(long, env = "ROOKERY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Coordination Redis URL.
    #[arg(long, env = "ROOKERY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// The Redis URLs name a Redis Cluster (seed nodes, comma-separated).
    #[arg(long, env = "ROOKERY_REDIS_CLUSTER")]
    pub redis_cluster: Option<bool>,
    /// Separate Redis URL for the Cache service.
    #[arg(long, env = "ROOKERY_CACHE_REDIS_URL")]
    pub cache_redis_url: Option<String>,
    /// PEM file of CA certificates to trust for `rediss://` URLs.
    #[arg(long, env = "ROOKERY_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Multiplexed connections per Redis.
    #[arg(long, env = "ROOKERY_REDIS_CONNECTIONS")]
    pub redis_connections: Option<usize>,
    /// Redis connect timeout (e.g. `2s`).
    #[arg(long, env = "ROOKERY_REDIS_CONNECT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub redis_connect_timeout: Option<Duration>,
    /// Redis command timeout (e.g. `2s`).
    #[arg(long, env = "ROOKERY_REDIS_COMMAND_TIMEOUT", value_parser = humantime::parse_duration)]
    pub redis_command_timeout: Option<Duration>,
    /// How long start-up retries an unreachable Redis (e.g. `30s`).
    #[arg(long, env = "ROOKERY_REDIS_STARTUP_TIMEOUT", value_parser = humantime::parse_duration)]
    pub redis_startup_timeout: Option<Duration>,
    /// Start even if the coordination Redis may evict keys. Unsafe: locks and sessions can vanish.
    #[arg(long, env = "ROOKERY_ALLOW_EVICTION")]
    pub allow_eviction: Option<bool>,
    /// Find the coordination Redis through Redis Sentinel: the name its master is monitored under.
    #[arg(long, env = "ROOKERY_REDIS_SENTINEL_MASTER_NAME")]
    pub redis_sentinel_master_name: Option<String>,
    /// The sentinels, comma-separated `host:port`.
    #[arg(long, env = "ROOKERY_REDIS_SENTINEL_ADDRESSES", value_delimiter = ',')]
    pub redis_sentinel_addresses: Option<Vec<String>>,
    /// The sentinels' password.
    #[arg(long, env = "ROOKERY_REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,
    /// The password of the master the sentinels name.
    #[arg(long, env = "ROOKERY_REDIS_SENTINEL_MASTER_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_master_password: Option<String>,
    /// Longest key, in bytes.
    #[arg(long, env = "ROOKERY_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Largest value, in bytes.
    #[arg(long, env = "ROOKERY_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Largest gRPC message, in bytes.
    #[arg(long, env = "ROOKERY_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most keys in one batch call.
    #[arg(long, env = "ROOKERY_MAX_BATCH_KEYS")]
    pub max_batch_keys: Option<usize>,
    /// Most concurrent calls per client connection.
    #[arg(long, env = "ROOKERY_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Cache TTL for writes that give none (e.g. `5m`).
    #[arg(long, env = "ROOKERY_CACHE_DEFAULT_TTL", value_parser = humantime::parse_duration)]
    pub cache_default_ttl: Option<Duration>,
    /// Default cache lease TTL (e.g. `10s`).
    #[arg(long, env = "ROOKERY_CACHE_LEASE_TTL", value_parser = humantime::parse_duration)]
    pub cache_lease_ttl: Option<Duration>,
    /// Longest Fetch wait (e.g. `10s`).
    #[arg(long, env = "ROOKERY_CACHE_MAX_FETCH_WAIT", value_parser = humantime::parse_duration)]
    pub cache_max_fetch_wait: Option<Duration>,
    /// Runtime worker threads (0 = one per core).
    #[arg(long, env = "ROOKERY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Log format.
    #[arg(long, env = "ROOKERY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter (e.g. `info`).
    #[arg(long, env = "ROOKERY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Shutdown drain timeout (e.g. `10s`).
    #[arg(long, env = "ROOKERY_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Time to keep serving while NOT_SERVING before draining (e.g. `5s`).
    #[arg(long, env = "ROOKERY_PRE_DRAIN_DELAY", value_parser = humantime::parse_duration)]
    pub pre_drain_delay: Option<Duration>,
    /// With auth off, serve a listen address that is not loopback anyway (unauthenticated).
    #[arg(long, env = "ROOKERY_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: Option<bool>,
    /// Export spans to this OTLP/gRPC collector (e.g. `http://otel-collector:4317`).
    #[arg(long, env = "ROOKERY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans (default `rookery`).
    #[arg(long, env = "ROOKERY_OTLP_SERVICE_NAME")]
    pub otlp_service_name: Option<String>,
    /// Share of new traces exported, 0.0 to 1.0 (callers' sampling decisions are followed).
    #[arg(long, env = "ROOKERY_OTLP_SAMPLING_RATIO")]
    pub otlp_sampling_ratio: Option<f64>,
    /// Timeout of one export to the collector (e.g. `10s`).
    #[arg(long, env = "ROOKERY_OTLP_EXPORT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub otlp_export_timeout: Option<Duration>,
}

impl Config {
    /// Parses a TOML document into a config (fields it does not set keep their defaults).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Builds the effective config: defaults, then the file named by `cli.config`, then the
    /// flags and environment variables in `cli`; then validates it.
    pub fn load(cli: Cli) -> Result<Self, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(cli);
        config.validate()?;
        Ok(config)
    }

    /// Overlays every value given in `cli`.
    fn apply(&mut self, cli: Cli) {
        fn set<T>(target: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *target = v;
            }
        }
        let Cli {
            config: _,
            listen,
            admin_listen,
            redis_url,
            redis_cluster,
            cache_redis_url,
            redis_tls_ca_file,
            redis_connections,
            redis_connect_timeout,
            redis_command_timeout,
            redis_startup_timeout,
            allow_eviction,
            redis_sentinel_master_name,
            redis_sentinel_addresses,
            redis_sentinel_password,
            redis_sentinel_master_password,
            max_key_bytes,
            max_value_bytes,
            max_message_bytes,
            max_batch_keys,
            max_concurrent_streams,
            cache_default_ttl,
            cache_lease_ttl,
            cache_max_fetch_wait,
            worker_threads,
            log_format,
            log_level,
            drain_timeout,
            pre_drain_delay,
            allow_unauthenticated,
            otlp_endpoint,
            otlp_service_name,
            otlp_sampling_ratio,
            otlp_export_timeout,
        } = cli;
        set(&mut self.listen, listen);
        set(&mut self.admin_listen, admin_listen);
        set(&mut self.redis.url, redis_url);
        set(&mut self.redis.cluster, redis_cluster);
        if cache_redis_url.is_some() {
            self.redis.cache_url = cache_redis_url;
        }
        if redis_tls_ca_file.is_some() {
            self.redis.tls_ca_file = redis_tls_ca_file;
        }
        set(&mut self.redis.connections, redis_connections);
        set(&mut self.redis.connect_timeout, redis_connect_timeout);
        set(&mut self.redis.command_timeout, redis_command_timeout);
        set(&mut self.redis.startup_timeout, redis_startup_timeout);
        set(&mut self.redis.allow_eviction, allow_eviction);
        // Any Sentinel setting given this way turns Sentinel on (validation then asks for what
        // is missing); passwords come this way so that they can live in a Secret.
        if redis_sentinel_master_name.is_some()
            || redis_sentinel_addresses.is_some()
            || redis_sentinel_password.is_some()
            || redis_sentinel_master_password.is_some()
        {
            let sentinel = self.redis.sentinel.get_or_insert_with(SentinelConfig::default);
            set(&mut sentinel.master_name, redis_sentinel_master_name);
            set(&mut sentinel.addresses, redis_sentinel_addresses);
            if redis_sentinel_password.is_some() {
                sentinel.password = redis_sentinel_password;
            }
            if redis_sentinel_master_password.is_some() {
                sentinel.master_password = redis_sentinel_master_password;
            }
        }
        set(&mut self.limits.max_key_bytes, max_key_bytes);
        set(&mut self.limits.max_value_bytes, max_value_bytes);
        set(&mut self.limits.max_message_bytes, max_message_bytes);
        set(&mut self.limits.max_batch_keys, max_batch_keys);
        set(&mut self.limits.max_concurrent_streams, max_concurrent_streams);
        if cache_default_ttl.is_some() {
            self.cache.default_ttl = cache_default_ttl;
        }
        set(&mut self.cache.lease_ttl, cache_lease_ttl);
        set(&mut self.cache.max_fetch_wait, cache_max_fetch_wait);
        set(&mut self.runtime.worker_threads, worker_threads);
        set(&mut self.log.format, log_format);
        set(&mut self.log.level, log_level);
        set(&mut self.shutdown.drain_timeout, drain_timeout);
        set(&mut self.shutdown.pre_drain_delay, pre_drain_delay);
        set(&mut self.auth.allow_unauthenticated, allow_unauthenticated);
        // Any OTLP setting given this way turns export on, as a `[telemetry.otlp]` section does.
        if otlp_endpoint.is_some()
            || otlp_service_name.is_some()
            || otlp_sampling_ratio.is_some()
            || otlp_export_timeout.is_some()
        {
            let otlp = self.telemetry.otlp.get_or_insert_with(OtlpConfig::default);
            set(&mut otlp.endpoint, otlp_endpoint);
            set(&mut otlp.service_name, otlp_service_name);
            set(&mut otlp.sampling_ratio, otlp_sampling_ratio);
            set(&mut otlp.export_timeout, otlp_export_timeout);
        }
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid { field, message: message.into() }
        }
        fn positive(field: &'static str, value: Duration) -> Result<(), ConfigError> {
            if value < Duration::from_millis(1) {
                return Err(invalid(field, "must be at least 1ms"));
            }
            Ok(())
        }
        if self.listen.port() != 0 && self.listen == self.admin_listen {
            return Err(invalid("admin_listen", "must differ from listen"));
        }
        let client_certificates = self.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
        self.auth.validate(client_certificates).map_err(|(field, message)| invalid(field, message))?;
        if !self.auth.enabled && !self.auth.allow_unauthenticated && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "auth.enabled",
                format!(
                    "auth is off and listen = {} is not a loopback address: anyone who reaches the port \
                     could act in any namespace. Turn auth on ([auth] enabled = true with tokens, a JWKS or \
                     client certificates, and grants), or set auth.allow_unauthenticated = true to serve \
                     unauthenticated callers on purpose",
                    self.listen
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.require_client_cert && tls.client_ca_file.is_none() {
                return Err(invalid("tls.require_client_cert", "needs tls.client_ca_file"));
            }
            positive("tls.reload_interval", tls.reload_interval)?;
            positive("tls.handshake_timeout", tls.handshake_timeout)?;
        }
        for (field, url) in
            [("redis.url", Some(&self.redis.url)), ("redis.cache_url", self.redis.cache_url.as_ref())]
        {
            if let Some(url) = url {
                let seeds = crate::redis::seed_urls(url);
                if seeds.is_empty() || (seeds.len() > 1 && !self.redis.cluster) {
                    return Err(invalid(
                        field,
                        "give one URL (several, comma-separated, only with redis.cluster = true)",
                    ));
                }
                for seed in seeds {
                    redis::parse_redis_url(seed)
                        .ok_or_else(|| invalid(field, format!("{seed:?} is not a redis:// URL")))?;
                }
            }
        }
        if let Some(path) = &self.redis.tls_ca_file
            && let Err(e) = std::fs::read(path)
        {
            return Err(invalid("redis.tls_ca_file", format!("cannot read {}: {e}", path.display())));
        }
        if let Some(sentinel) = &self.redis.sentinel {
            sentinel.validate(self.redis.cluster).map_err(|(field, message)| invalid(field, message))?;
        }
        if self.redis.blocking_connections == 0 || self.redis.blocking_connections > 10_000 {
            return Err(invalid("redis.blocking_connections", "must be between 1 and 10000"));
        }
        if self.redis.connections == 0 || self.redis.connections > 64 {
            return Err(invalid("redis.connections", "must be between 1 and 64"));
        }
        positive("redis.connect_timeout", self.redis.connect_timeout)?;
        positive("redis.command_timeout", self.redis.command_timeout)?;
        if self.limits.max_key_bytes == 0 || self.limits.max_key_bytes > 64 * 1024 {
            return Err(invalid("limits.max_key_bytes", "must be between 1 and 65536"));
        }
        if self.limits.max_value_bytes == 0 || self.limits.max_value_bytes > 512 * 1024 * 1024 {
            return Err(invalid(
                "limits.max_value_bytes",
                "must be between 1 and 536870912 (Redis's own limit)",
            ));
        }
        if self.limits.max_message_bytes < self.limits.max_value_bytes + 64 * 1024 {
            return Err(invalid(
                "limits.max_message_bytes",
                format!(
                    "must exceed limits.max_value_bytes ({}) by at least 65536 bytes of headroom",
                    self.limits.max_value_bytes
                ),
            ));
        }
        let budget = self.limits.response_budget();
        if budget < self.limits.max_value_bytes + 1024 || budget + 64 * 1024 > self.limits.max_message_bytes {
            return Err(invalid(
                "limits.max_response_bytes",
                format!(
                    "must be at least limits.max_value_bytes + 1024 ({}) and at most limits.max_message_bytes - \
                     65536 ({})",
                    self.limits.max_value_bytes + 1024,
                    self.limits.max_message_bytes.saturating_sub(64 * 1024)
                ),
            ));
        }
        if self.limits.max_batch_keys == 0 || self.limits.max_batch_keys > 10_000 {
            return Err(invalid("limits.max_batch_keys", "must be between 1 and 10000"));
        }
        if self.limits.max_concurrent_streams == 0 {
            return Err(invalid("limits.max_concurrent_streams", "must be at least 1"));
        }
        if let Some(ttl) = self.cache.default_ttl {
            positive("cache.default_ttl", ttl)?;
            if ttl > self.cache.max_ttl {
                return Err(invalid("cache.default_ttl", "must not exceed cache.max_ttl"));
            }
        }
        positive("cache.max_ttl", self.cache.max_ttl)?;
        positive("cache.lease_ttl", self.cache.lease_ttl)?;
        positive("cache.max_fetch_wait", self.cache.max_fetch_wait)?;
        if self.cache.near_heartbeat_interval < Duration::from_millis(10) {
            return Err(invalid("cache.near_heartbeat_interval", "must be at least 10ms"));
        }
        if self.cache.near_queue_keys == 0 {
            return Err(invalid("cache.near_queue_keys", "must be at least 1"));
        }
        positive("lock.default_ttl", self.lock.default_ttl)?;
        if self.lock.default_ttl > self.lock.max_ttl {
            return Err(invalid("lock.default_ttl", "must not exceed lock.max_ttl"));
        }
        positive("lock.max_wait", self.lock.max_wait)?;
        positive("session.idle_timeout", self.session.idle_timeout)?;
        if self.session.absolute_timeout < self.session.idle_timeout {
            return Err(invalid("session.absolute_timeout", "must be at least session.idle_timeout"));
        }
        if self.session.absolute_timeout > self.session.max_absolute_timeout {
            return Err(invalid("session.absolute_timeout", "must not exceed session.max_absolute_timeout"));
        }
        if self.session.max_per_subject == 0 || self.session.max_per_subject > 1000 {
            return Err(invalid("session.max_per_subject", "must be between 1 and 1000"));
        }
        for policy in self.rate_limiter.policies.values() {
            crate::rate_limiter::Limit::from_policy(policy)
                .map_err(|e| invalid("rate_limiter.policies", e.to_string()))?;
        }
        for domain in &self.rate_limiter.envoy {
            crate::rate_limiter::envoy::check_domain(domain, &self.rate_limiter.policies)
                .map_err(|message| invalid("rate_limiter.envoy", message))?;
        }
        if self.events.subscriber_buffer == 0 || self.events.subscriber_buffer > 1_000_000 {
            return Err(invalid("events.subscriber_buffer", "must be between 1 and 1000000"));
        }
        if self.events.max_missed == 0 {
            return Err(invalid("events.max_missed", "must be at least 1"));
        }
        if self.events.stream_max_len == 0 {
            return Err(invalid("events.stream_max_len", "must be at least 1"));
        }
        positive("events.idempotency_window", self.events.idempotency_window)?;
        if self.events.max_topics == 0 || self.events.max_topics > 10_000 {
            return Err(invalid("events.max_topics", "must be between 1 and 10000"));
        }
        positive("events.ack_timeout", self.events.ack_timeout)?;
        if self.events.ack_timeout > self.events.max_ack_timeout {
            return Err(invalid("events.ack_timeout", "must not exceed events.max_ack_timeout"));
        }
        // At most what one Ack may name, so a consumer can always ack everything it holds at once.
        if self.events.max_in_flight == 0 || self.events.max_in_flight > 10_000 {
            return Err(invalid("events.max_in_flight", "must be between 1 and 10000"));
        }
        if self.events.stream_idle_ttl < Duration::from_secs(1) {
            return Err(invalid("events.stream_idle_ttl", "must be at least 1s"));
        }
        // A marker outliving its stream would answer a retry with the ID of a deleted entry.
        if self.events.idempotency_window > self.events.stream_idle_ttl {
            return Err(invalid("events.idempotency_window", "must not exceed events.stream_idle_ttl"));
        }
        if self.events.max_streams_per_namespace == 0 {
            return Err(invalid("events.max_streams_per_namespace", "must be at least 1"));
        }
        if self.events.max_groups_per_stream == 0 || self.events.max_groups_per_stream > 10_000 {
            return Err(invalid("events.max_groups_per_stream", "must be between 1 and 10000"));
        }
        if self.events.max_consumers_per_group == 0 || self.events.max_consumers_per_group > 100_000 {
            return Err(invalid("events.max_consumers_per_group", "must be between 1 and 100000"));
        }
        if self.session.max_attributes == 0 || self.session.max_attributes > 1000 {
            return Err(invalid("session.max_attributes", "must be between 1 and 1000"));
        }
        if self.runtime.worker_threads > 1024 {
            return Err(invalid("runtime.worker_threads", "must be between 0 (one per core) and 1024"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?} is not a valid filter: {e}", self.log.level)))?;
        positive("shutdown.drain_timeout", self.shutdown.drain_timeout)?;
        if let Some(otlp) = &self.telemetry.otlp {
            if !otlp.endpoint.starts_with("http://") {
                return Err(invalid(
                    "telemetry.otlp.endpoint",
                    format!("{:?} must be an http:// URL of an OTLP/gRPC collector", otlp.endpoint),
                ));
            }
            if otlp.service_name.trim().is_empty() {
                return Err(invalid("telemetry.otlp.service_name", "must not be empty"));
            }
            if !(0.0..=1.0).contains(&otlp.sampling_ratio) {
                return Err(invalid("telemetry.otlp.sampling_ratio", "must be between 0.0 and 1.0"));
            }
            positive("telemetry.otlp.export_timeout", otlp.export_timeout)?;
        }
        self.fair_share.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::from_toml(text, Path::new("test.toml"))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_sets_nested_fields_and_durations() {
        let config = parse(
            r#"
            listen = "127.0.0.1:7000"
            [redis]
            url = "redis://10.0.0.1:6380/2"
            command_timeout = "250ms"
            [cache]
            default_ttl = "5m"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.redis.url, "redis://10.0.0.1:6380/2");
        assert_eq!(config.redis.command_timeout, Duration::from_millis(250));
        assert_eq!(config.cache.default_ttl, Some(Duration::from_secs(300)));
        assert_eq!(config.redis.connections, 1, "unset fields keep defaults");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse("[redis]\nurll = \"redis://x\"\n").unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("[redis]\nconnections = 0", "redis.connections"),
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[redis]\nurl = \"redis://a:1,redis://b:2\"", "redis.url"),
            ("[limits]\nmax_value_bytes = 4194304", "limits.max_message_bytes"),
            ("[cache]\nlease_ttl = \"0s\"", "cache.lease_ttl"),
            ("[log]\nlevel = \"=&=\"", "log.level"),
            ("[events]\nmax_streams_per_namespace = 0", "events.max_streams_per_namespace"),
            ("[events]\nstream_idle_ttl = \"1h\"", "events.idempotency_window"),
            ("[events]\nstream_idle_ttl = \"10ms\"", "events.stream_idle_ttl"),
            ("[events]\nmax_groups_per_stream = 0", "events.max_groups_per_stream"),
            ("[telemetry.otlp]\nendpoint = \"otel:4317\"", "telemetry.otlp.endpoint"),
            ("[telemetry.otlp]\nsampling_ratio = 1.5", "telemetry.otlp.sampling_ratio"),
            ("[telemetry.otlp]\nservice_name = \"\"", "telemetry.otlp.service_name"),
            ("[telemetry.otlp]\nexport_timeout = \"0s\"", "telemetry.otlp.export_timeout"),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?} gave {err:?}, expected it to name {field}");
        }
        let err = parse("[cache]\nlease_ttl = \"ten seconds\"").unwrap_err().to_string();
        assert!(err.contains("lease_ttl"), "{err}");
    }

    #[test]
    fn sentinel_section_parses_and_is_checked() {
        let config = parse(
            r#"
            [redis.sentinel]
            master_name = "coordination"
            addresses = ["10.0.0.1:26379", "sentinel-1.sentinel:26379", "[::1]:26380"]
            master_password = "s3cret"
            "#,
        )
        .unwrap();
        let sentinel = config.redis.sentinel.as_ref().unwrap();
        assert_eq!(sentinel.master_name, "coordination");
        assert_eq!(sentinel.addresses.len(), 3);
        assert!(!format!("{config:?}").contains("s3cret"), "passwords are not printed");
        let cases = [
            ("[redis.sentinel]\naddresses = [\"a:1\"]", "redis.sentinel.master_name"),
            ("[redis.sentinel]\nmaster_name = \"m\"", "redis.sentinel.addresses"),
            ("[redis.sentinel]\nmaster_name = \"m\"\naddresses = [\"a\"]", "redis.sentinel.addresses"),
            ("[redis.sentinel]\nmaster_name = \"m\"\naddresses = [\"a:x\"]", "redis.sentinel.addresses"),
            ("[redis.sentinel]\nmaster_name = \"m\"\naddresses = [\"a:1\"]\ndb = -1", "redis.sentinel.db"),
            (
                "[redis]\ncluster = true\n[redis.sentinel]\nmaster_name = \"m\"\naddresses = [\"a:1\"]",
                "redis.sentinel",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?} gave {err:?}, expected it to name {field}");
        }
    }

    #[test]
    fn otlp_is_off_by_default_and_on_with_a_section_or_a_flag() {
        assert_eq!(Config::default().telemetry.otlp, None);
        let config = parse("[telemetry.otlp]\nendpoint = \"http://collector:4317\"").unwrap();
        let otlp = config.telemetry.otlp.unwrap();
        assert_eq!(otlp.endpoint, "http://collector:4317");
        assert_eq!(otlp.service_name, "rookery");
        assert_eq!(otlp.sampling_ratio, 1.0);
        let cli = Cli::try_parse_from(["rookery-server", "--otlp-sampling-ratio", "0.25"]).unwrap();
        let mut config = Config::default();
        config.apply(cli);
        config.validate().unwrap();
        let otlp = config.telemetry.otlp.unwrap();
        assert_eq!((otlp.endpoint.as_str(), otlp.sampling_ratio), ("http://127.0.0.1:4317", 0.25));
    }

    #[test]
    fn sentinel_flags_turn_sentinel_on_and_keep_file_values() {
        let cli = Cli::try_parse_from([
            "rookery-server",
            "--redis-sentinel-master-name",
            "m",
            "--redis-sentinel-addresses",
            "s0:26379,s1:26379",
            "--redis-sentinel-master-password",
            "pw",
        ])
        .unwrap();
        let mut config = Config::default();
        config.apply(cli);
        config.validate().unwrap();
        let sentinel = config.redis.sentinel.unwrap();
        assert_eq!(sentinel.addresses, ["s0:26379", "s1:26379"]);
        assert_eq!(sentinel.master_password.as_deref(), Some("pw"));
        assert_eq!(sentinel.password, None);
    }

    #[test]
    fn flags_beat_file_and_unset_flags_keep_file_values() {
        let dir = std::env::temp_dir().join(format!("rookery-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rookery.toml");
        std::fs::write(&path, "[redis]\nurl = \"redis://file:1\"\nconnections = 3\n").unwrap();
        let cli = Cli::try_parse_from([
            "rookery-server",
            "--config",
            path.to_str().unwrap(),
            "--redis-url",
            "redis://flag:2",
        ])
        .unwrap();
        let config = Config::load(cli).unwrap();
        assert_eq!(config.redis.url, "redis://flag:2");
        assert_eq!(config.redis.connections, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
