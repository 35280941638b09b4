//! `rookery bench`: load generator for the server through the real client, with Redis itself
//! (`redis-benchmark`) as the reference, measured in the same invocation on the same machine.
//!
//! Absolute numbers on small shared machines are noise; the ratio to redis-benchmark at the
//! same concurrency and value size is the figure that means something. With the `peers`
//! feature, [`peers`] runs the same scenarios against NATS and etcd, the services a user would
//! pick instead, for Rookery/peer ratios.

pub mod events;
#[cfg(feature = "peers")]
pub mod peers;

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::Rng;
use tokio::time::Instant;

use crate::{AppendOptions, Client, LockClient, LockOptions, SessionOptions, SetOptions};

/// The Lock scripts' shared helpers and the two scripts the lock scenario's redis-benchmark
/// reference runs, composed as the server composes them ([`compose`]).
const LOCK_LIB: &str = include_str!("../../../server/src/lock/lib.lua");
const LOCK_ACQUIRE: &str = include_str!("../../../server/src/lock/acquire.lua");
const LOCK_RELEASE: &str = include_str!("../../../server/src/lock/release.lua");
const RATE_LIMIT_SCRIPT: &str = include_str!("../../../server/src/rate_limiter/check.lua");
/// The benchmark's limit: generous, so that most checks are admissions (the writing path).
const BENCH_RATE_LIMIT: u64 = 1000;
const SESSION_GET_SCRIPT: &str = include_str!("../../../server/src/session/get.lua");
/// Attributes of a benchmark session: 8 names of 5–6 bytes with 16-byte values.
const SESSION_ATTRIBUTES: usize = 8;
/// About how many entries the append scenario's stream keeps (its peers' streams the same).
pub const APPEND_MAX_LEN: u64 = 100_000;
/// Entries per call of the `AppendMany` scenario.
pub const APPEND_BATCH: usize = 100;

/// A script with its shared helpers, as the server composes it: the body's flags line
/// (`#!lua …`) first, since Redis reads flags only from a script's first line, then the
/// helpers, then the rest of the body.
fn compose(lib: &str, body: &str) -> String {
    match body.strip_prefix("#!").and_then(|rest| rest.split_once('\n')) {
        Some((flags, rest)) => format!("#!{flags}\n{lib}{rest}"),
        None => format!("{lib}{body}"),
    }
}

/// The operation a benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// `Cache.Get` of existing keys (compared with redis-benchmark GET).
    Get,
    /// `Cache.Set` (compared with redis-benchmark SET).
    Set,
    /// `Cache.Get` of `--keys` keys drawn from a Zipf(1.0) distribution, with 1 % of operations
    /// a `Cache.Set` of such a key; no near cache (compared with redis-benchmark GET, whose
    /// keys are uniform: it has no Zipf mode).
    ZipfGet,
    /// The `zipf-get` workload through a near cache (`CacheClient::near`), one per connection.
    NearGet,
    /// `Lock.Acquire` + `Lock.Release` pairs on distinct, uncontended names (compared with
    /// redis-benchmark running the same two scripts with EVALSHA).
    Lock,
    /// `Lock.Acquire` (waiting) + `Lock.Release` pairs, every worker on one name.
    LockContended,
    /// `RateLimiter.Check` of a GCRA limit on random keys (compared with redis-benchmark running
    /// the server's own check script with EVALSHA on random keys).
    RateLimit,
    /// `Session.Get` with touch of 8-attribute sessions (compared with redis-benchmark running
    /// the server's own get script with EVALSHA).
    SessionGet,
    /// `Events.Publish` to a channel (compared with redis-benchmark PUBLISH).
    Publish,
    /// `Events.Append` of one 1-field entry to a durable stream kept to about 100,000 entries
    /// (compared with redis-benchmark XADD MAXLEN ~).
    Append,
    /// `Events.Append` of one 1-field entry, as `Append`, but every worker's appends go over one
    /// `AppendStream` call per connection (`EventsClient::appender`) instead of a call each.
    AppendStream,
    /// `Events.AppendMany` of [`APPEND_BATCH`] 1-field entries in one call to the same stream
    /// (compared with a pipeline of as many XADD MAXLEN ~); one operation is one call.
    AppendMany,
    /// Stream entries (`--keys` of them) delivered to one consumer of a group that acks each
    /// batch (compared with a raw XREADGROUP COUNT 100 + XACK loop).
    Consume,
    /// Messages delivered per second to 10 subscribers of one channel, at most `--concurrency`
    /// messages in flight (published and not yet received by every subscriber); compared with
    /// 10 raw Redis subscribers and PUBLISH under the same bound.
    Fanout,
    /// `fanout` with every publish over one `PublishStream` call (`EventsClient::publisher`).
    FanoutStream,
    /// Server memory per idle subscription (`--keys` of them over `--connections`), from the
    /// server's `process_resident_memory_bytes` at `--admin-url`.
    IdleSubscribers,
}

