//! Errors of the TLS helpers.

use std::io;
use std::path::PathBuf;

/// Result of the TLS helpers.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// What went wrong while loading, generating or configuring TLS material.
///
/// Messages name the file (or in-memory source) and the problem, so an
/// operator can tell which of the three files of an mTLS setup is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    ReadFile {
        /// "certificate" or "private key".
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The PEM text is malformed (bad base64, missing END line).
    #[error("{origin} holds malformed PEM: {reason}")]
    MalformedPem { origin: String, reason: String },
    /// The PEM text holds no `CERTIFICATE` section.
    #[error("{origin} holds no PEM certificate")]
    NoCertificate { origin: String },
    /// The PEM text holds no private key section.
    #[error("private key {origin} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey { origin: String },
    /// A certificate could not be parsed as X.509 or lacks a field we need.
    #[error("invalid certificate in {origin}: {reason}")]
    InvalidCertificate { origin: String, reason: String },
    /// A private key does not fit the certificate or the generator.
    #[error("private key {origin} is unusable: {reason}")]
    InvalidPrivateKey { origin: String, reason: String },
    /// rustls refused the configuration (key and certificate mismatch, bad roots).
    #[error("invalid {what} TLS configuration: {source}")]
    Config {
        /// "server" or "client".
        what: &'static str,
        source: rustls::Error,
    },
    /// The client CA roots cannot build a client certificate verifier.
    #[error("invalid client CA roots: {reason}")]
    ClientCaRoots { reason: String },
    /// rcgen could not build a certificate.
    #[error("cannot generate certificate for {subject}: {source}")]
    Generate {
        subject: String,
        source: rcgen::Error,
    },
    /// A certificate request is invalid (no names, bad validity window).
    #[error("invalid certificate request for {subject}: {reason}")]
    InvalidRequest { subject: String, reason: String },
    /// Plaintext asked for with an https:// coordinator URL.
    #[error("--insecure connects in plaintext: give an http:// --coordinator URL (got {url})")]
    InsecureHttps { url: String },
    /// TLS without all three of its files.
    #[error(
        "TLS is required: pass --tls-ca, --tls-cert and --tls-key (or --insecure with an http:// coordinator for a local experiment)"
    )]
    MissingClientFiles,
    /// TLS with a coordinator URL that is not https://.
    #[error("--coordinator {url} is not https://; TLS needs an https:// URL")]
    NotHttps { url: String },
    /// A coordinator URL without a host to check its certificate against.
    #[error("--coordinator {url} has no host")]
    NoHost { url: String },
    /// A client's TLS files could not be loaded; the source names the file.
    #[error("failed to load the {role}'s TLS files")]
    ClientFiles { role: String, source: Box<TlsError> },
}
