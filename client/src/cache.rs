//! The Cache service's typed client, and `get_or_load`, the lease protocol done right.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tonic::{Code, Status};

use crate::ClientChannel;
use crate::convert::{duration, from_duration};
use crate::pb;
use crate::pb::cache_client::CacheClient as RawCacheClient;

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes (shared, not copied, by clones and near-cache hits).
    pub value: Bytes,
    /// Time left to live, when the server knows it.
    pub ttl: Option<Duration>,
}

/// When a write takes effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SetCondition {
    /// Whether or not the key exists.
    #[default]
    Always,
    /// Only if the key does not exist.
    IfAbsent,
    /// Only if the key exists.
    IfPresent,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// Time to live (required unless the server has a default TTL).
    pub ttl: Option<Duration>,
    /// Random extra TTL up to this, so keys written together expire apart.
    pub ttl_jitter: Option<Duration>,
    /// When the write takes effect.
    pub condition: SetCondition,
    /// Tags for `invalidate_tags`.
    pub tags: Vec<String>,
}

/// Options of a raw [`CacheClient::fetch`].
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// How long to wait for another caller's fill (server default when `None`).
    pub wait: Option<Duration>,
    /// Lifetime of a lease granted to this caller (server default when `None`).
    pub lease_ttl: Option<Duration>,
    /// Grant a refresh lease when the entry has less than this left to live.
    pub refresh_ahead: Option<Duration>,
}

/// What [`CacheClient::fetch`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The entry exists.
    Hit(Entry),
    /// The entry exists and is close to expiry; this caller should refresh it with the lease.
    Refresh(Entry, String),
    /// The entry is missing; this caller must load it and `fill` it with the lease token (or
    /// `release_lease` if loading fails).
    Fill(String),
    /// Another caller's fill did not arrive within the wait.
    WaitExpired,
}

/// Options of [`CacheClient::get_or_load_with`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// TTL of the loaded value.
    pub ttl: Duration,
    /// Random extra TTL up to this.
    pub ttl_jitter: Option<Duration>,
    /// Lease lifetime: choose it above the loader's worst-case time (server default when `None`).
    pub lease_ttl: Option<Duration>,
    /// When the cached value has less than this left, one caller refreshes it (running the
    /// loader) while everyone else keeps getting the cached value.
    pub refresh_ahead: Option<Duration>,
    /// How long to wait, in total, for another caller's load before giving up.
    pub max_wait: Duration,
}

impl LoadOptions {
    /// Options with this TTL and defaults for the rest (30 s total wait).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            ttl_jitter: None,
            lease_ttl: None,
            refresh_ahead: None,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Why `get_or_load` failed.
#[derive(Debug, thiserror::Error)]
pub enum GetOrLoadError<E> {
    /// A call to the server failed.
    #[error("cache call failed: {0}")]
    Rpc(#[from] Status),
    /// This caller ran the loader and it failed; its lease was given back so the next waiter
    /// can try at once.
    #[error("loader failed: {0}")]
    Load(#[source] E),
    /// Another caller held the lease for longer than `max_wait` without filling.
    #[error("gave up after waiting {0:?} for another caller to load the value")]
    WaitExpired(Duration),
}

fn condition(c: SetCondition) -> i32 {
    match c {
        SetCondition::Always => pb::CacheSetCondition::Always,
        SetCondition::IfAbsent => pb::CacheSetCondition::IfAbsent,
        SetCondition::IfPresent => pb::CacheSetCondition::IfPresent,
    }
    .into()
}

fn entry(found: bool, value: Vec<u8>, ttl: Option<prost_types::Duration>) -> Option<Entry> {
    found.then(|| Entry { value: value.into(), ttl: from_duration(ttl) })
}

/// Typed calls to `rookery.v1.Cache`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CacheClient {
    raw: RawCacheClient<ClientChannel>,
}

impl CacheClient {
    pub(crate) fn new(channel: ClientChannel) -> Self {
        Self {
            raw: RawCacheClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }

    /// The generated stub, for calls with options this API does not expose.
    pub fn raw(&self) -> RawCacheClient<ClientChannel> {
        self.raw.clone()
    }

    /// Reads a key; `None` on a miss.
    pub async fn get(&self, key: impl Into<String>) -> Result<Option<Entry>, Status> {
        let pb::CacheGetResponse { found, value, ttl } =
            self.raw.clone().get(pb::CacheGetRequest { key: key.into() }).await?.into_inner();
        Ok(entry(found, value, ttl))
    }

    /// Reads many keys in one call; results in the order of `keys`.
    pub async fn get_many<K: Into<String>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Entry>>, Status> {
        let response = self
            .raw
            .clone()
            .get_many(pb::CacheGetManyRequest { keys: keys.into_iter().map(Into::into).collect() })
            .await?
            .into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|pb::CacheLookup { found, value, ttl }| entry(found, value, ttl))
            .collect())
    }