impl BenchOp {
    /// What one operation is, for reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::Get => "Cache.Get",
            Self::Set => "Cache.Set",
            Self::ZipfGet => "Cache.Get, Zipf(1.0), 1 % Set",
            Self::NearGet => "near cache Get, Zipf(1.0), 1 % Set",
            Self::Lock => "Lock.Acquire+Release",
            Self::LockContended => "Lock.Acquire+Release (one contended name)",
            Self::SessionGet => "Session.Get (touch)",
            Self::RateLimit => "RateLimiter.Check (GCRA)",
            Self::Publish => "Events.Publish",
            Self::Append => "Events.Append",
            Self::AppendStream => "Events.AppendStream (one call per connection)",
            Self::AppendMany => "Events.AppendMany (100 entries per call)",
            Self::Consume => "Events.Consume entries (one consumer, each batch acked without waiting)",
            Self::Fanout => "Events.Subscribe messages (10 subscribers)",
            Self::FanoutStream => "Events.Subscribe messages (10 subscribers), PublishStream",
            Self::IdleSubscribers => "Events.Subscribe idle subscription",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Server URL.
    pub url: String,
    /// Namespace the benchmark's keys live in.
    pub namespace: String,
    /// TLS settings and bearer token of every connection.
    pub options: crate::ConnectOptions,
    /// Operation.
    pub op: BenchOp,
    /// Requests in flight.
    pub concurrency: usize,
    /// How long to measure (after warm-up).
    pub duration: Duration,
    /// Distinct keys, chosen uniformly at random.
    pub keys: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// HTTP/2 connections the requests are spread over.
    pub connections: usize,
}

/// Throughput and latency of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Successful operations measured.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// 99.9th percentile latency.
    pub p999: Duration,
    /// Messages subscribers were told they missed (fan-out only).
    pub missed: u64,
}

/// Errors of a benchmark run.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The name of benchmark key `i`, for Rookery and its peers alike.
pub(crate) fn key_name(i: usize) -> String {
    format!("bench:{i}")
}

