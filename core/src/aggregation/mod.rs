//! Aggregation of participant updates into the next global model.
//!
//! - [`fedavg`]: streaming FedAvg and the checks that keep an aggregate finite.
//! - [`momentum`]: server momentum (FedAvgM) over rounds.
//! - [`robust`]: the poisoning-robust rules (norm bounding, trimmed mean, median, Multi-Krum), one file each.
//! - `kernels`: the norms, sorting network, weighted mean and threading the robust rules share.

pub mod fedavg;
mod kernels;
pub mod momentum;
pub mod robust;
