//! `Events.Append` with group commit: concurrent appends to one stream share script calls.
//!
//! An append to a stream with no write in flight runs at once, alone, in the caller's task:
//! one at a time costs what it did. Appends that arrive while a write to the same stream (with
//! the same trimming) is in flight queue behind it; when it ends, a task writes what
//! queued (up to a bound) in one `append.lua` call, as an `AppendMany` would, and answers each caller its own
//! ID. Under load Redis then runs one script per batch instead of one per entry, which is where
//! an append's Redis time goes (the script's call, not its XADD). Each caller's entry was checked
//! on its own before it queued, so a batch fails only as a whole (Redis unreachable, out of
//! memory, the namespace's stream cap), and then every caller in it gets that error, as it
//! would have alone. Entries in one batch get consecutive IDs in the order they queued; appends
//! that race have no order between them anyway. A caller that leaves (its deadline passed, its
//! client cancelled) before its batch is written is not written.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Append, Events, NewEntry, Trim};
use crate::error::{Error, Result};
use crate::namespace::Namespace;

/// Most entries written in one batch.
const MAX_BATCH_ENTRIES: usize = 256;
/// Most bytes of fields in one batch (a batch's first entry goes whatever its size): large
/// entries go a few at a time, so that one script call does not hold Redis for long.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The appends of one stream that share a write: same namespace, stream and trimming.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StreamTrim {
    ns: Namespace,
    stream: String,
    trim: Trim,
}

/// An append waiting for the write in flight to its stream to end.
struct Queued {
    entry: NewEntry,
    answer: oneshot::Sender<Result<(String, bool)>>,
}

/// Appends queued per stream. A stream present here has a write in flight; its list holds the
/// appends that arrived since.
#[derive(Default)]
pub(super) struct AppendQueues {
    streams: Mutex<HashMap<StreamTrim, Vec<Queued>>>,
}

impl std::fmt::Debug for AppendQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendQueues").field("streams_in_flight", &self.lock().len()).finish()
    }
}

impl AppendQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamTrim, Vec<Queued>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The appends queued for `stream` since its last write, leaving it marked in flight; or
    /// none, unmarking it.
    fn next_batch(&self, stream: &StreamTrim) -> Vec<Queued> {
        let mut streams = self.lock();
        let Some(queued) = streams.get_mut(stream) else { return Vec::new() };
        if queued.is_empty() {
            streams.remove(stream);
            return Vec::new();
        }
        let (mut count, mut bytes) = (0, 0);
        for next in queued.iter() {
            let size = entry_size(&next.entry);
            if count == MAX_BATCH_ENTRIES || (count > 0 && bytes + size > MAX_BATCH_BYTES) {
                break;
            }
            count += 1;
            bytes += size;
        }
        queued.drain(..count).collect()
    }
}

fn entry_size(entry: &NewEntry) -> usize {
    entry.fields.iter().map(|(name, value)| name.len() + value.len()).sum()
}

/// Marks the caller's own write done when dropped, whether it finished or its caller left
/// mid-write: appends queued behind it are handed to a task that writes them.
struct InFlight {
    events: Arc<Events>,
    stream: Option<StreamTrim>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else { return };
        let batch = self.events.appends.next_batch(&stream);
        if batch.is_empty() {
            return;
        }
        // Without a runtime (it is shutting down) the queued callers are gone with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.events.clone().write_queued(stream, batch));
        }
    }
}

impl Events {
    /// Appends an entry; returns its ID and whether it was a retry of an earlier append.
    pub async fn append(
        self: &Arc<Self>,
        ns: &Namespace,
        stream: &str,
        append: Append,
    ) -> Result<(String, bool)> {
        let Append { fields, max_len, max_age, idempotency_key } = append;
        let entry = NewEntry { fields, idempotency_key };
        self.check_entry("the entry", &entry)?;
        let trim = self.check_trim(stream, max_len, max_age)?;
        let key = StreamTrim { ns: ns.clone(), stream: stream.to_owned(), trim };
        let queued = match self.appends.lock().entry(key.clone()) {
            Entry::Occupied(mut queued) => {
                let (answer, answered) = oneshot::channel();
                queued.get_mut().push(Queued { entry, answer });
                Ok(answered)
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Vec::new());
                Err(entry)
            }
        };
        match queued {
            Ok(answered) => answered
                .await
                .unwrap_or_else(|_| Err(Error::Internal("a queued append was dropped unanswered".into()))),
            Err(entry) => {
                let _in_flight = InFlight { events: self.clone(), stream: Some(key) };
                let mut written = self.write_entries(ns, stream, std::slice::from_ref(&entry), trim).await?;
                written.pop().ok_or_else(|| Error::Internal("an append of one entry answered none".into()))
            }
        }
    }

    /// Writes one batch of queued appends. Its guard then hands what queued meanwhile to the
    /// next task, also if this one panicked.
    async fn write_queued(self: Arc<Self>, stream: StreamTrim, mut batch: Vec<Queued>) {
        let _in_flight = InFlight { events: self.clone(), stream: Some(stream.clone()) };
        // A caller gone before its write is not written.
        batch.retain(|queued| !queued.answer.is_closed());
        if batch.is_empty() {
            return;
        }
        let entries: Vec<NewEntry> =
            batch.iter_mut().map(|queued| std::mem::take(&mut queued.entry)).collect();
        metrics::histogram!("rookery_events_append_batch_entries").record(entries.len() as f64);
        match self.write_entries(&stream.ns, &stream.stream, &entries, stream.trim).await {
            Ok(written) => {
                for (queued, answer) in batch.into_iter().zip(written) {
                    let _ = queued.answer.send(Ok(answer));
                }
            }
            Err(e) => {
                for queued in batch {
                    let _ = queued.answer.send(Err(e.clone()));
                }
            }
        }
    }
}
