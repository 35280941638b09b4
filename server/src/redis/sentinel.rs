//! Redis Sentinel: the coordination Redis is whichever master the sentinels name, and the
//! server follows it when they fail it over.
//!
//! Finding the master. [`Link`] asks every sentinel at once, in one round trip each, for the
//! master's address (`SENTINEL GET-MASTER-ADDR-BY-NAME`, which names the promoted replica as
//! soon as it has taken over) and for the configuration epoch behind that answer (`SENTINEL
//! MASTER`), and takes the answer with the highest epoch: a sentinel that missed a failover
//! (partitioned, restarted) still names the old master, at an older epoch. Then it asks the
//! named node itself (`INFO replication`, which the least-privilege ACL already allows), and
//! uses it only if it says `role:master`. redis-rs's `sentinel` module is not used for this:
//! its `async_master_for` takes the first sentinel, in list order, that names a master it
//! believes up, whatever that sentinel's epoch, and the clients it returns connect to one
//! address for good, with nothing that follows a failover.
//!
//! Following it. The multiplexed connections to the master never reconnect by themselves: a
//! `ConnectionManager` reconnects to the address it started with, which after a failover is
//! the old master, and an old master that crashed comes back as an empty master until the
//! sentinels turn it into a replica; every write acknowledged there would be lost. Instead a
//! failed command (connection lost, timeout, READONLY from a demoted master) wakes the follower
//! task, which asks the sentinels again, then either replaces dead connections to the same
//! master (after checking its role again) or switches to the new one. The follower also
//! listens for `+switch-master` on one sentinel, and asks every second anyway in case that
//! message was lost. Meanwhile calls fail fast with UNAVAILABLE. On a switch the pub/sub hub
//! resubscribes on the new master (each subscriber is told of the gap), dedicated connections
//! for blocking reads made to the old master are retired instead of reused, and each Lua
//! script is loaded again on its first NOSCRIPT (`scripts.rs`).
//!
//! Reported: `rookery_redis_sentinel_failovers_total{redis,master}` (switches followed),
//! `rookery_redis_sentinel_master{redis,master,address}` (1 for the master in use, 0 for those
//! left), `rookery_redis_sentinel_switched_at_seconds{redis,master}` (Unix time of the last
//! switch), a warning naming the old and the new address, and health, which is NOT_SERVING
//! while no master answers.
//!
//! One file a little past 600 lines on purpose: finding a master and following it keep one
//! invariant together (no connection is used unless its node said `role:master` to the server
//! and the newest sentinel configuration names it), best checked in one place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, Value,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::RedisRole;
use crate::config::{RedisConfig, SentinelConfig};

/// How often the sentinels are asked while all is well (a `+switch-master` message or a
/// failed call asks at once).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often they are asked while no master answers: the server follows a failover at most
/// this long after the sentinels have made it.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// The least time between two rounds of questions while all is well, so that a burst of
/// failed calls costs the sentinels one round, not one each.
const MIN_GAP: Duration = Duration::from_millis(50);
/// Pause before listening on another sentinel after losing one.
const LISTEN_BACKOFF: Duration = Duration::from_millis(500);

/// Splits `host:port` (or `[v6 address]:port`); None if it is not that.
pub fn parse_address(address: &str) -> Option<(String, u16)> {
    let address = address.trim();
    let (host, port) = address.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.strip_suffix(']')?,
        // An IPv6 address needs its brackets, or its last group would read as the port.
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

/// What start-up messages call this Redis: the master's name and the sentinels.
pub fn describe(sentinel: &SentinelConfig) -> String {
    format!("master {:?} via sentinels {}", sentinel.master_name, sentinel.addresses.join(","))
}

/// One sentinel's answer: where the master is, and the configuration epoch of that answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    host: String,
    port: u16,
    epoch: u64,
}

/// The answer to follow: the highest epoch; among equals (which the sentinels' own election
/// rules out) the address most of them give, then the first.
fn pick(answers: &[Answer]) -> Option<&Answer> {
    let top = answers.iter().map(|a| a.epoch).max()?;
    let newest: Vec<&Answer> = answers.iter().filter(|a| a.epoch == top).collect();
    let votes = |a: &Answer| newest.iter().filter(|b| b.host == a.host && b.port == a.port).count();
    newest.iter().copied().rev().max_by_key(|a| votes(a))
}

/// An error meaning "no usable master right now": callers map it to UNAVAILABLE.
fn no_master(message: String) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::NotConnected, message).into()
}

