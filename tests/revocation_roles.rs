//! Revocation of live members and roles, end to end over mutual TLS on
//! 127.0.0.1 (rcgen certificates, real participants, curl for HTTPS):
//!
//! - a participant revoked while its `Join` stream is open and the round is
//!   waiting for it (by registry flag, or by its certificate's fingerprint)
//!   loses the stream with `PERMISSION_DENIED` within seconds, leaves the
//!   round, which completes with the others long before its deadline, and
//!   the status shows it as revoked;
//! - a detector's certificate downloads models (gRPC and HTTPS) and reads
//!   the status, but is refused with `PERMISSION_DENIED` on every training
//!   call, while a participant still joins and submits.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::status::StatusReport;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle, CoordinatorTls};
use fedshield_core::model::codec::params_as_le_bytes;
use fedshield_core::telemetry::{OrgProfile, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId};
use fedshield_participant::{Participant, ParticipantConfig};
use fedshield_proto::tls::client_tls_config;
use fedshield_proto::tls::pki::{CertificateAuthority, IssuedCertificate};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use common::raw::RawParticipant;
use common::{
    coordinator_tls, curl, curl_installed, https_settings, localhost_certificate,
    start_coordinator, test_spec, wait_for_accepted_updates, wait_until,
};

/// The registry of every test: three participants and one detector.
const REGISTRY: &str = r#"
[[participant]]
id = "alice"
[[participant]]
id = "bob"
[[participant]]
id = "carol"
[[participant]]
id = "dave"
role = "detector"
"#;

/// The round deadline: far longer than any test, so that a round that
/// completes did not wait for it.
const LONG_ROUND_DEADLINE: Duration = Duration::from_secs(600);

/// How long a revocation may take to end a stream: the registry file is
/// polled every 2 s.
const REVOCATION_BOUND: Duration = Duration::from_secs(15);

/// How long the steps of a test may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The client version these tests join with.
const REVOCATION_TEST: &str = "revocation-test";

/// A coordinator with mutual TLS, a registry file it re-reads, and the
/// HTTPS endpoint.
struct Federation {
    authority: CertificateAuthority,
    coordinator: CoordinatorHandle,
    shutdown: CancellationToken,
    registry_path: PathBuf,
    work: tempfile::TempDir,
}

impl Federation {
    /// Starts a coordinator whose rounds open when `min_participants` are
    /// connected, select all of them, need `quorum` updates and last
    /// [`LONG_ROUND_DEADLINE`]; one round at most.
    async fn start(min_participants: usize, quorum: usize) -> Federation {
        let work = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("test participant CA").unwrap();
        let server = localhost_certificate(&authority);
        std::fs::write(work.path().join("ca.pem"), authority.cert_pem()).unwrap();
        let registry_path = work.path().join("participants.toml");
        std::fs::write(&registry_path, REGISTRY).unwrap();
        let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
        config.round.min_participants = min_participants;
        config.round.quorum = quorum;
        config.round.max_rounds = Some(1);
        config.round.round_deadline = LONG_ROUND_DEADLINE;
        config.tls = Some(CoordinatorTls {
            registry_path: Some(registry_path.clone()),
            ..coordinator_tls(
                &authority,
                &server,
                ParticipantRegistry::load(&registry_path).unwrap(),
            )
        });
        config.https = Some(https_settings(
            &authority,
            &server,
            work.path().join("api-tokens.toml"),
        ));
        let shutdown = CancellationToken::new();
        let coordinator = start_coordinator(config, shutdown.clone()).await;
        Federation {
            authority,
            coordinator,
            shutdown,
            registry_path,
            work,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.coordinator.local_addr())
    }

    /// Issues a client certificate for `name` and writes it to
    /// `<work>/<name>.pem` and `.key` for curl.
    fn issue(&self, name: &str) -> IssuedCertificate {
        let certificate = self.authority.issue_client(name, 1).unwrap();
        let work = self.work.path();
        std::fs::write(work.join(format!("{name}.pem")), &certificate.cert_pem).unwrap();
        std::fs::write(work.join(format!("{name}.key")), &certificate.key_pem).unwrap();
        certificate
    }

    /// Connects over mutual TLS with `certificate`.
    async fn connect(&self, certificate: &IssuedCertificate) -> FederationClient<Channel> {
        let tls = client_tls_config(
            self.authority.cert_pem(),
            &certificate.cert_pem,
            &certificate.key_pem,
            "localhost",
        );
        let channel = Endpoint::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("the coordinator accepts the TLS connection");
        FederationClient::new(channel)
    }

