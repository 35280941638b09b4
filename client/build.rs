//! With the `peers` feature, compiles the part of etcd's v3 API that `rookery bench` drives
//! (`proto/etcd/`) into client stubs with protox (pure Rust: no `protoc` on any machine) and
//! tonic-prost-build. Without it, does nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    compile_etcd()
}

#[cfg(feature = "peers")]
fn compile_etcd() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd");
    let descriptors = protox::compile(["proto/etcd/rpc.proto", "proto/etcd/v3lock.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(false).build_client(true).compile_fds(descriptors)?;
    Ok(())
}

#[cfg(not(feature = "peers"))]
fn compile_etcd() -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
