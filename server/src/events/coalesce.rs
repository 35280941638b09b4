//! `Events.Append` with group commit: concurrent appends to one stream share script calls.
//!
//! An append to a stream with no write in flight is written at once, in the caller's task: one
//! at a time costs what it did. Appends that arrive while a write to the same stream (with the
//! same trimming) is in flight queue behind it; when it ends, a task writes what queued (up to a
//! bound) in one `append.lua` call, as an `AppendMany` would, and answers each caller its own
//! ID. The appends `AppendStream` takes together ([`Events::append_each`]) take their place as
//! one group per stream (written at once, or queued as one), so a burst costs one wait, not one
//! per append. Under load Redis then runs one script per batch instead of one per entry, which
//! is where an append's Redis time goes (the script's call, not its XADD). Each caller's entry
//! was checked on its own before it queued, so a batch fails only as a whole (Redis unreachable,
//! out of memory, the namespace's stream cap), and then every caller in it gets that error, as
//! it would have alone. Entries in one batch get consecutive IDs in the order they queued;
//! appends that race have no order between them anyway. A caller that leaves (its deadline
//! passed, its client cancelled) before its batch is written is not written.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
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

/// Appends to one stream that wait, together, for the write in flight to it to end.
struct Queued {
    entries: Vec<NewEntry>,
    answer: oneshot::Sender<Result<Vec<(String, bool)>>>,
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
        let (mut groups, mut count, mut bytes) = (0, 0, 0);
        for next in queued.iter() {
            let size: usize = next.entries.iter().map(entry_size).sum();
            if groups > 0
                && (count + next.entries.len() > MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES)
            {
                break;
            }
            groups += 1;
            count += next.entries.len();
            bytes += size;
        }
        queued.drain(..groups).collect()
    }
}

fn entry_size(entry: &NewEntry) -> usize {
    entry.fields.iter().map(|(name, value)| name.len() + value.len()).sum()
}