    /// Starts a real participant `name` of synthetic organization `org`,
    /// with a certificate of its own.
    fn start_participant(
        &self,
        name: &str,
        org: usize,
    ) -> tokio::task::JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>>
    {
        let certificate = self.issue(name);
        let mut config = ParticipantConfig::for_test(
            self.url(),
            ParticipantId::new(name).unwrap(),
            self.work.path().join("participants").join(name),
        );
        config.tls = Some(client_tls_config(
            self.authority.cert_pem(),
            &certificate.cert_pem,
            &certificate.key_pem,
            "localhost",
        ));
        let data = synthetic_dataset(OrgProfile::for_org(org), 1200, 50 + org as u64);
        let participant = Participant::new(config, data).unwrap();
        tokio::spawn(participant.run(self.shutdown.clone()))
    }

    /// Fetches `/v1/status` over HTTPS with `name`'s client certificate.
    fn status_json(&self, name: &str) -> StatusReport {
        let work = self.work.path();
        let url = format!(
            "https://{}/v1/status",
            self.coordinator.https_addr().unwrap()
        );
        let fetched = curl_as(&url, work, name);
        assert_eq!(
            fetched.status,
            200,
            "{}",
            String::from_utf8_lossy(&fetched.body)
        );
        serde_json::from_slice(&fetched.body).expect("the status is JSON")
    }

    async fn stop(
        self,
        participants: Vec<
            tokio::task::JoinHandle<
                fedshield_participant::error::Result<fedshield_participant::RunEnd>,
            >,
        >,
    ) {
        self.shutdown.cancel();
        for participant in participants {
            participant
                .await
                .unwrap()
                .expect("the participant meets no permanent refusal");
        }
        self.coordinator.wait().await.unwrap();
    }
}

/// Runs curl against `url` with `name`'s client certificate from `work`.
fn curl_as(url: &str, work: &Path, name: &str) -> common::Fetched {
    assert!(
        curl_installed(),
        "these tests need curl for the HTTPS checks"
    );
    let cert = work.join(format!("{name}.pem"));
    let key = work.join(format!("{name}.key"));
    curl(
        url,
        work,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
}

/// What these tests read from a hand-driven member's stream.
impl RawParticipant {
    /// Reads the stream, skipping heartbeats, until it ends or `bound`
    /// passes; returns how it ended.
    async fn stream_end_within(&mut self, bound: Duration) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            match tokio::time::timeout_at(deadline, self.events.message()).await {
                Err(_) => panic!(
                    "the join stream of {} was still open {bound:?} after its revocation",
                    self.name
                ),
                Ok(Err(status)) => return Err(status),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(_))) => {}
            }
        }
    }
}

fn join_request(name: &str) -> pb::JoinRequest {
    pb::JoinRequest {
        participant_id: name.to_string(),
        client_version: REVOCATION_TEST.to_string(),
    }
}

/// Returns the messages of a well-formed update of zeros for `announcement`.
fn zero_update(
    name: &str,
    token: &str,
    announcement: &pb::RoundAnnouncement,
    num_params: usize,
) -> Vec<pb::UpdateChunk> {
    let header = pb::UpdateHeader {
        round_id: announcement.round_id,
        base_model_version: announcement.base_model_version,
        participant_id: name.to_string(),
        session_token: token.to_string(),
        num_samples: 100,
        encoding: pb::UpdateEncoding::F32Le as i32,
        num_params: num_params as u64,
        privacy: None,
        upload_slot: String::new(),
    };
    let zeros = vec![0.0_f32; num_params];
    vec![
        pb::UpdateChunk {
            payload: Some(pb::update_chunk::Payload::Header(header)),
        },
        pb::UpdateChunk {
            payload: Some(pb::update_chunk::Payload::Data(Bytes::copy_from_slice(
                params_as_le_bytes(&zeros),
            ))),
        },
    ]
}

