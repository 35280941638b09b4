//! Wake-ups across replicas: callers waiting for a change of some Redis object (a cache fill,
//! a lock release) on any server replica, woken through one pub/sub channel.
//!
//! A script that changes a watched object PUBLISHes the object's key on the service's wake
//! channel; each replica's [`Wakeups`] subscribes to that channel through the replica's pub/sub
//! [`Hub`] (one connection per Redis, shared with Events subscribers) and wakes its local
//! waiters of that key, who then ask Redis again.
//!
//! Locally there is one `watch` channel per key that has waiters. A waiter registers before it
//! asks Redis, so a wake that arrives between Redis's answer and the wait is not lost (a `watch`
//! receiver remembers that a send happened since it subscribed). Channels are removed when their
//! last waiter leaves, so the map holds only keys being waited on right now. Messages published
//! while the subscription was down are lost, so after every (re)connection, and whenever the
//! wake channel's mailbox overflowed, all waiters are woken to re-check; and every waiter also bounds its wait by what Redis told it (a lease's
//! expiry), so a lost wake costs a delay, never a hang.
//!
//! Two kinds of waiters. [`Waiter`]s (from [`Wakeups::register`]) all see every wake: cache
//! readers waiting for one fill, lock holders and election observers watching for a change.
//! [`QueuedWaiter`]s (from [`Wakeups::queue`]) compete for something one of them can take, such
//! as a released lock: each wake goes to one of them, the one that waited longest and is not
//! already woken, so a release costs one retry per replica rather than one per waiter. A queued
//! waiter that leaves with a wake it did not use passes it on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use super::hub::{Hub, Item, Subscription, Topic};

/// Wake messages queued for the forwarding task before further ones count as missed (which
/// wakes every waiter: nothing is lost, only precision).
const WAKE_BUFFER: usize = 4096;

/// One replica's waiters on one wake channel, and the task that wakes them.
#[derive(Debug)]
pub struct Wakeups {
    waiters: Arc<Waiters>,
    /// The hub's connection state.
    connected: watch::Receiver<bool>,
    /// Whether Redis has confirmed the wake channel's subscription (once is enough: the hub
    /// subscribes it again before it reports a new connection).
    subscribed: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Wakeups {
    /// Subscribes to `channel` through `hub` and waits up to `startup_wait` for Redis to
    /// confirm it, so waiters are woken from the first call on; `what` names the waiters in the
    /// warning logged if it is not live yet.
    pub async fn start(hub: &Hub, channel: &str, startup_wait: Duration, what: &str) -> Self {
        let waiters = Arc::new(Waiters::default());
        let (subscription, confirmed) =
            hub.subscribe_in_background(vec![Topic::Channel(channel.to_owned())], WAKE_BUFFER);
        let (subscribed_tx, mut subscribed) = watch::channel(false);
        let task =
            tokio::spawn(forward(subscription, confirmed, hub.connection(), subscribed_tx, waiters.clone()));
        if tokio::time::timeout(startup_wait, subscribed.wait_for(|s| *s)).await.is_err() {
            tracing::warn!(
                channel,
                "pub/sub wake-up subscription not live yet; {what} fall back to expiry timers"
            );
        }
        Self { waiters, connected: hub.connection(), subscribed, task }
    }

    /// Registers a waiter for `key`; it sees every wake from now on.
    pub fn register(&self, key: &str) -> Waiter {
        self.waiters.register(key)
    }

    /// Queues a waiter for `key`; each wake of `key` goes to one queued waiter.
    pub fn queue(&self, key: &str) -> QueuedWaiter {
        self.waiters.queue(key)
    }

    /// Whether the subscription is live now.
    pub fn is_connected(&self) -> bool {
        *self.subscribed.borrow() && *self.connected.borrow()
    }
}

/// Wakes the waiters of each key published on the wake channel, and all of them whenever
/// messages may have been lost: once Redis confirmed the subscription, after every
/// reconnection, and when the mailbox overflowed.
async fn forward(
    subscription: Subscription,
    confirmed: oneshot::Receiver<Result<(), String>>,
    mut connection: watch::Receiver<bool>,
    subscribed: watch::Sender<bool>,
    waiters: Arc<Waiters>,
) {
    let mailbox = subscription.mailbox.clone();
    let mut confirmed = Some(confirmed);
    loop {
        tokio::select! {
            result = async { confirmed.as_mut().expect("guarded").await }, if confirmed.is_some() => {
                confirmed = None;
                match result {
                    Ok(Ok(())) => {
                        subscribed.send_replace(true);
                        waiters.wake_all();
                    }
                    Ok(Err(refusal)) => tracing::error!(
                        error = refusal,
                        "Redis refused the wake-up channel; waiters fall back to expiry timers until it is \
                         allowed (ACL &rk1:*)"
                    ),
                    // The connection failed first: the hub subscribes it again on reconnection,
                    // before it reports the connection.
                    Err(_) => {}
                }
            }
            item = subscription.recv() => match item {
                Item::Message(delivery) => {
                    if let Ok(key) = std::str::from_utf8(&delivery.payload) {
                        waiters.wake(key);
                    }
                }
                Item::Missed(_) | Item::Reconnected => waiters.wake_all(),
            },
            () = mailbox.lost() => waiters.wake_all(),
            changed = connection.changed() => {
                if changed.is_err() {
                    return;
                }
                if *connection.borrow_and_update() {
                    if confirmed.is_none() {
                        subscribed.send_replace(true);
                    }
                    waiters.wake_all();
                }
            }
        }
    }
}

/// Waiters per watched key.
#[derive(Debug, Default)]
struct Waiters {
    channels: Mutex<HashMap<String, watch::Sender<()>>>,
    queues: Mutex<HashMap<String, VecDeque<Arc<Slot>>>>,
}

/// A queued waiter's mailbox: `woken` is set while a wake is delivered but not yet used.
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    woken: AtomicBool,
}

