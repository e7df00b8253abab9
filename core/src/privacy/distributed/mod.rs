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