/// Splits checked appends to one stream into groups within a batch's bounds, so that no group
/// makes a script call longer than a batch would (a group's first entry goes whatever its size).
fn within_bounds(entries: Vec<(usize, NewEntry)>) -> Vec<Vec<(usize, NewEntry)>> {
    let mut groups: Vec<Vec<(usize, NewEntry)>> = Vec::new();
    let mut bytes = 0;
    for (at, entry) in entries {
        let size = entry_size(&entry);
        match groups.last_mut() {
            Some(group) if group.len() < MAX_BATCH_ENTRIES && bytes + size <= MAX_BATCH_BYTES => {
                bytes += size;
                group.push((at, entry));
            }
            _ => {
                bytes = size;
                groups.push(vec![(at, entry)]);
            }
        }
    }
    groups
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

/// Where a group of appends stands: it makes the write to its stream itself, or waits in the
/// queue behind the write in flight.
enum Place {
    Alone { key: StreamTrim, entries: Vec<NewEntry>, in_flight: InFlight },
    Queued(oneshot::Receiver<Result<Vec<(String, bool)>>>),
}

/// A group's outcome, answered to each of its appends by position.
fn answers_by_position(
    positions: Vec<usize>,
    written: Result<Vec<(String, bool)>>,
) -> Vec<(usize, Result<(String, bool)>)> {
    match written {
        Ok(written) if written.len() == positions.len() => {
            positions.into_iter().zip(written.into_iter().map(Ok)).collect()
        }
        Ok(_) => positions
            .into_iter()
            .map(|at| (at, Err(Error::Internal("a group's write answered another number of entries".into()))))
            .collect(),
        Err(e) => positions.into_iter().map(|at| (at, Err(e.clone()))).collect(),
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
        let (key, entry) = self.check_append(ns, stream, append)?;
        let place = self.place(key, vec![entry]);
        let mut written = self.written(place).await?;
        written.pop().ok_or_else(|| Error::Internal("an append of one entry answered none".into()))
    }

    /// Appends each of `appends` as [`Self::append`] would, answering each by its position in
    /// `appends` as soon as its own write ends (a refused one at once). Each is checked on its
    /// own; those to the same stream with the same trimming are queued, now, as one group in
    /// the order given (so they get increasing IDs), split where a group would exceed a batch's
    /// bounds; the groups of different streams are written concurrently.
    pub fn append_each(
        self: &Arc<Self>,
        ns: &Namespace,
        appends: Vec<(String, Append)>,
    ) -> impl futures::Stream<Item = (usize, Result<(String, bool)>)> + Send + use<> {
        let mut refused = Vec::new();
        let mut streams: Vec<(StreamTrim, Vec<(usize, NewEntry)>)> = Vec::new();
        for (at, (stream, append)) in appends.into_iter().enumerate() {
            match self.check_append(ns, &stream, append) {
                Ok((key, entry)) => match streams.iter_mut().find(|(other, _)| *other == key) {
                    Some((_, entries)) => entries.push((at, entry)),
                    None => streams.push((key, vec![(at, entry)])),
                },
                Err(e) => refused.push((at, Err(e))),
            }
        }
        // Collected here, so every group takes its place in its stream's queue before any is
        // awaited, in the order given.
        let groups: FuturesUnordered<_> = streams
            .into_iter()
            .flat_map(|(key, entries)| {
                within_bounds(entries).into_iter().map(move |group| (key.clone(), group))
            })
            .map(|(key, group)| {
                let (positions, entries): (Vec<usize>, Vec<NewEntry>) = group.into_iter().unzip();
                let place = self.place(key, entries);
                let events = self.clone();
                async move { answers_by_position(positions, events.written(place).await) }
            })
            .collect();
        futures::stream::iter(refused).chain(groups.flat_map(futures::stream::iter))
    }

    /// Checks one append: its entry and its stream's trimming.
    fn check_append(&self, ns: &Namespace, stream: &str, append: Append) -> Result<(StreamTrim, NewEntry)> {
        let Append { fields, max_len, max_age, idempotency_key } = append;
        let entry = NewEntry { fields, idempotency_key };
        self.check_entry("the entry", &entry)?;
        let trim = self.check_trim(stream, max_len, max_age)?;
        Ok((StreamTrim { ns: ns.clone(), stream: stream.to_owned(), trim }, entry))
    }

    /// Takes a place for checked `entries` to one stream: the write itself if no write to the
    /// stream is in flight, else a place in its queue, as one group.
    fn place(self: &Arc<Self>, key: StreamTrim, entries: Vec<NewEntry>) -> Place {
        let mut streams = self.appends.lock();
        match streams.entry(key) {
            Entry::Occupied(mut queued) => {
                let (answer, answered) = oneshot::channel();
                queued.get_mut().push(Queued { entries, answer });
                Place::Queued(answered)
            }
            Entry::Vacant(vacant) => {
                let in_flight = InFlight { events: self.clone(), stream: Some(vacant.key().clone()) };
                let key = vacant.key().clone();
                vacant.insert(Vec::new());
                Place::Alone { key, entries, in_flight }
            }
        }
    }

    /// The IDs of a placed group, once written.
    async fn written(&self, place: Place) -> Result<Vec<(String, bool)>> {
        match place {
            Place::Queued(answered) => answered
                .await
                .unwrap_or_else(|_| Err(Error::Internal("a queued append was dropped unanswered".into()))),
            Place::Alone { key, entries, in_flight } => {
                metrics::histogram!("rookery_events_append_batch_entries").record(entries.len() as f64);
                // Boxed: the write's future is large, and every append's future would otherwise
                // carry its size, through each move of the task it runs in, even an append that
                // queues (most, under load).
                let written = Box::pin(self.write_entries(&key.ns, &key.stream, &entries, key.trim)).await;
                // Only now may what queued behind this write be written.
                drop(in_flight);
                written
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
        let sizes: Vec<usize> = batch.iter().map(|queued| queued.entries.len()).collect();
        let entries: Vec<NewEntry> =
            batch.iter_mut().flat_map(|queued| std::mem::take(&mut queued.entries)).collect();
        metrics::histogram!("rookery_events_append_batch_entries").record(entries.len() as f64);
        match self.write_entries(&stream.ns, &stream.stream, &entries, stream.trim).await {
            Ok(written) => {
                let mut written = written.into_iter();
                for (queued, size) in batch.into_iter().zip(sizes) {
                    let _ = queued.answer.send(Ok(written.by_ref().take(size).collect()));
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