/// Carol joins by hand and never submits; alice and bob train for real. Once
/// the round holds alice's and bob's updates and waits only for carol, the
/// operator rewrites the registry with `revoked_registry(carol's
/// certificate)`. Checks that carol's stream ends with `PERMISSION_DENIED`
/// within [`REVOCATION_BOUND`], that the round publishes alice's and bob's
/// updates long before its deadline, and that the status (gRPC and HTTPS
/// JSON) lists carol as revoked and no longer connected.
async fn revoking_the_member_a_round_waits_for_ends_its_stream_and_completes_the_round(
    revoked_registry: impl FnOnce(&IssuedCertificate) -> String,
) {
    let federation = Federation::start(3, 2).await;
    let engine = federation.coordinator.engine().clone();
    let carol_certificate = federation.issue("carol");
    let mut carol = RawParticipant::join_on(
        federation.connect(&carol_certificate).await,
        "carol",
        REVOCATION_TEST,
    )
    .await;
    let participants = vec![
        federation.start_participant("alice", 0),
        federation.start_participant("bob", 1),
    ];
    let announcement = carol.next_announcement().await;
    wait_for_accepted_updates(
        &engine,
        2,
        "alice's and bob's updates in the open round",
        PATIENCE,
    )
    .await;
    // The round now waits for carol alone, until its ten-minute deadline.
    let open_round = engine.status().open_round.expect("the round is open");
    assert_eq!(open_round.round_id.0, announcement.round_id);
    assert!(
        open_round
            .selected
            .iter()
            .any(|participant| participant.as_str() == "carol")
    );
    assert_eq!(engine.current_model().version, ModelVersion(0));

    std::fs::write(
        &federation.registry_path,
        revoked_registry(&carol_certificate),
    )
    .unwrap();
    let revoked_at = Instant::now();

    let ending = carol.stream_end_within(REVOCATION_BOUND).await;
    let status = ending.expect_err("the stream ends with a status, not silently");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    println!(
        "carol's join stream ended {:?} after the registry was rewritten",
        revoked_at.elapsed()
    );

    wait_until("version 1 without carol", PATIENCE, || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let completed_after = revoked_at.elapsed();
    println!("the round completed {completed_after:?} after the registry was rewritten");
    assert!(
        completed_after < LONG_ROUND_DEADLINE / 4,
        "the round waited {completed_after:?}"
    );
    let mut contributors = engine.current_model().card.contributors.clone();
    contributors.sort();
    assert_eq!(contributors, vec!["alice".to_string(), "bob".to_string()]);
    let summary = engine.status().recent_rounds.last().cloned().unwrap();
    assert_eq!(summary.outcome.name(), "completed");

    // Carol is gone from the connected members and listed as revoked.
    let engine_status = engine.status();
    assert!(
        !engine_status
            .connected
            .iter()
            .any(|participant| participant.as_str() == "carol")
    );
    // Alice is not revoked: she leaves only when told that the federation
    // (one round) is complete.
    assert!(
        !engine_status
            .revoked
            .iter()
            .any(|member| member.participant.as_str() == "alice")
    );
    assert!(engine.completion().is_some());
    let mut bob_client = federation.connect(&federation.issue("bob")).await;
    let grpc_status = bob_client
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("bob reads the status")
        .into_inner();
    assert_eq!(grpc_status.revoked_participants, vec!["carol".to_string()]);
    assert!(
        !grpc_status
            .connected_participants
            .contains(&"carol".to_string())
    );
    let report = federation.status_json("bob");
    // The federation of one round is complete, and the status says so.
    let complete = report
        .complete
        .as_ref()
        .expect("the status shows completion");
    assert_eq!(
        (complete.final_version, complete.num_rounds_completed),
        (1, 1)
    );
    assert_eq!(complete.final_sha256, engine.current_model().card.sha256);
    let revoked: Vec<(&str, &str)> = report
        .revoked_participants
        .iter()
        .map(|member| (member.id.as_str(), member.state.as_str()))
        .collect();
    assert_eq!(revoked, vec![("carol", "revoked")]);
    assert!(
        report.revoked_participants[0].reason.contains("revoked"),
        "{:?}",
        report.revoked_participants
    );
    assert!(
        !report
            .participants
            .iter()
            .any(|participant| participant.id == "carol")
    );

    // Carol's certificate gets nothing more.
    let mut carol_again = federation.connect(&carol_certificate).await;
    let refused = carol_again.join(join_request("carol")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    federation.stop(participants).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_revoked_in_the_registry_loses_its_join_stream_and_the_round_completes_without_it()
 {
    revoking_the_member_a_round_waits_for_ends_its_stream_and_completes_the_round(|_| {
        REGISTRY.replace("id = \"carol\"\n", "id = \"carol\"\nrevoked = true\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_fingerprint_ends_the_stream_it_opened_and_the_round_completes_without_it()
 {
    revoking_the_member_a_round_waits_for_ends_its_stream_and_completes_the_round(|carol| {
        format!(
            "revoked_certificates = [\"{}\"]\n{REGISTRY}",
            carol.sha256_fingerprint
        )
    })
    .await;
}

/// Asserts that `result` is a `PERMISSION_DENIED` naming the detector role.
fn assert_refused_for_role<T: std::fmt::Debug>(result: Result<T, Status>, call: &str) {
    let status = result.expect_err(&format!("a detector may not call {call}"));
    assert_eq!(status.code(), Code::PermissionDenied, "{call}: {status:?}");
    assert!(
        status.message().contains("role detector")
            && status.message().contains("only for role participant"),
        "{call}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_certificate_downloads_models_but_is_refused_on_every_training_call() {
    // One participant is enough for a round: alice's join opens it.
    let federation = Federation::start(1, 1).await;
    let engine = federation.coordinator.engine().clone();
    let num_params = engine.current_model().weights.params.len();
    let dave_certificate = federation.issue("dave");
    let mut dave = federation.connect(&dave_certificate).await;

    // Dave, a detector, downloads the model over gRPC and reads the status.
    let mut download = dave
        .download_model(pb::DownloadModelRequest {
            model_version: 0,
            preferred_chunk_params: 0,
        })
        .await
        .expect("a detector may download models")
        .into_inner();
    let first = download.message().await.unwrap().expect("a model header");
    let Some(pb::model_chunk::Payload::Header(header)) = first.payload else {
        panic!("the download starts with a header");
    };
    assert_eq!(header.num_params as usize, num_params);
    dave.get_status(pb::GetStatusRequest {})
        .await
        .expect("a detector may read the status");

    // Dave may not join.
    assert_refused_for_role(dave.join(join_request("dave")).await, "join");

    // Alice, a participant, joins and is announced the round.
    let alice_certificate = federation.issue("alice");
    let mut alice = RawParticipant::join_on(
        federation.connect(&alice_certificate).await,
        "alice",
        REVOCATION_TEST,
    )
    .await;
    let announcement = alice.next_announcement().await;

    // Dave may not submit to it, reserve an upload slot, or decline it.
    assert_refused_for_role(
        dave.submit_update(futures::stream::iter(zero_update(
            "dave",
            "",
            &announcement,
            num_params,
        )))
        .await,
        "submit_update",
    );
    assert_refused_for_role(
        dave.reserve_upload_slot(pb::ReserveUploadSlotRequest {
            round_id: announcement.round_id,
            participant_id: "dave".to_string(),
            session_token: String::new(),
        })
        .await,
        "reserve_upload_slot",
    );
    assert_refused_for_role(
        dave.decline_round(pb::DeclineRoundRequest {
            round_id: announcement.round_id,
            participant_id: "dave".to_string(),
            session_token: String::new(),
            reason: "detector".to_string(),
        })
        .await,
        "decline_round",
    );
    let open_round = engine.status().open_round.expect("the round is open");
    assert!(open_round.accepted.is_empty());
    assert!(
        !engine
            .status()
            .connected
            .iter()
            .any(|participant| participant.as_str() == "dave")
    );

    // Alice downloads and submits; her update publishes version 1.
    let mut alice_download = alice
        .client
        .download_model(pb::DownloadModelRequest {
            model_version: 0,
            preferred_chunk_params: 0,
        })
        .await
        .expect("a participant may download models")
        .into_inner();
    assert!(alice_download.message().await.unwrap().is_some());
    let response = alice
        .client
        .submit_update(futures::stream::iter(zero_update(
            &alice.name,
            &alice.token,
            &announcement,
            num_params,
        )))
        .await
        .expect("a participant may submit")
        .into_inner();
    assert_eq!(response.num_updates_accepted, 1);
    wait_until("version 1 from alice", PATIENCE, || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    assert_eq!(
        engine.current_model().card.contributors,
        vec!["alice".to_string()]
    );

    // Over HTTPS, dave's certificate downloads the new version.
    let https_addr = federation.coordinator.https_addr().unwrap();
    let fetched = curl_as(
        &format!("https://{https_addr}/v1/models/latest"),
        federation.work.path(),
        "dave",
    );
    assert_eq!(
        fetched.status,
        200,
        "{}",
        String::from_utf8_lossy(&fetched.body)
    );
    assert!(fetched.headers.contains("x-fedshield-version: 1"));
    assert!(!fetched.body.is_empty());
    let report = federation.status_json("dave");
    assert_eq!(report.current_version, 1);
    drop(alice);
    federation.stop(Vec::new()).await;
}
