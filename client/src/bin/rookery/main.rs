//! `rookery`: command-line access to a Rookery server, and `rookery bench`. The flags every
//! command shares, connecting, and the Cache, Lock and Session commands live here; Events,
//! the RateLimiter and the benchmark each have a module of their own.

mod bench;
mod events;
mod rate_limit;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rookery_client::{
    CampaignEvent, Client, ConnectOptions, LockClient, LockOptions, SessionClient, SessionOptions,
    SetCondition, SetOptions,
};
use tokio_stream::StreamExt;

/// The same allocator as the server, so the load generator costs as little CPU as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "rookery", version, about = "Command-line client for the Rookery coordination service")]
struct Cli {
    /// Server URL.
    #[arg(long, env = "ROOKERY_URL", default_value = "http://127.0.0.1:50051", global = true)]
    url: String,
    /// Namespace (tenant) of every call. Without it, the server decides: `default` with auth
    /// off, the caller's default namespace with auth on.
    #[arg(long, env = "ROOKERY_NAMESPACE", global = true)]
    namespace: Option<String>,
    /// PEM file of the CA that signed the server's certificate (for `https://` URLs; the
    /// system's roots when not given).
    #[arg(long, env = "ROOKERY_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// PEM file of a client certificate (mTLS), with `--key-file`.
    #[arg(long, env = "ROOKERY_CERT_FILE", global = true, requires = "key_file")]
    cert_file: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's key.
    #[arg(long, env = "ROOKERY_KEY_FILE", global = true, requires = "cert_file")]
    key_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when the URL's host is not it.
    #[arg(long, env = "ROOKERY_TLS_DOMAIN", global = true)]
    tls_domain: Option<String>,
    /// Bearer token (a static token or a JWT). Prefer --token-file or the environment: a flag
    /// shows in the process list.
    #[arg(long, env = "ROOKERY_TOKEN", hide_env_values = true, global = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the bearer token (e.g. a projected ServiceAccount token), re-read every
    /// minute.
    #[arg(long, env = "ROOKERY_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cache calls.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Lock calls: leases, semaphores, elections.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Session calls.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Events: pub/sub and streams.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// RateLimiter calls: check a key, reset it.
    #[command(subcommand, name = "ratelimit")]
    RateLimit(rate_limit::RateLimitCommand),
    /// Load-test an operation and compare with redis-benchmark.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Create a session; prints its ID (a secret: keep it out of logs).
    Create {
        /// Whom the session belongs to.
        subject: String,
        /// An attribute as name=value (repeatable).
        #[arg(long = "attr", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        /// Idle timeout, e.g. `30m` (server default when absent).
        #[arg(long, value_parser = humantime::parse_duration)]
        idle: Option<Duration>,
        /// Absolute timeout, e.g. `12h` (server default when absent).
        #[arg(long, value_parser = humantime::parse_duration)]
        absolute: Option<Duration>,
    },
    /// Print a session (exit code 1 if unknown, expired or revoked).
    Get {
        /// The session's ID.
        id: String,
        /// Count the read as activity (slides the idle expiry).
        #[arg(long)]
        touch: bool,
    },
    /// List a subject's live sessions (hints, never IDs).
    List {
        /// The subject.
        subject: String,
    },
    /// End one session, or every session of a subject.
    Revoke {
        /// The session's ID.
        #[arg(required_unless_present = "subject")]
        id: Option<String>,
        /// End every session of this subject instead.
        #[arg(long, conflicts_with = "id")]
        subject: Option<String>,
    },
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

#[derive(Debug, clap::Args)]
struct LeaseArgs {
    /// Lease TTL, e.g. `30s` (server default when absent).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// How long to wait while others hold the lock, e.g. `10s` (default: try once).
    #[arg(long, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    /// Permits: more than 1 makes a counting semaphore.
    #[arg(long, default_value_t = 1)]
    limit: u32,
    /// A label shown by `inspect` (default: this host's name).
    #[arg(long)]
    owner: Option<String>,
}

impl LeaseArgs {
    fn options(self) -> LockOptions {
        let owner = self.owner.or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_default();
        LockOptions { ttl: self.ttl, wait: self.wait, limit: self.limit, owner }
    }
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// Acquire a lease; prints its token and fencing token (exit code 1 if held by others).
    Acquire {
        /// The lock's name.
        name: String,
        #[command(flatten)]
        lease: LeaseArgs,
    },
    /// Release a lease (exit code 1 if the token held none).
    Release {
        /// The lock's name.
        name: String,
        /// The token `acquire` printed.
        token: String,
    },
    /// Hold a lock while a command runs (its exit code is returned; the fencing token is in
    /// ROOKERY_FENCE), or until Ctrl-C without a command.
    Hold {
        /// The lock's name.
        name: String,
        #[command(flatten)]
        lease: LeaseArgs,
        /// The command to run under the lock.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Show a lock's holders and last fencing token.
    Inspect {
        /// The lock's name.
        name: String,
    },
    /// Campaign for leadership until Ctrl-C, printing when elected or when leadership is lost.
    Campaign {
        /// The election's name.
        election: String,
        /// This candidate's value (e.g. its address).
        candidate: String,
        /// Leadership TTL, e.g. `10s`.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        ttl: Duration,
    },
    /// Print an election's leader and every change, until Ctrl-C.
    Observe {
        /// The election's name.
        election: String,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Print a key's value (exit code 1 on a miss).
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Set {
        /// The key.
        key: String,
        /// The value (UTF-8 text).
        value: String,
        /// Time to live, e.g. `60s`.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Tags, for `invalidate --tag`.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Write only if the key does not exist.
        #[arg(long, conflicts_with = "if_present")]
        if_absent: bool,
        /// Write only if the key exists.
        #[arg(long)]
        if_present: bool,
    },
    /// Delete keys.
    Delete {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Remove keys by tag or by prefix.
    Invalidate {
        /// Remove keys written with this tag (repeatable).
        #[arg(long = "tag", required_unless_present = "prefix")]
        tags: Vec<String>,
        /// Remove keys starting with this (matched literally).
        #[arg(long, conflicts_with = "tags")]
        prefix: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One runtime thread by default: on a small machine shared with the server and Redis, the
    // load generator should take as little CPU as it can (see BENCHMARKS.md).
    let threads = match &cli.command {
        Command::Bench(args) => args.client_threads.max(1),
        Command::Cache(_)
        | Command::Lock(_)
        | Command::Session(_)
        | Command::Events(_)
        | Command::RateLimit(_) => 1,
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("rookery: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rookery: {e}");
            ExitCode::from(2)
        }
    }
}

/// The TLS settings and token the flags give.
fn connect_options(cli: &Cli) -> Result<ConnectOptions, Box<dyn std::error::Error + Send + Sync>> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut options = ConnectOptions::new();
    if let Some(path) = &cli.ca_file {
        options = options.ca_certificate(read(path)?);
    }
    if let (Some(cert), Some(key)) = (&cli.cert_file, &cli.key_file) {
        options = options.client_certificate(read(cert)?, read(key)?);
    }
    if let Some(domain) = &cli.tls_domain {
        options = options.tls_domain(domain.clone());
    }
    if let Some(token) = &cli.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &cli.token_file {
        options = options.token_file(path.clone(), Duration::from_secs(60));
    }
    Ok(options)
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let options = connect_options(&cli)?;
    let namespace = cli.namespace.clone();
    let connect = |url: String| {
        let (options, namespace) = (options.clone(), namespace.clone());
        async move {
            let client = Client::connect_with(url, &options).await?;
            match namespace {
                Some(namespace) => client.with_namespace(&namespace),
                None => Ok(client),
            }
        }
    };
    match cli.command {
        Command::Cache(command) => {
            let cache = connect(cli.url).await?.cache();
            cache_command(&cache, command).await
        }
        Command::Lock(command) => {
            let lock = connect(cli.url).await?.lock();
            lock_command(&lock, command).await
        }
        Command::Session(command) => {
            let sessions = connect(cli.url).await?.session();
            session_command(&sessions, command).await
        }
        Command::Events(command) => {
            let events = connect(cli.url).await?.events();
            events::events_command(&events, command).await
        }
        Command::RateLimit(command) => {
            let limiter = connect(cli.url).await?.rate_limiter();
            rate_limit::rate_limit_command(&limiter, command).await
        }
        Command::Bench(args) => {
            bench::bench_command(cli.url, cli.namespace.unwrap_or_else(|| "bench".into()), options, args)
                .await
        }
    }
}

async fn session_command(
    sessions: &SessionClient,
    command: SessionCommand,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        SessionCommand::Create { subject, attributes, idle, absolute } => {
            let attributes = attributes.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            let options =
                SessionOptions { idle_timeout: idle, absolute_timeout: absolute, max_sessions: None };
            let created = sessions.create(subject, attributes, &options).await?;
            println!("{}", created.id);
            eprintln!(
                "idle_expires_at {} absolute_expires_at {} evicted {}",
                unix(created.idle_expires_at),
                unix(created.absolute_expires_at),
                created.evicted
            );
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Get { id, touch } => match sessions.get(id, touch).await? {
            Some(session) => {
                println!("subject {:?}\nversion {}", session.subject, session.version);
                println!("created_at {}", unix(session.created_at));
                println!("idle_expires_at {}", unix(session.idle_expires_at));
                println!("absolute_expires_at {}", unix(session.absolute_expires_at));
                let mut names: Vec<_> = session.attributes.keys().collect();
                names.sort();
                for name in names {
                    println!("attr {name}={}", String::from_utf8_lossy(&session.attributes[name]));
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no such session");
                Ok(ExitCode::from(1))
            }
        },
        SessionCommand::List { subject } => {
            for s in sessions.list_by_subject(subject).await? {
                println!(
                    "hint {} created_at {} idle_expires_at {} absolute_expires_at {}",
                    s.hint,
                    unix(s.created_at),
                    unix(s.idle_expires_at),
                    unix(s.absolute_expires_at)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionCommand::Revoke { id, subject } => {
            // clap requires one of the two.
            let revoked = match subject {
                Some(subject) => sessions.delete_by_subject(subject).await?,
                None => u32::from(sessions.delete(id.unwrap_or_default()).await?),
            };
            println!("revoked {revoked}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A time as seconds since the Unix epoch with milliseconds, for scripts to parse.
fn unix(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

async fn lock_command(
    lock: &LockClient,
    command: LockCommand,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        LockCommand::Acquire { name, lease } => match lock.acquire(name, &lease.options()).await? {
            Some(lease) => {
                println!(
                    "token {}\nfence {}\nexpires_at {}",
                    lease.token,
                    lease.fence,
                    unix(lease.expires_at)
                );
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("held by others");
                Ok(ExitCode::from(1))
            }
        },
        LockCommand::Release { name, token } => {
            let released = lock.release(name, token).await?;
            println!("{}", if released { "released" } else { "not held by this token" });
            Ok(if released { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        LockCommand::Hold { name, lease, command } => {
            let Some(held) = lock.hold(name, &lease.options()).await? else {
                eprintln!("held by others");
                return Ok(ExitCode::from(1));
            };
            eprintln!("holding; fence {}", held.fence());
            let Some((program, args)) = command.split_first() else {
                tokio::select! {
                    lost = held.lost() => {
                        eprintln!("lost: {lost}");
                        return Ok(ExitCode::from(3));
                    }
                    _ = tokio::signal::ctrl_c() => {}
                }
                held.release().await?;
                return Ok(ExitCode::SUCCESS);
            };
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .env("ROOKERY_FENCE", held.fence().to_string())
                .spawn()?;
            let status = tokio::select! {
                status = child.wait() => status?,
                lost = held.lost() => {
                    eprintln!("lost the lock ({lost}); stopping the command");
                    child.kill().await?;
                    return Ok(ExitCode::from(3));
                }
            };
            held.release().await?;
            Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
        }
        LockCommand::Inspect { name } => {
            let state = lock.inspect(name).await?;
            println!("limit {}\nlast_fence {}", state.limit, state.last_fence);
            for holder in state.holders {
                let time = |t: Option<prost_types::Timestamp>| {
                    t.and_then(|t| std::time::SystemTime::try_from(t).ok()).map(unix).unwrap_or_default()
                };
                println!(
                    "holder owner={:?} fence={} acquired_at={} expires_at={}",
                    holder.owner,
                    holder.fence,
                    time(holder.acquired_at),
                    time(holder.expires_at)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LockCommand::Campaign { election, candidate, ttl } => {
            let mut events = lock.campaign(election, candidate, ttl).await?;
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(CampaignEvent::Elected(term))) => println!("elected fence {}", term.fence),
                        Some(Ok(CampaignEvent::Lost(lost))) => {
                            println!("lost: {lost}");
                            return Ok(ExitCode::from(3));
                        }
                        Some(Err(status)) => return Err(status.into()),
                        None => return Ok(ExitCode::from(3)),
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
        LockCommand::Observe { election } => {
            let mut leaders = lock.observe(election).await?;
            loop {
                tokio::select! {
                    leader = leaders.next() => match leader {
                        Some(Ok(Some(leader))) => {
                            println!("leader {:?} fence {} elected_at {}", leader.candidate, leader.fence, unix(leader.elected_at));
                        }
                        Some(Ok(None)) => println!("no leader"),
                        Some(Err(status)) => return Err(status.into()),
                        None => return Ok(ExitCode::SUCCESS),
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
    }
}

async fn cache_command(
    cache: &rookery_client::CacheClient,
    command: CacheCommand,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        CacheCommand::Get { key } => match cache.get(key).await? {
            Some(entry) => {
                std::io::stdout().write_all(&entry.value)?;
                println!();
                if let Some(ttl) = entry.ttl {
                    eprintln!(
                        "ttl: {}",
                        humantime::format_duration(Duration::from_millis(ttl.as_millis() as u64))
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("not found");
                Ok(ExitCode::from(1))
            }
        },
        CacheCommand::Set { key, value, ttl, tags, if_absent, if_present } => {
            let condition = match (if_absent, if_present) {
                (true, _) => SetCondition::IfAbsent,
                (_, true) => SetCondition::IfPresent,
                _ => SetCondition::Always,
            };
            let options = SetOptions { ttl: Some(ttl), condition, tags, ..SetOptions::default() };
            let stored = cache.set_with(key, value.into_bytes(), options).await?;
            println!("{}", if stored { "stored" } else { "not stored (condition not met)" });
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Delete { keys } => {
            println!("deleted {}", cache.delete(keys).await?);
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Invalidate { tags, prefix } => {
            let removed = match prefix {
                Some(prefix) => cache.invalidate_prefix(prefix).await?,
                None => cache.invalidate_tags(tags).await?,
            };
            println!("removed {removed}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