/// Runs the benchmark against a Rookery server.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    match config.op {
        BenchOp::Consume => return events::consume(config).await,
        BenchOp::Fanout => return events::fanout(config, false).await,
        BenchOp::FanoutStream => return events::fanout(config, true).await,
        BenchOp::IdleSubscribers => {
            return Err("idle-subscribers measures memory: see events::idle_subscriber_bytes".into());
        }
        _ => {}
    }
    let mut clients = Vec::with_capacity(config.connections.max(1));
    for _ in 0..config.connections.max(1) {
        clients.push(
            Client::connect_with(config.url.clone(), &config.options)
                .await?
                .with_namespace(&config.namespace)?,
        );
    }
    let value = vec![b'x'; config.value_size];
    let ttl = Duration::from_secs(600);
    if matches!(config.op, BenchOp::Get | BenchOp::ZipfGet | BenchOp::NearGet) {
        // Prefill, so that Get measures hits; batches stay well under the server's default
        // 4 MiB message limit whatever the value size.
        let batch = (1024 * 1024 / config.value_size.max(1)).clamp(1, 500);
        for chunk in (0..config.keys).collect::<Vec<_>>().chunks(batch) {
            clients[0]
                .cache()
                .set_many(
                    chunk.iter().map(|&i| (key_name(i), value.clone())),
                    SetOptions { ttl: Some(ttl), ..SetOptions::default() },
                )
                .await?;
        }
    }
    let session_ids: Arc<Vec<String>> = Arc::new(if config.op == BenchOp::SessionGet {
        let sessions = clients[0].session();
        let mut ids = Vec::with_capacity(config.keys);
        for i in 0..config.keys {
            let attributes = (0..SESSION_ATTRIBUTES).map(|a| (format!("attr{a}"), vec![b'v'; 16])).collect();
            ids.push(
                sessions.create(format!("bench-user-{i}"), attributes, &SessionOptions::default()).await?.id,
            );
        }
        ids
    } else {
        Vec::new()
    });
    let stream: Arc<str> = events::unique("bench-append").into();
    let near: Vec<Option<crate::NearCache>> = clients
        .iter()
        .map(|client| {
            (config.op == BenchOp::NearGet).then(|| client.cache().near(crate::NearOptions::default()))
        })
        .collect();
    let zipf = ZipfDraws::new(config)?;
    // Measure the steady state: every key read twice through each near cache before the clock
    // starts (the first read of a bucket asks for its tracking; the second is kept).
    for near in near.iter().flatten() {
        for _pass in 0..2 {
            for chunk in zipf.names.chunks(500) {
                near.get_many(chunk).await?;
            }
        }
    }
    let mut appenders = Vec::with_capacity(clients.len());
    for client in &clients {
        appenders.push(match config.op {
            BenchOp::AppendStream => Some(client.events().appender().await?),
            _ => None,
        });
    }
    let workers = (0..config.concurrency)
        .map(|worker| {
            let client = &clients[worker % clients.len()];
            RookeryWorker {
                near: near[worker % clients.len()].clone(),
                appender: appenders[worker % clients.len()].clone(),
                zipf: zipf.walker(worker, config.concurrency),
                op: config.op,
                worker,
                keys: config.keys,
                cache: client.cache(),
                lock: client.lock(),
                session: client.session(),
                limiter: client.rate_limiter(),
                events: client.events(),
                rate_limit: crate::RateLimit::per(BENCH_RATE_LIMIT, Duration::from_secs(1)),
                session_ids: session_ids.clone(),
                value: value.clone(),
                ttl,
                stream: stream.clone(),
            }
        })
        .collect();
    closed_loop(config.duration, workers).await
}

/// One worker of a closed-loop benchmark: one operation per call, the next as soon as the last
/// returned.
pub trait Step: Send + 'static {
    /// Does one operation; `true` if it succeeded.
    fn step(&mut self) -> impl Future<Output = bool> + Send;
}

/// Runs every worker's [`Step`] in a loop (each on its own task) for a warm-up (500 ms, or a
/// quarter of `duration` if less), then for `duration`, and reports the operations that started
/// in the measured window: their count, rate and latency. Failed operations count as errors.
pub async fn closed_loop<S: Step>(duration: Duration, workers: Vec<S>) -> Result<BenchReport, BenchError> {
    let warmup = Duration::from_millis(500).min(duration / 4);
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors = 0u64;
            // One clock read per operation: the end of one is the start of the next (a clock
            // read costs about a tenth of a near-cache hit).
            let mut sent = Instant::now();
            while sent < end {
                let ok = worker.step().await;
                let done = Instant::now();
                if sent >= start {
                    if ok {
                        let micros = u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX);
                        histogram.saturating_record(micros.max(1));
                    } else {
                        errors += 1;
                    }
                }
                sent = done;
            }
            (histogram, errors)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        histogram.add(h)?;
        errors += e;
    }
    let micros = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
    Ok(BenchReport {
        ops: histogram.len(),
        errors,
        ops_per_sec: histogram.len() as f64 / duration.as_secs_f64(),
        p50: micros(0.5),
        p99: micros(0.99),
        p999: micros(0.999),
        missed: 0,
    })
}

/// Operations drawn before the clock starts, for the Zipf workloads: keys by Zipf(1.0) rank,
/// 1 % of them writes. Drawing a rank (a `powf` and an `exp` or two) and formatting its key cost
/// the load generator about as much as a near-cache hit, so they are not paid inside the
/// measured loop.
struct ZipfDraws {
    names: Arc<[String]>,
    /// Key indexes into `names`; the top bit marks a write.
    draws: Arc<[u32]>,
}

/// The top bit of a draw: the operation is a write.
const WRITE_DRAW: u32 = 1 << 31;

/// Operations drawn per run: enough that no worker's walk repeats within a few seconds at the
/// rates this machine reaches.
const ZIPF_DRAWS: usize = 1 << 22;

