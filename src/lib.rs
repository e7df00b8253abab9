//! The `fedshield` command: one binary for the coordinator, the participant
//! and the demo.
//!
//! - [`cli`]: command-line flags (clap).
//! - [`commands`]: the `coordinator` and `participant` commands.
//! - [`demo`]: `fedshield demo`, a whole federation on 127.0.0.1.
//! - [`shutdown`]: SIGINT/SIGTERM handling.

pub mod cli;
pub mod commands;
pub mod demo;
pub mod shutdown;
