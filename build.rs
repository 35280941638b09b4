//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler, so no `protoc` is
//! needed on any machine) and tonic-prost-build.
//!
//! Both client and server stubs are generated; each is wrapped in a `cfg(feature)` attribute so
//! that a downstream crate enabling only `client` compiles no server code. The encoded file
//! descriptor set is written next to the generated code for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 does not emit rerun-if-changed itself; watch the whole folder so a
    // new .proto file is picked up as well as edits to existing ones.
    println!("cargo:rerun-if-changed=proto");

    let mut protos: Vec<PathBuf> = std::fs::read_dir("proto/rookery/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let descriptors = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("rookery_descriptor.bin"), descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .client_mod_attribute(".", r#"#[cfg(feature = "client")]"#)
        // prost's codec with a small encode buffer: see src/codec.rs.
        .codec_path("crate::codec::RookeryCodec")
        // Pub/sub payloads as `Bytes`: decoding one shares the received buffer, and the
        // server hands one message's payload to all its subscribers without copying it.
        .bytes(".rookery.v1.EventsMessage.payload")
        .bytes(".rookery.v1.EventsPublishRequest.payload")
        .compile_fds(descriptors)?;
    Ok(())
}