impl ZipfDraws {
    fn new(config: &BenchConfig) -> Result<Self, BenchError> {
        if !matches!(config.op, BenchOp::ZipfGet | BenchOp::NearGet) {
            return Ok(Self { names: Arc::from([]), draws: Arc::from([]) });
        }
        let keys = u32::try_from(config.keys.max(1))
            .ok()
            .filter(|&keys| keys < WRITE_DRAW)
            .ok_or("--keys must be below 2^31 for the Zipf workloads")?;
        let zipf = rand_distr::Zipf::new(f64::from(keys), 1.0)?;
        let mut rng = rand::rng();
        let draws = (0..ZIPF_DRAWS)
            .map(|_| {
                // Ranks start at 1.
                let index = rng.sample(zipf) as u32 - 1;
                if rng.random_ratio(1, 100) { index | WRITE_DRAW } else { index }
            })
            .collect();
        Ok(Self { names: (0..keys as usize).map(key_name).collect(), draws })
    }

    /// The walk through the draws of worker `worker` of `workers`: the workers start evenly
    /// spread over them.
    fn walker(&self, worker: usize, workers: usize) -> ZipfWalker {
        let start = worker * self.draws.len() / workers.max(1);
        ZipfWalker { names: self.names.clone(), draws: self.draws.clone(), next: start }
    }
}

/// One worker's walk through [`ZipfDraws`].
struct ZipfWalker {
    names: Arc<[String]>,
    draws: Arc<[u32]>,
    next: usize,
}

impl ZipfWalker {
    /// The next operation's key, and whether it is a write.
    fn next(&mut self) -> (&str, bool) {
        let draw = self.draws[self.next];
        self.next = (self.next + 1) % self.draws.len();
        (&self.names[(draw & !WRITE_DRAW) as usize], draw & WRITE_DRAW != 0)
    }
}

/// A worker of the request-after-request scenarios against Rookery.
struct RookeryWorker {
    op: BenchOp,
    worker: usize,
    keys: usize,
    cache: crate::CacheClient,
    near: Option<crate::NearCache>,
    appender: Option<crate::Appender>,
    zipf: ZipfWalker,
    lock: LockClient,
    session: crate::SessionClient,
    limiter: crate::RateLimiterClient,
    events: crate::EventsClient,
    rate_limit: crate::RateLimit,
    session_ids: Arc<Vec<String>>,
    value: Vec<u8>,
    ttl: Duration,
    stream: Arc<str>,
}

impl RookeryWorker {
    /// One operation of the Zipf workload: 99 % reads, 1 % writes, of Zipf(1.0)-drawn keys.
    async fn zipf_step(&mut self) -> Result<bool, tonic::Status> {
        let (key, write) = self.zipf.next();
        let options = SetOptions { ttl: Some(self.ttl), ..SetOptions::default() };
        match (&self.near, write) {
            (Some(near), true) => near.set(key, self.value.clone(), options).await,
            (Some(near), false) => near.get(key).await.map(|found| found.is_some()),
            (None, true) => self.cache.set_with(key, self.value.clone(), options).await,
            (None, false) => self.cache.get(key).await.map(|found| found.is_some()),
        }
    }
}

