//! TLS and mutual TLS for fedshield's gRPC, with rustls and the *ring* provider.
//!
//! The coordinator requires a client certificate signed by the participants'
//! CA; the participant identity is the certificate's subject CN.
//!
//! - [`load`](load_certificates): PEM certificates and private keys from files or text.
//! - [`server_config`], [`ServerTlsFiles`]: the coordinator's rustls configuration.
//! - [`serve_tls_incoming`]: accept loop with timed-out handshakes, yielding
//!   [`GuardedConnection`]s for tonic's `serve_with_incoming_shutdown`.
//! - [`ListenerLimits`], [`ConnectionTracker`]: handshake and connection caps
//!   per source IP and in total, idle and header-read timeouts.
//! - [`PeerIdentity`], [`peer_identity`]: who is on the other end of a request.
//! - [`client_tls_config`], [`ClientTlsFiles`]: a coordinator client's tonic `ClientTlsConfig`.
//! - [`pki`]: an in-memory CA issuing server and client certificates (rcgen).
//! - [`TlsError`]: what went wrong, naming the file.

mod client;
mod client_auth;
mod error;
mod guarded;
mod identity;
mod incoming;
mod limits;
mod load;
pub mod pki;
mod server;

#[cfg(test)]
mod tests;

pub use client::{
    ClientTlsFiles, client_tls_config, client_tls_config_from_files, client_tls_files,
};
pub use error::{Result, TlsError};
pub use guarded::GuardedConnection;
pub use identity::{PeerIdentity, peer_identity, sha256_fingerprint};
pub use incoming::{TlsIncoming, serve_tls_incoming};
pub use limits::{
    ConnectionRefusal, ConnectionSlot, ConnectionTracker, EVICTION_GRACE_DIVISOR, HandshakeTicket,
    ListenerCounts, ListenerLimits, RESERVED_DESCRIPTORS,
};
pub use load::{load_certificates, load_certificates_pem, load_private_key, load_private_key_pem};
pub use server::{
    ServerTlsFiles, crypto_provider, https_server_config, https_server_config_pem, server_config,
    server_config_pem,
};

/// Re-exported so callers name the same rustls and pki-types versions as these helpers.
pub use rustls;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls;
