//! Fuzz targets for fedshield's decoders of untrusted input, as plain
//! functions: the libFuzzer binaries in `fuzz_targets/` call them, and the
//! end-to-end tests (`tests/hostile.rs`) run the same code on random input
//! without cargo-fuzz or a nightly toolchain.
//!
//! - [`update_decoder`]: a declared parameter count and a sequence of chunks
//!   through `ChunkAssembler`, as the coordinator decodes an update stream.
//! - [`schema_ingest`]: a feature schema (TOML) and telemetry rows through the
//!   schema parser and the featurizer.

pub mod schema_ingest;
pub mod update_decoder;