impl Step for RookeryWorker {
    async fn step(&mut self) -> bool {
        let uniform_key = || key_name(rand::rng().random_range(0..self.keys));
        let ok = match self.op {
            BenchOp::Get => self.cache.get(uniform_key()).await.map(|found| found.is_some()),
            BenchOp::Set => self.cache.set(uniform_key(), self.value.clone(), self.ttl).await,
            BenchOp::ZipfGet | BenchOp::NearGet => self.zipf_step().await,
            // Distinct names per worker: never contended.
            BenchOp::Lock => lock_pair(&self.lock, format!("bench:lock:{}", self.worker), None).await,
            BenchOp::LockContended => {
                lock_pair(&self.lock, "bench:contended".into(), Some(Duration::from_secs(30))).await
            }
            BenchOp::RateLimit => self.limiter.check(uniform_key(), &self.rate_limit, 1).await.map(|_| true),
            BenchOp::SessionGet => {
                let id = &self.session_ids[rand::rng().random_range(0..self.session_ids.len())];
                self.session.get(id.clone(), true).await.map(|found| found.is_some())
            }
            BenchOp::Publish => self.events.publish(events::CHANNEL, self.value.clone()).await.map(|_| true),
            BenchOp::Append => {
                let fields = std::collections::HashMap::from([("v".to_owned(), self.value.clone())]);
                let options = AppendOptions { max_len: APPEND_MAX_LEN, ..AppendOptions::default() };
                self.events.append(&*self.stream, fields, &options).await.map(|_| true)
            }
            BenchOp::AppendStream => {
                let fields = std::collections::HashMap::from([("v".to_owned(), self.value.clone())]);
                let options = AppendOptions { max_len: APPEND_MAX_LEN, ..AppendOptions::default() };
                let appender = self.appender.as_ref().expect("an appender per connection");
                appender.append(&*self.stream, fields, &options).await.map(|_| true)
            }
            BenchOp::AppendMany => {
                let entry = || crate::NewEntry {
                    fields: std::collections::HashMap::from([("v".to_owned(), self.value.clone())]),
                    idempotency_key: None,
                };
                let options = AppendOptions { max_len: APPEND_MAX_LEN, ..AppendOptions::default() };
                let entries = (0..APPEND_BATCH).map(|_| entry());
                self.events.append_many(&*self.stream, entries, &options).await.map(|_| true)
            }
            BenchOp::Consume | BenchOp::Fanout | BenchOp::FanoutStream | BenchOp::IdleSubscribers => {
                unreachable!("run separately")
            }
        };
        matches!(ok, Ok(true))
    }
}

/// One acquire + release; `Ok(false)` if the lock was not granted.
async fn lock_pair(lock: &LockClient, name: String, wait: Option<Duration>) -> Result<bool, tonic::Status> {
    let options = LockOptions { ttl: Some(Duration::from_secs(10)), wait, ..LockOptions::default() };
    match lock.acquire(name.clone(), &options).await? {
        Some(lease) => lock.release(name, lease.token).await,
        None => Ok(false),
    }
}

