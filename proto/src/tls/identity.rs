//! Who is on the other end of an mTLS connection.

use sha2::{Digest, Sha256};
use tracing::warn;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::error::{Result, TlsError};

/// Name given to a certificate that arrived over the network.
const PEER_ORIGIN: &str = "peer certificate";

/// The identity a verified client certificate proves.
///
/// The participant identity is the subject common name; the fingerprint is what
/// revocation lists name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common name (CN): the participant id.
    pub common_name: String,
    /// Lowercase hex SHA-256 of the leaf certificate's DER.
    pub sha256_fingerprint: String,
    /// Lowercase hex serial number, without leading zero bytes.
    pub serial_hex: String,
    /// End of the validity window, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl PeerIdentity {
    /// Returns the identity of a DER certificate.
    ///
    /// # Errors
    /// When the DER is not an X.509 certificate or has no UTF-8 subject CN.
    pub fn from_der(certificate_der: &[u8]) -> Result<Self> {
        Self::from_der_named(certificate_der, PEER_ORIGIN)
    }

    pub(crate) fn from_der_named(certificate_der: &[u8], origin: &str) -> Result<Self> {
        let invalid = |reason: String| TlsError::InvalidCertificate {
            origin: origin.to_string(),
            reason,
        };
        let (_, certificate) = X509Certificate::from_der(certificate_der)
            .map_err(|error| invalid(format!("not an X.509 certificate: {error}")))?;
        let common_name = certificate
            .subject()
            .iter_common_name()
            .next()
            .ok_or_else(|| invalid("subject has no common name".to_string()))?
            .as_str()
            .map_err(|error| invalid(format!("subject common name is not text: {error}")))?
            .to_string();
        Ok(PeerIdentity {
            common_name,
            sha256_fingerprint: sha256_fingerprint(certificate_der),
            serial_hex: serial_hex(certificate.raw_serial()),
            not_after_unix: certificate.validity().not_after.timestamp(),
        })
    }
}

/// Returns the identity of the client certificate of a request served over an
/// [`serve_tls_incoming`](super::serve_tls_incoming) stream, or `None` for a
/// connection without TLS or without a client certificate.
///
/// tonic puts the verified chain in the request's extensions
/// (`TlsConnectInfo<TcpConnectInfo>`); the leaf is the first certificate.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<PeerIdentity> {
    let certificates = request.peer_certs()?;
    let leaf = certificates.first()?;
    match PeerIdentity::from_der(leaf) {
        Ok(identity) => Some(identity),
        Err(error) => {
            warn!(reason = %error, "client certificate has no usable identity");
            None
        }
    }
}

/// Returns the lowercase hex SHA-256 of a certificate's DER, as printed by
/// `fedshield certs` and named in revocation lists.
pub fn sha256_fingerprint(certificate_der: &[u8]) -> String {
    hex::encode(Sha256::digest(certificate_der))
}

fn serial_hex(raw_serial: &[u8]) -> String {
    let first_significant = raw_serial
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(raw_serial.len().saturating_sub(1));
    hex::encode(&raw_serial[first_significant..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::load::load_certificates_pem;
    use crate::tls::pki::CertificateAuthority;

    #[test]
    fn identity_of_a_client_certificate_is_its_common_name() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let issued = authority.issue_client("acme-soc", 30).unwrap();
        let der = load_certificates_pem(&issued.cert_pem).unwrap().remove(0);
        let identity = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(identity.common_name, "acme-soc");
        assert_eq!(identity.sha256_fingerprint, issued.sha256_fingerprint);
        assert_eq!(identity.sha256_fingerprint.len(), 64);
        assert!(!identity.serial_hex.is_empty());
        assert!(!identity.serial_hex.starts_with("00"));
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expected_not_after = now_unix + 30 * 86_400;
        assert!((identity.not_after_unix - expected_not_after).abs() < 3_600);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let message = PeerIdentity::from_der(b"not der").unwrap_err().to_string();
        assert!(
            message.starts_with("invalid certificate in peer certificate"),
            "{message}"
        );
    }

    #[test]
    fn serial_drops_leading_zero_bytes_only() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x10, 0x00]), "1000");
    }
}
