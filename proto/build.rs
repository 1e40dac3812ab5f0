//! Compiles `satflow/v1/*.proto` with protox (pure Rust, no system protoc)
//! into messages and tonic stubs, and keeps the encoded descriptor set for
//! server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "satflow/v1/chain.proto",
    "satflow/v1/address.proto",
    "satflow/v1/cluster.proto",
    "satflow/v1/taint.proto",
    "satflow/v1/risk.proto",
    "satflow/v1/watch.proto",
    "satflow/v1/pattern.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTOS {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("satflow_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // `satflow query --json` prints the messages as they are.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}
