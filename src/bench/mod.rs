//! `fedshield bench`: benchmarks of a whole federation on 127.0.0.1.
//!
//! - [`rounds`]: `bench rounds`, the orchestrator: starts the nodes, collects and prints.
//! - [`nodes`]: the hidden `bench coordinator-node` and `participant-node` processes.
//! - [`loopback`]: the baseline: the same bytes over plain TCP and TLS on 127.0.0.1.
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
