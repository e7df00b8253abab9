//! Client-side TLS: a coordinator client's (a participant's, a detector's)
//! tonic configuration with its certificate, and the files it comes from.

use std::path::{Path, PathBuf};

use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::error::{Result, TlsError};
use super::load::{parse_certificates, parse_private_key, read_pem_file};
use super::server::crypto_provider;

/// Returns the tonic client TLS configuration of a participant: trust
/// `ca_pem` for the coordinator's certificate, present `client_cert_pem` /
/// `client_key_pem`, and check the server certificate against `domain`.
///
/// tonic parses the PEM only in `Endpoint::tls_config`, which returns any
/// error. The endpoint URI must use the `https` scheme: tonic's connector only
/// wraps `https://` URIs in TLS and sends `http://` ones in clear text even
/// when a TLS configuration is set.
pub fn client_tls_config(
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
    domain: &str,
) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(client_cert_pem, client_key_pem))
        .domain_name(domain)
}

/// Returns [`client_tls_config`] built from three PEM files, after checking
/// each one so the error names the bad file: the CA must hold a certificate,
/// the client certificate file a certificate, the key file a private key that
/// fits that certificate.
///
/// # Errors
/// Names the file that cannot be read or parsed, or the key that does not fit.
pub fn client_tls_config_from_files(
    ca_path: impl AsRef<Path>,
    client_cert_path: impl AsRef<Path>,
    client_key_path: impl AsRef<Path>,
    domain: &str,
) -> Result<ClientTlsConfig> {
    let ca_path = ca_path.as_ref();
    let client_cert_path = client_cert_path.as_ref();
    let client_key_path = client_key_path.as_ref();
    let ca_pem = read_pem_file(ca_path, "certificate")?;
    let client_cert_pem = read_pem_file(client_cert_path, "certificate")?;
    let client_key_pem = read_pem_file(client_key_path, "private key")?;

    let ca_roots = parse_certificates(ca_pem.as_bytes(), &ca_path.display().to_string())?;
    let client_chain = parse_certificates(
        client_cert_pem.as_bytes(),
        &client_cert_path.display().to_string(),
    )?;
    let client_key = parse_private_key(
        client_key_pem.as_bytes(),
        &client_key_path.display().to_string(),
    )?;

    let mut roots = RootCertStore::empty();
    for root in ca_roots {
        roots
            .add(root)
            .map_err(|error| TlsError::InvalidCertificate {
                origin: ca_path.display().to_string(),
                reason: format!("not a usable trust anchor: {error}"),
            })?;
    }
    // Building the rustls configuration checks that the key fits the certificate,
    // which tonic would otherwise report only at the first connection.
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "client",
            source,
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(client_chain, client_key)
        .map_err(|error| TlsError::InvalidPrivateKey {
            origin: client_key_path.display().to_string(),
            reason: format!(
                "does not fit certificate {}: {error}",
                client_cert_path.display()
            ),
        })?;

    Ok(client_tls_config(
        &ca_pem,
        &client_cert_pem,
        &client_key_pem,
        domain,
    ))
}

/// The files of a coordinator client's mutual TLS (a participant's, a detector's),
/// and the name the coordinator's certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: String,
}

/// Returns the client TLS files the settings name (`None` with `insecure`), checked
/// against the coordinator's URL: plaintext needs an http:// URL, TLS an https:// URL
/// with a host and all three files. Reads none of them.
///
/// # Errors
/// [`TlsError::InsecureHttps`], [`TlsError::MissingClientFiles`],
/// [`TlsError::NotHttps`] or [`TlsError::NoHost`]; messages name the flags.
pub fn client_tls_files(
    coordinator_url: &str,
    insecure: bool,
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    server_name: Option<&str>,
) -> Result<Option<ClientTlsFiles>> {
    if insecure {
        if coordinator_url.starts_with("https://") {
            return Err(TlsError::InsecureHttps {
                url: coordinator_url.to_string(),
            });
        }
        return Ok(None);
    }
    let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
        return Err(TlsError::MissingClientFiles);
    };
    if !coordinator_url.starts_with("https://") {
        return Err(TlsError::NotHttps {
            url: coordinator_url.to_string(),
        });
    }
    let server_name = match server_name {
        Some(name) => name.to_string(),
        None => coordinator_url
            .parse::<tonic::transport::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(str::to_string))
            .ok_or_else(|| TlsError::NoHost {
                url: coordinator_url.to_string(),
            })?,
    };
    Ok(Some(ClientTlsFiles {
        ca: ca.to_path_buf(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        server_name,
    }))
}

impl ClientTlsFiles {
    /// Reads the files into a client TLS configuration; `role` names the client in errors.
    ///
    /// # Errors
    /// [`TlsError::ClientFiles`], whose source names the file.
    pub fn load(&self, role: &str) -> Result<ClientTlsConfig> {
        client_tls_config_from_files(&self.ca, &self.cert, &self.key, &self.server_name).map_err(
            |source| TlsError::ClientFiles {
                role: role.to_string(),
                source: Box::new(source),
            },
        )
    }
}
