//! Abandoned rounds and privacy budgets, over real gRPC on 127.0.0.1: a
//! member that joins, waits until the honest updates are in and leaves makes
//! every round fail. The honest participants must not pay for each retry:
//! they re-send the privatized update they already computed for the same
//! base version and plan (post-processing, no new spend), so the
//! coordinator's promised ε bounds what their ledgers record, retries
//! included. The member that keeps leaving sits out rounds (1, 2, 4, …
//! openings) and is shown on the status and in the metrics.

mod common;

use std::path::Path;
use std::time::Duration;

use fedshield_coordinator::engine::RoundOutcome;
use fedshield_coordinator::{CoordinatorConfig, Engine, ParticipantsPerRound};
use fedshield_core::privacy::{PrivacyTarget, composed_epsilon, record_level_mechanism};
use fedshield_core::telemetry::{OrgProfile, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId, RoundId, TrainingPlan};
use fedshield_participant::ledger::inspect;
use fedshield_participant::pending::StoredUpdateFile;
use fedshield_participant::{
    Participant, ParticipantConfig, ParticipantEvent, ParticipantMetrics, PrivacyBudget,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::raw::RawParticipant;
use common::{
    parse_exposition, start_coordinator, start_participant, test_spec, value, wait_until,
};

/// δ of the federation's promise and of the participants' budgets.
const DELTA: f64 = 1e-5;

/// The ε the coordinator promises each participant over all its rounds.
const PROMISED_EPSILON: f64 = 3.0;

/// Rounds the promise is calibrated for.
const MAX_ROUNDS: u64 = 5;

/// How long any single wait of these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// An honest participant running the real participant code.
struct HonestMember {
    name: &'static str,
    task: JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>>,
    events: mpsc::UnboundedReceiver<ParticipantEvent>,
    metrics: ParticipantMetrics,
}

/// Starts an honest participant with a budget of ε = 4 (above the promise,
/// as in the reported attack) on synthetic organization `org`.
fn start_honest_member(
    url: &str,
    name: &'static str,
    org: usize,
    work: &Path,
    shutdown: CancellationToken,
) -> HonestMember {
    let mut config = ParticipantConfig::for_test(
        url.to_string(),
        ParticipantId::new(name).unwrap(),
        work.join(name),
    );
    config.privacy_budget = Some(PrivacyBudget {
        epsilon: 4.0,
        delta: DELTA,
        org_epsilon: None,
    });
    let data = synthetic_dataset(OrgProfile::for_org(org), 1500, 500 + org as u64);
    let (sender, events) = mpsc::unbounded_channel();
    let participant = Participant::new(config, data).unwrap().with_events(sender);
    let metrics = participant.metrics();
    HonestMember {
        name,
        task: tokio::spawn(participant.run(shutdown)),
        events,
        metrics,
    }
}

/// Waits until round `round_id` is open and has accepted exactly `expected`.
async fn wait_for_accepted(engine: &Engine, round_id: u64, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(ToString::to_string).collect();
    expected.sort();
    wait_until(
        &format!("updates of {expected:?} in round {round_id}"),
        PATIENCE,
        || {
            let engine = engine.clone();
            let expected = expected.clone();
            async move {
                engine.status().open_round.is_some_and(|round| {
                    let mut accepted: Vec<String> =
                        round.accepted.iter().map(ToString::to_string).collect();
                    accepted.sort();
                    round.round_id == RoundId(round_id) && accepted == expected
                })
            }
        },
    )
    .await;
}

/// Waits until round `round_id` is in the history, and returns how it ended.
async fn wait_for_closed(engine: &Engine, round_id: u64) -> RoundOutcome {
    wait_until(&format!("round {round_id} to close"), PATIENCE, || {
        let engine = engine.clone();
        async move {
            engine
                .status()
                .recent_rounds
                .iter()
                .any(|summary| summary.round_id == RoundId(round_id))
        }
    })
    .await;
    engine
        .status()
        .recent_rounds
        .iter()
        .find(|summary| summary.round_id == RoundId(round_id))
        .map(|summary| summary.outcome)
        .expect("the closed round is in the history")
}

/// Returns the contributions reported on `events` so far: (resent, update sha256).
fn contributions(events: &mut mpsc::UnboundedReceiver<ParticipantEvent>) -> Vec<(bool, String)> {
    let mut contributions = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let ParticipantEvent::Contributed {
            resent,
            update_sha256,
            ..
        } = event
        {
            contributions.push((
                resent,
                update_sha256.expect("a DP update is stored and has a sha256"),
            ));
        }
    }
    contributions
}

