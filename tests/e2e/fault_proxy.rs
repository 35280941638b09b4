//! A TCP proxy between the server and Redis that injects network faults: it passes bytes
//! through, blackholes them (holds every byte in both directions, as a network that drops
//! packets does until TCP retransmits them after it heals), holds only Redis's replies (commands
//! run, their outcome is unknown), or cuts the connection (resets every open connection and
//! refuses new ones, as a Redis host that went away does).
//!
//! It complements [`crate::harness::RedisProcess::pause`] (SIGSTOP), which freezes Redis itself:
//! a pause stops Redis's clock-driven work too, a blackhole leaves Redis running (leases expire
//! there on time) while no reply reaches the server.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes flow both ways.
    None,
    /// Bytes are held in both directions until the fault ends; connections stay open.
    Blackhole,
    /// Requests reach Redis, its replies are held: the half of a partition where commands run
    /// but nobody learns their outcome.
    HoldReplies,
    /// Open connections are reset; new ones are accepted and closed at once.
    Cut,
}

/// A fault-injecting proxy in front of one Redis, listening on a free local port.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to the Redis at `upstream` (`host:port`), passing traffic through.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, watching) = watch::channel(Fault::None);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == Fault::Cut {
                    reset(client);
                    continue;
                }
                tokio::spawn(relay(client, upstream.clone(), watching.clone()));
            }
        });
        Self { addr, fault, accept }
    }

    /// `redis://` URL of the proxy, for the server's config.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Starts (or ends, with [`Fault::None`]) a fault.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Fault::Cut);
    }
}

/// Closes a connection with a reset (RST), as a peer whose host went away looks.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Relays one client connection to Redis until either side closes or the connection is cut.
async fn relay(client: TcpStream, upstream: String, mut fault: watch::Receiver<Fault>) {
    // A connection made during a blackhole waits, as its SYN would.
    if !flowing(Direction::Requests, &mut fault).await {
        return reset(client);
    }
    let Ok(server) = TcpStream::connect(&upstream).await else { return reset(client) };
    // The proxy closes a connection only when it is cut (or its other side closed): with a
    // reset, as a vanished peer looks.
    for socket in [&client, &server] {
        let _ = (socket.set_nodelay(true), socket.set_zero_linger());
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, Direction::Requests, fault.clone()) => {}
        () = pump(server_read, client_write, Direction::Replies, fault.clone()) => {}
        _ = fault.wait_for(|f| *f == Fault::Cut) => {}
    }
}

/// Which way bytes go.
#[derive(Clone, Copy)]
enum Direction {
    /// Server to Redis.
    Requests,
    /// Redis to server.
    Replies,
}

/// Waits until bytes may flow `direction`; false if the connection is cut (or the proxy is
/// gone) first.
async fn flowing(direction: Direction, fault: &mut watch::Receiver<Fault>) -> bool {
    let held = |f: &Fault| match f {
        Fault::Blackhole => true,
        Fault::HoldReplies => matches!(direction, Direction::Replies),
        Fault::None | Fault::Cut => false,
    };
    matches!(fault.wait_for(|f| !held(f)).await.map(|f| *f), Ok(Fault::None | Fault::HoldReplies))
}

/// Copies bytes from one side to the other, holding them while the fault says so.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !flowing(direction, &mut fault).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
