//! A small certificate authority for fedshield deployments and tests.
//!
//! Everything happens in memory and comes back as PEM text: `fedshield certs`
//! writes it to files, the demo and the tests keep it in memory. Keys are ECDSA
//! P-256 (rcgen's default), which rustls' *ring* provider verifies.
//!
//! Serial numbers are rcgen's: 20 bytes of the SHA-256 of the certificate's
//! fresh public key, so they are unique per certificate. Revocation lists name
//! certificates by [`IssuedCertificate::sha256_fingerprint`].

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::error::{Result, TlsError};
use super::identity::sha256_fingerprint;
use super::load::load_certificates_pem;

/// Validity of a generated CA certificate: ten years.
pub const CA_VALID_DAYS: u32 = 3650;

/// How far back an issued certificate's validity starts, so that a peer whose
/// clock is a little behind the issuer's still accepts it.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);

/// A certificate and its fresh private key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate alone (no chain), PEM.
    pub cert_pem: String,
    /// Its PKCS#8 private key, PEM. Never log it.
    pub key_pem: String,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub sha256_fingerprint: String,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IssuedCertificate")
            .field("sha256_fingerprint", &self.sha256_fingerprint)
            .finish_non_exhaustive()
    }
}

/// A CA that signs the coordinator's server certificate and the participants'
/// client certificates.
pub struct CertificateAuthority {
    /// Subject, key identifier method and signing key of the CA certificate.
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CertificateAuthority")
            .field("subject", &self.subject_description())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Returns a new self-signed CA named `name` (subject CN), valid for
    /// [`CA_VALID_DAYS`], allowed to sign certificates and CRLs but no
    /// intermediate CAs (path length 0).
    ///
    /// # Errors
    /// When rcgen cannot build the certificate (e.g. an empty name).
    pub fn generate(name: &str) -> Result<Self> {
        if name.trim().is_empty() {
            return Err(TlsError::InvalidRequest {
                subject: format!("{name:?}"),
                reason: "the CA name is empty".to_string(),
            });
        }
        let generate_error = |source| TlsError::Generate {
            subject: name.to_string(),
            source,
        };
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + Duration::days(i64::from(CA_VALID_DAYS));
        let key_pair = KeyPair::generate().map_err(generate_error)?;
        let certificate = params.self_signed(&key_pair).map_err(generate_error)?;
        let cert_pem = certificate.pem();
        let key_pem = key_pair.serialize_pem();
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key_pair),
            cert_pem,
            key_pem,
        })
    }

    /// Returns the CA of a PEM certificate and its PEM private key, as written
    /// by [`to_pem`](Self::to_pem).
    ///
    /// # Errors
    /// When either PEM is unusable, the certificate is not a CA, or the key is
    /// not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let certificate_der = load_certificates_pem(cert_pem)?.remove(0);
        let invalid_certificate = |reason: String| TlsError::InvalidCertificate {
            origin: "CA certificate".to_string(),
            reason,
        };
        let (_, certificate) = X509Certificate::from_der(&certificate_der)
            .map_err(|error| invalid_certificate(format!("not an X.509 certificate: {error}")))?;
        if !certificate.is_ca() {
            return Err(invalid_certificate(
                "it is not a CA certificate (basic constraints CA:FALSE or absent)".to_string(),
            ));
        }
        let key_pair = KeyPair::from_pem(key_pem).map_err(|error| TlsError::InvalidPrivateKey {
            origin: "of the CA".to_string(),
            reason: error.to_string(),
        })?;
        if key_pair.subject_public_key_info() != certificate.public_key().raw {
            return Err(TlsError::InvalidPrivateKey {
                origin: "of the CA".to_string(),
                reason: "it does not belong to the CA certificate".to_string(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&certificate_der, key_pair)
            .map_err(|error| invalid_certificate(error.to_string()))?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// Returns the CA certificate and its private key, both PEM.
    pub fn to_pem(&self) -> (String, String) {
        (self.cert_pem.clone(), self.key_pem.clone())
    }

    /// Returns the CA certificate, PEM: what servers and clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Returns a server certificate for `dns_names` and `ips` (subject
    /// alternative names), with CN = the first DNS name (or IP), extended key
    /// usage serverAuth, valid for `valid_days` from now.
    ///
    /// # Errors
    /// When no name is given, `valid_days` is 0, or a DNS name is not ASCII.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        valid_days: u32,
    ) -> Result<IssuedCertificate> {
        let subject = match (dns_names.first(), ips.first()) {
            (Some(dns_name), _) => dns_name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => {
                return Err(TlsError::InvalidRequest {
                    subject: "server certificate".to_string(),
                    reason: "give at least one DNS name or IP address".to_string(),
                });
            }
        };
        let mut subject_alt_names = Vec::with_capacity(dns_names.len() + ips.len());
        for dns_name in dns_names {
            let ia5_name =
                dns_name
                    .clone()
                    .try_into()
                    .map_err(|error| TlsError::InvalidRequest {
                        subject: subject.clone(),
                        reason: format!("DNS name {dns_name:?} is not valid: {error}"),
                    })?;
            subject_alt_names.push(SanType::DnsName(ia5_name));
        }
        subject_alt_names.extend(ips.iter().copied().map(SanType::IpAddress));
        let (not_before, not_after) = validity_from_now(&subject, valid_days)?;
        let mut params = leaf_params(&subject, not_before, not_after);
        params.subject_alt_names = subject_alt_names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&subject, params)
    }

    /// Returns a client certificate of participant `participant_id` (its
    /// subject CN, which the coordinator takes as the participant identity),
    /// extended key usage clientAuth, valid for `valid_days` from now.
    ///
    /// # Errors
    /// When the id is empty or `valid_days` is 0.
    pub fn issue_client(&self, participant_id: &str, valid_days: u32) -> Result<IssuedCertificate> {
        let (not_before, not_after) = validity_from_now(participant_id, valid_days)?;
        self.issue_client_between(participant_id, not_before, not_after)
    }

    /// Returns a client certificate valid from `not_before` to `not_after`,
    /// which may lie in the past (tests of expired certificates).
    ///
    /// # Errors
    /// When the id is empty or the window is empty.
    pub fn issue_client_with_validity(
        &self,
        participant_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCertificate> {
        self.issue_client_between(
            participant_id,
            OffsetDateTime::from(not_before),
            OffsetDateTime::from(not_after),
        )
    }

    fn issue_client_between(
        &self,
        participant_id: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCertificate> {
        if participant_id.is_empty() {
            return Err(TlsError::InvalidRequest {
                subject: "client certificate".to_string(),
                reason: "the participant id is empty".to_string(),
            });
        }
        if not_after <= not_before {
            return Err(TlsError::InvalidRequest {
                subject: participant_id.to_string(),
                reason: format!("validity ends ({not_after}) before it starts ({not_before})"),
            });
        }
        let mut params = leaf_params(participant_id, not_before, not_after);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(participant_id, params)
    }

    fn sign(&self, subject: &str, params: CertificateParams) -> Result<IssuedCertificate> {
        let generate_error = |source| TlsError::Generate {
            subject: subject.to_string(),
            source,
        };
        let key_pair = KeyPair::generate().map_err(generate_error)?;
        let certificate = params
            .signed_by(&key_pair, &self.issuer)
            .map_err(generate_error)?;
        Ok(IssuedCertificate {
            cert_pem: certificate.pem(),
            key_pem: key_pair.serialize_pem(),
            sha256_fingerprint: sha256_fingerprint(certificate.der()),
        })
    }

    fn subject_description(&self) -> String {
        load_certificates_pem(&self.cert_pem)
            .ok()
            .and_then(|certificates| {
                let (_, certificate) = X509Certificate::from_der(&certificates[0]).ok()?;
                Some(certificate.subject().to_string())
            })
            .unwrap_or_default()
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

/// Returns the parameters shared by server and client certificates.
fn leaf_params(
    subject: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(subject);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

fn validity_from_now(subject: &str, valid_days: u32) -> Result<(OffsetDateTime, OffsetDateTime)> {
    if valid_days == 0 {
        return Err(TlsError::InvalidRequest {
            subject: subject.to_string(),
            reason: "validity must be at least one day".to_string(),
        });
    }
    let now = OffsetDateTime::now_utc();
    Ok((
        now - CLOCK_SKEW_ALLOWANCE,
        now + Duration::days(i64::from(valid_days)),
    ))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration as StdDuration;

    use x509_parser::extensions::GeneralName;

    use super::*;

    fn parse(pem: &str) -> Vec<u8> {
        load_certificates_pem(pem).unwrap().remove(0).to_vec()
    }

    #[test]
    fn generated_ca_is_a_ca_valid_for_ten_years() {
        let authority = CertificateAuthority::generate("fedshield CA").unwrap();
        let der = parse(authority.cert_pem());
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert!(certificate.is_ca());
        assert_eq!(certificate.subject().to_string(), "CN=fedshield CA");
        let key_usage = certificate.key_usage().unwrap().unwrap().value;
        assert!(key_usage.key_cert_sign() && key_usage.crl_sign());
        let validity = certificate.validity();
        let valid_secs = validity.not_after.timestamp() - validity.not_before.timestamp();
        let ten_years_secs = 3650 * 86_400;
        assert!((valid_secs - ten_years_secs).abs() <= 3_600, "{valid_secs}");
        assert!(format!("{authority:?}").contains("fedshield CA"));
        assert!(!format!("{authority:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn server_certificate_has_the_requested_names() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let issued = authority
            .issue_server(
                &["coordinator.example".to_string(), "localhost".to_string()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                825,
            )
            .unwrap();
        let der = parse(&issued.cert_pem);
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(certificate.subject().to_string(), "CN=coordinator.example");
        let names = certificate.subject_alternative_name().unwrap().unwrap();
        let names = &names.value.general_names;
        assert!(names.contains(&GeneralName::DNSName("coordinator.example")));
        assert!(names.contains(&GeneralName::DNSName("localhost")));
        assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let usages = certificate.extended_key_usage().unwrap().unwrap().value;
        assert!(usages.server_auth && !usages.client_auth);
        assert!(!certificate.is_ca());
    }

    #[test]
    fn server_certificate_needs_a_name() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let message = authority
            .issue_server(&[], &[], 10)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("at least one DNS name or IP address"),
            "{message}"
        );
    }

    #[test]
    fn client_certificate_names_the_participant() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let issued = authority.issue_client("acme-soc", 365).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(certificate.subject().to_string(), "CN=acme-soc");
        let usages = certificate.extended_key_usage().unwrap().unwrap().value;
        assert!(usages.client_auth && !usages.server_auth);
        assert_eq!(issued.sha256_fingerprint, sha256_fingerprint(&der));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn expired_client_certificate_lies_in_the_past() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let now = SystemTime::now();
        let day = StdDuration::from_secs(86_400);
        let issued = authority
            .issue_client_with_validity("old", now - 10 * day, now - day)
            .unwrap();
        let der = parse(&issued.cert_pem);
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert!(!certificate.validity().is_valid());
        let message = authority
            .issue_client_with_validity("old", now, now - day)
            .unwrap_err()
            .to_string();
        assert!(message.contains("before it starts"), "{message}");
    }

    #[test]
    fn ca_round_trips_through_pem_and_keeps_signing() {
        let authority = CertificateAuthority::generate("round trip CA").unwrap();
        let (cert_pem, key_pem) = authority.to_pem();
        let reloaded = CertificateAuthority::from_pem(&cert_pem, &key_pem).unwrap();
        let issued = reloaded.issue_client("p1", 1).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(certificate.issuer().to_string(), "CN=round trip CA");
        let ca_der = parse(&cert_pem);
        let (_, ca_certificate) = X509Certificate::from_der(&ca_der).unwrap();
        certificate
            .verify_signature(Some(ca_certificate.public_key()))
            .unwrap();
    }

    #[test]
    fn ca_with_a_foreign_key_is_refused() {
        let authority = CertificateAuthority::generate("CA one").unwrap();
        let other = CertificateAuthority::generate("CA two").unwrap();
        let (cert_pem, _) = authority.to_pem();
        let (_, other_key_pem) = other.to_pem();
        let message = CertificateAuthority::from_pem(&cert_pem, &other_key_pem)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("does not belong to the CA certificate"),
            "{message}"
        );
    }

    #[test]
    fn leaf_certificate_is_not_a_ca() {
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let issued = authority.issue_client("p1", 1).unwrap();
        let message = CertificateAuthority::from_pem(&issued.cert_pem, &issued.key_pem)
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a CA certificate"), "{message}");
    }
}
