//! Under differential privacy an update must not reveal how many records
//! its organization holds (finding 5): the plan fixes the expected batch
//! size B, the steps per round T and a public minimum data size N_min; each
//! participant samples with its own q = B/N and divides the noised sum of
//! clipped gradients by B, so the noise spread of its update and its work
//! per round are the same whatever N is. Real coordinators and participants
//! over gRPC on 127.0.0.1.

mod common;

use std::path::Path;
use std::time::Duration;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_core::privacy::PrivacyTarget;
use fedshield_core::telemetry::{OrgProfile, num_flow_features, synthetic_dataset};
use fedshield_core::{ModelSpec, ModelVersion, ParticipantId, TrainingPlan};
use fedshield_participant::ledger::inspect;
use fedshield_participant::{Participant, ParticipantConfig, ParticipantEvent};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::{start_coordinator, wait_until};

const DELTA: f64 = 1e-5;

/// How long any one step of these tests may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// The public minimum data size of every federation here.
const MIN_RECORDS: u64 = 1000;

/// A coordinator configuration with DP for `max_rounds` rounds, one
/// participant per round, and `plan` (whose batch size is B).
fn dp_config(
    data_dir: &Path,
    spec: ModelSpec,
    plan: TrainingPlan,
    epsilon: f64,
    max_rounds: u64,
) -> CoordinatorConfig {
    let mut config = CoordinatorConfig::for_test(data_dir.to_path_buf(), spec);
    config.round.min_participants = 1;
    config.round.quorum = 1;
    config.round.max_rounds = Some(max_rounds);
    config.plan = plan;
    config.privacy = Some(PrivacyTarget {
        epsilon,
        delta: DELTA,
        clip_norm: 1.0,
        min_records: MIN_RECORDS,
        org_level: None,
    });
    config
}

/// Starts an in-process participant named `name` holding `num_records`
/// synthetic flow records.
fn start_participant_with_records(
    url: &str,
    name: &str,
    num_records: usize,
    work: &Path,
    shutdown: CancellationToken,
) -> (
    tokio::task::JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>>,
    mpsc::UnboundedReceiver<ParticipantEvent>,
) {
    let config = ParticipantConfig::for_test(
        url.to_string(),
        ParticipantId::new(name).unwrap(),
        work.join(name),
    );
    let data = synthetic_dataset(
        OrgProfile::for_org(0),
        num_records,
        500 + num_records as u64,
    );
    let (sender, events) = mpsc::unbounded_channel();
    let participant = Participant::new(config, data).unwrap().with_events(sender);
    (tokio::spawn(participant.run(shutdown)), events)
}

/// Returns the next event of `events` that is not `Joined`.
async fn next_round_event(
    events: &mut mpsc::UnboundedReceiver<ParticipantEvent>,
) -> ParticipantEvent {
    loop {
        let event = tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("a participant event in time")
            .expect("the participant is running");
        if event != ParticipantEvent::Joined {
            return event;
        }
    }
}

