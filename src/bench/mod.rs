//! `fedshield bench`: benchmarks of a whole federation on 127.0.0.1.
//!
//! - [`rounds`]: `bench rounds`, the orchestrator: starts the coordinator and
//!   K participants as processes of this very binary, collects their reports
//!   and prints per-round times, bytes moved and peak memory.
//! - [`nodes`]: the hidden `bench coordinator-node` and `bench
//!   participant-node` commands those processes run: the real coordinator
//!   and participant over real gRPC, with a flat benchmark model and a
//!   no-op local step.
//! - [`loopback`]: the baseline: moving the same bytes over plain TCP and
//!   TLS sockets on 127.0.0.1.
//! - [`process`]: peak resident memory and I/O counters of this process.

pub mod loopback;
pub mod nodes;
pub mod process;
pub mod rounds;

use anyhow::Result;

use crate::cli::{BenchArgs, BenchCommand};

/// Runs a `fedshield bench` command.
///
/// # Errors
/// Whatever stopped the benchmark.
pub async fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Rounds(args) => rounds::run(args).await,
        BenchCommand::CoordinatorNode(args) => nodes::coordinator_node(args).await,
        BenchCommand::ParticipantNode(args) => nodes::participant_node(args).await,
    }
}