/// Throughput and latency that redis-benchmark reported.
#[derive(Debug, Clone)]
pub struct RedisReport {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Runs `redis-benchmark` for the same work, at the same concurrency, against the Redis at
/// `redis_url`: SET/GET with the same value size and key space for the Cache, and for
/// [`BenchOp::Lock`] the server's own acquire and release scripts with EVALSHA. Consume and
/// fan-out are not request after request, so theirs are raw redis-rs loops instead
/// ([`events::consume_reference`], [`events::fanout_reference`]).
///
/// redis-benchmark runs one command per request and cannot carry a token from an acquire to
/// a release, so the lock reference runs the two scripts one after the other (acquires on fresh
/// names, releases on random names, which mostly find no lease: the cheap path) and reports
/// the pair rate `1 / (1/acquires + 1/releases)`. That makes Redis look faster than a real
/// pair is, so the ratio printed is conservative.
pub async fn redis_benchmark(
    redis_url: &str,
    config: &BenchConfig,
    requests: u64,
) -> Result<RedisReport, BenchError> {
    let url = url_parts(redis_url)?;
    let requests = requests.max(10_000);
    match config.op {
        BenchOp::Get | BenchOp::Set | BenchOp::ZipfGet | BenchOp::NearGet => {
            let test = if config.op == BenchOp::Set { "SET" } else { "GET" };
            let args =
                ["-d", &config.value_size.to_string(), "-r", &config.keys.to_string(), "-t", "set,get"]
                    .map(str::to_owned);
            let csv = redis_benchmark_csv(&url, config.concurrency, requests, &args).await?;
            parse_redis_benchmark_csv(&csv, Some(test))
        }
        BenchOp::Lock => {
            let acquire_sha = script_load(&url, &compose(LOCK_LIB, LOCK_ACQUIRE)).await?;
            let release_sha = script_load(&url, &compose(LOCK_LIB, LOCK_RELEASE)).await?;
            let name = "rk1:{bench-reference:lock:__rand_int__}";
            let token = "0123456789abcdef0123456789abcdef";
            let acquire = [
                "-r",
                "100000000",
                "EVALSHA",
                &acquire_sha,
                "4",
                name,
                &format!("{name}:info"),
                &format!("{name}:fence"),
                &format!("{name}:history"),
                token,
                "10000",
                "1",
                "bench",
                "",
                "60000",
                "0",
                "0",
            ]
            .map(str::to_owned);
            let release = [
                "-r",
                "100000000",
                "EVALSHA",
                &release_sha,
                "2",
                name,
                &format!("{name}:info"),
                token,
                "rk1:lock:wake",
            ]
            .map(str::to_owned);
            let acquire = parse_redis_benchmark_csv(
                &redis_benchmark_csv(&url, config.concurrency, requests, &acquire).await?,
                None,
            )?;
            let release = parse_redis_benchmark_csv(
                &redis_benchmark_csv(&url, config.concurrency, requests, &release).await?,
                None,
            )?;
            Ok(RedisReport {
                rps: 1.0 / (1.0 / acquire.rps + 1.0 / release.rps),
                p50: acquire.p50 + release.p50,
                p99: acquire.p99 + release.p99,
            })
        }
        BenchOp::SessionGet => {
            let sha = script_load(&url, SESSION_GET_SCRIPT).await?;
            let key = "rk1:{bench-reference:sess:00000000}:s:reference";
            let index = "rk1:{bench-reference:sess:00000000}:u";
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
            let mut fields = vec![
                "HSET".to_owned(),
                key.to_owned(),
                "sub".into(),
                "bench".into(),
                "v".into(),
                "1".into(),
                "c".into(),
                now.to_string(),
                "abs".into(),
                (now + 3_600_000).to_string(),
                "idle".into(),
                "1800000".into(),
            ];
            for a in 0..SESSION_ATTRIBUTES {
                fields.push(format!(".attr{a}"));
                fields.push("v".repeat(16));
            }
            redis_cli(&url, &fields).await?;
            redis_cli(
                &url,
                &["ZADD".into(), index.into(), (now + 3_600_000).to_string(), "bench|reference".into()],
            )
            .await?;
            redis_cli(&url, &["PEXPIRE".into(), index.into(), "3600000".into()]).await?;
            let args = ["EVALSHA", &sha, "2", key, index, "1", "reference"].map(str::to_owned);
            let csv = redis_benchmark_csv(&url, config.concurrency, requests, &args).await?;
            parse_redis_benchmark_csv(&csv, None)
        }
        BenchOp::RateLimit => {
            let sha = script_load(&url, RATE_LIMIT_SCRIPT).await?;
            let limit = BENCH_RATE_LIMIT.to_string();
            let args = [
                "-r",
                &config.keys.to_string(),
                "EVALSHA",
                &sha,
                "1",
                "rk1:{bench-reference:rl:__rand_int__}:g",
                "0",
                "1",
                &limit,
                "1000000",
                &limit,
                "1",
                "0",
            ]
            .map(str::to_owned);
            let csv = redis_benchmark_csv(&url, config.concurrency, requests, &args).await?;
            parse_redis_benchmark_csv(&csv, None)
        }
        BenchOp::Publish => events::publish_reference(&url, config, requests).await,
        BenchOp::Append | BenchOp::AppendStream => events::append_reference(&url, config, requests).await,
        BenchOp::Consume => events::consume_reference(redis_url, config).await,
        BenchOp::Fanout | BenchOp::FanoutStream => events::fanout_reference(redis_url, config).await,
        BenchOp::LockContended => Err("there is no redis-benchmark reference for the contended lock".into()),
        BenchOp::AppendMany => {
            Err("there is no redis-benchmark reference per call of many entries (see Append's XADD)".into())
        }
        BenchOp::IdleSubscribers => Err("there is no redis-benchmark reference for memory".into()),
    }
}

/// Runs redis-benchmark with `args` and returns its CSV output.
async fn redis_benchmark_csv(
    url: &RedisUrl,
    concurrency: usize,
    requests: u64,
    args: &[String],
) -> Result<String, BenchError> {
    let mut command = tokio::process::Command::new("redis-benchmark");
    command
        .args(["-h", &url.host, "-p", &url.port.to_string()])
        .args(["-c", &concurrency.to_string()])
        .args(["-n", &requests.to_string(), "--csv"])
        .args(args);
    if let Some(password) = &url.password {
        command.env("REDISCLI_AUTH", password);
    }
    let output = command.output().await.map_err(|e| {
        format!("cannot run redis-benchmark ({e}); install it with `apt-get install redis-tools`")
    })?;
    if !output.status.success() {
        return Err(format!("redis-benchmark failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs one command with `redis-cli`.
async fn redis_cli(url: &RedisUrl, args: &[String]) -> Result<(), BenchError> {
    let mut command = tokio::process::Command::new("redis-cli");
    command.args(["-h", &url.host, "-p", &url.port.to_string()]).args(args);
    if let Some(password) = &url.password {
        command.env("REDISCLI_AUTH", password);
    }
    let output = command.output().await.map_err(|e| format!("cannot run redis-cli ({e})"))?;
    if !output.status.success() {
        return Err(format!("redis-cli failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(())
}

/// Loads a script into Redis with `redis-cli SCRIPT LOAD`; returns its SHA1.
async fn script_load(url: &RedisUrl, script: &str) -> Result<String, BenchError> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new("redis-cli");
    command.args(["-h", &url.host, "-p", &url.port.to_string(), "-x", "SCRIPT", "LOAD"]);
    if let Some(password) = &url.password {
        command.env("REDISCLI_AUTH", password);
    }
    let mut child =
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().map_err(
            |e| format!("cannot run redis-cli ({e}); install it with `apt-get install redis-tools`"),
        )?;
    let mut stdin = child.stdin.take().ok_or("redis-cli has no stdin")?;
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    let sha = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || sha.len() != 40 {
        return Err(format!("SCRIPT LOAD failed: {sha}").into());
    }
    Ok(sha)
}

struct RedisUrl {
    host: String,
    port: u16,
    password: Option<String>,
}

fn url_parts(url: &str) -> Result<RedisUrl, BenchError> {
    let rest = url.strip_prefix("redis://").ok_or("the --redis-url must start with redis://")?;
    let rest = rest.split('/').next().unwrap_or(rest);
    let (password, host_port) = match rest.rsplit_once('@') {
        Some((auth, hp)) => (auth.rsplit(':').next().map(str::to_owned), hp),
        None => (None, rest),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse()?),
        None => (host_port.to_owned(), 6379),
    };
    Ok(RedisUrl { host, port, password })
}

/// Reads the line of `test` from redis-benchmark's `--csv` output
/// (`"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"`).
/// `None` takes the first line (a custom command's line is named by the whole command).
fn parse_redis_benchmark_csv(csv: &str, test: Option<&str>) -> Result<RedisReport, BenchError> {
    let mut lines = csv.lines().map(|line| line.split(',').map(|f| f.trim_matches('"')).collect::<Vec<_>>());
    let header = lines.next().ok_or("redis-benchmark printed nothing")?;
    let column = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("no {name} column"));
    let (rps, p50, p99) = (column("rps")?, column("p50_latency_ms")?, column("p99_latency_ms")?);
    let row = lines
        .find(|fields| test.is_none_or(|test| fields.first() == Some(&test)))
        .ok_or(format!("redis-benchmark printed no {} line", test.unwrap_or("result")))?;
    let number =
        |i: usize| -> Result<f64, BenchError> { Ok(row.get(i).ok_or("short line")?.parse::<f64>()?) };
    Ok(RedisReport {
        rps: number(rps)?,
        p50: Duration::from_secs_f64(number(p50)? / 1000.0),
        p99: Duration::from_secs_f64(number(p99)? / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"80000.00\",\"0.5\",\"0.1\",\"0.400\",\"0.9\",\"1.200\",\"3.0\"\n\
                   \"GET\",\"90000.00\",\"0.4\",\"0.1\",\"0.300\",\"0.8\",\"1.000\",\"2.0\"\n";
        let report = parse_redis_benchmark_csv(csv, Some("GET")).unwrap();
        assert_eq!(report.rps, 90000.0);
        assert_eq!(report.p50, Duration::from_micros(300));
        assert_eq!(report.p99, Duration::from_millis(1));
        assert!(parse_redis_benchmark_csv(csv, Some("INCR")).is_err());
        assert_eq!(parse_redis_benchmark_csv(csv, None).unwrap().rps, 80000.0);
    }

    #[test]
    fn splits_redis_urls() {
        let u = url_parts("redis://:secret@10.0.0.5:6380/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.password.as_deref()), ("10.0.0.5", 6380, Some("secret")));
        let u = url_parts("redis://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.password), ("localhost", 6379, None));
    }
}
