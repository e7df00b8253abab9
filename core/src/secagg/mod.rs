//! Secure aggregation (SecAgg+): the coordinator learns the sum of the
//! participants' quantized updates and nothing about any single one, even
//! when some participants drop out after masking.
//!
//! Protocol: K. Bonawitz et al., "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning", CCS 2017
//! (<https://eprint.iacr.org/2017/281>), with the sparse neighbour graph of
//! J. Bell, K. Bonawitz, A. Gascón, T. Lepoint, M. Raykova, "Secure
//! Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020
//! (<https://eprint.iacr.org/2020/704>). No network here: the coordinator
//! and participant crates carry these messages over mutual TLS.
