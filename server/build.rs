//! Encodes the descriptors of Envoy's rate limit service (`proto/envoy-rls/`, the files of the
//! `envoy-types` crate this server implements it with, and their imports) for gRPC reflection.
//! `envoy-types` ships generated code but no descriptor set, and reflection must list every
//! service the server answers. protox compiles them in pure Rust: no `protoc` on any machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/envoy-rls");
    let descriptors = protox::compile(["envoy/service/ratelimit/v3/rls.proto"], ["proto/envoy-rls"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("envoy_rls_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    Ok(())
}
