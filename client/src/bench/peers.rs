//! The same scenarios against the services a user would pick instead of Rookery, driven by the
//! same load generator ([`super::closed_loop`], [`super::events::measure_fanout`]) so that
//! `rookery bench --compare-peer` can alternate rounds and print Rookery/peer ratios:
//!
//! - NATS ([`nats`]): fan-out to 10 subscribers (core pub/sub), durable append (JetStream
//!   publish with ack, memory storage) and consume with acks (a JetStream pull consumer with
//!   explicit acks), for the Events scenarios;
//! - etcd ([`etcd`]): reads of one key (`KV.Range`), lock acquire + release pairs and a
//!   contended lock (etcd's lock service, one lease per worker), for Cache.Get and Lock.

pub mod etcd;
pub mod nats;

use super::{BenchConfig, BenchError, BenchOp, BenchReport};

/// A service a user would pick instead of Rookery for some of its scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// NATS with JetStream (`nats://host:port`): the Events scenarios.
    Nats,
    /// etcd v3 (`http://host:port`): key reads and locks.
    Etcd,
}

impl Peer {
    /// The peer's name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nats => "NATS",
            Self::Etcd => "etcd",
        }
    }

    /// What the peer runs for `op`, for reports; `None` if it has no counterpart.
    pub fn scenario(self, op: BenchOp) -> Option<&'static str> {
        match (self, op) {
            (Self::Nats, BenchOp::Fanout | BenchOp::FanoutStream) => {
                Some("core publish + flush to 10 subscribers, delivered")
            }
            (Self::Nats, BenchOp::Append | BenchOp::AppendStream) => {
                Some("JetStream publish with ack (memory storage)")
            }
            (Self::Nats, BenchOp::Consume) => Some("JetStream pull consumer, fetch 100 + explicit acks"),
            (Self::Etcd, BenchOp::Get) => Some("KV.Range of one key"),
            (Self::Etcd, BenchOp::Lock) => Some("Lock.Lock + Lock.Unlock (one lease per worker)"),
            (Self::Etcd, BenchOp::LockContended) => {
                Some("Lock.Lock + Lock.Unlock, one name (one lease per worker)")
            }
            _ => None,
        }
    }
}

/// Runs `config`'s scenario against the peer at `url`.
pub async fn run(peer: Peer, url: &str, config: &BenchConfig) -> Result<BenchReport, BenchError> {
    match (peer, config.op) {
        (Peer::Nats, BenchOp::Fanout | BenchOp::FanoutStream) => nats::fanout(url, config).await,
        (Peer::Nats, BenchOp::Append | BenchOp::AppendStream) => nats::append(url, config).await,
        (Peer::Nats, BenchOp::Consume) => nats::consume(url, config).await,
        (Peer::Etcd, BenchOp::Get) => etcd::get(url, config).await,
        (Peer::Etcd, BenchOp::Lock) => etcd::lock(url, config, false).await,
        (Peer::Etcd, BenchOp::LockContended) => etcd::lock(url, config, true).await,
        (peer, op) => Err(format!("{} has no counterpart of {}", peer.name(), op.label()).into()),
    }
}

/// Rookery's throughput as a percentage of the peer's, for the report line.
pub fn ratio_line(peer: Peer, rookery: &BenchReport, other: &BenchReport) -> (f64, f64, String) {
    let ratio = percent(rookery.ops_per_sec, other.ops_per_sec);
    let extra = (rookery.p50.as_secs_f64() - other.p50.as_secs_f64()) * 1e6;
    let line = format!(
        "ratio: Rookery/{} = {ratio:.1}% ({:.2}x) of its throughput; p50 {extra:+.0}µs over it",
        peer.name(),
        ratio / 100.0
    );
    (ratio, extra, line)
}

/// `part` as a percentage of `whole` (0 if `whole` is not positive).
fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { 100.0 * part / whole } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(ops_per_sec: f64, p50_micros: u64) -> BenchReport {
        BenchReport {
            ops: 0,
            errors: 0,
            ops_per_sec,
            p50: Duration::from_micros(p50_micros),
            p99: Duration::ZERO,
            p999: Duration::ZERO,
            missed: 0,
        }
    }

    #[test]
    fn ratio_is_rookery_over_the_peer() {
        let (ratio, extra, line) = ratio_line(Peer::Etcd, &report(45_000.0, 1_000), &report(10_000.0, 4_000));
        assert_eq!(ratio, 450.0);
        assert_eq!(extra, -3000.0);
        assert_eq!(line, "ratio: Rookery/etcd = 450.0% (4.50x) of its throughput; p50 -3000µs over it");
        let (ratio, _, _) = ratio_line(Peer::Nats, &report(1.0, 1), &report(0.0, 1));
        assert_eq!(ratio, 0.0);
    }

    #[test]
    fn each_peer_runs_only_its_counterparts() {
        assert!(Peer::Nats.scenario(BenchOp::Fanout).is_some());
        assert!(Peer::Nats.scenario(BenchOp::Append).is_some());
        assert!(Peer::Nats.scenario(BenchOp::Consume).is_some());
        assert!(Peer::Nats.scenario(BenchOp::Get).is_none());
        assert!(Peer::Etcd.scenario(BenchOp::Get).is_some());
        assert!(Peer::Etcd.scenario(BenchOp::Lock).is_some());
        assert!(Peer::Etcd.scenario(BenchOp::LockContended).is_some());
        assert!(Peer::Etcd.scenario(BenchOp::Fanout).is_none());
    }
}