fn mean_and_std(values: &[f32]) -> (f64, f64) {
    let count = values.len() as f64;
    let mean = values.iter().map(|&value| f64::from(value)).sum::<f64>() / count;
    let variance = values
        .iter()
        .map(|&value| (f64::from(value) - mean).powi(2))
        .sum::<f64>()
        / (count - 1.0);
    (mean, variance.sqrt())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_announced_dp_plan_carries_the_expected_batch_size_the_steps_and_the_minimum_data_size()
{
    let work = tempfile::tempdir().unwrap();
    let plan = TrainingPlan::new().with_batch_size(32).with_local_epochs(1);
    let config = dp_config(
        &work.path().join("coordinator"),
        common::test_spec(),
        plan,
        2.0,
        3,
    );
    let calibrated = config.training_plan().unwrap().dp_sgd.unwrap();
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());

    let mut client = FederationClient::connect(url).await.unwrap();
    let mut events = client
        .join(pb::JoinRequest {
            participant_id: "observer".to_string(),
            client_version: "dp-datasize-test".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let announcement = loop {
        let event = tokio::time::timeout(PATIENCE, events.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the join stream is open")
            .event;
        if let Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) = event {
            break announcement;
        }
    };
    let dp = announcement
        .plan
        .expect("the announcement has a plan")
        .dp_sgd
        .expect("the plan has DP-SGD");
    assert_eq!(dp.expected_batch_size, 32);
    assert_eq!(dp.min_records, MIN_RECORDS);
    // One pass over the minimum data size: ⌈1000 / 32⌉ steps.
    assert_eq!(dp.steps_per_round, 32);
    assert_eq!(dp.noise_multiplier, calibrated.noise_multiplier);
    assert_eq!(dp.clip_norm, 1.0);
    assert!(dp.noise_multiplier > 0.0);
    drop(events);
    shutdown.cancel();
    coordinator.wait().await.unwrap();
}

/// What one participant's single-round federation showed.
struct SoloRound {
    /// The published model minus the initial one: the participant's update
    /// (FedAvg of one update, server learning rate 1, no momentum).
    update: Vec<f32>,
    /// Steps the participant trained for.
    num_steps: u64,
    /// Record-level ε its ledger recorded (at its own q = B/N).
    ledger_epsilon: f64,
    /// Record-level ε its update reported to the coordinator.
    reported_epsilon: f64,
    /// The examples the model card counts for the round.
    num_examples: u64,
}

/// Runs one DP round with a single participant holding `num_records`
/// records and returns what the coordinator received.
async fn solo_round(num_records: usize, spec: &ModelSpec, plan: &TrainingPlan) -> SoloRound {
    let work = tempfile::tempdir().unwrap();
    let config = dp_config(
        &work.path().join("coordinator"),
        spec.clone(),
        plan.clone(),
        0.5,
        1,
    );
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let initial = coordinator.engine().current_model();
    assert_eq!(initial.version, ModelVersion(0));
    let url = format!("http://{}", coordinator.local_addr());
    let name = format!("org-with-{num_records}");
    let (task, mut events) =
        start_participant_with_records(&url, &name, num_records, work.path(), shutdown.clone());
    let num_steps = match next_round_event(&mut events).await {
        ParticipantEvent::Contributed { num_steps, .. } => num_steps,
        other => panic!("N = {num_records}: the participant did not contribute: {other:?}"),
    };
    let engine = coordinator.engine().clone();
    wait_until("model version 1", PATIENCE, || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let published = coordinator.engine().current_model();
    let update: Vec<f32> = published
        .weights
        .params
        .iter()
        .zip(&initial.weights.params)
        .map(|(after, before)| after - before)
        .collect();
    let num_examples = published.card.num_examples;
    let reported_epsilon = published
        .card
        .privacy
        .as_ref()
        .expect("the card states the guarantee")
        .participants[&name]
        .reported
        .epsilon;
    shutdown.cancel();
    task.await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
    let ledger_epsilon = inspect(&work.path().join(&name), DELTA).unwrap().epsilon;
    SoloRound {
        update,
        num_steps,
        ledger_epsilon,
        reported_epsilon,
        num_examples,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_with_1000_and_8000_records_send_updates_with_the_same_noise_spread() {
    // num_flow_features·1024 + 1024 + 1024·2 + 2 parameters (over 20,000):
    // the sample std of an update is within about 0.5% of its true value.
    let spec = ModelSpec::mlp(num_flow_features() as u32, vec![1024], 2);
    // B = 8, two steps (capped): the noise (std lr·σ·C/B per step and
    // coordinate) dwarfs the clipped gradients (norm at most lr·C per
    // step, spread over all parameters), so an update's spread is its
    // noise's spread.
    let plan = TrainingPlan::new()
        .with_batch_size(8)
        .with_max_local_steps(2)
        .with_learning_rate(0.5);
    let small = solo_round(1000, &spec, &plan).await;
    let large = solo_round(8000, &spec, &plan).await;

    // The same work: the plan's T steps, whatever N is.
    assert_eq!(small.num_steps, 2);
    assert_eq!(large.num_steps, 2);
    // No sample count disclosed.
    assert_eq!(small.num_examples, 1);
    assert_eq!(large.num_examples, 1);

    let (small_mean, small_std) = mean_and_std(&small.update);
    let (large_mean, large_std) = mean_and_std(&large.update);
    println!("update std at N = 1000: {small_std:.6}, at N = 8000: {large_std:.6}");
    // Two independent estimates each within ~0.5%: 4% is a wide margin. The
    // old mechanism (plan-wide q, division by q·N) made them differ 8-fold.
    assert!(
        (small_std / large_std - 1.0).abs() < 0.04,
        "update std {small_std} at N = 1000 against {large_std} at N = 8000"
    );
    for mean in [small_mean, large_mean] {
        assert!(mean.abs() < 0.05 * small_std, "update mean {mean}");
    }
    // Larger organizations sample with a smaller q and spend less...
    assert!(
        large.ledger_epsilon < small.ledger_epsilon,
        "ε {} at N = 8000 against {} at N = 1000",
        large.ledger_epsilon,
        small.ledger_epsilon
    );
    // ...but both report the plan's worst case, which does not depend on N.
    assert_eq!(small.reported_epsilon, large.reported_epsilon);
    assert_eq!(small.reported_epsilon, small.ledger_epsilon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_below_the_public_minimum_declines_without_disclosing_its_size() {
    let work = tempfile::tempdir().unwrap();
    let config = dp_config(
        &work.path().join("coordinator"),
        common::test_spec(),
        TrainingPlan::new().with_batch_size(16),
        2.0,
        1,
    );
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let (task, mut events) =
        start_participant_with_records(&url, "tiny", 437, work.path(), shutdown.clone());
    let reason = match next_round_event(&mut events).await {
        ParticipantEvent::RoundFailed { reason, .. } => reason,
        other => panic!("the participant below the minimum did not decline: {other:?}"),
    };
    assert!(
        reason.contains("below the plan's public minimum of 1000 records"),
        "{reason}"
    );
    assert!(!reason.contains("437"), "the reason discloses N: {reason}");
    assert_eq!(
        coordinator.engine().current_model().version,
        ModelVersion(0),
        "no update was sent"
    );
    shutdown.cancel();
    task.await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
    let spend = inspect(&work.path().join("tiny"), DELTA).unwrap();
    assert_eq!(spend.num_rounds, 0, "nothing was spent");
}
