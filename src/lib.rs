//! Rookery's gRPC API for Rust: the messages and stubs generated from `proto/rookery/v1`.
//!
//! This crate holds generated code only. The `client` feature brings the client stubs (tonic
//! channel, no server code); the `server` feature brings the service traits the server
//! implements. Most users want the `rookery-client` crate, which wraps these stubs in an
//! ergonomic API; the raw stubs stay available here for anyone who needs them.

pub mod codec;

/// Version 1 of the Rookery API (`rookery.v1`). The package only grows: field numbers are
/// never reused.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("rookery.v1");
}

/// The encoded `FileDescriptorSet` of every Rookery proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rookery_descriptor.bin"));