    /// Writes a key with a TTL.
    pub async fn set(&self, key: impl Into<String>, value: Vec<u8>, ttl: Duration) -> Result<bool, Status> {
        self.set_with(key, value, SetOptions { ttl: Some(ttl), ..SetOptions::default() }).await
    }

    /// Writes a key with options; returns whether it was written (the condition held).
    pub async fn set_with(
        &self,
        key: impl Into<String>,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<bool, Status> {
        self.set_marked(key, value, options, 0).await
    }

    /// [`Self::set_with`] carrying a near cache's origin mark (0: none).
    pub(crate) async fn set_marked(
        &self,
        key: impl Into<String>,
        value: Vec<u8>,
        options: SetOptions,
        origin: u64,
    ) -> Result<bool, Status> {
        let SetOptions { ttl, ttl_jitter, condition: cond, tags } = options;
        let response = self
            .raw
            .clone()
            .set(pb::CacheSetRequest {
                key: key.into(),
                value,
                ttl: ttl.map(duration),
                ttl_jitter: ttl_jitter.map(duration),
                condition: condition(cond),
                tags,
                origin,
            })
            .await?;
        Ok(response.into_inner().stored)
    }

    /// Writes many keys in one call (pipelined on the server); returns per entry whether it
    /// was written.
    pub async fn set_many<K: Into<String>>(
        &self,
        entries: impl IntoIterator<Item = (K, Vec<u8>)>,
        options: SetOptions,
    ) -> Result<Vec<bool>, Status> {
        let SetOptions { ttl, ttl_jitter, condition: cond, tags } = options;
        let response = self
            .raw
            .clone()
            .set_many(pb::CacheSetManyRequest {
                entries: entries
                    .into_iter()
                    .map(|(key, value)| pb::CacheEntry { key: key.into(), value, ttl: None })
                    .collect(),
                ttl: ttl.map(duration),
                ttl_jitter: ttl_jitter.map(duration),
                condition: condition(cond),
                tags,
            })
            .await?;
        Ok(response.into_inner().stored)
    }

    /// Deletes keys; returns how many existed.
    pub async fn delete<K: Into<String>>(&self, keys: impl IntoIterator<Item = K>) -> Result<u64, Status> {
        let response = self
            .raw
            .clone()
            .delete(pb::CacheDeleteRequest { keys: keys.into_iter().map(Into::into).collect() })
            .await?;
        Ok(response.into_inner().deleted)
    }

    /// Removes every key written with any of `tags`; returns how many were removed.
    pub async fn invalidate_tags<T: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = T>,
    ) -> Result<u64, Status> {
        let tags = pb::CacheTags { tags: tags.into_iter().map(Into::into).collect() };
        self.invalidate(pb::cache_invalidate_request::Target::Tags(tags)).await
    }

    /// Removes every key whose name starts with `prefix` (matched literally); returns how many
    /// were removed.
    pub async fn invalidate_prefix(&self, prefix: impl Into<String>) -> Result<u64, Status> {
        self.invalidate(pb::cache_invalidate_request::Target::Prefix(prefix.into())).await
    }

    async fn invalidate(&self, target: pb::cache_invalidate_request::Target) -> Result<u64, Status> {
        let response =
            self.raw.clone().invalidate(pb::CacheInvalidateRequest { target: Some(target) }).await?;
        Ok(response.into_inner().removed)
    }

    /// Reads a key with the lease protocol (see `Cache.Fetch` in cache.proto).
    pub async fn fetch(&self, key: impl Into<String>, options: &FetchOptions) -> Result<Fetched, Status> {
        let pb::CacheFetchResponse { outcome, value, ttl, lease_token, lease_ttl: _ } = self
            .raw
            .clone()
            .fetch(pb::CacheFetchRequest {
                key: key.into(),
                wait: options.wait.map(duration),
                lease_ttl: options.lease_ttl.map(duration),
                refresh_ahead: options.refresh_ahead.map(duration),
            })
            .await?
            .into_inner();
        let value = Bytes::from(value);
        let entry = || Entry { value: value.clone(), ttl: from_duration(ttl) };
        match pb::CacheFetchOutcome::try_from(outcome) {
            Ok(pb::CacheFetchOutcome::Hit) => Ok(Fetched::Hit(entry())),
            Ok(pb::CacheFetchOutcome::Refresh) => Ok(Fetched::Refresh(entry(), lease_token)),
            Ok(pb::CacheFetchOutcome::Fill) => Ok(Fetched::Fill(lease_token)),
            Ok(pb::CacheFetchOutcome::WaitExpired) => Ok(Fetched::WaitExpired),
            Ok(pb::CacheFetchOutcome::Unspecified) | Err(_) => {
                Err(Status::internal(format!("unknown fetch outcome {outcome}")))
            }
        }
    }

