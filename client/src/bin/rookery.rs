//! `rookery`: command-line access to a Rookery server, and `rookery bench`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rookery_client::bench::{self, BenchConfig, BenchOp};
use rookery_client::{Client, SetCondition, SetOptions};

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
    /// Also run redis-benchmark (same command, concurrency, value size) and print the ratio.
    #[arg(long)]
    compare_redis: bool,
    /// Redis for --compare-redis (the one the server uses).
    #[arg(long, env = "ROOKERY_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
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
    let name = match args.op {
        BenchOp::Get => "Cache.Get",
        BenchOp::Set => "Cache.Set",
    };
    let report = bench::run(&config).await?;
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
    if args.compare_redis {
        let requests = (report.ops_per_sec * config.duration.as_secs_f64()) as u64;
        let redis = bench::redis_benchmark(&args.redis_url, &config, requests).await?;
        let test = match args.op {
            BenchOp::Get => "GET",
            BenchOp::Set => "SET",
        };
        println!(
            "redis-benchmark {test:<3} c={:<4} {}B: {:>10.0} ops/s  p50 {}  p99 {}",
            config.concurrency,
            config.value_size,
            redis.rps,
            ms(redis.p50),
            ms(redis.p99)
        );
        let added = report.p50.as_secs_f64() - redis.p50.as_secs_f64();
        println!(
            "ratio: {:.1}% of redis-benchmark throughput; p50 {:+.0}µs over Redis",
            100.0 * report.ops_per_sec / redis.rps,
            added * 1e6
        );
    }
    Ok(if report.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
