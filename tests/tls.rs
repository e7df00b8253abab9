//! Mutual TLS end to end on 127.0.0.1: a coordinator with a participant CA
//! and a participant registry; valid participants train, and everyone else
//! (no certificate, another CA, an expired or revoked certificate, an
//! unregistered or revoked participant, a participant claiming another's id,
//! a plaintext client) is refused.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle, CoordinatorTls};
use fedshield_core::telemetry::{OrgProfile, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId};
use fedshield_participant::{Participant, ParticipantConfig};
use fedshield_proto::tls::client_tls_config;
use fedshield_proto::tls::pki::{CertificateAuthority, IssuedCertificate};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use common::{coordinator_tls, localhost_certificate, start_coordinator, test_spec, wait_until};

struct Federation {
    authority: CertificateAuthority,
    coordinator: CoordinatorHandle,
    shutdown: CancellationToken,
    registry_path: std::path::PathBuf,
    _work: tempfile::TempDir,
}

const REGISTRY: &str = r#"
[[participant]]
id = "alice"
[[participant]]
id = "bob"
[[participant]]
id = "carol"
[[participant]]
id = "globex"
revoked = true
"#;

impl Federation {
    async fn start() -> Federation {
        let work = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("test participant CA").unwrap();
        let server = localhost_certificate(&authority);
        let registry_path = work.path().join("participants.toml");
        std::fs::write(&registry_path, REGISTRY).unwrap();
        let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
        config.round.max_rounds = Some(1);
        config.tls = Some(CoordinatorTls {
            registry_path: Some(registry_path.clone()),
            ..coordinator_tls(
                &authority,
                &server,
                ParticipantRegistry::load(&registry_path).unwrap(),
            )
        });
        let shutdown = CancellationToken::new();
        let coordinator = start_coordinator(config, shutdown.clone()).await;
        Federation {
            authority,
            coordinator,
            shutdown,
            registry_path,
            _work: work,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.coordinator.local_addr())
    }

    fn tls_for(&self, certificate: &IssuedCertificate) -> ClientTlsConfig {
        client_tls_config(
            self.authority.cert_pem(),
            &certificate.cert_pem,
            &certificate.key_pem,
            "localhost",
        )
    }

    /// Connects with `tls` and calls GetStatus; returns the status code of
    /// the failure, whether at connect or at the call.
    async fn get_status_with(&self, tls: ClientTlsConfig) -> Result<(), (Code, String)> {
        let mut client = connect(&self.url(), tls).await?;
        client
            .get_status(pb::GetStatusRequest {})
            .await
            .map(|_| ())
            .map_err(|status| (status.code(), status.message().to_string()))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.coordinator.wait().await.unwrap();
    }
}

async fn connect(
    url: &str,
    tls: ClientTlsConfig,
) -> Result<FederationClient<Channel>, (Code, String)> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|error| (Code::Unknown, error.to_string()))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| (Code::Unavailable, format!("{error:?}")))?;
    Ok(FederationClient::new(channel))
}