impl Slot {
    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        // Stores a permit if the waiter is not waiting right now: the wake is not lost.
        self.notify.notify_one();
    }
}

/// One queued waiter; dropping it leaves the queue (passing on a wake it did not use).
#[derive(Debug)]
pub struct QueuedWaiter {
    waiters: Arc<Waiters>,
    key: String,
    slot: Arc<Slot>,
}

impl QueuedWaiter {
    /// Resolves once a wake was delivered to this waiter since it queued (or since the last
    /// `changed`).
    pub async fn changed(&mut self) {
        self.slot.notify.notified().await;
        self.slot.woken.store(false, Ordering::SeqCst);
    }
}

impl QueuedWaiter {
    /// Whether other waiters queue for the same key on this replica.
    pub fn others_waiting(&self) -> bool {
        let queues = self.waiters.queues.lock().expect("waiters lock poisoned");
        queues.get(&self.key).is_some_and(|queue| queue.len() > 1)
    }

    /// Leaves the queue and wakes the next waiter (say, because what this waiter took left
    /// more for others).
    pub fn leave_waking_next(self) {
        self.leave(true);
    }

    fn leave(&self, wake_next: bool) {
        let mut queues = self.waiters.queues.lock().expect("waiters lock poisoned");
        let Some(queue) = queues.get_mut(&self.key) else { return };
        let before = queue.len();
        queue.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
        if queue.len() == before {
            return;
        }
        if queue.is_empty() {
            queues.remove(&self.key);
        } else if wake_next || self.slot.woken.load(Ordering::SeqCst) {
            wake_one(queue);
        }
    }
}

impl Drop for QueuedWaiter {
    fn drop(&mut self) {
        self.leave(false);
    }
}

/// Delivers a wake to the longest-waiting waiter of `queue` that has none pending, and moves it
/// to the back; does nothing if every waiter already has one.
fn wake_one(queue: &mut VecDeque<Arc<Slot>>) {
    if let Some(position) = queue.iter().position(|slot| !slot.woken.load(Ordering::SeqCst))
        && let Some(slot) = queue.remove(position)
    {
        slot.wake();
        queue.push_back(slot);
    }
}

/// One registered waiter; dropping it unregisters.
#[derive(Debug)]
pub struct Waiter {
    waiters: Arc<Waiters>,
    key: String,
    receiver: Option<watch::Receiver<()>>,
}

