//! Local registry of `Fetch` callers waiting for a cache entry to be filled.
//!
//! One `watch` channel per entry that has waiters; the pub/sub subscriber calls
//! [`Waiters::wake`] with the entry's value key. A waiter subscribes before it asks Redis, so a
//! wake that arrives between Redis's answer and the wait is not lost (a `watch` receiver
//! remembers that a send happened since it subscribed). Channels are removed when their last
//! waiter leaves, so the map holds only entries being waited on right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Waiters per cache value key.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    channels: Mutex<HashMap<String, watch::Sender<()>>>,
}

/// One registered waiter; leaving it (drop) unregisters.
pub(super) struct Waiter {
    waiters: Arc<Waiters>,
    key: String,
    receiver: Option<watch::Receiver<()>>,
}

impl Waiters {
    /// Registers a waiter for `key`; it sees every wake from now on.
    pub(super) fn register(self: &Arc<Self>, key: &str) -> Waiter {
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
    pub(super) fn wake(&self, key: &str) {
        if let Some(sender) = self.channels.lock().expect("waiters lock poisoned").get(key) {
            sender.send_replace(());
        }
    }

    /// Wakes every waiter of every key (after a pub/sub reconnect, when wakes may have been lost).
    pub(super) fn wake_all(&self) {
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
    pub(super) async fn changed(&mut self) {
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
    use std::time::Duration;

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
