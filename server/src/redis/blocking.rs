//! Dedicated connections for blocking commands (XREAD BLOCK), from their own bounded bb8 pool.
//!
//! A blocking command parks its connection until data arrives, so it must never run on the
//! shared multiplexed connections (every other call would queue behind it). These connections
//! have no response timeout (redis-rs's default of 500 ms would cut every BLOCK short); the
//! BLOCK argument bounds each command instead. The pool's size bounds how many blocking readers
//! a replica serves at once; a reader that finds it exhausted fails with UNAVAILABLE.
//!
//! With Redis Sentinel, connections go to the master in use, and one made to a master the
//! server has since left is retired rather than handed out again.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::sentinel::Link;

/// Makes dedicated connections to one Redis or to a Cluster.
#[derive(Debug, Clone)]
pub enum BlockingManager {
    /// A standalone Redis.
    Single {
        /// Its client (TLS settings included).
        client: Client,
        /// Bound on establishing a connection.
        connect_timeout: Duration,
    },
    /// A Redis Cluster (each connection routes by slot).
    Cluster(ClusterClient),
    /// The master a Sentinel link follows.
    Sentinel {
        /// The link.
        link: Arc<Link>,
        /// Bound on establishing a connection.
        connect_timeout: Duration,
    },
}

enum Inner {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A dedicated connection. It counts as broken (and is not returned to the pool) while a
/// command is in flight: a reader that gives up mid-BLOCK must not hand a connection with a
/// pending blocked command to the next reader.
pub struct BlockingConn {
    inner: Inner,
    in_flight: bool,
    /// With Sentinel: the link, and the generation of the master this connection went to.
    master: Option<(Arc<Link>, u64)>,
}

impl BlockingConn {
    /// Whether it goes to a master the Sentinel link has since left.
    fn moved(&self) -> bool {
        self.master.as_ref().is_some_and(|(link, generation)| link.generation() != *generation)
    }

    /// Runs one command; if the returned future is dropped before it completes, the
    /// connection is retired instead of reused.
    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        self.in_flight = true;
        let value = match &mut self.inner {
            Inner::Single(conn) => cmd.query_async(conn).await,
            Inner::Cluster(conn) => cmd.query_async(conn).await,
        };
        // A failed command may have left the connection in an unknown state: retire it too.
        self.in_flight = value.is_err();
        value
    }
}

impl BlockingConn {
    /// Runs one blocking command, giving up after `limit` (its BLOCK time plus a grace): a
    /// half-open connection (a failover, a dropped NAT entry) then fails the command with a
    /// timeout, and the connection is retired, instead of hanging its caller forever.
    pub async fn query_within<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        limit: Duration,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(limit, self.query(cmd)).await {
            Ok(result) => result,
            Err(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to a blocking read").into())
            }
        }
    }
}

impl ConnectionLike for BlockingConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_command(cmd),
            Inner::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Inner::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(conn) => conn.get_db(),
            Inner::Cluster(conn) => conn.get_db(),
        }
    }
}

impl bb8::ManageConnection for BlockingManager {
    type Connection = BlockingConn;
    type Error = RedisError;

    async fn connect(&self) -> Result<BlockingConn, RedisError> {
        match self {
            Self::Single { client, connect_timeout } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(*connect_timeout))
                    .set_response_timeout(None);
                let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                Ok(BlockingConn { inner: Inner::Single(conn), in_flight: false, master: None })
            }
            Self::Cluster(client) => Ok(BlockingConn {
                inner: Inner::Cluster(client.get_async_connection().await?),
                in_flight: false,
                master: None,
            }),
            Self::Sentinel { link, connect_timeout } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(*connect_timeout))
                    .set_response_timeout(None);
                let master = link.current();
                match master.client.get_multiplexed_async_connection_with_config(&config).await {
                    Ok(conn) => Ok(BlockingConn {
                        inner: Inner::Single(conn),
                        in_flight: false,
                        master: Some((link.clone(), master.generation)),
                    }),
                    Err(e) => {
                        link.suspect();
                        Err(e)
                    }
                }
            }
        }
    }

    async fn is_valid(&self, conn: &mut BlockingConn) -> Result<(), RedisError> {
        if conn.moved() {
            return Err(
                std::io::Error::new(std::io::ErrorKind::NotConnected, "the Redis master moved").into()
            );
        }
        redis::cmd("PING").query_async::<()>(conn).await
    }

    fn has_broken(&self, conn: &mut BlockingConn) -> bool {
        conn.in_flight || conn.moved()
    }
}

/// The pool of dedicated connections.
pub type BlockingPool = bb8::Pool<BlockingManager>;
