//! `rookery bench`: drives one operation at a set concurrency and prints its throughput and
//! latency, alone or in alternating rounds against redis-benchmark, another server or a peer
//! (NATS, etcd), with the ratio of the medians.

use std::process::ExitCode;
use std::time::Duration;

use rookery_client::ConnectOptions;
use rookery_client::bench::{self, BenchConfig, BenchOp};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
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
    pub(crate) client_threads: usize,
    /// Also run redis-benchmark (same command, concurrency, value size) and print the ratio.
    #[arg(long)]
    compare_redis: bool,
    /// With --compare-redis: alternate the two this many times and report the median ratio
    /// (single runs on a small shared machine vary by 10-20%).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Another Rookery server (the same build with another config, e.g. fair shares off):
    /// alternate rounds between it and `--url` and print the throughput ratio of `--url` to it.
    #[arg(long, conflicts_with = "compare_redis")]
    compare_url: Option<String>,
    /// A peer to run the same scenario against, alternating rounds with `--url`, and print
    /// Rookery/peer ratios (NATS: fanout, append, consume; etcd: get, lock, lock-contended).
    #[cfg(feature = "peers")]
    #[arg(long, value_enum, conflicts_with_all = ["compare_redis", "compare_url"], requires = "peer_url")]
    compare_peer: Option<bench::peers::Peer>,
    /// With --compare-peer: the peer's address (`nats://127.0.0.1:4222`, `http://127.0.0.1:2379`).
    #[cfg(feature = "peers")]
    #[arg(long)]
    peer_url: Option<String>,
    /// The server's admin HTTP address, for `--op idle-subscribers`.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin_url: String,
    /// Redis for --compare-redis (the one the server uses).
    #[arg(long, env = "ROOKERY_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

/// One line of a measured round: who ran what, at which concurrency and size, and its figures.
fn print_report(who: &str, config: &BenchConfig, report: &bench::BenchReport) {
    println!(
        "{who} c={:<4} {}B: {:>10.0} ops/s  p50 {}  p99 {}  p999 {}  errors {}",
        config.concurrency,
        config.value_size,
        report.ops_per_sec,
        ms(report.p50),
        ms(report.p99),
        ms(report.p999),
        report.errors
    );
}

/// Runs `rookery bench`.
pub(crate) async fn bench_command(
    url: String,
    namespace: String,
    options: ConnectOptions,
    args: BenchArgs,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    let config = BenchConfig {
        url,
        namespace,
        options,
        op: args.op,
        concurrency: args.concurrency,
        duration: args.duration,
        keys: args.keys,
        value_size: args.value_size,
        connections: args.connections,
    };
    let name = args.op.label();
    // The fan-out's reference is raw Redis under the same window, not redis-benchmark.
    let tool =
        if matches!(args.op, BenchOp::Fanout | BenchOp::FanoutStream) { "Redis" } else { "redis-benchmark" };
    let test = match args.op {
        BenchOp::Get | BenchOp::ZipfGet | BenchOp::NearGet => "GET",
        BenchOp::Set => "SET",
        BenchOp::Lock | BenchOp::LockContended => "EVALSHA acquire, release",
        BenchOp::SessionGet => "EVALSHA session get (touch)",
        BenchOp::RateLimit => "EVALSHA rate limit check (GCRA)",
        BenchOp::Publish => "PUBLISH",
        BenchOp::Append | BenchOp::AppendStream => "XADD MAXLEN ~ 100000",
        BenchOp::AppendMany => "none (compare entries/s with Append's XADD)",
        BenchOp::Consume => "XREADGROUP COUNT 100 + XACK loop",
        BenchOp::Fanout | BenchOp::FanoutStream => "PUBLISH to 10 subscribers, delivered",
        BenchOp::IdleSubscribers => {
            let bytes = bench::events::idle_subscriber_bytes(&config, &args.admin_url).await?;
            println!(
                "rookery {name}: {bytes:.0} bytes of server memory each ({} subscriptions over {} connections)",
                config.keys, config.connections
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut ratios = Vec::new();
    let mut added = Vec::new();
    let mut errors = 0;
    for _ in 0..args.rounds.max(1) {
        let report = bench::run(&config).await?;
        errors += report.errors;
        print_report(&format!("rookery {name}"), &config, &report);
        if report.missed > 0 {
            println!("subscribers were told they missed {} messages", report.missed);
        }
        #[cfg(feature = "peers")]
        if let (Some(peer), Some(peer_url)) = (args.compare_peer, &args.peer_url) {
            let scenario = peer
                .scenario(config.op)
                .ok_or_else(|| format!("{} has no counterpart of {name}", peer.name()))?;
            let other = bench::peers::run(peer, peer_url, &config).await?;
            errors += other.errors;
            print_report(&format!("{} {scenario}", peer.name()), &config, &other);
            if other.missed > 0 {
                println!("{} dropped {} messages for slow subscribers", peer.name(), other.missed);
            }
            let (ratio, extra, line) = bench::peers::ratio_line(peer, &report, &other);
            println!("{line}");
            ratios.push(ratio);
            added.push(extra);
            continue;
        }
        if let Some(other_url) = &args.compare_url {
            let other = bench::run(&BenchConfig { url: other_url.clone(), ..config.clone() }).await?;
            errors += other.errors;
            print_report(&format!("{other_url} {name}"), &config, &other);
            let ratio = 100.0 * report.ops_per_sec / other.ops_per_sec;
            let extra = (report.p50.as_secs_f64() - other.p50.as_secs_f64()) * 1e6;
            println!("ratio: {ratio:.1}% of {other_url}'s throughput; p50 {extra:+.0}µs over it");
            ratios.push(ratio);
            added.push(extra);
            continue;
        }
        if !args.compare_redis {
            continue;
        }
        if args.op == BenchOp::LockContended {
            println!("(no redis-benchmark reference: it cannot wait for a lock)");
            continue;
        }
        let requests = (report.ops_per_sec * config.duration.as_secs_f64()) as u64;
        let redis = bench::redis_benchmark(&args.redis_url, &config, requests).await?;
        println!(
            "{tool} {test} c={:<4} {}B: {:>10.0} ops/s  p50 {}  p99 {}",
            config.concurrency,
            config.value_size,
            redis.rps,
            ms(redis.p50),
            ms(redis.p99)
        );
        let ratio = 100.0 * report.ops_per_sec / redis.rps;
        let extra = (report.p50.as_secs_f64() - redis.p50.as_secs_f64()) * 1e6;
        println!("ratio: {ratio:.1}% of {tool} throughput; p50 {extra:+.0}µs over Redis");
        ratios.push(ratio);
        added.push(extra);
    }
    if ratios.len() > 1 {
        #[cfg(feature = "peers")]
        let peer = args.compare_peer.map(|peer| peer.name());
        #[cfg(not(feature = "peers"))]
        let peer = None;
        let reference = peer.or(args.compare_url.as_deref()).unwrap_or(tool);
        println!(
            "median of {} rounds: {:.1}% of {reference}'s throughput; p50 {:+.0}µs over it",
            ratios.len(),
            median(&mut ratios),
            median(&mut added)
        );
    }
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
