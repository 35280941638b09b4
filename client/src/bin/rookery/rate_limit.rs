//! `rookery ratelimit …`: check a key against a limit (a configured policy or one given inline)
//! and reset it, from the shell; `--headers` prints the IETF RateLimit headers of the decision.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rookery_client::{Algorithm, RateLimit, RateLimiterClient};

#[derive(Debug, Subcommand)]
pub(crate) enum RateLimitCommand {
    /// Check (and, when allowed, consume) `--cost` units of a limit for a key. Exits 0 when
    /// allowed, 1 when denied.
    Check {
        /// The limited key.
        key: String,
        #[command(flatten)]
        limit: LimitArgs,
        /// Units to consume (0 only looks).
        #[arg(long, default_value_t = 1)]
        cost: u64,
        /// Also print the IETF RateLimit headers of the decision (`RateLimit-Policy`,
        /// `RateLimit`, and `Retry-After` when denied).
        #[arg(long)]
        headers: bool,
    },
    /// Forget a key's usage: its next check starts from a full limit.
    Reset {
        /// The limited key.
        key: String,
    },
}

/// Which limit to check: a policy from the server's config, or one given inline.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
pub(crate) struct LimitArgs {
    /// A policy named in the server's config.
    #[arg(long, conflicts_with_all = ["limit", "period", "burst", "algorithm"])]
    policy: Option<String>,
    /// Units per period (inline limit).
    #[arg(long, requires = "period")]
    limit: Option<u64>,
    /// The period, e.g. `1m` (inline limit).
    #[arg(long, value_parser = humantime::parse_duration, requires = "limit")]
    period: Option<Duration>,
    /// Units at once (inline GCRA and token bucket; default: the limit).
    #[arg(long, default_value_t = 0, requires = "limit")]
    burst: u64,
    /// How to count (inline limit).
    #[arg(long, value_enum, default_value = "gcra", requires = "limit")]
    algorithm: AlgorithmArg,
}

/// The counting algorithms, as flags spell them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AlgorithmArg {
    Gcra,
    TokenBucket,
    SlidingWindowLog,
    SlidingWindowCounter,
    FixedWindow,
}

impl LimitArgs {
    /// The limit, and the name its headers carry (the policy's, or `inline`).
    fn limit(&self) -> (RateLimit, String) {
        if let Some(policy) = &self.policy {
            return (RateLimit::Policy(policy.clone()), policy.clone());
        }
        let algorithm = match self.algorithm {
            AlgorithmArg::Gcra => Algorithm::Gcra,
            AlgorithmArg::TokenBucket => Algorithm::TokenBucket,
            AlgorithmArg::SlidingWindowLog => Algorithm::SlidingWindowLog,
            AlgorithmArg::SlidingWindowCounter => Algorithm::SlidingWindowCounter,
            AlgorithmArg::FixedWindow => Algorithm::FixedWindow,
        };
        // clap has checked that both are given together when there is no policy.
        let (limit, period) = (self.limit.unwrap_or_default(), self.period.unwrap_or_default());
        (RateLimit::Spec { algorithm, limit, period, burst: self.burst }, "inline".to_owned())
    }
}

/// Runs one `rookery ratelimit …` command.
pub(crate) async fn rate_limit_command(
    limiter: &RateLimiterClient,
    command: RateLimitCommand,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        RateLimitCommand::Check { key, limit, cost, headers } => {
            let (limit, policy) = limit.limit();
            let decision = limiter.check(key, &limit, cost).await?;
            let duration =
                |d: Duration| humantime::format_duration(Duration::from_millis(d.as_millis() as u64));
            println!(
                "{} remaining={} limit={} period={} reset_after={}{}",
                if decision.allowed { "allowed" } else { "denied" },
                decision.remaining,
                decision.limit,
                duration(decision.period),
                duration(decision.reset_after),
                if decision.allowed {
                    String::new()
                } else {
                    format!(" retry_after={}", duration(decision.retry_after))
                },
            );
            if decision.shadow_denied {
                println!("(the policy is in shadow mode: it would have denied this)");
            }
            if headers {
                for (name, value) in decision.headers(&policy) {
                    println!("{name}: {value}");
                }
            }
            Ok(if decision.allowed { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        RateLimitCommand::Reset { key } => {
            limiter.reset(key).await?;
            println!("reset");
            Ok(ExitCode::SUCCESS)
        }
    }
}
