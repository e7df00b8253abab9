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
//!
//! Threat model: an honest-but-curious coordinator (it follows the protocol
//! and inspects everything it receives) and fewer than `threshold` colluding
//! participants in any neighbourhood. A malicious coordinator that lies about
//! who dropped is out of scope (it would need the consistency round of
//! Bonawitz et al. §4 and signatures).
//!
//! Each participant u masks its input x_u in Z_(2^32)^m as
//! y_u = x_u + PRG(b_u) + Σ_{v ∈ N(u) ∩ U2} ±PRG(s_uv), where b_u is a fresh
//! self-mask seed and s_uv a pairwise seed from X25519 between mask keys. The
//! pairwise masks cancel in the sum; the coordinator then removes each
//! survivor's PRG(b_u) and the pairwise masks of each dropped member from
//! secrets reconstructed with Shamir shares held by neighbours.
//!
//! - [`error`]: the error type and the protocol phases.
//! - [`keys`]: key pairs, key agreement (X25519 + HKDF-SHA256) and share encryption (ChaCha20-Poly1305).
//! - [`shamir`]: Shamir secret sharing of 32-byte secrets over GF(2^8).
//! - [`graph`]: the neighbour graph (complete, or the sparse Harary graph of SecAgg+), recommended degree and threshold.
//! - [`masks`]: expansion of a seed into a u32 mask with ChaCha20.
//! - [`client`]: the participant's side of a round.
//! - [`server`]: the coordinator's side of a round.

pub mod client;
pub mod error;
pub mod graph;
pub mod keys;
pub mod masks;
pub mod server;
pub mod shamir;

pub use client::{ClientRound, EncryptedShare, RevealedShare, Roster, RoundSetup, ShareKind};
pub use error::{Phase, Result, SecAggError};
pub use graph::{neighbourhoods, recommended_degree, recommended_threshold};
pub use keys::{PublicKeys, SecretKeys};
pub use masks::{MaskSign, apply_mask, apply_mask_at};
pub use server::{ServerRound, UnmaskRequest, UnmaskedSum};
pub use shamir::Share;
