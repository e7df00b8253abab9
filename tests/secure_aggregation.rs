//! Secure aggregation over real gRPC with mutual TLS: eight participants
//! that run the real participant code train on synthetic telemetry, and
//! the coordinator publishes the average of their updates (within the
//! documented quantization error) having seen only masked vectors. The
//! coordinator is instrumented to keep its whole transcript: each masked
//! update it received is uniform over Z_(2^32), and the shares it holds
//! cannot take the pairwise masks off any single update. Plain updates and
//! robust rules are refused in this mode.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedshield_coordinator::config::{ParticipantsPerRound, SecureAggregationConfig};
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, TranscriptEntry};
use fedshield_core::aggregation::robust::AggregationRule;
use fedshield_core::secagg::{MaskSign, ShareKind, apply_mask, shamir};
use fedshield_core::telemetry::{OrgProfile, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId};
use fedshield_participant::{Participant, ParticipantConfig};
use fedshield_proto::tls::pki::CertificateAuthority;
use tokio_util::sync::CancellationToken;

use common::{coordinator_tls, localhost_certificate, participant_tls, test_spec, wait_until};

const NUM_PARTICIPANTS: usize = 8;

fn names() -> Vec<String> {
    (0..NUM_PARTICIPANTS)
        .map(|index| format!("org-{index}"))
        .collect()
}

/// χ² statistic of `values`' byte at `shift` over 256 bins.
fn chi_square_of_byte(values: &[u32], shift: u32) -> f64 {
    let mut counts = [0u64; 256];
    for value in values {
        counts[((value >> shift) & 0xff) as usize] += 1;
    }
    let expected = values.len() as f64 / 256.0;
    counts
        .iter()
        .map(|&count| {
            let difference = count as f64 - expected;
            difference * difference / expected
        })
        .sum()
}

/// The χ² value with 255 degrees of freedom that a uniform sample exceeds
/// with probability about 1e-6 (Wilson–Hilferty, z = 4.75).
fn chi_square_critical_255() -> f64 {
    let dof = 255.0_f64;
    let z = 4.75;
    let term = 1.0 - 2.0 / (9.0 * dof) + z * (2.0 / (9.0 * dof)).sqrt();
    dof * term.powi(3)
}

fn assert_uniform(values: &[u32], what: &str) {
    let critical = chi_square_critical_255();
    for shift in [0, 8, 16, 24] {
        let statistic = chi_square_of_byte(values, shift);
        assert!(
            statistic < critical,
            "{what}: byte at bit {shift} is not uniform (χ² = {statistic:.1}, critical {critical:.1})"
        );
    }
}

struct Setup {
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    coordinator: fedshield_coordinator::CoordinatorHandle,
    authority: CertificateAuthority,
    transcript: Arc<Mutex<Vec<TranscriptEntry>>>,
    sent: Arc<Mutex<BTreeMap<String, Vec<f32>>>>,
    tasks: Vec<common::ParticipantTask>,
}

async fn start_secure_federation(config_changes: impl FnOnce(&mut CoordinatorConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let authority = CertificateAuthority::generate("fedshield secure aggregation test CA").unwrap();
    let server = localhost_certificate(&authority);
    let ids: Vec<ParticipantId> = names()
        .into_iter()
        .map(|name| ParticipantId::new(name).unwrap())
        .collect();
    let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), test_spec());
    config.round.min_participants = NUM_PARTICIPANTS;
    config.round.participants_per_round = ParticipantsPerRound::Count(NUM_PARTICIPANTS);
    config.round.quorum = NUM_PARTICIPANTS;
    config.round.max_rounds = Some(1);
    config.round.round_deadline = Duration::from_secs(60);
    config.round.secure_aggregation = Some(SecureAggregationConfig { clip_norm: 100.0 });
    config.tls = Some(coordinator_tls(
        &authority,
        &server,
        ParticipantRegistry::allowing(ids),
    ));
    config_changes(&mut config);
    let shutdown = CancellationToken::new();
    let coordinator = common::start_coordinator(config, shutdown.clone()).await;
    let transcript: Arc<Mutex<Vec<TranscriptEntry>>> = Arc::default();
    let recorded = transcript.clone();
    coordinator
        .engine()
        .record_secure_transcript(Arc::new(move |entry| recorded.lock().unwrap().push(entry)));
    let url = format!("https://{}", coordinator.local_addr());
    let sent: Arc<Mutex<BTreeMap<String, Vec<f32>>>> = Arc::default();
    let mut tasks = Vec::new();
    for (index, name) in names().into_iter().enumerate() {
        let mut participant_config = ParticipantConfig::for_test(
            url.clone(),
            ParticipantId::new(name.clone()).unwrap(),
            dir.path().join(&name),
        );
        participant_config.tls = Some(participant_tls(&authority, &name));
        let data = synthetic_dataset(OrgProfile::for_org(index % 4), 600, 70 + index as u64);
        // Records the update the participant encodes and masks: what plain
        // FedAvg would have averaged.
        let record = sent.clone();
        let recorder_name = name.clone();
        let participant = Participant::new(participant_config, data)
            .unwrap()
            .with_update_tamper(Arc::new(move |delta: &mut [f32]| {
                record
                    .lock()
                    .unwrap()
                    .insert(recorder_name.clone(), delta.to_vec());
            }));
        tasks.push(tokio::spawn(participant.run(shutdown.clone())));
    }
    Setup {
        dir,
        shutdown,
        coordinator,
        authority,
        transcript,
        sent,
        tasks,
    }
}