/// Returns the reported setting: ε = 3 over 5 rounds, quorum 3, everyone
/// sampled, rounds open once three members are connected.
fn reported_config(work: &Path) -> CoordinatorConfig {
    let mut config = CoordinatorConfig::for_test(work.join("coordinator"), test_spec());
    config.round.max_rounds = Some(MAX_ROUNDS);
    config.round.min_participants = 3;
    config.round.quorum = 3;
    config.round.participants_per_round = ParticipantsPerRound::Fraction(1.0);
    config.round.round_deadline = Duration::from_secs(60);
    config.plan = TrainingPlan::new().with_learning_rate(0.5);
    config.privacy = Some(PrivacyTarget {
        epsilon: PROMISED_EPSILON,
        delta: DELTA,
        clip_norm: 1.0,
        min_records: 1500,
        org_level: None,
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_after_the_honest_updates_makes_honest_members_resend_not_spend_again() {
    const NUM_ATTACKS: u64 = 6;
    let work = tempfile::tempdir().unwrap();
    let config = reported_config(work.path());
    let plan = config.training_plan().unwrap();
    let epsilon_per_round = composed_epsilon(
        &[record_level_mechanism(plan.dp_sgd.as_ref().unwrap(), 1)],
        DELTA,
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let engine = coordinator.engine().clone();
    let url = format!("http://{}", coordinator.local_addr());
    let mut honest: Vec<HonestMember> = ["acme-soc", "globex-sec"]
        .into_iter()
        .enumerate()
        .map(|(org, name)| start_honest_member(&url, name, org, work.path(), shutdown.clone()))
        .collect();
    let honest_names: Vec<&str> = honest.iter().map(|member| member.name).collect();

    // The attack: join, get selected, wait for the honest updates, leave.
    let mut announced_plans = Vec::new();
    for attack in 1..=NUM_ATTACKS {
        let mut mallory = RawParticipant::join_as(&url, "mallory", "budget-retry-test").await;
        let announcement = mallory.next_announcement().await;
        assert_eq!(
            announcement.base_model_version, 0,
            "attack {attack}: every retry is on version 0"
        );
        announced_plans.push(announcement.plan.expect("the plan is announced"));
        wait_for_accepted(&engine, announcement.round_id, &honest_names).await;
        drop(mallory);
        assert_eq!(
            wait_for_closed(&engine, announcement.round_id).await,
            RoundOutcome::Abandoned,
            "attack {attack}: the quorum of three is out of reach without mallory"
        );
    }
    let status = engine.status();
    assert_eq!(status.num_rounds_abandoned, NUM_ATTACKS);
    assert_eq!(status.num_rounds_completed, 0);
    // Every retry on the same base version offers the same plan.
    assert!(
        announced_plans
            .iter()
            .all(|plan| *plan == announced_plans[0]),
        "retries announced different plans: {announced_plans:?}"
    );

    // The honest members spent once for version 0, not once per attempt...
    for member in &mut honest {
        let dir = work.path().join(member.name);
        let spend = inspect(&dir, DELTA).unwrap();
        assert_eq!(
            spend.num_rounds, 1,
            "{}: {NUM_ATTACKS} attempts on version 0 were recorded as {} spends (ε = {:.3})",
            member.name, spend.num_rounds, spend.epsilon
        );
        assert!(
            (spend.epsilon - epsilon_per_round).abs() < 1e-9,
            "{}: ε {} after the attack, one round is ε {epsilon_per_round}",
            member.name,
            spend.epsilon
        );
        // ...and sent the same privatized update every time: computed once,
        // re-sent for each retry.
        let contributions = contributions(&mut member.events);
        assert_eq!(
            contributions.len() as u64,
            NUM_ATTACKS,
            "{}: {contributions:?}",
            member.name
        );
        assert!(
            !contributions[0].0,
            "{}: the first update is trained",
            member.name
        );
        assert!(
            contributions[1..].iter().all(|(resent, _)| *resent),
            "{}: every retry re-sends: {contributions:?}",
            member.name
        );
        let first_sha256 = &contributions[0].1;
        assert!(
            contributions
                .iter()
                .all(|(_, sha256)| sha256 == first_sha256),
            "{}: the re-sent updates differ: {contributions:?}",
            member.name
        );
        let stored = StoredUpdateFile::new(&dir).header().unwrap().unwrap();
        assert_eq!(stored.update_sha256, *first_sha256);
        assert_eq!(stored.base_model_version, 0);
        let metrics = parse_exposition(&member.metrics.render());
        assert_eq!(
            value(&metrics, "fedshield_participant_updates_resent_total"),
            (NUM_ATTACKS - 1) as f64
        );
    }
    // The member that kept leaving is on the record.
    let mallory = ParticipantId::new("mallory").unwrap();
    let (_, record) = status
        .dropouts
        .iter()
        .find(|(participant, _)| *participant == mallory)
        .expect("mallory's dropouts are on the status");
    assert_eq!(record.num_dropouts, NUM_ATTACKS);
    let coordinator_metrics = parse_exposition(&engine.metrics().render());
    assert_eq!(
        value(
            &coordinator_metrics,
            "fedshield_coordinator_round_dropouts_total"
        ),
        NUM_ATTACKS as f64
    );

    // A third honest member takes mallory's place: all five rounds complete,
    // and no ledger goes beyond the promise, the retries included.
    honest.push(start_honest_member(
        &url,
        "initech-ir",
        2,
        work.path(),
        shutdown.clone(),
    ));
    wait_until("all five rounds", PATIENCE * 2, || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(MAX_ROUNDS) }
    })
    .await;
    shutdown.cancel();
    for member in honest {
        member
            .task
            .await
            .unwrap()
            .expect("the participant meets no permanent refusal");
        let spend = inspect(&work.path().join(member.name), DELTA).unwrap();
        assert_eq!(spend.num_rounds, MAX_ROUNDS, "{}", member.name);
        assert!(
            spend.epsilon <= PROMISED_EPSILON,
            "{}: spent ε {} of the promised {PROMISED_EPSILON}",
            member.name,
            spend.epsilon
        );
        // The version moved on: the stored update of the last round is for
        // the last base version, not version 0.
        let stored = StoredUpdateFile::new(&work.path().join(member.name))
            .header()
            .unwrap()
            .expect("the last round's update is stored");
        assert_eq!(stored.base_model_version, MAX_ROUNDS - 1);
    }
    coordinator.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_keeps_leaving_sits_out_one_two_then_four_rounds_and_is_on_the_status() {
    let work = tempfile::tempdir().unwrap();
    // Rounds open once all four members are connected, sample everyone who
    // is not sitting out, and publish with three updates.
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.round.min_participants = 4;
    config.round.quorum = 3;
    config.round.participants_per_round = ParticipantsPerRound::Fraction(1.0);
    config.round.round_deadline = Duration::from_secs(60);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let engine = coordinator.engine().clone();
    let url = format!("http://{}", coordinator.local_addr());
    let honest_names = ["acme-soc", "globex-sec", "initech-ir"];
    let honest: Vec<_> = honest_names
        .iter()
        .enumerate()
        .map(|(org, name)| start_participant(&url, name, org, work.path(), shutdown.clone()))
        .collect();

    // Mallory leaves every round it is selected for, once the honest
    // updates are in, and rejoins once that round has closed.
    let mut mallory = RawParticipant::join_as(&url, "mallory", "budget-retry-test").await;
    let mut rounds_with_mallory = Vec::new();
    loop {
        let announcement = mallory.next_announcement().await;
        rounds_with_mallory.push(announcement.round_id);
        if announcement.round_id > 10 {
            break;
        }
        wait_for_accepted(&engine, announcement.round_id, &honest_names).await;
        drop(mallory);
        assert!(
            matches!(
                wait_for_closed(&engine, announcement.round_id).await,
                RoundOutcome::Completed { .. }
            ),
            "round {}: three updates make the quorum",
            announcement.round_id
        );
        mallory = RawParticipant::join_as(&url, "mallory", "budget-retry-test").await;
    }
    // One dropout: one round sat out; two: two rounds; three: four rounds.
    assert_eq!(rounds_with_mallory, vec![1, 3, 6, 11]);
    let status = engine.status();
    // Rounds 1 to 10 all published, with or without mallory.
    assert_eq!(status.num_rounds_completed, 10);
    assert_eq!(status.num_rounds_abandoned, 0);
    let mallory_id = ParticipantId::new("mallory").unwrap();
    let (_, record) = status
        .dropouts
        .iter()
        .find(|(participant, _)| *participant == mallory_id)
        .expect("mallory's dropouts are on the status");
    assert_eq!(record.num_dropouts, 3);
    assert_eq!(record.strikes, 3);
    assert_eq!(
        status.dropouts.len(),
        1,
        "only mallory dropped out: {:?}",
        status.dropouts
    );
    let metrics = parse_exposition(&engine.metrics().render());
    assert_eq!(
        value(&metrics, "fedshield_coordinator_round_dropouts_total"),
        3.0
    );
    drop(mallory);
    shutdown.cancel();
    for (task, _) in honest {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_participant_re_sends_the_update_its_ledger_already_paid_for() {
    let work = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(reported_config(work.path()), shutdown.clone()).await;
    let engine = coordinator.engine().clone();
    let url = format!("http://{}", coordinator.local_addr());
    let acme_shutdown = shutdown.child_token();
    let mut acme = start_honest_member(&url, "acme-soc", 0, work.path(), acme_shutdown.clone());
    let globex = start_honest_member(&url, "globex-sec", 1, work.path(), shutdown.clone());

    // Attempt 1: both honest updates are in, acme stops, mallory leaves.
    let mallory = {
        let mut mallory = RawParticipant::join_as(&url, "mallory", "budget-retry-test").await;
        let announcement = mallory.next_announcement().await;
        wait_for_accepted(&engine, announcement.round_id, &["acme-soc", "globex-sec"]).await;
        acme_shutdown.cancel();
        acme.task
            .await
            .unwrap()
            .expect("the participant meets no permanent refusal");
        drop(mallory);
        assert_eq!(
            wait_for_closed(&engine, announcement.round_id).await,
            RoundOutcome::Abandoned
        );
        announcement.round_id
    };
    let first = contributions(&mut acme.events);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(!first[0].0, "the first update is trained");

    // Attempt 2: acme restarts on the same data directory and re-sends the
    // update its ledger paid for, without a second entry.
    let mut restarted = start_honest_member(&url, "acme-soc", 0, work.path(), shutdown.clone());
    let mut mallory_again = RawParticipant::join_as(&url, "mallory", "budget-retry-test").await;
    let retry = mallory_again.next_announcement().await;
    assert!(retry.round_id > mallory, "a new attempt on version 0");
    assert_eq!(retry.base_model_version, 0);
    wait_for_accepted(&engine, retry.round_id, &["acme-soc", "globex-sec"]).await;
    let after_restart = contributions(&mut restarted.events);
    assert_eq!(
        after_restart,
        vec![(true, first[0].1.clone())],
        "the restarted participant re-sends the same update"
    );
    let spend = inspect(&work.path().join("acme-soc"), DELTA).unwrap();
    assert_eq!(spend.num_rounds, 1, "no second spend after the restart");
    drop(mallory_again);
    shutdown.cancel();
    restarted
        .task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    globex
        .task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
}
