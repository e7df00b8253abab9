//! Distributed DP for secure aggregation: updates clipped, rotated
//! (randomized Hadamard), quantized into Z_(2^32) with stochastic rounding,
//! with discrete Gaussian noise each participant adds, so that the unmasked
//! sum carries enough noise for an organization-level guarantee.
//!
//! P. Kairouz, Z. Liu, T. Steinke, "The Distributed Discrete Gaussian
//! Mechanism for Federated Learning with Secure Aggregation", ICML 2021
//! (<https://arxiv.org/abs/2102.06387>); the exact sampler of C. Canonne,
//! G. Kamath, T. Steinke, "The Discrete Gaussian for Differential Privacy",
//! NeurIPS 2020 (<https://arxiv.org/abs/2004.00010>).
//!
//! - `discrete_gaussian`: the exact sampler ([`DiscreteGaussian`], [`sample_bernoulli_exp`], [`sample_discrete_laplace`]).
//! - `rotation`: the randomized Hadamard rotation ([`rotate`], [`unrotate`], [`padded_dim`]).
//! - `encoding`: an update to and from `Z_(2^32)` ([`SecAggEncoding`], [`EncodedUpdate`], [`choose_scale`]).
//!
//! The privacy of the decoded sum is accounted by
//! [`crate::privacy::accountant::ddg_rho`] and [`crate::privacy::accountant::ddg_epsilon`].

mod discrete_gaussian;
mod encoding;
mod rotation;

pub use discrete_gaussian::{
    DiscreteGaussian, MAX_DISCRETE_GAUSSIAN_VARIANCE, MIN_DISCRETE_GAUSSIAN_VARIANCE,
    sample_bernoulli_exp, sample_discrete_laplace,
};
pub use encoding::{
    EncodedUpdate, MAX_ROUNDING_ATTEMPTS, SecAggEncoding, WRAP_PROBABILITY_LOG2, choose_scale,
    wrap_tail_multiple,
};
pub use rotation::{padded_dim, rotate, unrotate};
