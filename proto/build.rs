//! Compiles `fedshield/v1/*.proto` with protox (a pure-Rust protobuf compiler) and
//! hands the descriptors to tonic's code generator, so building needs no `protoc`.

use std::path::PathBuf;

const PROTOS: &[&str] = &["fedshield/v1/federation.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // One line per proto: a directory-level rerun-if-changed would also fire on
    // editor temp files and rebuild every dependent crate for nothing.
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(proto).display()
        );
    }
    let file_descriptors = protox::compile(PROTOS, [&manifest_dir])?;
    tonic_prost_build::configure()
        .bytes(".fedshield.v1.ModelChunk.data")
        .bytes(".fedshield.v1.UpdateChunk.data")
        .bytes(".fedshield.v1.MaskedUpdateChunk.data")
        // Chunks carry model parameters and private updates: their Debug impls are
        // written by hand (src/lib.rs) to print sizes, never contents.
        .skip_debug([
            ".fedshield.v1.ModelChunk",
            ".fedshield.v1.UpdateChunk",
            ".fedshield.v1.MaskedUpdateChunk",
            ".fedshield.v1.RevealedShare",
        ])
        .compile_fds(file_descriptors)?;
    Ok(())
}
