//! Differential privacy end to end: DP-SGD rounds over real gRPC, the
//! privacy ledger and budget of each participant, the guarantee on model
//! cards, a participant process killed between its ledger write and its
//! send, and the `fedshield privacy` planning commands.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_core::privacy::{PrivacyTarget, composed_epsilon, record_level_mechanism};
use fedshield_core::telemetry::{OrgProfile, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId, TrainingPlan};
use fedshield_participant::ledger::inspect;
use fedshield_participant::node::CRASH_AFTER_LEDGER_WRITE_ENV;
use fedshield_participant::{Participant, ParticipantConfig, ParticipantEvent, PrivacyBudget};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::{start_coordinator, test_spec, wait_until};

const DELTA: f64 = 1e-5;

fn target(epsilon: f64) -> PrivacyTarget {
    PrivacyTarget {
        epsilon,
        delta: DELTA,
        clip_norm: 1.0,
        // Every participant here holds exactly the minimum (1,500 records),
        // so its ledger spends exactly what the plan promises.
        min_records: 1500,
        org_level: None,
    }
}

fn dp_config(work: &std::path::Path, epsilon: f64, max_rounds: u64) -> CoordinatorConfig {
    let mut config = CoordinatorConfig::for_test(work.join("coordinator"), test_spec());
    config.round.max_rounds = Some(max_rounds);
    config.plan = TrainingPlan::new().with_learning_rate(0.5);
    config.privacy = Some(target(epsilon));
    config
}

