//! Client certificates must be issued for client authentication.
//!
//! rustls' `WebPkiClientVerifier` checks the extended key usage (EKU) with
//! webpki's `KeyUsage::client_auth()`, which is *required if present*: a
//! certificate without an EKU extension passes, as if it could be used for
//! anything. A server certificate issued without an EKU by the same CA, or
//! any other EKU-less certificate of that CA, would then log in as a
//! participant. [`ClientAuthUsageVerifier`] wraps the webpki verifier and
//! also requires the leaf to carry an EKU extension that lists
//! `id-kp-clientAuth` (RFC 5280 §4.2.1.12); the handshake fails otherwise.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tracing::warn;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// A client certificate verifier that accepts what the inner (webpki)
/// verifier accepts *and* whose leaf lists the clientAuth extended key usage.
#[derive(Debug)]
pub(crate) struct ClientAuthUsageVerifier {
    /// Chain, validity and signature checks: rustls' `WebPkiClientVerifier`.
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientAuthUsageVerifier {
    /// Returns a verifier that adds the clientAuth requirement to `inner`.
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        ClientAuthUsageVerifier { inner }
    }
}

/// Returns `Ok` when `end_entity` has an extended key usage extension that
/// lists clientAuth (anyExtendedKeyUsage alone is not enough), else the
/// rustls error that fails the handshake.
fn require_client_auth_usage(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let (_, certificate) = X509Certificate::from_der(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let usage = certificate
        .extended_key_usage()
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    match usage {
        Some(usage) if usage.value.client_auth => Ok(()),
        Some(_) => {
            warn!(
                reason = "extended key usage lacks clientAuth",
                "client certificate refused"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ))
        }
        None => {
            warn!(
                reason = "no extended key usage extension",
                "client certificate refused"
            );
            Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ))
        }
    }
}

impl ClientCertVerifier for ClientAuthUsageVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        require_client_auth_usage(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
