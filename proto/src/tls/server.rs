//! Server-side rustls configuration: mutual TLS with a client CA.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::client_auth::ClientAuthUsageVerifier;
use super::error::{Result, TlsError};
use super::load::{
    load_certificates, load_certificates_pem, load_private_key, load_private_key_pem,
};

/// Returns the crypto provider every fedshield TLS configuration uses: *ring*.
///
/// Configurations name it explicitly instead of relying on a process-wide
/// default provider, so the choice does not depend on what else is linked in.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's certificate chain, private key and client CA roots.
type ServerParts = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Vec<CertificateDer<'static>>,
);

/// The three PEM files of a coordinator's mTLS setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The server certificate, leaf first, optionally followed by intermediates.
    pub cert_chain: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
    /// The CA (one or more certificates) that signs participant certificates.
    pub client_ca: PathBuf,
}

impl ServerTlsFiles {
    /// Returns the server configuration built from the three files.
    ///
    /// # Errors
    /// Names the file that cannot be read or parsed, or the configuration problem.
    pub fn load(&self) -> Result<Arc<ServerConfig>> {
        let (cert_chain, key, client_ca_roots) = self.read()?;
        server_config(cert_chain, key, client_ca_roots)
    }

    /// Reads the certificate chain, the key and the client CA roots.
    fn read(&self) -> Result<ServerParts> {
        Ok((
            load_certificates(&self.cert_chain)?,
            load_private_key(&self.key)?,
            load_certificates(&self.client_ca)?,
        ))
    }
}

/// Returns a server configuration from PEM text (the demo keeps its CA in memory).
///
/// # Errors
/// As [`server_config`], plus PEM parsing errors.
pub fn server_config_pem(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>> {
    server_config(
        load_certificates_pem(cert_chain_pem)?,
        load_private_key_pem(key_pem)?,
        load_certificates_pem(client_ca_pem)?,
    )
}

/// Returns a rustls server configuration that requires every client to present
/// a certificate signed by one of `client_ca_roots`.
///
/// - Client certificates are checked by rustls' `WebPkiClientVerifier`: chain to
///   a root, validity dates (an expired certificate fails the handshake), and
///   then by [`ClientAuthUsageVerifier`]: the leaf must carry an extended key
///   usage extension listing clientAuth (webpki alone accepts a certificate
///   with no EKU at all). Anonymous clients are refused.
/// - TLS 1.2 and 1.3, with the *ring* provider ([`crypto_provider`]).
/// - ALPN offers only `h2`, as gRPC needs.
///
/// # Errors
/// When a root is not a usable trust anchor, or the key does not match the
/// certificate.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca_roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<ServerConfig>> {
    build_server_config(
        cert_chain,
        key,
        client_ca_roots,
        ClientCertificates::Required,
        &[b"h2"],
        "server",
    )
}

/// Whether a server refuses clients without a certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientCertificates {
    Required,
    Optional,
}

/// Returns a server configuration over the ring provider, TLS 1.2 and 1.3,
/// verifying client certificates against `client_ca_roots` with rustls'
/// `WebPkiClientVerifier` plus the clientAuth usage check, and offering `alpn` protocols; `what` names the
/// configuration in errors.
fn build_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca_roots: Vec<CertificateDer<'static>>,
    client_certificates: ClientCertificates,
    alpn: &[&[u8]],
    what: &'static str,
) -> Result<Arc<ServerConfig>> {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    for (index, root) in client_ca_roots.into_iter().enumerate() {
        roots.add(root).map_err(|error| TlsError::ClientCaRoots {
            reason: format!("certificate {index} is not a usable trust anchor: {error}"),
        })?;
    }
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone());
    if client_certificates == ClientCertificates::Optional {
        verifier = verifier.allow_unauthenticated();
    }
    let webpki_verifier = verifier.build().map_err(|error| TlsError::ClientCaRoots {
        reason: format!("{error:?}"),
    })?;
    let client_verifier = Arc::new(ClientAuthUsageVerifier::new(webpki_verifier));
    let server_error = |source| TlsError::Config { what, source };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(server_error)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(cert_chain, key)
        .map_err(server_error)?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Returns the TLS configuration of the coordinator's HTTPS endpoint
/// (model downloads for detectors): the same server certificate, client
/// certificates of the participant CA *accepted but not required* (a
/// detector may present one, or a bearer token instead), and ALPN `h2` and
/// `http/1.1` so that curl and any HTTP client can fetch models.
///
/// # Errors
/// [`TlsError`] naming what is wrong with the certificates or key.
pub fn https_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca_roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<ServerConfig>> {
    build_server_config(
        cert_chain,
        key,
        client_ca_roots,
        ClientCertificates::Optional,
        &[b"h2", b"http/1.1"],
        "https server",
    )
}

/// [`https_server_config`] from PEM text.
///
/// # Errors
/// As [`https_server_config`], or unparsable PEM.
pub fn https_server_config_pem(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>> {
    https_server_config(
        load_certificates_pem(cert_chain_pem)?,
        load_private_key_pem(key_pem)?,
        load_certificates_pem(client_ca_pem)?,
    )
}

impl ServerTlsFiles {
    /// Loads the files into [`https_server_config`].
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn load_https(&self) -> Result<Arc<ServerConfig>> {
        let (cert_chain, key, client_ca_roots) = self.read()?;
        https_server_config(cert_chain, key, client_ca_roots)
    }
}
