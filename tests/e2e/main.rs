//! End-to-end tests of the whole system: real Redis processes, real servers over real gRPC,
//! driven through the real client crate. One test binary, so the server is linked once.

mod append_many;
mod auth;
mod cache;
mod cli;
mod cluster;
mod consume_with_acks;
mod consumer_groups;
mod credentials;
mod deploy;
mod events;
mod fault_proxy;
mod fuzz;
mod harness;
mod lease_faults;
mod lock;
mod memory;
mod near_cache;
mod pipelined;
mod rate_limiter;
mod redis_acl;
mod redis_work;
mod sentinel;
mod server;
mod session;
mod status_table;
mod tenancy;
mod tracing;
