//! Key reads and locks against etcd v3 (`etcd` from Debian's `etcd-server`), in the shapes of
//! Rookery's Cache.Get and Lock scenarios, through stubs generated from the part of etcd's
//! protos in `client/proto/etcd/` (see `client/build.rs`), over one HTTP/2 connection as
//! Rookery's client uses.
//!
//! Reads are etcd's default: linearizable (`serializable` unset). Locks use etcd's lock service
//! the way etcd's own `concurrency` package does: each worker holds one lease (granted before
//! the run, like a session), and a pair is `Lock` (which waits while the name is held) then
//! `Unlock`.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tonic::transport::Channel;

use crate::bench::{BenchConfig, BenchError, BenchReport, Step, closed_loop, key_name};

/// etcd's KV and Lease stubs and messages (a subset of `etcdserverpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's lock service stubs and messages (`v3lockpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

use etcdserverpb::kv_client::KvClient;
use etcdserverpb::lease_client::LeaseClient;
use v3lockpb::lock_client::LockClient;

/// Time to live of each worker's lease: longer than a run, which sends no keep-alives.
const LEASE_TTL_SECS: i64 = 60;

async fn connect(url: &str) -> Result<Channel, BenchError> {
    Ok(Channel::from_shared(url.to_owned())?.connect().await?)
}

/// A worker of the read scenario: `Range` of one random key out of `keys`.
struct Get {
    kv: KvClient<Channel>,
    keys: usize,
}

impl Step for Get {
    async fn step(&mut self) -> bool {
        let key = key_name(rand::rng().random_range(0..self.keys)).into_bytes();
        let request = etcdserverpb::RangeRequest { key, ..Default::default() };
        self.kv.range(request).await.is_ok_and(|response| !response.into_inner().kvs.is_empty())
    }
}

/// Puts `config.keys` keys of `config.value_size` bytes (named as Rookery's), then has
/// `config.concurrency` workers read random ones with `Range`.
pub async fn get(url: &str, config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let channel = connect(url).await?;
    let kv = KvClient::new(channel);
    let value = vec![b'x'; config.value_size];
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..64 {
        let (mut kv, value, next, keys) = (kv.clone(), value.clone(), next.clone(), config.keys);
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= keys {
                    return Ok::<_, tonic::Status>(());
                }
                let put = etcdserverpb::PutRequest {
                    key: key_name(i).into_bytes(),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(put).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let workers = (0..config.concurrency.max(1)).map(|_| Get { kv: kv.clone(), keys: config.keys }).collect();
    closed_loop(config.duration, workers).await
}

/// A worker of the lock scenarios: `Lock` then `Unlock` of `name` under its own lease.
struct Pair {
    lock: LockClient<Channel>,
    name: Vec<u8>,
    lease: i64,
}

impl Step for Pair {
    async fn step(&mut self) -> bool {
        let request = v3lockpb::LockRequest { name: self.name.clone(), lease: self.lease };
        let Ok(locked) = self.lock.lock(request).await else { return false };
        let key = locked.into_inner().key;
        self.lock.unlock(v3lockpb::UnlockRequest { key }).await.is_ok()
    }
}

/// `config.concurrency` workers each grant a lease, then lock and unlock in a loop: each its own
/// name (never contended) or, with `contended`, all the same one (each `Lock` waits for the
/// holder's `Unlock`). The leases are revoked afterwards.
pub async fn lock(url: &str, config: &BenchConfig, contended: bool) -> Result<BenchReport, BenchError> {
    let channel = connect(url).await?;
    let mut leases = LeaseClient::new(channel.clone());
    let lock = LockClient::new(channel);
    let mut workers = Vec::with_capacity(config.concurrency);
    for worker in 0..config.concurrency.max(1) {
        let granted = leases
            .lease_grant(etcdserverpb::LeaseGrantRequest { ttl: LEASE_TTL_SECS, id: 0 })
            .await?
            .into_inner();
        if !granted.error.is_empty() {
            return Err(format!("etcd granted no lease: {}", granted.error).into());
        }
        let name = if contended { "bench:contended".to_owned() } else { format!("bench:lock:{worker}") };
        workers.push(Pair { lock: lock.clone(), name: name.into_bytes(), lease: granted.id });
    }
    let ids: Vec<i64> = workers.iter().map(|w| w.lease).collect();
    // The leases get no keep-alives: the run must end well within their TTL.
    if config.duration + Duration::from_secs(5) >= Duration::from_secs(LEASE_TTL_SECS as u64) {
        return Err(format!("etcd lock runs last under {LEASE_TTL_SECS}s (the lease TTL)").into());
    }
    let report = closed_loop(config.duration, workers).await;
    for id in ids {
        leases.lease_revoke(etcdserverpb::LeaseRevokeRequest { id }).await?;
    }
    report
}