fn start_tls_participant(
    federation: &Federation,
    name: &str,
    org: usize,
    data_dir: &Path,
) -> tokio::task::JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>> {
    let certificate = federation.authority.issue_client(name, 1).unwrap();
    let mut config = ParticipantConfig::for_test(
        federation.url(),
        ParticipantId::new(name).unwrap(),
        data_dir.join(name),
    );
    config.tls = Some(federation.tls_for(&certificate));
    let data = synthetic_dataset(OrgProfile::for_org(org), 1200, 50 + org as u64);
    let participant = Participant::new(config, data).unwrap();
    tokio::spawn(participant.run(federation.shutdown.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_with_valid_certificates_train_over_mutual_tls() {
    let federation = Federation::start().await;
    let work = tempfile::tempdir().unwrap();
    let alice = start_tls_participant(&federation, "alice", 0, work.path());
    let bob = start_tls_participant(&federation, "bob", 1, work.path());
    let engine = federation.coordinator.engine().clone();
    wait_until("version 1 over mTLS", Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let mut contributors = federation
        .coordinator
        .engine()
        .current_model()
        .card
        .contributors
        .clone();
    contributors.sort();
    assert_eq!(contributors, vec!["alice".to_string(), "bob".to_string()]);
    federation.shutdown.cancel();
    alice
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    bob.await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_certificate_or_registry_entry_are_refused() {
    let federation = Federation::start().await;

    // A registered participant with a good certificate gets through.
    let alice = federation.authority.issue_client("alice", 1).unwrap();
    federation
        .get_status_with(federation.tls_for(&alice))
        .await
        .expect("alice is allowed");

    // No client certificate: refused at the handshake.
    let no_certificate = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(federation.authority.cert_pem()))
        .domain_name("localhost");
    assert!(federation.get_status_with(no_certificate).await.is_err());

    // A certificate from another CA, for a registered name.
    let other_authority = CertificateAuthority::generate("someone else's CA").unwrap();
    let forged = other_authority.issue_client("alice", 1).unwrap();
    let forged_tls = client_tls_config(
        federation.authority.cert_pem(),
        &forged.cert_pem,
        &forged.key_pem,
        "localhost",
    );
    assert!(federation.get_status_with(forged_tls).await.is_err());

    // An expired certificate of a registered participant.
    let day = Duration::from_secs(86_400);
    let expired = federation
        .authority
        .issue_client_with_validity("bob", SystemTime::now() - 10 * day, SystemTime::now() - day)
        .unwrap();
    assert!(
        federation
            .get_status_with(federation.tls_for(&expired))
            .await
            .is_err()
    );

    // A good certificate of a participant the registry does not know.
    let mallory = federation.authority.issue_client("mallory", 1).unwrap();
    let (code, message) = federation
        .get_status_with(federation.tls_for(&mallory))
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(
        message.contains("not in the coordinator's participant registry"),
        "{message}"
    );

    // A participant revoked as a whole.
    let globex = federation.authority.issue_client("globex", 1).unwrap();
    let (code, message) = federation
        .get_status_with(federation.tls_for(&globex))
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("revoked"), "{message}");

    // Alice's certificate used to join as bob.
    let mut client = connect(&federation.url(), federation.tls_for(&alice))
        .await
        .unwrap();
    let status = client
        .join(pb::JoinRequest {
            participant_id: "bob".to_string(),
            client_version: "test".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("identifies participant alice"),
        "{status:?}"
    );

    // A plaintext client gets nowhere.
    let plaintext =
        FederationClient::connect(format!("http://{}", federation.coordinator.local_addr())).await;
    if let Ok(mut plaintext) = plaintext {
        assert!(plaintext.get_status(pb::GetStatusRequest {}).await.is_err());
    }

    // Nobody above joined.
    assert!(
        federation
            .coordinator
            .engine()
            .status()
            .connected
            .is_empty()
    );
    // And the coordinator still serves the legitimate participant.
    federation
        .get_status_with(federation.tls_for(&alice))
        .await
        .expect("alice is still allowed");
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_in_the_registry_file_is_refused_without_a_restart() {
    let federation = Federation::start().await;
    let carol = federation.authority.issue_client("carol", 1).unwrap();
    federation
        .get_status_with(federation.tls_for(&carol))
        .await
        .expect("carol is allowed");
    // Carol's key was stolen: the operator revokes that one certificate.
    std::fs::write(
        &federation.registry_path,
        format!(
            "revoked_certificates = [\"{}\"]\n{REGISTRY}",
            carol.sha256_fingerprint
        ),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        match federation.get_status_with(federation.tls_for(&carol)).await {
            Err(refusal) => break refusal,
            Ok(()) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(()) => panic!("the revocation was not picked up within 20s"),
        }
    };
    assert_eq!(refusal.0, Code::PermissionDenied, "{refusal:?}");
    assert!(refusal.1.contains("revoked"), "{refusal:?}");
    // A fresh certificate for carol still works: only the stolen one is out.
    let reissued = federation.authority.issue_client("carol", 1).unwrap();
    federation
        .get_status_with(federation.tls_for(&reissued))
        .await
        .expect("carol's new certificate is allowed");
    federation.stop().await;
}
