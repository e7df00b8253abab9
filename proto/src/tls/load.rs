//! Loading certificates and private keys from PEM files or PEM text.

use std::fs;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{Result, TlsError};

/// Name given to PEM text that did not come from a file.
const IN_MEMORY_ORIGIN: &str = "in-memory PEM";

/// Returns every certificate in the PEM file at `path`, in file order (leaf
/// first for a chain).
///
/// # Errors
/// Names `path` when it cannot be read, is malformed or holds no certificate.
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let pem_bytes = read_file(path, "certificate")?;
    parse_certificates(&pem_bytes, &path.display().to_string())
}

/// Returns every certificate in PEM text, in order.
///
/// # Errors
/// When the text is malformed or holds no certificate.
pub fn load_certificates_pem(pem_text: &str) -> Result<Vec<CertificateDer<'static>>> {
    parse_certificates(pem_text.as_bytes(), IN_MEMORY_ORIGIN)
}

/// Returns the first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at
/// `path`.
///
/// # Errors
/// Names `path` when it cannot be read, is malformed or holds no key.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    let pem_bytes = read_file(path, "private key")?;
    parse_private_key(&pem_bytes, &path.display().to_string())
}

/// Returns the first private key in PEM text.
///
/// # Errors
/// When the text is malformed or holds no key.
pub fn load_private_key_pem(pem_text: &str) -> Result<PrivateKeyDer<'static>> {
    parse_private_key(pem_text.as_bytes(), IN_MEMORY_ORIGIN)
}

/// Returns the UTF-8 text of a PEM file, naming `path` and `what` on failure.
pub(crate) fn read_pem_file(path: &Path, what: &'static str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| TlsError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| TlsError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn parse_certificates(
    pem_bytes: &[u8],
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|error| TlsError::MalformedPem {
            origin: origin.to_string(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: origin.to_string(),
        });
    }
    Ok(certificates)
}

pub(crate) fn parse_private_key(pem_bytes: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            origin: origin.to_string(),
        },
        other => TlsError::MalformedPem {
            origin: format!("private key {origin}"),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::CertificateAuthority;

    #[test]
    fn missing_certificate_file_is_named_in_the_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("absent.pem");
        let message = load_certificates(&path).unwrap_err().to_string();
        assert!(
            message.starts_with("cannot read certificate file "),
            "{message}"
        );
        assert!(message.contains("absent.pem"), "{message}");
    }

    #[test]
    fn key_file_given_as_certificate_is_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let (_, key_pem) = authority.to_pem();
        let path = directory.path().join("server.key");
        fs::write(&path, key_pem).unwrap();
        let message = load_certificates(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!("{} holds no PEM certificate", path.display())
        );
    }

    #[test]
    fn certificate_file_given_as_key_is_refused_by_name() {
        let directory = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let (cert_pem, _) = authority.to_pem();
        let path = directory.path().join("ca.pem");
        fs::write(&path, cert_pem).unwrap();
        let message = load_private_key(&path).unwrap_err().to_string();
        assert!(message.starts_with("private key "), "{message}");
        assert!(message.contains("ca.pem"), "{message}");
        assert!(message.contains("holds no PEM private key"), "{message}");
    }

    #[test]
    fn malformed_pem_is_refused() {
        let text = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        let message = load_certificates_pem(text).unwrap_err().to_string();
        assert!(message.contains("malformed PEM"), "{message}");
    }

    #[test]
    fn certificates_and_keys_load_from_pem_text_and_files() {
        let directory = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let (cert_pem, key_pem) = authority.to_pem();
        assert_eq!(load_certificates_pem(&cert_pem).unwrap().len(), 1);
        load_private_key_pem(&key_pem).unwrap();
        let cert_path = directory.path().join("ca.pem");
        let key_path = directory.path().join("ca.key");
        fs::write(&cert_path, &cert_pem).unwrap();
        fs::write(&key_path, &key_pem).unwrap();
        assert_eq!(load_certificates(&cert_path).unwrap().len(), 1);
        load_private_key(&key_path).unwrap();
    }
}