/// Starts an in-process participant with `budget` on synthetic organization `org`.
fn start_dp_participant(
    url: &str,
    name: &str,
    org: usize,
    work: &std::path::Path,
    budget: Option<PrivacyBudget>,
    shutdown: CancellationToken,
) -> (
    tokio::task::JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>>,
    mpsc::UnboundedReceiver<ParticipantEvent>,
) {
    let mut config = ParticipantConfig::for_test(
        url.to_string(),
        ParticipantId::new(name).unwrap(),
        work.join(name),
    );
    config.privacy_budget = budget;
    let data = synthetic_dataset(OrgProfile::for_org(org), 1500, 300 + org as u64);
    let (sender, events) = mpsc::unbounded_channel();
    let participant = Participant::new(config, data).unwrap().with_events(sender);
    (tokio::spawn(participant.run(shutdown)), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_rounds_publish_the_guarantee_that_each_ledger_records() {
    let work = tempfile::tempdir().unwrap();
    let rounds = 3;
    let config = dp_config(work.path(), 2.0, rounds);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let budget = PrivacyBudget {
        epsilon: 2.0,
        delta: DELTA,
        org_epsilon: None,
    };
    let mut tasks = Vec::new();
    for (index, name) in ["alpha", "beta"].iter().enumerate() {
        let (task, _events) = start_dp_participant(
            &url,
            name,
            index,
            work.path(),
            Some(budget),
            shutdown.clone(),
        );
        tasks.push(task);
    }
    let engine = coordinator.engine().clone();
    wait_until("three DP rounds", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(rounds) }
    })
    .await;
    let card = coordinator.engine().current_model().card.clone();
    let plan_dp = card.plan.dp_sgd.clone().expect("the plan has DP-SGD");
    // The plan spends exactly the target over all rounds, not more.
    let planned = composed_epsilon(&[record_level_mechanism(&plan_dp, rounds)], DELTA).unwrap();
    assert!(
        planned <= 2.0 && planned > 1.95,
        "planned epsilon {planned}"
    );
    let privacy = card.privacy.expect("the card states the guarantee");
    assert!(
        (privacy.epsilon - planned).abs() < 1e-9,
        "{}",
        privacy.epsilon
    );
    assert_eq!(privacy.delta, DELTA);
    assert!(privacy.mechanism.contains("dp-sgd"));
    shutdown.cancel();
    for task in tasks {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();
    for name in ["alpha", "beta"] {
        let spend = inspect(&work.path().join(name), DELTA).unwrap();
        assert_eq!(spend.num_rounds, rounds, "{name}");
        assert!(
            (spend.epsilon - planned).abs() < 1e-9,
            "{name}: {}",
            spend.epsilon
        );
        let line = &privacy.participants[name];
        assert_eq!(line.num_rounds_contributed, rounds);
        assert_eq!(line.reported, spend.report());
    }
    // Under DP no participant disclosed its data size: each update weighed 1.
    assert_eq!(card.num_examples, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_level_dp_is_accounted_on_its_own() {
    let work = tempfile::tempdir().unwrap();
    let rounds = 2;
    let mut config = dp_config(work.path(), 4.0, rounds);
    if let Some(target) = config.privacy.as_mut() {
        target.org_level = Some(fedshield_core::privacy::OrgPrivacyTarget {
            epsilon: 6.0,
            clip_norm: 0.5,
        });
    }
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let budget = PrivacyBudget {
        epsilon: 4.0,
        delta: DELTA,
        org_epsilon: Some(6.0),
    };
    let mut tasks = Vec::new();
    for (index, name) in ["north", "south"].iter().enumerate() {
        let (task, _) = start_dp_participant(
            &url,
            name,
            index,
            work.path(),
            Some(budget),
            shutdown.clone(),
        );
        tasks.push(task);
    }
    let engine = coordinator.engine().clone();
    wait_until("two rounds", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(rounds) }
    })
    .await;
    let card = coordinator.engine().current_model().card.clone();
    shutdown.cancel();
    for task in tasks {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();
    let org_plan = card
        .plan
        .org_dp
        .clone()
        .expect("the plan has organization-level DP");
    assert_eq!(org_plan.clip_norm, 0.5);
    let privacy = card.privacy.unwrap();
    let org_epsilon = privacy
        .org_epsilon
        .expect("the card states the organization-level guarantee");
    assert!(org_epsilon <= 6.0 && org_epsilon > 5.9, "{org_epsilon}");
    assert!(privacy.epsilon <= 4.0);
    for name in ["north", "south"] {
        let spend = inspect(&work.path().join(name), DELTA).unwrap();
        assert!((spend.org_epsilon.unwrap() - org_epsilon).abs() < 1e-9);
        assert_eq!(
            privacy.participants[name].reported.org_epsilon,
            spend.org_epsilon
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_at_its_budget_declines_and_the_round_goes_on_without_it() {
    let work = tempfile::tempdir().unwrap();
    let mut config = dp_config(work.path(), 3.0, 3);
    config.round.quorum = 1;
    let one_round = {
        let plan = config.training_plan().unwrap();
        composed_epsilon(&[record_level_mechanism(&plan.dp_sgd.unwrap(), 1)], DELTA).unwrap()
    };
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    // Enough for one round, not for two.
    let small = PrivacyBudget {
        epsilon: one_round * 1.05,
        delta: DELTA,
        org_epsilon: None,
    };
    let (frugal_task, mut frugal_events) = start_dp_participant(
        &url,
        "frugal",
        0,
        work.path(),
        Some(small),
        shutdown.clone(),
    );
    let (generous_task, _) =
        start_dp_participant(&url, "generous", 1, work.path(), None, shutdown.clone());
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(60), frugal_events.recv())
            .await
            .expect("an event within 60s")
            .expect("participant alive")
        {
            ParticipantEvent::BudgetExhausted { round_id, reason } => {
                assert_eq!(round_id.0, 2, "the second round is the one over budget");
                break reason;
            }
            ParticipantEvent::RoundFailed { reason, .. } => panic!("round failed: {reason}"),
            ParticipantEvent::Contributed { .. } | ParticipantEvent::Joined => {}
        }
    };
    assert!(reason.contains("privacy budget exhausted"), "{reason}");
    let engine = coordinator.engine().clone();
    wait_until("version 2", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(2) }
    })
    .await;
    // Round 2 was published with the generous participant alone; the
    // frugal one then left for good, so no third round opens without a
    // second member (`min_participants`).
    for version in [2] {
        let card = coordinator
            .engine()
            .model(ModelVersion(version))
            .await
            .unwrap()
            .card
            .clone();
        assert_eq!(card.contributors, vec!["generous".to_string()]);
        // The frugal participant's data is still in the model, through version 1.
        assert!(card.privacy.unwrap().participants.contains_key("frugal"));
    }
    // A budget no round fits ends the participant for good.
    let frugal_end = frugal_task.await.unwrap();
    assert!(
        matches!(
            frugal_end,
            Err(fedshield_participant::ParticipantError::BudgetExhausted { .. })
        ),
        "{frugal_end:?}"
    );
    shutdown.cancel();
    generous_task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
    let spend = inspect(&work.path().join("frugal"), DELTA).unwrap();
    assert_eq!(spend.num_rounds, 1);
    assert!(spend.epsilon <= small.epsilon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_with_a_budget_declines_rounds_without_dp() {
    let work = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.round.quorum = 1;
    config.round.max_rounds = Some(1);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let budget = PrivacyBudget {
        epsilon: 1.0,
        delta: DELTA,
        org_epsilon: None,
    };
    let (careful_task, mut careful_events) = start_dp_participant(
        &url,
        "careful",
        0,
        work.path(),
        Some(budget),
        shutdown.clone(),
    );
    let (other_task, _) =
        start_dp_participant(&url, "other", 1, work.path(), None, shutdown.clone());
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(60), careful_events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ParticipantEvent::RoundFailed { reason, .. } => break reason,
            ParticipantEvent::Contributed { .. } => panic!("trained without DP"),
            _ => {}
        }
    };
    assert!(reason.contains("no differential privacy"), "{reason}");
    let engine = coordinator.engine().clone();
    wait_until("version 1", Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    assert_eq!(
        coordinator.engine().current_model().card.contributors,
        vec!["other".to_string()]
    );
    shutdown.cancel();
    careful_task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    other_task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
    assert_eq!(
        inspect(&work.path().join("careful"), DELTA)
            .unwrap()
            .num_rounds,
        0
    );
}

/// Starts the real `fedshield participant` binary on synthetic data.
fn spawn_participant_process(
    url: &str,
    data_dir: &std::path::Path,
    crash_after_ledger_write: bool,
) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
    command
        .args([
            "participant",
            "--insecure",
            "--coordinator",
            url,
            "--id",
            "crashy",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--synthetic-records", "1500", "--privacy-epsilon", "50"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if crash_after_ledger_write {
        command.env(CRASH_AFTER_LEDGER_WRITE_ENV, "1");
    } else {
        command.env_remove(CRASH_AFTER_LEDGER_WRITE_ENV);
    }
    command.spawn().expect("start the fedshield binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_between_ledger_write_and_send_never_under_counts() {
    let work = tempfile::tempdir().unwrap();
    let mut config = dp_config(work.path(), 8.0, 3);
    config.round.min_participants = 1;
    config.round.quorum = 1;
    config.round.round_deadline = Duration::from_secs(60);
    config.heartbeat_interval = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let data_dir = work.path().join("crashy");

    // The process dies right after its spend is durable, before it sends.
    let mut crashing = spawn_participant_process(&url, &data_dir, true);
    let status = tokio::task::spawn_blocking(move || crashing.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the participant was meant to abort");
    let after_crash = inspect(&data_dir, DELTA).unwrap();
    assert_eq!(
        after_crash.num_rounds, 1,
        "the spend was recorded before the crash"
    );
    assert!(after_crash.epsilon > 0.0);
    assert_eq!(
        coordinator.engine().current_model().version,
        ModelVersion(0)
    );
    // Nothing was sent: no update in the open round (if it is still open:
    // with its only participant gone it may have been abandoned).
    if let Some(open) = coordinator.engine().status().open_round {
        assert!(open.accepted.is_empty(), "nothing was sent");
    }

    // Restarted (same data directory, no crash): it rejoins, the open round is
    // announced again, and it spends again for the new attempt.
    let mut restarted = spawn_participant_process(&url, &data_dir, false);
    let engine = coordinator.engine().clone();
    wait_until(
        "three rounds after the restart",
        Duration::from_secs(120),
        || {
            let engine = engine.clone();
            async move { engine.current_model().version == ModelVersion(3) }
        },
    )
    .await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    let card = coordinator.engine().current_model().card.clone();
    shutdown.cancel();
    coordinator.wait().await.unwrap();

    let ledger = inspect(&data_dir, DELTA).unwrap();
    let contributed = card.privacy.as_ref().unwrap().participants["crashy"].clone();
    assert_eq!(contributed.num_rounds_contributed, 3);
    // Every update that reached the coordinator has its entry, and the crash
    // left one more: the ledger over-counts, never under-counts.
    assert!(
        ledger.num_rounds > contributed.num_rounds_contributed,
        "ledger holds {} rounds, the coordinator accepted {}",
        ledger.num_rounds,
        contributed.num_rounds_contributed
    );
    assert!(ledger.epsilon > contributed.plan_epsilon);
    assert!(ledger.epsilon >= contributed.reported.epsilon);
}

fn fedshield(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedshield"))
        .args(args)
        .output()
        .expect("run the fedshield binary")
}

#[test]
fn privacy_commands_print_epsilon_and_sigma_that_round_trip() {
    // Abadi et al. 2016's MNIST example.
    let output = fedshield(&[
        "privacy",
        "epsilon",
        "--q",
        "0.0042667",
        "--sigma",
        "1.1",
        "--steps",
        "14063",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let epsilon = value["epsilon"].as_f64().unwrap();
    assert!((epsilon - 2.60).abs() < 0.03, "{value}");
    let classic = value["epsilon_classic_conversion"].as_f64().unwrap();
    assert!((classic - 3.01).abs() < 0.03, "{value}");

    let output = fedshield(&[
        "privacy",
        "sigma",
        "--q",
        "0.0042667",
        "--steps",
        "14063",
        "--epsilon",
        "2.6",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sigma = value["sigma"].as_f64().unwrap();
    assert!((sigma - 1.1).abs() < 0.02, "{value}");
    assert!(value["achieved_epsilon"].as_f64().unwrap() <= 2.6);

    let output = fedshield(&[
        "privacy", "epsilon", "--q", "1.5", "--sigma", "1", "--steps", "10",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sampling_rate is 1.5"), "{stderr}");
}

#[test]
fn participant_budget_reports_an_empty_ledger_and_bad_budgets() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().to_str().unwrap();
    let output = fedshield(&[
        "participant",
        "budget",
        "--data-dir",
        data_dir,
        "--privacy-epsilon",
        "3",
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["num_rounds"], 0);
    assert_eq!(value["spent_epsilon"], 0.0);
    assert_eq!(value["remaining_epsilon"], 3.0);
    let output = fedshield(&[
        "participant",
        "budget",
        "--data-dir",
        data_dir,
        "--privacy-epsilon=-3",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("epsilon is -3"), "{stderr}");
}
