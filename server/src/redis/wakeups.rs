//! Wake-ups across replicas: callers waiting for a change of some Redis object (a cache fill,
//! a lock release) on any server replica, woken through one pub/sub channel.
//!
//! A script that changes a watched object PUBLISHes the object's key on the service's wake
//! channel; each replica's [`Wakeups`] subscribes to that channel with one dedicated
//! connection and wakes its local waiters of that key, who then ask Redis again.
//!
//! Locally there is one `watch` channel per key that has waiters. A waiter registers before it
//! asks Redis, so a wake that arrives between Redis's answer and the wait is not lost (a `watch`
//! receiver remembers that a send happened since it subscribed). Channels are removed when their
//! last waiter leaves, so the map holds only keys being waited on right now. Messages published
//! while the subscription was down are lost, so after every (re)subscription all waiters are
//! woken to re-check; and every waiter also bounds its wait by what Redis told it (a lease's
//! expiry), so a lost wake costs a delay, never a hang.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Client;
use tokio::sync::watch;

use super::pubsub::Subscriber;

/// One replica's waiters on one wake channel, and the subscription that wakes them.
#[derive(Debug)]
pub struct Wakeups {
    waiters: Arc<Waiters>,
    subscriber: Subscriber,
}

impl Wakeups {
    /// Subscribes to `channel` (on the first of `seeds` that answers) and waits up to
    /// `startup_wait` for the subscription to be live, so waiters are woken from the first call
    /// on; `what` names the waiters in the warning logged if it is not live yet.
    pub async fn start(seeds: Vec<Client>, channel: &str, startup_wait: Duration, what: &str) -> Self {
        let waiters = Arc::new(Waiters::default());
        let on_message = {
            let waiters = waiters.clone();
            Arc::new(move |_channel: &str, payload: &[u8]| {
                if let Ok(key) = std::str::from_utf8(payload) {
                    waiters.wake(key);
                }
            })
        };
        let on_subscribed = {
            let waiters = waiters.clone();
            Arc::new(move || waiters.wake_all())
        };
        let subscriber = Subscriber::spawn(seeds, vec![channel.to_owned()], on_message, on_subscribed);
        if !subscriber.wait_connected(startup_wait).await {
            tracing::warn!(
                channel,
                "pub/sub wake-up subscription not live yet; {what} fall back to expiry timers"
            );
        }
        Self { waiters, subscriber }
    }

    /// Registers a waiter for `key`; it sees every wake from now on.
    pub fn register(&self, key: &str) -> Waiter {
        self.waiters.register(key)
    }

    /// Whether the subscription is live now.
    pub fn is_connected(&self) -> bool {
        self.subscriber.is_connected()
    }
}

/// Waiters per watched key.
#[derive(Debug, Default)]
struct Waiters {
    channels: Mutex<HashMap<String, watch::Sender<()>>>,
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

    /// Wakes every waiter of `key`.
    fn wake(&self, key: &str) {
        if let Some(sender) = self.channels.lock().expect("waiters lock poisoned").get(key) {
            sender.send_replace(());
        }
    }

    /// Wakes every waiter of every key (after a pub/sub reconnect, when wakes may have been lost).
    fn wake_all(&self) {
        for sender in self.channels.lock().expect("waiters lock poisoned").values() {
            sender.send_replace(());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.channels.lock().unwrap().len()
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
