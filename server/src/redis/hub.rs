//! The replica's one Redis pub/sub connection per Redis, shared by every gRPC subscriber of the
//! Events service and by the wake-up channels of the Cache and the Lock (`wakeups.rs`).
//!
//! The hub task owns the connection. Subscriptions are reference-counted per Redis channel or
//! pattern: the first subscriber of a topic SUBSCRIBEs, the last one to leave UNSUBSCRIBEs.
//! Each subscriber has a bounded mailbox; when it is full, the message is dropped for that
//! subscriber only and counted (`missed`), so a slow subscriber never slows the others or grows
//! memory. A mailbox allocates nothing until a message arrives and gives its memory back once
//! drained, so an idle subscriber costs a few hundred bytes here. After every reconnection the
//! hub subscribes to every live topic again and flags every mailbox `reconnected`: messages
//! published while the connection was down are lost, and subscribers must be told.
//!
//! Past `max_missed` losses in a row a subscriber is cut, and the hub frees it there and then,
//! in the same pass that counted the loss: the mailbox leaves the registry (and Redis is
//! UNSUBSCRIBEd from topics it was the last one on), its queue is emptied and its memory given
//! back, and it stops counting in `rookery_events_subscribers`. Waiting for its reader to notice
//! would leave a subscriber whose client never reads (its HTTP/2 window full, so its stream is
//! never polled) registered and accounted for as long as the client keeps the call open. The
//! [`Subscription`] only keeps the flag, so its stream ends with the cut when it is next read.
//!
//! Commands to the hub are processed in order, so when the hub acknowledges a subscription,
//! every topic it asked for is confirmed by Redis: anything published afterwards is delivered.
//!
//! With Redis Sentinel ([`Target::Sentinel`]) the hub connects to the master in use and moves
//! to the new one as soon as the link follows a failover, with the same gap notice.
//!
//! Longer than most files on purpose: the queue, the registry and the connection task share
//! one invariant (every loss is reported exactly where it happened), best read in one place.
//!
//! One room on purpose, past 600 lines: the one subscriber connection, its reconnection (to the
//! seeds or to a Sentinel's current master) and the fan-out to every gRPC subscriber keep one
//! invariant together: every message lost to a reconnection or a slow subscriber is signalled.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::Client;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::sentinel::Link;
use tokio::task::JoinHandle;

/// Queued items above which a drained queue gives its memory back.
const KEEP_CAPACITY: usize = 16;

/// How often the idle connection PINGs Redis to detect a dead connection.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a PING or a (re)subscription may take before the connection is declared dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A Redis channel or pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An exact channel name.
    Channel(String),
    /// A glob pattern.
    Pattern(String),
}

/// A message as it reached a subscriber. Every subscriber of a message holds the same one:
/// handing it to another is a reference count, not a copy.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The Redis channel it was published on.
    pub channel: Arc<str>,
    /// The Redis pattern it matched, for pattern subscriptions.
    pub pattern: Option<Arc<str>>,
    /// The payload.
    pub payload: Bytes,
}

/// What a subscriber's queue holds, in order: messages, and markers where messages were lost.
#[derive(Debug, Clone)]
pub enum Item {
    /// A message.
    Message(Delivery),
    /// This many messages were dropped here because the queue was full.
    Missed(u64),
    /// The connection was re-established here: messages published meanwhile are lost.
    Reconnected,
}

