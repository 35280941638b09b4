//! The server replica's Redis pub/sub connection: one dedicated connection, kept alive and
//! re-subscribed after every Redis restart or network failure.
//!
//! A handler receives each message; a second callback runs after every (re)subscription, since
//! messages published while the connection was down are lost: the consumer must assume it
//! missed some and recover (the Cache wakes all its waiters so they re-read Redis). A periodic
//! PING detects a connection that died silently.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the idle subscriber PINGs Redis to detect a dead connection.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a PING may take before the connection is declared dead.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on connecting and subscribing, so an unreachable host cannot stall the subscriber.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Called with (channel, payload) for every message.
pub type MessageHandler = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;
/// Called after every successful (re)subscription.
pub type SubscribedHandler = Arc<dyn Fn() + Send + Sync>;

/// A running subscriber; dropping it stops the task and closes the connection.
#[derive(Debug)]
pub struct Subscriber {
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Starts the subscriber task for `channels`, connecting to the first of `clients` that
    /// answers (each failure moves on to the next).
    pub fn spawn(
        clients: Vec<Client>,
        channels: Vec<String>,
        on_message: MessageHandler,
        on_subscribed: SubscribedHandler,
    ) -> Self {
        let (tx, connected) = watch::channel(false);
        let task = tokio::spawn(run(clients, channels, on_message, on_subscribed, tx));
        Self { connected, task }
    }

    /// Waits until the subscription is live, for at most `timeout`; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|c| *c)).await.is_ok()
    }

    /// Whether the subscription is live now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }
}

async fn run(
    clients: Vec<Client>,
    channels: Vec<String>,
    on_message: MessageHandler,
    on_subscribed: SubscribedHandler,
    connected: watch::Sender<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    for client in clients.iter().cycle() {
        match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                match tokio::time::timeout(CONNECT_TIMEOUT, sink.subscribe(&channels)).await {
                    Ok(Ok(())) => {
                        backoff = MIN_BACKOFF;
                        connected.send_replace(true);
                        on_subscribed();
                        let mut ping = tokio::time::interval(PING_INTERVAL);
                        ping.tick().await;
                        loop {
                            tokio::select! {
                                message = stream.next() => match message {
                                    Some(msg) => on_message(msg.get_channel_name(), msg.get_payload_bytes()),
                                    None => break,
                                },
                                _ = ping.tick() => {
                                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                                    if !matches!(pong, Ok(Ok(_))) {
                                        break;
                                    }
                                }
                            }
                        }
                        connected.send_replace(false);
                        tracing::warn!("Redis pub/sub connection lost; reconnecting");
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "Redis pub/sub subscribe failed; retrying"),
                    Err(_) => tracing::warn!("Redis pub/sub subscribe timed out; retrying"),
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "Redis pub/sub connect failed; retrying"),
            Err(_) => tracing::debug!("Redis pub/sub connect timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
