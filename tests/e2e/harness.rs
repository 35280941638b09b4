//! The end-to-end test harness: real `redis-server` processes on free ports, real servers
//! in-process on `127.0.0.1:0`, the real client crate, and a fresh namespace per test.
//!
//! Most tests share one Redis per test process (started on first use) and isolate themselves by
//! namespace, so they run in parallel. Tests that restart or reconfigure Redis start their own.
//! Every Redis is stopped when its owner is dropped or, for the shared one, when the test
//! process exits (a shell watchdog kills it), so no run leaves a redis-server behind.
//!
//! One room on purpose, past 600 lines: standalone Redis, Cluster and Sentinel processes share
//! one watchdog and one way to start, stop and read a redis-server, which every test uses.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use rookery_client::Client;
use rookery_server::config::Config;
use rookery_server::{Listeners, ServeError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A redis-server process on a free local port, in its own temporary directory.
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

/// A frozen redis-server, thawed on drop.
pub struct Paused(String);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// A TCP port free right now on 127.0.0.1 (free until someone binds it).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `program` with `args` under a watchdog shell that kills it when this test process
/// exits, even if it never runs destructors (statics, panics, kill), and waits until a line of
/// its log (stdout) contains `ready`. A reader thread keeps draining the log so the program
/// never blocks on a full pipe, and appends its lines to `log` if given. `None` if the program
/// exited first (most likely: its port was taken).
fn spawn_watched(
    program: &str,
    args: &[String],
    ready: &'static str,
    log: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
) -> Option<Child> {
    let script = format!(
        "{program} \"$@\" & r=$!; trap 'kill -9 $r 2>/dev/null; wait $r 2>/dev/null' EXIT TERM; \
         while kill -0 {} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done",
        std::process::id()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(format!("{program}-watchdog"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut ready_tx = Some(ready_tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(ready)
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(());
            }
            if let Some(log) = &log {
                log.lock().unwrap().push(line);
            }
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => Some(child),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = child.wait();
            None
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{program} did not start: {args:?}"),
    }
}

fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

impl RedisProcess {
    /// Starts a throwaway Redis (no persistence, noeviction, lazy freeing) plus any extra config
    /// arguments.
    pub fn start(extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("rookery-test-redis-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        redis.spawn();
        redis
    }

    /// Starts redis-server on `self.port`; if another process took that port first (free
    /// ports are only reserved until bound), moves to a new port unless `keep_port`.
    fn spawn_on_free_port(&mut self, keep_port: bool) {
        for _ in 0..5 {
            if self.try_spawn() {
                return;
            }
            assert!(!keep_port, "port {} was taken while Redis restarted", self.port);
            self.port = free_port();
        }
        panic!("could not start redis-server on a free port");
    }

    fn spawn(&mut self) {
        self.spawn_on_free_port(false);
    }

    /// Starts redis-server and waits until it is ready; false if it exited instead.
    fn try_spawn(&mut self) -> bool {
        let mut args = vec![
            "--port".to_owned(),
            self.port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--appendonly".to_owned(),
            "no".to_owned(),
            "--maxmemory-policy".to_owned(),
            "noeviction".to_owned(),
            // As the server recommends: large values are freed in the background.
            "--lazyfree-lazy-expire".to_owned(),
            "yes".to_owned(),
            "--lazyfree-lazy-server-del".to_owned(),
            "yes".to_owned(),
            "--lazyfree-lazy-user-del".to_owned(),
            "yes".to_owned(),
            "--dir".to_owned(),
            self.dir.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        if Command::new("redis-server").arg("--version").output().is_err() {
            panic!(
                "redis-server is not installed; the tests need a real Redis. Install it with \
                 `sudo apt-get install redis-server` (or run `make test`, which does)"
            );
        }
        args.extend(["--logfile".to_owned(), String::new()]);
        // Redis's own signal is its "Ready to accept connections" log line; the log ends
        // without it when redis-server exits (most likely: the port was taken).
        match spawn_watched("redis-server", &args, "Ready to accept connections", None) {
            Some(child) => {
                self.child = Some(child);
                true
            }
            None => false,
        }
    }

    /// Gives redis-server the CPU before anything else on the machine (`renice -n -19`, which
    /// needs root; without it this only warns), so that Redis's wall-clock records (SLOWLOG,
    /// LATENCY) measure its commands' work rather than its waits for a busy core.
    pub async fn prioritize(&self) {
        let pid = self.pid().await;
        let reniced = Command::new("renice").args(["-n", "-19", "-p", &pid]).stdout(Stdio::null()).status();
        if !reniced.is_ok_and(|status| status.success()) {
            eprintln!("could not renice redis-server {pid}: its timings include waits for a core");
        }
    }

    /// redis-server's process ID.
    async fn pid(&self) -> String {
        let info: String =
            redis::cmd("INFO").arg("server").query_async(&mut self.conn().await).await.unwrap();
        info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap().trim().to_owned()
    }

    /// Freezes redis-server (SIGSTOP): connections stay open and nothing answers, as when Redis
    /// hangs. The returned guard thaws it (SIGCONT) when dropped.
    pub async fn pause(&self) -> Paused {
        let pid = self.pid().await;
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        Paused(pid)
    }

    /// Kills Redis (losing all data, as an unpersisted crash does).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM makes the watchdog shell's trap SIGKILL redis-server (a crash, no
            // shutdown save) and reap it before the shell exits.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
        // The shell exits only after redis-server is dead and reaped, and a dead process's
        // listening socket is closed.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "redis-server still answers on port {} after it was killed",
            self.port
        );
    }

    /// Starts Redis again on the same port (empty, as after an unpersisted restart).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_on_free_port(true);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A direct connection, to look at what the server left in Redis.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Every key of `namespace` (all Rookery keys carry the namespace right after the version).
    pub async fn keys_of(&self, namespace: &str) -> Vec<String> {
        let mut conn = self.conn().await;
        let mut keys: Vec<String> = Vec::new();
        let mut iter: redis::AsyncIter<String> =
            conn.scan_match(format!("rk1:{{{namespace}:*")).await.unwrap();
        while let Some(key) = iter.next_item().await {
            keys.push(key.unwrap());
        }
        keys
    }

    /// Asserts that every key of `namespace` has a TTL: nothing a test wrote can leak.
    pub async fn assert_no_key_without_ttl(&self, namespace: &str) {
        let mut conn = self.conn().await;
        for key in self.keys_of(namespace).await {
            let ttl: i64 = conn.pttl(&key).await.unwrap();
            assert!(ttl != -1, "key {key} has no TTL");
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis shared by the tests of this process.
pub fn shared_redis() -> &'static RedisProcess {
    static REDIS: OnceLock<RedisProcess> = OnceLock::new();
    REDIS.get_or_init(|| RedisProcess::start(&[]))
}

/// A fresh namespace, unique to one test.
pub fn namespace(test: &str) -> String {
    format!("t-{test}-{}-{}", std::process::id(), unique())
}

/// The config tests start servers with: ephemeral ports, short timeouts.
pub fn test_config(redis_url: &str) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.redis.url = redis_url.to_owned();
    config.redis.command_timeout = Duration::from_secs(1);
    config.redis.connect_timeout = Duration::from_millis(500);
    config.redis.startup_timeout = Duration::from_secs(5);
    config.shutdown.drain_timeout = Duration::from_secs(2);
    config
}

/// A server running in-process on the current tokio runtime.
pub struct TestServer {
    /// The gRPC address.
    pub addr: SocketAddr,
    /// The admin HTTP address.
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts a server with `config`; panics if it does not come up.
    pub async fn start(config: Config) -> Self {
        Self::try_start(config).await.expect("server failed to start")
    }

    /// Starts a server with `config`, returning its start-up error if it refuses to start.
    pub async fn try_start(config: Config) -> Result<Self, ServeError> {
        // Server logs (warn and above, or ROOKERY_TEST_LOG) go to the captured test output,
        // shown on failure.
        rookery_server::telemetry::init_tracing(&rookery_server::config::LogConfig {
            level: std::env::var("ROOKERY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            ..Default::default()
        });
        let listeners = Listeners::bind(&config).await.unwrap();
        let (addr, admin) = (listeners.grpc_addr().unwrap(), listeners.admin_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let mut task = tokio::spawn(rookery_server::serve(listeners, config, async {
            let _ = rx.await;
        }));
        // Ready when the gRPC port accepts a call; or failed when serve returns.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(client) = Client::connect(format!("http://{addr}")).await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel());
                if health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok()
                {
                    break;
                }
            }
            if task.is_finished() {
                return Err((&mut task).await.unwrap().expect_err("server stopped without error"));
            }
            assert!(tokio::time::Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self { addr, admin, shutdown: Some(tx), task: Some(task) })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client in `namespace`.
    pub async fn client(&self, namespace: &str) -> Client {
        Client::connect(self.url()).await.unwrap().with_namespace(namespace).unwrap()
    }

    /// Signals shutdown (as SIGTERM does) without waiting for the server to stop.
    pub fn begin_stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Signals shutdown and waits for the server to stop; returns how long that took.
    pub async fn stop(mut self) -> Duration {
        let started = tokio::time::Instant::now();
        self.begin_stop();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
        started.elapsed()
    }

    /// Waits until some `Fetch` call is waiting for a fill (the `rookery_cache_fetch_waiting`
    /// gauge), so a test fills only after its waiter really waits.
    pub async fn wait_for_fetch_waiter(&self) {
        self.wait_for_gauge("rookery_cache_fetch_waiting", 1.0).await;
    }

    /// Waits until the unlabelled gauge `name` on `/metrics` reads at least `at_least` (e.g.
    /// `rookery_lock_waiting`, so a test releases only after its waiters really wait).
    pub async fn wait_for_gauge(&self, name: &str, at_least: f64) {
        let prefix = format!("{name} ");
        let reached = eventually(Duration::from_secs(10), || async {
            let (_, body) = self.admin_get("/metrics").await;
            body.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= at_least)
        })
        .await;
        assert!(reached, "gauge {name} never reached {at_least}");
    }

    /// GETs a path of the admin HTTP server; returns (status code, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `callers` concurrent `get_or_load` calls on one cold key, spread round robin over `caches`
/// (clients of different server replicas), each loader taking 100 ms. Asserts every caller got
/// the loaded value; returns how many times the loader ran.
pub async fn stampede(caches: &[rookery_client::CacheClient], callers: usize) -> usize {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let loads = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..callers)
        .map(|i| {
            let cache = caches[i % caches.len()].clone();
            let loads = loads.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load("cold", Duration::from_secs(60), || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(b"expensive".to_vec())
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), b"expensive");
    }
    loads.load(Ordering::SeqCst)
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it did.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A Redis Cluster of three masters, each with its replicas, on free local ports.
pub struct RedisCluster {
    /// Every node; which are masters is the cluster's business (see [`Self::view`]).
    nodes: Vec<RedisProcess>,
}

/// One node as a Cluster node sees it (a line of CLUSTER NODES).
#[derive(Debug, Clone)]
pub struct ClusterNodeView {
    /// The node's port.
    pub port: u16,
    /// Whether it is a master (with `fail` or `fail?` flags if it is believed down).
    pub master: bool,
    /// Whether the viewing node marks it failed (`fail`, quorum reached) or suspects it (`fail?`).
    pub failing: bool,
    /// Slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts three cluster-enabled Redis processes, assigns the slots, and waits until the
    /// cluster reports `cluster_state:ok` on every node.
    pub async fn start() -> Self {
        Self::start_with(0, 2000).await
    }

    /// Starts three masters with `replicas` replicas each, and a node timeout of one second,
    /// so that a replica takes over within a few seconds of its master's death: Redis marks
    /// the master failed after the node timeout (plus a gossip round), and its replica
    /// stands for election 0.5 to 1 s later. Waits until every replica is in sync, so that
    /// it may be promoted.
    pub async fn start_with_replicas(replicas: usize) -> Self {
        Self::start_with(replicas, 1000).await
    }

    async fn start_with(replicas: usize, node_timeout_ms: u64) -> Self {
        let node_timeout = node_timeout_ms.to_string();
        let count = 3 * (1 + replicas);
        let nodes: Vec<RedisProcess> = (0..count)
            .map(|_| {
                RedisProcess::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &node_timeout,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (package redis-tools)");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let known = format!("cluster_known_nodes:{count}");
        for node in &nodes {
            let conn = node.conn().await;
            let converged = eventually(Duration::from_secs(20), || {
                let mut conn = conn.clone();
                let known = known.clone();
                async move {
                    let info: String =
                        redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.unwrap();
                    let replication: String =
                        redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap();
                    info.contains("cluster_state:ok")
                        && info.contains(&known)
                        && (replication.contains("role:master")
                            || replication.contains("master_link_status:up"))
                }
            })
            .await;
            assert!(converged, "the cluster did not converge");
        }
        Self { nodes }
    }
    /// Its nodes, masters and replicas.
    pub fn nodes(&self) -> &[RedisProcess] {
        &self.nodes
    }

    /// The seed URLs, comma-separated, as `redis.url` takes them with `redis.cluster`.
    pub fn url(&self) -> String {
        self.nodes.iter().map(RedisProcess::url).collect::<Vec<_>>().join(",")
    }

    /// The cluster as node `viewer` sees it now (its CLUSTER NODES).
    pub async fn view(&self, viewer: usize) -> Vec<ClusterNodeView> {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.nodes[viewer].conn().await)
            .await
            .unwrap();
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let address = fields.get(1)?.split(['@', ',']).next()?;
                let port = address.rsplit_once(':')?.1.parse().ok()?;
                let flags: Vec<&str> = fields.get(2)?.split(',').collect();
                let slots = fields
                    .iter()
                    .skip(8)
                    // `[slot->-node]` entries are slots being migrated, not served.
                    .filter(|range| !range.starts_with('['))
                    .filter_map(|range| match range.split_once('-') {
                        Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                        None => range.parse().ok().map(|slot| (slot, slot)),
                    })
                    .collect();
                Some(ClusterNodeView {
                    port,
                    master: flags.contains(&"master"),
                    failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                    slots,
                })
            })
            .collect()
    }

    /// The hash slot of `key` (CLUSTER KEYSLOT, asked of node `viewer`).
    pub async fn slot_of(&self, viewer: usize, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.nodes[viewer].conn().await)
            .await
            .unwrap()
    }

    /// The index of the master that serves `slot` as node `viewer` sees it, unless that master
    /// is marked failed.
    pub async fn master_of(&self, viewer: usize, slot: u16) -> Option<usize> {
        let view = self.view(viewer).await;
        let master = view.iter().find(|node| {
            node.master && node.slots.iter().any(|&(first, last)| (first..=last).contains(&slot))
        })?;
        if master.failing {
            return None;
        }
        self.nodes.iter().position(|node| node.port == master.port)
    }

    /// Kills node `index` with SIGKILL, as a crash does (its unpersisted data is lost).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Polls node `viewer`'s view every 10 ms until it sees `slot` served by a master other
    /// than `killed`, for at most `timeout`; returns that master's index. The cluster's own
    /// record of a failover, seen from a surviving node.
    pub async fn wait_for_takeover(
        &self,
        viewer: usize,
        slot: u16,
        killed: usize,
        timeout: Duration,
    ) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.master_of(viewer, slot).await {
                Some(master) if master != killed => return Some(master),
                _ if tokio::time::Instant::now() >= deadline => return None,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// The keys of `namespace` on each node.
    pub async fn keys_per_node(&self, namespace: &str) -> Vec<Vec<String>> {
        let mut per_node = Vec::new();
        for node in &self.nodes {
            per_node.push(node.keys_of(namespace).await);
        }
        per_node
    }

    /// Asserts that no node holds a key of `namespace` without a TTL.
    pub async fn assert_no_key_without_ttl(&self, namespace: &str) {
        for node in &self.nodes {
            node.assert_no_key_without_ttl(namespace).await;
        }
    }
}

/// A Redis run by Redis Sentinel: a master, one replica and three `redis-sentinel` processes
/// on free local ports, with timeouts short enough that a failover takes a few seconds (a
/// master is subjectively down after 1 s without an answer; quorum 2). The sentinels are
/// told of each other and of the replica in their config files, so they need no discovery
/// round before they can fail over.
pub struct RedisSentinel {
    /// The name the sentinels monitor the master under; unique to this instance, so that the
    /// server's metrics labelled with it are this test's own.
    pub name: String,
    /// The Redis processes, started as master (0) and replica (1); which is master now is the
    /// sentinels' business ([`Self::master_port`]).
    nodes: Vec<RedisProcess>,
    sentinels: Vec<SentinelProcess>,
    dir: PathBuf,
}

/// One `redis-sentinel` process under a watchdog shell (as for redis-server), and its log.
struct SentinelProcess {
    child: Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        // The watchdog's trap kills the sentinel when the shell is told to stop.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl SentinelProcess {
    /// Starts `redis-sentinel <config>` on `port` and waits for it to monitor its master;
    /// None if it exited first (most likely: its port was taken).
    fn spawn(config: &std::path::Path, port: u16) -> Option<Self> {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // Logged once the sentinel listens and watches its master.
        let args = [config.display().to_string()];
        let child = spawn_watched("redis-sentinel", &args, "+monitor master", Some(log.clone()))?;
        Some(Self { child, port, log })
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl RedisSentinel {
    /// Starts the master, its replica (waiting until it is in sync) and three sentinels, and
    /// waits until every sentinel sees the master up, the replica in sync and the other two
    /// sentinels.
    pub async fn start() -> Self {
        if Command::new("redis-sentinel").arg("--version").output().is_err() {
            panic!(
                "redis-sentinel is not installed; the Sentinel tests need it. Install it with \
                 `sudo apt-get install redis-sentinel` (or run `make test`, which does)"
            );
        }
        let master = RedisProcess::start(&[]);
        let master_port = master.port.to_string();
        let replica = RedisProcess::start(&["--replicaof", "127.0.0.1", &master_port]);
        let conn = replica.conn().await;
        let synced = eventually(Duration::from_secs(20), || {
            let mut conn = conn.clone();
            async move {
                let info: String =
                    redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap();
                info.contains("master_link_status:up")
            }
        })
        .await;
        assert!(synced, "the replica did not sync with its master");
        let name = format!("rookery-{}-{}", std::process::id(), unique());
        let dir =
            std::env::temp_dir().join(format!("rookery-test-sentinel-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let sentinels = (0..5)
            .find_map(|_| Self::spawn_sentinels(&name, &dir, master.port, replica.port))
            .expect("could not start three sentinels on free ports");
        let sentinel = Self { name, nodes: vec![master, replica], sentinels, dir };
        for process in &sentinel.sentinels {
            let conn = process.conn().await;
            let name = sentinel.name.clone();
            let ready = eventually(Duration::from_secs(20), || {
                let (mut conn, name) = (conn.clone(), name.clone());
                async move {
                    let master: std::collections::HashMap<String, String> =
                        redis::cmd("SENTINEL").arg("MASTER").arg(&name).query_async(&mut conn).await.unwrap();
                    let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(&name)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let field = |map: &std::collections::HashMap<String, String>, key: &str| {
                        map.get(key).cloned().unwrap_or_default()
                    };
                    field(&master, "flags") == "master"
                        && field(&master, "num-other-sentinels") == "2"
                        && replicas.len() == 1
                        && field(&replicas[0], "flags") == "slave"
                        && field(&replicas[0], "master-link-status") == "ok"
                }
            })
            .await;
            assert!(
                ready,
                "sentinel {} never saw the whole set-up:\n{}",
                process.port,
                sentinel.sentinel_log()
            );
        }
        sentinel
    }

    /// Writes three sentinels' config files (fixed IDs, each told of the other two and of the
    /// replica) and starts them; None if one could not take its port.
    fn spawn_sentinels(
        name: &str,
        dir: &std::path::Path,
        master: u16,
        replica: u16,
    ) -> Option<Vec<SentinelProcess>> {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let ids: Vec<String> = (0..3)
            .map(|i| {
                format!("{:040x}", (u128::from(std::process::id()) << 64) | u128::from(unique() * 4 + i))
            })
            .collect();
        let mut processes = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let mut config = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel myid {id}\n\
                 sentinel monitor {name} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 2000\n\
                 sentinel parallel-syncs {name} 1\n\
                 sentinel known-replica {name} 127.0.0.1 {replica}\n",
                dir = dir.display(),
                id = ids[i],
            );
            for (j, other) in ports.iter().enumerate().filter(|(j, _)| *j != i) {
                config.push_str(&format!("sentinel known-sentinel {name} 127.0.0.1 {other} {}\n", ids[j]));
            }
            let path = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(&path, config).unwrap();
            processes.push(SentinelProcess::spawn(&path, *port)?);
        }
        Some(processes)
    }

    /// The sentinels' addresses, `127.0.0.1:<port>`.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect()
    }

    /// Points `config`'s coordination Redis at this master, through the sentinels.
    pub fn configure(&self, config: &mut Config) {
        config.redis.sentinel = Some(rookery_server::config::SentinelConfig {
            master_name: self.name.clone(),
            addresses: self.addresses(),
            ..Default::default()
        });
    }

    /// The master's port as the first sentinel that answers names it.
    pub async fn master_port(&self) -> u16 {
        for process in &self.sentinels {
            if let Some(port) = Self::named_by(&mut process.conn().await, &self.name).await {
                return port;
            }
        }
        panic!("no sentinel names a master")
    }

    async fn named_by(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> Option<u16> {
        let address: Option<(String, u16)> =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(name).query_async(conn).await.ok()?;
        address.map(|(_, port)| port)
    }

    /// Polls every sentinel every 10 ms until one names a master other than the one on port
    /// `old`, for at most `timeout`; returns the new master's port. This is the sentinels' own
    /// record of the failover: the moment a client asking them could first learn of it.
    pub async fn wait_for_failover(&self, old: u16, timeout: Duration) -> Option<u16> {
        let mut conns = Vec::new();
        for process in &self.sentinels {
            conns.push(process.conn().await);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            for conn in &mut conns {
                if let Some(port) = Self::named_by(conn, &self.name).await
                    && port != old
                {
                    return Some(port);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// The ports of the Redis processes (master and replica, in either order).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The Redis process on `port`.
    pub fn node_on(&self, port: u16) -> &RedisProcess {
        self.nodes.iter().find(|n| n.port == port).expect("no node on that port")
    }

    /// The Redis process on `port`, to kill or restart.
    pub fn node_on_mut(&mut self, port: u16) -> &mut RedisProcess {
        self.nodes.iter_mut().find(|n| n.port == port).expect("no node on that port")
    }

    /// Kills the node on `port` and starts it again, empty, as a master the sentinels cannot
    /// demote (REPLICAOF is renamed away): an old master back from a crash stays that way for
    /// about 8 s until they do, and this keeps it so for as long as a test looks.
    pub fn restart_as_stale_master(&mut self, port: u16) {
        let node = self.node_on_mut(port);
        node.kill();
        node.extra = ["--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", ""]
            .map(String::from)
            .to_vec();
        node.spawn_on_free_port(true);
    }

    /// What the sentinels logged (their view of a failover, step by step), for failure messages.
    pub fn sentinel_log(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("--- sentinel {}\n{}", s.port, s.log.lock().unwrap().join("\n")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        // Sentinels first: they must not see the Redis processes die and act on it.
        self.sentinels.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