impl Waiters {
    /// Registers a waiter for `key`; it sees every wake from now on.
    fn register(self: &Arc<Self>, key: &str) -> Waiter {
        let mut channels = self.channels.lock().expect("waiters lock poisoned");
        let receiver = match channels.get(key) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(());
                channels.insert(key.to_owned(), sender);
                receiver
            }
        };
        Waiter { waiters: self.clone(), key: key.to_owned(), receiver: Some(receiver) }
    }

    /// Queues a waiter for `key`.
    fn queue(self: &Arc<Self>, key: &str) -> QueuedWaiter {
        let slot = Arc::new(Slot::default());
        let mut queues = self.queues.lock().expect("waiters lock poisoned");
        queues.entry(key.to_owned()).or_default().push_back(slot.clone());
        QueuedWaiter { waiters: self.clone(), key: key.to_owned(), slot }
    }

    /// Wakes every registered waiter of `key`, and one queued waiter.
    fn wake(&self, key: &str) {
        if let Some(sender) = self.channels.lock().expect("waiters lock poisoned").get(key) {
            sender.send_replace(());
        }
        if let Some(queue) = self.queues.lock().expect("waiters lock poisoned").get_mut(key) {
            wake_one(queue);
        }
    }

    /// Wakes every waiter of every key, queued ones included (after a pub/sub reconnect, when
    /// wakes may have been lost).
    fn wake_all(&self) {
        for sender in self.channels.lock().expect("waiters lock poisoned").values() {
            sender.send_replace(());
        }
        for slot in self.queues.lock().expect("waiters lock poisoned").values().flatten() {
            slot.wake();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.channels.lock().unwrap().len() + self.queues.lock().unwrap().len()
    }
}

impl Waiter {
    /// Resolves once a wake for this key happened since registration (or since the last
    /// `changed`).
    pub async fn changed(&mut self) {
        if let Some(receiver) = self.receiver.as_mut() {
            // An error means the sender is gone, which cannot happen while we are registered.
            let _ = receiver.changed().await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut channels = self.waiters.channels.lock().expect("waiters lock poisoned");
        if channels.get(&self.key).is_some_and(|s| s.receiver_count() == 0) {
            channels.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wake_before_wait_is_not_lost_and_map_is_cleaned() {
        let waiters = Arc::new(Waiters::default());
        let mut a = waiters.register("k");
        let mut other = waiters.register("other");
        waiters.wake("k");
        tokio::time::timeout(Duration::from_secs(1), a.changed()).await.expect("wake was lost");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), other.changed()).await.is_err(),
            "a wake for one key must not wake another"
        );
        drop(a);
        assert_eq!(waiters.len(), 1);
        drop(other);
        assert_eq!(waiters.len(), 0);
    }

    /// Whether `waiter` has a wake to use, without waiting.
    async fn is_woken(waiter: &mut QueuedWaiter) -> bool {
        tokio::time::timeout(Duration::from_millis(20), waiter.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn each_wake_goes_to_one_queued_waiter_in_turn() {
        let waiters = Arc::new(Waiters::default());
        let mut first = waiters.queue("k");
        let mut second = waiters.queue("k");
        let mut watcher = waiters.register("k");
        waiters.wake("k");
        // Registered waiters see every wake; queued ones share them.
        tokio::time::timeout(Duration::from_secs(1), watcher.changed()).await.unwrap();
        assert!(is_woken(&mut first).await, "the longest waiting is woken first");
        assert!(!is_woken(&mut second).await);
        waiters.wake("k");
        assert!(is_woken(&mut second).await, "the next wake goes to the next waiter");
        assert!(!is_woken(&mut first).await);
        // Two wakes before anyone waits reach two different waiters.
        waiters.wake("k");
        waiters.wake("k");
        assert!(is_woken(&mut first).await && is_woken(&mut second).await);
        drop((first, second, watcher));
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_queued_waiter_that_leaves_passes_its_wake_on() {
        let waiters = Arc::new(Waiters::default());
        let first = waiters.queue("k");
        let mut second = waiters.queue("k");
        waiters.wake("k");
        drop(first);
        assert!(is_woken(&mut second).await, "the unused wake was lost");
        let mut third = waiters.queue("k");
        waiters.wake_all();
        assert!(is_woken(&mut second).await && is_woken(&mut third).await);
        // Leaving on purpose wakes the next one even without a wake of its own.
        assert!(second.others_waiting());
        second.leave_waking_next();
        assert!(is_woken(&mut third).await);
        assert!(!third.others_waiting());
    }

    #[tokio::test]
    async fn wake_all_wakes_everyone() {
        let waiters = Arc::new(Waiters::default());
        let mut a = waiters.register("a");
        let mut b = waiters.register("b");
        waiters.wake_all();
        tokio::time::timeout(Duration::from_secs(1), async {
            a.changed().await;
            b.changed().await;
        })
        .await
        .unwrap();
    }
}