    /// Stores a value with a lease from `fetch`. FAILED_PRECONDITION means the lease was no
    /// longer current and nothing was stored.
    pub async fn fill(
        &self,
        key: impl Into<String>,
        lease_token: String,
        value: Vec<u8>,
        options: SetOptions,
    ) -> Result<(), Status> {
        let SetOptions { ttl, ttl_jitter, condition: _, tags } = options;
        self.raw
            .clone()
            .fill(pb::CacheFillRequest {
                key: key.into(),
                lease_token,
                value,
                ttl: ttl.map(duration),
                ttl_jitter: ttl_jitter.map(duration),
                tags,
            })
            .await?;
        Ok(())
    }

    /// Gives a lease back without filling; returns false if it was no longer current.
    pub async fn release_lease(&self, key: impl Into<String>, lease_token: String) -> Result<bool, Status> {
        let response = self
            .raw
            .clone()
            .release_lease(pb::CacheReleaseLeaseRequest { key: key.into(), lease_token })
            .await?;
        Ok(response.into_inner().released)
    }

    /// Returns the cached value of `key`, or runs `loader` to produce it, such that the loader
    /// runs once per key across every caller and server replica while others wait for its
    /// value (no stampede). See [`Self::get_or_load_with`].
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
    ) -> Result<Vec<u8>, GetOrLoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        self.get_or_load_with(key, LoadOptions::new(ttl), loader).await
    }

    /// `get_or_load` with options. The caller granted the lease runs `loader` and fills the
    /// key; if the loader fails, the lease is given back at once so the next waiter loads
    /// without waiting for the lease to expire, and the error is returned. If the fill is
    /// rejected (the key was written or invalidated meanwhile) or fails, the loaded value is
    /// still returned to this caller. With `refresh_ahead`, the one caller granted a refresh
    /// lease reloads and returns the fresh value (or, if its loader fails, the cached one); all
    /// others get the cached value at once. If this future is dropped or the loader panics
    /// while the lease is held, the lease is released in the background.
    pub async fn get_or_load_with<F, Fut, E>(
        &self,
        key: &str,
        options: LoadOptions,
        loader: F,
    ) -> Result<Vec<u8>, GetOrLoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let started = tokio::time::Instant::now();
        let (lease_token, cached) = loop {
            let Some(wait) = options.max_wait.checked_sub(started.elapsed()).filter(|w| !w.is_zero()) else {
                return Err(GetOrLoadError::WaitExpired(started.elapsed()));
            };
            let fetch_options = FetchOptions {
                wait: Some(wait),
                lease_ttl: options.lease_ttl,
                refresh_ahead: options.refresh_ahead,
            };
            match self.fetch(key, &fetch_options).await? {
                Fetched::Hit(entry) => return Ok(entry.value.into()),
                Fetched::Refresh(entry, token) => break (token, Some(entry.value.into())),
                Fetched::Fill(token) => break (token, None),
                Fetched::WaitExpired => {}
            }
        };
        let mut lease = LeaseGuard { cache: self.clone(), key: key.to_owned(), token: Some(lease_token) };
        let value = match loader().await {
            Ok(value) => value,
            Err(e) => {
                // Best effort: if this fails the lease still expires on its own.
                let token = lease.take();
                let _ = self.release_lease(key, token).await;
                return match cached {
                    Some(value) => Ok(value),
                    None => Err(GetOrLoadError::Load(e)),
                };
            }
        };
        let fill =
            SetOptions { ttl: Some(options.ttl), ttl_jitter: options.ttl_jitter, ..SetOptions::default() };
        let token = lease.take();
        // The loaded value is correct whatever happens to the fill: a rejected fill means the
        // key changed meanwhile, and a failed one only means it is not cached.
        if let Err(status) = self.fill(key, token.clone(), value.clone(), fill).await
            && status.code() != Code::FailedPrecondition
        {
            let _ = self.release_lease(key, token).await;
        }
        Ok(value)
    }
}

/// Releases a held lease in the background if `get_or_load` is dropped (or its loader panics)
/// before it fills or releases the lease itself, so waiters need not wait for the lease TTL.
struct LeaseGuard {
    cache: CacheClient,
    key: String,
    token: Option<String>,
}

impl LeaseGuard {
    /// Takes the token out: the caller now owns releasing or filling.
    fn take(&mut self) -> String {
        self.token.take().unwrap_or_default()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let (Some(token), Ok(runtime)) = (self.token.take(), tokio::runtime::Handle::try_current()) {
            let cache = self.cache.clone();
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move {
                let _ = cache.release_lease(key, token).await;
            });
        }
    }
}