/// A subscriber's bounded queue of items, filled by the hub task and emptied by the subscriber.
#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<Item>>,
    capacity: usize,
    ready: Notify,
    closed: AtomicBool,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Item>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` unless the queue is full (or its subscriber is gone).
    fn try_push(&self, item: Item) -> Result<(), Item> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(item);
        }
        {
            let mut items = self.lock();
            if items.len() >= self.capacity {
                return Err(item);
            }
            items.push_back(item);
        }
        // Stores a permit when the subscriber is not waiting, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    fn take(&self) -> Option<Item> {
        let mut items = self.lock();
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > KEEP_CAPACITY {
            *items = VecDeque::new();
        }
        item
    }

    /// The next item, waiting for one.
    async fn pop(&self) -> Item {
        loop {
            if let Some(item) = self.take() {
                return item;
            }
            self.ready.notified().await;
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Refuses every later item and gives the queued ones' memory back.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        *self.lock() = VecDeque::new();
        // A subscriber waiting in `pop` re-checks (and finds its mailbox cut).
        self.ready.notify_one();
    }
}

/// One subscriber's side of the fan-out: its bounded queue, and the losses not yet queued.
///
/// Only the hub task offers items, so the pending counters need no lock; a marker goes into the
/// queue as soon as there is room, ahead of the next message, so the subscriber learns of each
/// loss exactly where it happened.
#[derive(Debug)]
pub struct Mailbox {
    /// Its key in the registry, under each of `topics`.
    id: u64,
    /// The topics it is registered under (until it is released).
    topics: Vec<Topic>,
    /// Whether it left the registry (and the gauge): once, by a cut or by its subscription's drop.
    released: AtomicBool,
    queue: Queue,
    pending_missed: AtomicU64,
    pending_reconnected: AtomicBool,
    missed_in_a_row: AtomicU64,
    cut: AtomicBool,
    notify: Notify,
    max_missed: u64,
    /// A client's subscription (counted in the Events metrics), not one of the server's own.
    counted: bool,
}

impl Mailbox {
    /// Queues the pending markers; false if the queue had no room for them.
    fn flush_markers(&self) -> bool {
        if self.pending_reconnected.load(Ordering::Relaxed) {
            if self.queue.try_push(Item::Reconnected).is_err() {
                return false;
            }
            self.pending_reconnected.store(false, Ordering::Relaxed);
        }
        // Swapped out, so that the subscriber's own reporting (see `take_missed`) and this
        // marker never count one loss twice.
        let missed = self.pending_missed.swap(0, Ordering::Relaxed);
        if missed > 0 && self.queue.try_push(Item::Missed(missed)).is_err() {
            self.pending_missed.fetch_add(missed, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues `delivery`, or counts it missed; true if this loss cut the subscriber (the
    /// caller, holding the registry, then releases it).
    fn offer(&self, delivery: Delivery) -> bool {
        if self.queue.closed.load(Ordering::Relaxed) {
            return false;
        }
        if self.flush_markers() && self.queue.try_push(Item::Message(delivery)).is_ok() {
            self.missed_in_a_row.store(0, Ordering::Relaxed);
            return false;
        }
        self.pending_missed.fetch_add(1, Ordering::Relaxed);
        if self.counted {
            metrics::counter!("rookery_events_missed_total").increment(1);
        }
        let cut = self.missed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= self.max_missed
            && !self.cut.swap(true, Ordering::Relaxed);
        self.notify.notify_one();
        cut
    }

    fn reconnected(&self) {
        self.pending_reconnected.store(true, Ordering::Relaxed);
        self.flush_markers();
    }

    /// Whether the subscriber fell too far behind and must be cut.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Losses not yet queued as a marker. The subscriber takes them itself once it has
    /// drained its queue (no later message would carry the marker otherwise).
    pub fn take_missed(&self) -> u64 {
        self.pending_missed.swap(0, Ordering::Relaxed)
    }

    /// Resolves when a loss was recorded (messages dropped, or the subscriber cut).
    pub async fn lost(&self) {
        self.notify.notified().await;
    }
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    topics: HashMap<Topic, HashMap<u64, Arc<Mailbox>>>,
}

impl Registry {
    /// Takes `mailbox` out of every topic and out of the gauge, unless that was done already
    /// (a cut subscription is released by the hub, and dropped later by its stream); returns
    /// the topics left without a subscriber, to UNSUBSCRIBE.
    fn release(&mut self, mailbox: &Mailbox) -> Vec<Topic> {
        if mailbox.released.swap(true, Ordering::Relaxed) {
            return Vec::new();
        }
        let mut emptied = Vec::new();
        for topic in &mailbox.topics {
            if let Some(subscribers) = self.topics.get_mut(topic) {
                subscribers.remove(&mailbox.id);
                if subscribers.is_empty() {
                    self.topics.remove(topic);
                    emptied.push(topic.clone());
                }
            }
        }
        if mailbox.counted {
            metrics::gauge!("rookery_events_subscribers").decrement(1.0);
        }
        emptied
    }
}

enum Command {
    /// SUBSCRIBE these (new) topics, then answer: done, or Redis's refusal.
    Subscribe(Vec<Topic>, oneshot::Sender<Result<(), String>>),
    /// UNSUBSCRIBE these topics if they still have no subscriber.
    Unsubscribe(Vec<Topic>),
}

/// The hub: one per replica.
#[derive(Debug)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    commands: mpsc::UnboundedSender<Command>,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A live subscription; dropping it unsubscribes (unless a cut did so already).
#[derive(Debug)]
pub struct Subscription {
    hub_registry: Arc<Mutex<Registry>>,
    commands: mpsc::UnboundedSender<Command>,
    /// Messages and loss markers, in the order Redis delivered them; and losses not queued.
    pub mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// The next message or loss marker, waiting for one.
    pub async fn recv(&self) -> Item {
        self.mailbox.queue.pop().await
    }

    /// The next message or loss marker if one is queued, without waiting.
    pub fn try_recv(&self) -> Option<Item> {
        self.mailbox.queue.take()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.mailbox.queue.is_empty()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.mailbox.queue.closed.store(true, Ordering::Relaxed);
        let emptied = self.hub_registry.lock().expect("events registry poisoned").release(&self.mailbox);
        if !emptied.is_empty() {
            let _ = self.commands.send(Command::Unsubscribe(emptied));
        }
    }
}

/// Why a subscription could not be made live.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection is down, or Redis did not confirm in time.
    #[error("the server's Redis pub/sub connection is not available")]
    NotConnected,
    /// Redis answered the SUBSCRIBE with an error (its user may not use those channels).
    #[error("Redis refused the subscription: {0}")]
    Refused(String),
}

/// Whether a failed command means the connection is unusable (as opposed to Redis answering
/// with an error, such as a permission refused).
fn is_connection_failure(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// SUBSCRIBEs (and PSUBSCRIBEs) `topics`: Ok, a refusal from Redis, or a connection failure
/// (which includes taking longer than [`COMMAND_TIMEOUT`]).
async fn subscribe_topics(
    sink: &mut redis::aio::PubSubSink,
    topics: &[Topic],
) -> Result<(), Option<redis::RedisError>> {
    let (channels, patterns) = split(topics);
    let subscribed = async {
        if !channels.is_empty() {
            sink.subscribe(&channels).await?;
        }
        if !patterns.is_empty() {
            sink.psubscribe(&patterns).await?;
        }
        Ok::<_, redis::RedisError>(())
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, subscribed).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if !is_connection_failure(&e) => Err(Some(e)),
        _ => Err(None),
    }
}

/// Where the hub connects.
pub enum Target {
    /// Fixed nodes (a standalone Redis, or the nodes of a Cluster), tried in turn.
    Seeds(Vec<Client>),
    /// The master a Sentinel link follows.
    Sentinel(Arc<Link>),
}

impl Target {
    /// The client to connect with now (the `turn`th seed, or the master in use) and, with
    /// Sentinel, a receiver that changes when the master does.
    fn next(&self, turn: &mut usize) -> (Client, Option<watch::Receiver<u64>>) {
        match self {
            Self::Seeds(clients) => {
                *turn += 1;
                (clients[(*turn - 1) % clients.len()].clone(), None)
            }
            Self::Sentinel(link) => {
                // Subscribed first: a switch right after `current` still shows.
                let switches = link.switches();
                (link.current().client.clone(), Some(switches))
            }
        }
    }

    /// Tells a Sentinel link that its master could not be reached, so it asks the sentinels.
    fn failed(&self) {
        if let Self::Sentinel(link) = self {
            link.suspect();
        }
    }
}

/// Resolves when the master moves (never, for fixed nodes).
async fn moved(switches: &mut Option<watch::Receiver<u64>>) {
    if let Some(switches) = switches
        && switches.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

impl Hub {
    /// Starts the hub on `target` (on the first seed that answers, rotating on failures).
    pub fn start(target: Target) -> Self {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let (commands, receiver) = mpsc::unbounded_channel();
        let (connected_tx, connected) = watch::channel(false);
        let task = tokio::spawn(run(target, registry.clone(), receiver, connected_tx));
        Self { registry, commands, connected, task }
    }

    /// Whether the pub/sub connection is live.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits up to `timeout` for the connection to be live; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|c| *c)).await.is_ok()
    }

    /// A receiver of the connection's state (true while live), to act on every (re)connection.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Registers a subscription's mailbox under `topics`; returns it and the topics that had
    /// no subscriber yet (to SUBSCRIBE).
    fn register(
        &self,
        topics: Vec<Topic>,
        buffer: usize,
        max_missed: u64,
        counted: bool,
    ) -> (Subscription, Vec<Topic>) {
        let (mailbox, new_topics) = {
            let mut registry = self.registry.lock().expect("events registry poisoned");
            registry.next_id += 1;
            let mailbox = Arc::new(Mailbox {
                id: registry.next_id,
                topics,
                released: AtomicBool::new(false),
                queue: Queue::new(buffer),
                pending_missed: AtomicU64::new(0),
                pending_reconnected: AtomicBool::new(false),
                missed_in_a_row: AtomicU64::new(0),
                cut: AtomicBool::new(false),
                notify: Notify::new(),
                max_missed,
                counted,
            });
            let mut new_topics = Vec::new();
            for topic in &mailbox.topics {
                let subscribers = registry.topics.entry(topic.clone()).or_default();
                if subscribers.is_empty() {
                    new_topics.push(topic.clone());
                }
                subscribers.insert(mailbox.id, mailbox.clone());
            }
            // Counted under the lock, like its release, so the gauge never goes below zero.
            if counted {
                metrics::gauge!("rookery_events_subscribers").increment(1.0);
            }
            (mailbox, new_topics)
        };
        let subscription =
            Subscription { hub_registry: self.registry.clone(), commands: self.commands.clone(), mailbox };
        (subscription, new_topics)
    }

    /// Subscribes a client to `topics` with a mailbox of `buffer` messages (counted in
    /// `rookery_events_subscribers`); returns once Redis confirmed every topic (or fails if that
    /// takes longer than `timeout`).
    pub async fn subscribe(
        &self,
        topics: Vec<Topic>,
        buffer: usize,
        max_missed: u64,
        timeout: Duration,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_counted(topics, buffer, max_missed, timeout, true).await
    }

    /// [`Hub::subscribe`] for the server's own use (the near cache's feeds), which reads its
    /// messages for many clients and is not counted as a subscriber, and is never cut.
    pub async fn subscribe_for_server(
        &self,
        topics: Vec<Topic>,
        buffer: usize,
        timeout: Duration,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_counted(topics, buffer, u64::MAX, timeout, false).await
    }

    async fn subscribe_counted(
        &self,
        topics: Vec<Topic>,
        buffer: usize,
        max_missed: u64,
        timeout: Duration,
        counted: bool,
    ) -> Result<Subscription, SubscribeError> {
        let (subscription, new_topics) = self.register(topics, buffer, max_missed, counted);
        let (ack, acked) = oneshot::channel();
        self.commands.send(Command::Subscribe(new_topics, ack)).map_err(|_| SubscribeError::NotConnected)?;
        match tokio::time::timeout(timeout, acked).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(refusal))) => Err(SubscribeError::Refused(refusal)),
            _ => Err(SubscribeError::NotConnected),
        }
    }

    /// Subscribes to `topics` for good, without waiting for Redis: the topics are subscribed as
    /// soon as the connection is (or comes back) up, and the receiver answers once Redis has
    /// confirmed them or refused them (it is dropped if the connection failed meanwhile: they
    /// are subscribed again on reconnection, which [`Hub::connection`] shows). For the server's
    /// own wake-up channels, whose users recover from missed messages.
    pub fn subscribe_in_background(
        &self,
        topics: Vec<Topic>,
        buffer: usize,
    ) -> (Subscription, oneshot::Receiver<Result<(), String>>) {
        let (subscription, new_topics) = self.register(topics, buffer, u64::MAX, false);
        let (ack, confirmed) = oneshot::channel();
        let _ = self.commands.send(Command::Subscribe(new_topics, ack));
        (subscription, confirmed)
    }
}

fn split(topics: &[Topic]) -> (Vec<&str>, Vec<&str>) {
    let mut channels = Vec::new();
    let mut patterns = Vec::new();
    for topic in topics {
        match topic {
            Topic::Channel(c) => channels.push(c.as_str()),
            Topic::Pattern(p) => patterns.push(p.as_str()),
        }
    }
    (channels, patterns)
}

async fn run(
    target: Target,
    registry: Arc<Mutex<Registry>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    connected: watch::Sender<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut first_connection = true;
    let mut turn = 0;
    loop {
        let (client, mut switches) = target.next(&mut turn);
        let session = async {
            let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await.ok()?.ok()?;
            let (mut sink, stream) = pubsub.split();
            // Every live topic, again: the registry is the truth. Should Redis refuse the lot
            // (one topic its user may no longer use), each is tried alone, so one refusal costs
            // only its own subscribers, who were told of the reconnection like everyone.
            let topics: Vec<Topic> =
                registry.lock().expect("events registry poisoned").topics.keys().cloned().collect();
            match subscribe_topics(&mut sink, &topics).await {
                Ok(()) => {}
                Err(None) => return None,
                Err(Some(_)) => {
                    for topic in &topics {
                        match subscribe_topics(&mut sink, std::slice::from_ref(topic)).await {
                            Ok(()) => {}
                            Err(None) => return None,
                            Err(Some(e)) => {
                                tracing::error!(?topic, error = %e, "Redis refused a subscription")
                            }
                        }
                    }
                }
            }
            Some((sink, stream))
        };
        let Some((mut sink, mut stream)) = session.await else {
            target.failed();
            // A new master is worth trying at once.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = moved(&mut switches) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = MIN_BACKOFF;
        connected.send_replace(true);
        if !first_connection {
            tracing::warn!(
                "Redis pub/sub connection re-established; subscribers are told messages may be lost"
            );
            for mailbox in
                registry.lock().expect("events registry poisoned").topics.values().flat_map(|s| s.values())
            {
                mailbox.reconnected();
            }
        }
        first_connection = false;
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut failed = true;
        loop {
            tokio::select! {
                // The master moved: resubscribe on the new one now (the old one may be alive,
                // demoted, and hear nothing more).
                _ = moved(&mut switches) => {
                    failed = false;
                    break;
                }
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let pattern: Option<String> =
                        if message.from_pattern() { message.get_pattern().ok() } else { None };
                    let topic = match &pattern {
                        Some(p) => Topic::Pattern(p.clone()),
                        None => Topic::Channel(message.get_channel_name().to_owned()),
                    };
                    let delivery = Delivery {
                        channel: message.get_channel_name().into(),
                        pattern: pattern.as_deref().map(Arc::from),
                        payload: Bytes::copy_from_slice(message.get_payload_bytes()),
                    };
                    // Subscribers this message cut are released now, not when (or if) their
                    // client reads again: see the module doc.
                    let emptied = {
                        let mut registry = registry.lock().expect("events registry poisoned");
                        let cut: Vec<Arc<Mailbox>> = registry
                            .topics
                            .get(&topic)
                            .into_iter()
                            .flat_map(|s| s.values())
                            .filter(|mailbox| mailbox.offer(delivery.clone()))
                            .cloned()
                            .collect();
                        let mut emptied = Vec::new();
                        for mailbox in cut {
                            emptied.extend(registry.release(&mailbox));
                            mailbox.queue.close();
                        }
                        emptied
                    };
                    if !emptied.is_empty() && !unsubscribe_topics(&mut sink, &registry, emptied).await {
                        break;
                    }
                }
                command = commands.recv() => match command {
                    // The hub was dropped.
                    None => return,
                    Some(Command::Subscribe(topics, ack)) => match subscribe_topics(&mut sink, &topics).await {
                        Ok(()) => {
                            let _ = ack.send(Ok(()));
                        }
                        // Redis answered, and the connection is fine: only this caller fails.
                        Err(Some(refusal)) => {
                            let _ = ack.send(Err(refusal.to_string()));
                        }
                        // The caller hears NotConnected; the topics stay registered (until it
                        // drops them) and are subscribed again on reconnection.
                        Err(None) => break,
                    },
                    Some(Command::Unsubscribe(topics)) => {
                        if !unsubscribe_topics(&mut sink, &registry, topics).await {
                            break;
                        }
                    }
                },
                _ = ping.tick() => {
                    if !matches!(tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        connected.send_replace(false);
        if failed {
            tracing::warn!("Redis pub/sub connection lost; reconnecting");
            target.failed();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = moved(&mut switches) => {}
            }
        } else {
            tracing::warn!("the Redis master moved; resubscribing on the new one");
        }
    }
}

/// UNSUBSCRIBEs (and PUNSUBSCRIBEs) those of `topics` that still have no subscriber (one may
/// have come since: its SUBSCRIBE is queued behind this); false if the connection failed.
async fn unsubscribe_topics(
    sink: &mut redis::aio::PubSubSink,
    registry: &Mutex<Registry>,
    topics: Vec<Topic>,
) -> bool {
    let still_empty: Vec<Topic> = {
        let registry = registry.lock().expect("events registry poisoned");
        topics.into_iter().filter(|t| !registry.topics.contains_key(t)).collect()
    };
    let (channels, patterns) = split(&still_empty);
    let unsubscribed = async {
        if !channels.is_empty() {
            sink.unsubscribe(&channels).await?;
        }
        if !patterns.is_empty() {
            sink.punsubscribe(&patterns).await?;
        }
        Ok::<_, redis::RedisError>(())
    };
    matches!(tokio::time::timeout(COMMAND_TIMEOUT, unsubscribed).await, Ok(Ok(())))
}

/// Distinct topics, in order.
pub fn dedup(topics: Vec<Topic>) -> Vec<Topic> {
    let mut seen = HashSet::new();
    topics.into_iter().filter(|t| seen.insert(t.clone())).collect()
}