async fn wait_for_version(engine: &fedshield_coordinator::Engine, version: u64) {
    wait_until(
        "the secure round to publish",
        Duration::from_secs(120),
        || {
            let engine = engine.clone();
            async move { engine.current_model().version.0 >= version }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_participants_over_mutual_tls_publish_fedavg_of_their_updates_within_the_quantization_bound()
 {
    let setup = start_secure_federation(|_| {}).await;
    let engine = setup.coordinator.engine().clone();
    let base = engine.current_model();
    wait_for_version(&engine, 1).await;
    let published = engine.current_model();
    let card = &published.card;
    let secure_plan = card
        .plan
        .secure_aggregation
        .clone()
        .expect("the card's plan records secure aggregation");
    let summary = card
        .aggregation
        .as_ref()
        .and_then(|aggregation| aggregation.secure_aggregation.clone())
        .expect("the card states secure aggregation");
    assert_eq!(summary.secure_aggregation, "yes");
    assert_eq!(summary.num_survivors, NUM_PARTICIPANTS);
    assert_eq!(summary.num_dropped, 0);
    let sent = setup.sent.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        NUM_PARTICIPANTS,
        "every participant sent an update"
    );
    let num_params = base.weights.params.len();
    let mut fedavg = vec![0.0f64; num_params];
    for delta in sent.values() {
        assert_eq!(delta.len(), num_params);
        for (sum, value) in fedavg.iter_mut().zip(delta) {
            *sum += f64::from(*value) / NUM_PARTICIPANTS as f64;
        }
    }
    let published_delta: Vec<f64> = published
        .weights
        .params
        .iter()
        .zip(&base.weights.params)
        .map(|(new, old)| f64::from(*new) - f64::from(*old))
        .collect();
    let error_norm = published_delta
        .iter()
        .zip(&fedavg)
        .map(|(secure, plain)| (secure - plain).powi(2))
        .sum::<f64>()
        .sqrt();
    let fedavg_norm = fedavg.iter().map(|value| value * value).sum::<f64>().sqrt();
    // Stochastic rounding moves each rotated coordinate of each update by
    // less than one integer unit: at most √d/γ in L2 per update, and so
    // for their average; float32 storage adds a relative 1e-6.
    let padded_dim = fedshield_core::privacy::distributed::padded_dim(num_params) as f64;
    let bound = padded_dim.sqrt() / secure_plan.scale + 1e-6 * fedavg_norm;
    assert!(
        error_norm <= bound,
        "secure aggregate differs from FedAvg by {error_norm:e} in L2, more than the bound {bound:e}"
    );
    assert!(
        fedavg_norm > 1000.0 * bound,
        "the updates (norm {fedavg_norm:e}) are large against the bound, so the check means something"
    );

    // The instrumented coordinator's transcript.
    let transcript = setup.transcript.lock().unwrap().clone();
    let masked: BTreeMap<ParticipantId, Vec<u32>> = transcript
        .iter()
        .filter_map(|entry| match entry {
            TranscriptEntry::MaskedUpdate {
                participant,
                values,
                ..
            } => Some((participant.clone(), values.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(masked.len(), NUM_PARTICIPANTS);
    for (participant, values) in &masked {
        assert_uniform(values, &format!("masked update of {participant}"));
    }
    // Shares the coordinator holds, by owner and kind.
    let mut held: BTreeMap<(ParticipantId, ShareKind), Vec<shamir::Share>> = BTreeMap::new();
    for entry in &transcript {
        if let TranscriptEntry::Revealed { shares, .. } = entry {
            for share in shares {
                held.entry((share.owner.clone(), share.kind))
                    .or_default()
                    .push(share.share.clone());
            }
        }
    }
    let threshold = summary.threshold;
    for (participant, values) in &masked {
        // Never a share of a survivor's mask key: its pairwise masks stay on.
        let mask_key_shares = held
            .get(&(participant.clone(), ShareKind::MaskKey))
            .map_or(0, Vec::len);
        assert_eq!(
            mask_key_shares, 0,
            "the coordinator holds {mask_key_shares} shares of survivor {participant}'s mask key (threshold {threshold})"
        );
        // Its self-mask can be rebuilt (that is how the sum is unmasked),
        // and taking it off leaves a vector that is still uniform: the
        // pairwise masks hide the update.
        let self_mask_shares = held
            .get(&(participant.clone(), ShareKind::SelfMask))
            .expect("the survivors' self-mask shares were revealed");
        assert!(self_mask_shares.len() >= threshold);
        let self_mask_seed = shamir::combine(self_mask_shares, threshold).unwrap();
        let mut without_self_mask = values.clone();
        apply_mask(&mut without_self_mask, &self_mask_seed, MaskSign::Subtract);
        assert_uniform(
            &without_self_mask,
            &format!("{participant}'s masked update without its self-mask"),
        );
    }
    setup.shutdown.cancel();
    for task in setup.tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), setup.coordinator.wait()).await;
    drop(setup.dir);
    drop(setup.authority);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_update_in_a_secure_round_is_refused() {
    use fedshield_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), test_spec());
    config.round.min_participants = 2;
    config.round.participants_per_round = ParticipantsPerRound::Count(2);
    config.round.quorum = 2;
    config.round.secure_aggregation = Some(SecureAggregationConfig { clip_norm: 10.0 });
    let shutdown = CancellationToken::new();
    let coordinator = common::start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let mut clients = Vec::new();
    // Both join before either waits: the round opens once two are connected.
    for name in ["acme-soc", "globex-sec"] {
        let mut client = pb::federation_client::FederationClient::connect(url.clone())
            .await
            .unwrap();
        let stream = client
            .join(pb::JoinRequest {
                participant_id: name.to_string(),
                client_version: "test".to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        clients.push((name, client, stream));
    }
    let mut announcements = Vec::new();
    for (name, _, stream) in &mut clients {
        let mut token = String::new();
        let announcement = loop {
            let event = stream.message().await.unwrap().unwrap();
            match event.event {
                Some(pb::coordinator_event::Event::Welcome(welcome)) => {
                    token = welcome.session_token;
                }
                Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) => {
                    break announcement;
                }
                _ => {}
            }
        };
        assert!(
            announcement.secure_aggregation.is_some(),
            "the announcement of a secure round carries its parameters"
        );
        announcements.push((*name, token, announcement));
    }
    let (name, token, announcement) = &announcements[0];
    let num_params = coordinator.engine().current_model().weights.params.len();
    let header = pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Header(pb::UpdateHeader {
            round_id: announcement.round_id,
            base_model_version: announcement.base_model_version,
            participant_id: name.to_string(),
            session_token: token.clone(),
            num_samples: 1,
            encoding: pb::UpdateEncoding::F32Le as i32,
            num_params: num_params as u64,
            privacy: None,
            upload_slot: String::new(),
        })),
    };
    let data = pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Data(
            vec![0u8; num_params * 4].into(),
        )),
    };
    let refused = clients[0]
        .1
        .submit_update(futures::stream::iter(vec![header, data]))
        .await
        .expect_err("a plain update in a secure round is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("secure aggregation"),
        "{}",
        refused.message()
    );
    // A key of the wrong length is refused before the engine sees it.
    let bad_key = clients[0]
        .1
        .advertise_keys(pb::AdvertiseKeysRequest {
            round_id: announcement.round_id,
            participant_id: name.to_string(),
            session_token: token.clone(),
            cipher_public_key: vec![7; 31],
            mask_public_key: vec![7; 32],
        })
        .await
        .expect_err("a 31-byte key is refused");
    assert_eq!(bad_key.code(), tonic::Code::InvalidArgument);
    assert!(bad_key.message().contains("32"), "{}", bad_key.message());
    assert_eq!(
        coordinator.engine().current_model().version,
        ModelVersion(0)
    );
    shutdown.cancel();
    drop(clients);
    let _ = tokio::time::timeout(Duration::from_secs(30), coordinator.wait()).await;
}

#[test]
fn robust_rules_are_refused_with_secure_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    for rule in ["median", "trimmed-mean:0.2", "multi-krum:1", "norm-bound:5"] {
        let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), test_spec());
        config.round.quorum = 5;
        config.round.min_participants = 5;
        config.round.aggregation = rule.parse::<AggregationRule>().unwrap();
        config.round.secure_aggregation = Some(SecureAggregationConfig { clip_norm: 10.0 });
        let problems = config.validate().expect_err("refused");
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("round.aggregation")
                    && problem.contains("secure_aggregation")
                    && problem.contains("fedavg")),
            "{rule}: {problems:?}"
        );
    }
    let _unused: BTreeSet<u8> = BTreeSet::new();
}
