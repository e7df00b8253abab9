//! The `fedshield` command: one binary for the coordinator, the participant
//! and the demo.
//!
//! - [`bench`]: `fedshield bench rounds`, round overhead of a federation on 127.0.0.1.
//! - [`certs`]: `fedshield certs`, the TLS certificates of a federation.
//! - [`checks`]: checks of a role's settings, before a start and for `--print-config`.
//! - [`cli`]: command-line flags (clap).
//! - [`config`]: config files of the coordinator, participant and detect roles.
//! - [`commands`]: the `coordinator` and `participant` commands.
//! - [`demo`]: `fedshield demo`, a whole federation on 127.0.0.1.
//! - [`detect`]: `fedshield detect`: its flags into the detector's settings.
//! - [`exit`]: exit statuses for conditions that retrying cannot change.
//! - [`offline`]: `fedshield synth`, `train` and `evaluate`.
//! - [`schema`]: `fedshield schema draft`, a starting schema for a telemetry file.
//! - [`shutdown`]: SIGINT/SIGTERM handling.
//! - [`tokens`]: `fedshield coordinator tokens create|list|revoke`.

#![forbid(unsafe_code)]

pub mod bench;
pub mod certs;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod detect;
pub mod exit;
pub mod offline;
pub mod schema;
pub mod shutdown;
pub mod tokens;