/// Whether a failed command may mean the master moved (or died), so the sentinels should be
/// asked again: the connection failed, or the node answered as a replica.
fn may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown))
}

/// A sentinel's reply: the master's address (none if it knows no such master), and its view
/// of that master (`SENTINEL MASTER`: flags, `config-epoch`, ...).
type SentinelReply = (Option<(String, u16)>, std::collections::HashMap<String, String>);

/// How to reach the sentinels and the masters they name.
struct Settings {
    role: RedisRole,
    master_name: String,
    /// One client per sentinel, with the sentinels' credentials.
    sentinels: Vec<Client>,
    /// Credentials and database for the master.
    master_redis: RedisConnectionInfo,
    tls: bool,
    certificates: Option<TlsCertificates>,
    /// Timeouts of connections to the master and to the sentinels.
    connection: AsyncConnectionConfig,
    /// Multiplexed connections to keep to the master.
    connections: usize,
    /// Warn-only eviction check after a switch (start-up already checked the first master).
    allow_eviction: bool,
    /// Bound on connecting and subscribing to a sentinel for `+switch-master`.
    timeout: Duration,
}

impl Settings {
    fn client(&self, host: String, port: u16, redis: RedisConnectionInfo) -> RedisResult<Client> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let info = addr.into_connection_info()?.set_redis_settings(redis);
        match &self.certificates {
            Some(certificates) if self.tls => Client::build_with_tls(info, certificates.clone()),
            _ => Client::open(info),
        }
    }

    /// Asks every sentinel at once (reusing `cache`, one connection per sentinel) and returns
    /// the answer to follow.
    async fn ask(&self, cache: &mut [Option<MultiplexedConnection>]) -> RedisResult<Answer> {
        let mut question = redis::pipe();
        question.cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master_name);
        question.cmd("SENTINEL").arg("MASTER").arg(&self.master_name);
        let replies =
            futures::future::join_all(self.sentinels.iter().zip(cache.iter_mut()).map(|(client, cached)| {
                let question = &question;
                async move {
                    if cached.is_none() {
                        *cached = Some(
                            client.get_multiplexed_async_connection_with_config(&self.connection).await?,
                        );
                    }
                    let conn = cached.as_mut().expect("just connected");
                    let reply: RedisResult<SentinelReply> = question.query_async(conn).await;
                    // A connection that failed is dropped; a sentinel that answered with an
                    // error (it knows no such master) keeps its connection.
                    if reply.as_ref().is_err_and(|e| may_have_moved(e) || e.is_unrecoverable_error()) {
                        *cached = None;
                    }
                    let (address, master) = reply?;
                    let (host, port) =
                        address.ok_or_else(|| no_master("the sentinel knows no such master".into()))?;
                    let epoch = master.get("config-epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
                    Ok::<_, RedisError>(Answer { host, port, epoch })
                }
            }))
            .await;
        let mut answers = Vec::new();
        let mut last_error = None;
        for reply in replies {
            match reply {
                Ok(answer) => answers.push(answer),
                Err(e) => last_error = Some(e),
            }
        }
        match pick(&answers) {
            Some(answer) => Ok(answer.clone()),
            None => Err(no_master(format!(
                "no sentinel named the master {:?}: {}",
                self.master_name,
                last_error.map_or_else(|| "no answer".to_owned(), |e| e.to_string())
            ))),
        }
    }

    /// A new connection to the node at `client`, used only if the node says it is a master.
    async fn connect_master(&self, client: &Client, address: &str) -> RedisResult<MultiplexedConnection> {
        let mut conn = client.get_multiplexed_async_connection_with_config(&self.connection).await?;
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await?;
        let role = info.lines().find_map(|line| line.strip_prefix("role:")).unwrap_or("unknown").trim();
        if role != "master" {
            return Err(no_master(format!(
                "{address}, named master by the sentinels, says role:{role} (the failover is not done yet)"
            )));
        }
        Ok(conn)
    }

    /// Connects to the master the sentinels name now: every connection, each checked.
    async fn open(&self, answer: &Answer, generation: u64) -> RedisResult<Master> {
        let address = format!("{}:{}", answer.host, answer.port);
        let client = self.client(answer.host.clone(), answer.port, self.master_redis.clone())?;
        let mut conns = Vec::with_capacity(self.connections);
        while conns.len() < self.connections {
            conns.push(self.connect_master(&client, &address).await?);
        }
        Ok(Master { address, client, generation, conns })
    }

    /// Errors (in the log) if a new master may evict keys: start-up refused that for the first
    /// one, but a running server can only say so.
    async fn check_eviction(&self, master: &Master) {
        if self.allow_eviction || self.role != RedisRole::Coordination {
            return;
        }
        let info: RedisResult<String> =
            redis::cmd("INFO").arg("memory").query_async(&mut master.conns[0].clone()).await;
        let Ok(info) = info else { return };
        let policy =
            info.lines().find_map(|l| l.strip_prefix("maxmemory_policy:")).unwrap_or("unknown").trim();
        if policy != "noeviction" {
            tracing::error!(
                address = %master.address,
                policy,
                "the new Redis master may EVICT keys (maxmemory-policy is not noeviction): locks, \
                 sessions, limits and streams can vanish under memory pressure. Set noeviction on \
                 every Redis the sentinels may promote"
            );
        }
    }
}

