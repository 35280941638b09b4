//! `rookery`: command-line access to a Rookery server, and `rookery bench`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rookery_client::bench::{self, BenchConfig, BenchOp};
use rookery_client::{Client, SetCondition, SetOptions};

/// The same allocator as the server, so the load generator costs as little CPU as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "rookery", version, about = "Command-line client for the Rookery coordination service")]
struct Cli {
    /// Server URL.
    #[arg(long, env = "ROOKERY_URL", default_value = "http://127.0.0.1:50051", global = true)]
    url: String,
    /// Namespace (tenant) of every call.
    #[arg(long, env = "ROOKERY_NAMESPACE", default_value = "default", global = true)]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Cache calls.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Load-test Cache.Get or Cache.Set and compare with redis-benchmark.
    Bench(BenchArgs),
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

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Operation to drive.
    #[arg(long, value_enum, default_value = "get")]
    op: BenchOp,
    /// Requests in flight.
    #[arg(short, long, default_value_t = 64)]
    concurrency: usize,
    /// Measurement time, e.g. `10s`.
    #[arg(short, long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// HTTP/2 connections to spread requests over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also run redis-benchmark (same command, concurrency, value size) and print the ratio.
    #[arg(long)]
    compare_redis: bool,
    /// With --compare-redis: alternate the two this many times and report the median ratio
    /// (single runs on a small shared machine vary by 10-20%).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Redis for --compare-redis (the one the server uses).
    #[arg(long, env = "ROOKERY_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One runtime thread by default: on a small machine shared with the server and Redis, the
    // load generator should take as little CPU as it can (see BENCHMARKS.md).
    let threads = match &cli.command {
        Command::Bench(args) => args.client_threads.max(1),
        Command::Cache(_) => 1,
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

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Cache(command) => {
            let cache = Client::connect(cli.url).await?.with_namespace(&cli.namespace)?.cache();
            cache_command(&cache, command).await
        }
        Command::Bench(args) => bench_command(cli.url, cli.namespace, args).await,
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

async fn bench_command(
    url: String,
    namespace: String,
    args: BenchArgs,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let config = BenchConfig {
        url,
        namespace,
        op: args.op,
        concurrency: args.concurrency,
        duration: args.duration,
        keys: args.keys,
        value_size: args.value_size,
        connections: args.connections,
    };
    let (name, test) = match args.op {
        BenchOp::Get => ("Cache.Get", "GET"),
        BenchOp::Set => ("Cache.Set", "SET"),
    };
    let mut ratios = Vec::new();
    let mut added = Vec::new();
    let mut errors = 0;
    for _ in 0..args.rounds.max(1) {
        let report = bench::run(&config).await?;
        errors += report.errors;
        println!(
            "rookery {name:<9} c={:<4} {}B: {:>10.0} ops/s  p50 {}  p99 {}  p999 {}  errors {}",
            config.concurrency,
            config.value_size,
            report.ops_per_sec,
            ms(report.p50),
            ms(report.p99),
            ms(report.p999),
            report.errors
        );
        if !args.compare_redis {
            continue;
        }
        let requests = (report.ops_per_sec * config.duration.as_secs_f64()) as u64;
        let redis = bench::redis_benchmark(&args.redis_url, &config, requests).await?;
        println!(
            "redis-benchmark {test:<3} c={:<4} {}B: {:>10.0} ops/s  p50 {}  p99 {}",
            config.concurrency,
            config.value_size,
            redis.rps,
            ms(redis.p50),
            ms(redis.p99)
        );
        let ratio = 100.0 * report.ops_per_sec / redis.rps;
        let extra = (report.p50.as_secs_f64() - redis.p50.as_secs_f64()) * 1e6;
        println!("ratio: {ratio:.1}% of redis-benchmark throughput; p50 {extra:+.0}µs over Redis");
        ratios.push(ratio);
        added.push(extra);
    }
    if ratios.len() > 1 {
        println!(
            "median of {} rounds: {:.1}% of redis-benchmark throughput; p50 {:+.0}µs over Redis",
            ratios.len(),
            median(&mut ratios),
            median(&mut added)
        );
    }
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