/// The master in use and the shared connections to it.
pub struct Master {
    /// `host:port`, as the sentinels name it.
    pub address: String,
    /// A client for dedicated connections to it (pub/sub, blocking reads).
    pub client: Client,
    /// How many switches of master the link had followed when this one was found.
    pub generation: u64,
    conns: Vec<MultiplexedConnection>,
}

/// The coordination Redis as the sentinels name it: the master in use, and the signals that
/// move the server to another.
pub struct Link {
    settings: Settings,
    master: RwLock<Arc<Master>>,
    /// The generation of the master in use; changes on every switch.
    switched: watch::Sender<u64>,
    /// Wakes the follower: something failed in a way that may mean the master moved.
    suspect: Notify,
    next: AtomicUsize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("master_name", &self.settings.master_name)
            .field("address", &self.current().address)
            .finish_non_exhaustive()
    }
}

/// The follower's tasks; dropping this stops them.
pub struct Follower(Vec<JoinHandle<()>>);

impl Drop for Follower {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Link {
    /// Finds the master through the sentinels (retrying for up to `config.startup_timeout`
    /// while none is named or answers), connects, and starts following it.
    pub async fn start(
        config: &RedisConfig,
        sentinel: &SentinelConfig,
        role: RedisRole,
        certificates: Option<TlsCertificates>,
    ) -> RedisResult<(Arc<Self>, Follower)> {
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let mut settings = Settings {
            role,
            master_name: sentinel.master_name.clone(),
            sentinels: Vec::new(),
            master_redis: credentials(
                sentinel.master_username.as_deref(),
                sentinel.master_password.as_deref(),
            )
            .set_db(sentinel.db),
            tls: sentinel.tls,
            certificates,
            connection,
            connections: config.connections,
            allow_eviction: config.allow_eviction,
            timeout: config.connect_timeout + config.command_timeout,
        };
        for address in &sentinel.addresses {
            let (host, port) = parse_address(address)
                .ok_or_else(|| no_master(format!("{address:?} is not a sentinel's host:port")))?;
            let redis = credentials(sentinel.username.as_deref(), sentinel.password.as_deref());
            settings.sentinels.push(settings.client(host, port, redis)?);
        }
        let deadline = Instant::now() + config.startup_timeout;
        let mut cache = vec![None; settings.sentinels.len()];
        let master = loop {
            let found = match settings.ask(&mut cache).await {
                Ok(answer) => settings.open(&answer, 0).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(master) => break master,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(redis = role.label(), error = %e, "no Redis master through Sentinel yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(
            redis = role.label(),
            master = %settings.master_name,
            address = %master.address,
            "Redis master found through Sentinel"
        );
        let labels = [("redis", role.label().to_owned()), ("master", settings.master_name.clone())];
        metrics::gauge!(
            "rookery_redis_sentinel_master",
            &[labels[0].clone(), labels[1].clone(), ("address", master.address.clone())]
        )
        .set(1.0);
        metrics::counter!("rookery_redis_sentinel_failovers_total", &labels).absolute(0);
        let link = Arc::new(Self {
            settings,
            master: RwLock::new(Arc::new(master)),
            switched: watch::channel(0).0,
            suspect: Notify::new(),
            next: AtomicUsize::new(0),
        });
        let follower =
            Follower(vec![tokio::spawn(follow(link.clone(), cache)), tokio::spawn(listen(link.clone()))]);
        Ok((link, follower))
    }

    /// The master in use.
    pub fn current(&self) -> Arc<Master> {
        self.master.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The generation of the master in use (see [`Master::generation`]).
    pub fn generation(&self) -> u64 {
        *self.switched.borrow()
    }

    /// A receiver that changes whenever the link switches to another master.
    pub fn switches(&self) -> watch::Receiver<u64> {
        self.switched.subscribe()
    }

    /// Says that something failed in a way that may mean the master moved: the follower asks
    /// the sentinels now rather than at its next poll.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// Passes on `result`, first waking the follower if it failed as a moved master would.
    fn observe<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && may_have_moved(e)
        {
            self.suspect();
        }
        result
    }

    /// A handle to one of the shared connections to the master in use (round robin).
    pub fn conn(self: &Arc<Self>) -> SentinelConn {
        let master = self.current();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % master.conns.len();
        SentinelConn { conn: master.conns[i].clone(), link: self.clone() }
    }

    /// Shared connections per master.
    pub fn connections(&self) -> usize {
        self.settings.connections
    }

    /// Asks the sentinels where the master is and acts on it; `check` also checks the
    /// connections to a master that has not moved. Fails while no master is in use that
    /// answers (as far as this round saw).
    async fn refresh(
        &self,
        cache: &mut [Option<MultiplexedConnection>],
        check: bool,
    ) -> Result<(), RedisError> {
        let answer = self.settings.ask(cache).await?;
        let current = self.current();
        if format!("{}:{}", answer.host, answer.port) == current.address {
            return if check { self.repair(&current).await } else { Ok(()) };
        }
        let master = self.settings.open(&answer, current.generation + 1).await?;
        self.switch(current, master, answer.epoch).await;
        Ok(())
    }

    /// Checks every connection to a master that has not moved (and that it is still a master)
    /// and replaces the dead ones.
    async fn repair(&self, current: &Arc<Master>) -> Result<(), RedisError> {
        // Per connection: Some(is a master) if it answered, None if it is dead.
        let checks = futures::future::join_all(current.conns.iter().map(|conn| async move {
            let info: RedisResult<String> =
                redis::cmd("INFO").arg("replication").query_async(&mut conn.clone()).await;
            info.ok().map(|info| info.lines().any(|l| l.trim() == "role:master"))
        }))
        .await;
        if checks.iter().all(|c| *c == Some(true)) {
            return Ok(());
        }
        if checks.contains(&Some(false)) {
            // It answers, as a replica: the sentinels demoted it and are about to name another.
            return Err(no_master(format!("{} is no longer a master", current.address)));
        }
        let mut conns = Vec::with_capacity(current.conns.len());
        for (conn, alive) in current.conns.iter().zip(&checks) {
            conns.push(match alive {
                Some(true) => conn.clone(),
                _ => self.settings.connect_master(&current.client, &current.address).await?,
            });
        }
        let repaired = Master {
            address: current.address.clone(),
            client: current.client.clone(),
            generation: current.generation,
            conns,
        };
        *self.master.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(repaired);
        tracing::info!(redis = self.settings.role.label(), address = %current.address, "reconnected to the Redis master");
        Ok(())
    }

    /// Puts `master` in place of `previous` and tells everyone who follows switches.
    async fn switch(&self, previous: Arc<Master>, master: Master, epoch: u64) {
        let (label, name) = (self.settings.role.label(), &self.settings.master_name);
        tracing::warn!(
            redis = label,
            master = %name,
            from = %previous.address,
            to = %master.address,
            epoch,
            "followed a Redis Sentinel failover: the master is now {}",
            master.address
        );
        let address = master.address.clone();
        let generation = master.generation;
        let master = Arc::new(master);
        *self.master.write().unwrap_or_else(|e| e.into_inner()) = master.clone();
        self.switched.send_replace(generation);
        let labels = [("redis", label.to_owned()), ("master", name.clone())];
        metrics::counter!("rookery_redis_sentinel_failovers_total", &labels).increment(1);
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        metrics::gauge!("rookery_redis_sentinel_switched_at_seconds", &labels).set(at);
        let with_address = |address: String| [labels[0].clone(), labels[1].clone(), ("address", address)];
        metrics::gauge!("rookery_redis_sentinel_master", &with_address(previous.address.clone())).set(0.0);
        metrics::gauge!("rookery_redis_sentinel_master", &with_address(address)).set(1.0);
        self.settings.check_eviction(&master).await;
    }
}

/// A user and password, if given.
fn credentials(username: Option<&str>, password: Option<&str>) -> RedisConnectionInfo {
    let mut redis = RedisConnectionInfo::default();
    if let Some(username) = username {
        redis = redis.set_username(username);
    }
    if let Some(password) = password {
        redis = redis.set_password(password);
    }
    redis
}

/// The follower: asks the sentinels on every suspicion and every [`POLL_INTERVAL`] (every
/// [`RETRY_INTERVAL`] while no master answers), and moves the link when they name another.
async fn follow(link: Arc<Link>, mut cache: Vec<Option<MultiplexedConnection>>) {
    let label = link.settings.role.label();
    let mut down_since: Option<Instant> = None;
    loop {
        let check = if down_since.is_none() {
            tokio::select! {
                _ = link.suspect.notified() => true,
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
            }
        } else {
            tokio::time::sleep(RETRY_INTERVAL).await;
            true
        };
        match link.refresh(&mut cache, check).await {
            Ok(()) => {
                if let Some(since) = down_since.take() {
                    tracing::info!(
                        redis = label,
                        address = %link.current().address,
                        after = ?since.elapsed(),
                        "the Redis master answers again"
                    );
                }
            }
            Err(e) => {
                if down_since.is_none() {
                    tracing::warn!(redis = label, error = %e, "no Redis master answers; asking the sentinels until one does");
                    down_since = Some(Instant::now());
                }
            }
        }
        if down_since.is_none() {
            tokio::time::sleep(MIN_GAP).await;
        }
    }
}

/// Listens for `+switch-master` on one sentinel at a time and wakes the follower on each
/// for this master. Polling covers a lost message or a silent sentinel; this only makes the
/// switch prompt.
async fn listen(link: Arc<Link>) {
    for client in link.settings.sentinels.iter().cycle() {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await.ok()?;
            pubsub.subscribe("+switch-master").await.ok()?;
            Some(pubsub)
        };
        if let Ok(Some(mut pubsub)) = tokio::time::timeout(link.settings.timeout, session).await {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                // "<master name> <old ip> <old port> <new ip> <new port>"
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(link.settings.master_name.as_str()) {
                    tracing::info!(redis = link.settings.role.label(), switch = %payload, "a sentinel announced +switch-master");
                    link.suspect();
                }
            }
        }
        tokio::time::sleep(LISTEN_BACKOFF).await;
    }
}

/// A handle to one of the shared connections to the master; a command that fails as if the
/// master moved wakes the follower (and fails, UNAVAILABLE: the caller retries).
#[derive(Clone)]
pub struct SentinelConn {
    conn: MultiplexedConnection,
    link: Arc<Link>,
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.link.observe(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.link.observe(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(host: &str, port: u16, epoch: u64) -> Answer {
        Answer { host: host.to_owned(), port, epoch }
    }

    #[test]
    fn the_newest_configuration_wins() {
        // One sentinel missed the failover and still names the old master.
        let answers = [answer("10.0.0.1", 6379, 3), answer("10.0.0.2", 6379, 4), answer("10.0.0.2", 6379, 4)];
        assert_eq!(pick(&answers), Some(&answers[1]));
        // Even when it is the only one that answers first, or most of those that answer.
        let answers = [answer("10.0.0.1", 6379, 3), answer("10.0.0.1", 6379, 3), answer("10.0.0.2", 6379, 4)];
        assert_eq!(pick(&answers), Some(&answers[2]));
        // Among equals, the majority.
        let answers = [answer("a", 1, 4), answer("b", 1, 4), answer("b", 1, 4)];
        assert_eq!(pick(&answers).unwrap().host, "b");
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(parse_address("sentinel-0.sentinel:26379"), Some(("sentinel-0.sentinel".into(), 26379)));
        assert_eq!(parse_address(" 10.0.0.1:26379 "), Some(("10.0.0.1".into(), 26379)));
        assert_eq!(parse_address("[::1]:26380"), Some(("::1".into(), 26380)));
        for bad in ["sentinel", "sentinel:", ":26379", "sentinel:x", "sentinel:0", "::1:26379", "[::1:26379"]
        {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn failures_that_may_mean_a_failover_wake_the_follower() {
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "READONLY",
            "You can't write against a read only replica.".to_owned(),
        ));
        assert!(may_have_moved(&readonly));
        assert!(may_have_moved(&no_master("gone".into())));
        let wrong_type = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "WRONGTYPE"));
        assert!(!may_have_moved(&wrong_type));
    }
}
