//! One extreme record must not decide whether a participant declines.
//!
//! A participant's telemetry file holds rows with `1e38` in numeric columns
//! (an attacker who can inject one record, or a broken exporter). Whether the
//! participant declines a round is visible to the coordinator and everyone
//! watching the rounds, so it must not be a function of one record: the
//! schema bounds every numeric feature, DP-SGD gives an example whose gradient
//! is non-finite a zero contribution instead of failing the round, and the
//! round publishes a finite model with the participant's update in it. Real
//! coordinator and participants over gRPC on 127.0.0.1, real files, real
//! DP-SGD.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::model::data::Dataset;
use fedshield_core::privacy::PrivacyTarget;
use fedshield_core::schema::Schema;
use fedshield_core::telemetry::{OrgProfile, num_flow_features, synthetic_dataset};
use fedshield_core::{ModelSpec, ModelVersion, ParticipantId, TrainingPlan};
use fedshield_participant::{Participant, ParticipantConfig, ParticipantEvent, PrivacyBudget};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::{start_coordinator, test_spec, wait_until};

const DELTA: f64 = 1e-5;

/// The name of the participant whose data holds the extreme records.
const POISONED_SITE: &str = "poisoned-site";

/// Rows of each participant's file besides the extreme ones.
const NUM_ROWS: usize = 200;

/// Extreme rows in the poisoned site's file. Under DP the plan's expected
/// batch size is B = 64 and its public minimum [`NUM_ROWS`], so a round
/// takes T = ⌈200 / 64⌉ = 4 steps, each sampling a row with q = 64 / 210:
/// some step samples an extreme row except with probability
/// (1 − q)^(10 · 4) ≈ 5e-7.
const NUM_EXTREME_ROWS: usize = 10;

fn nsl_kdd_schema_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/nsl-kdd.toml"))
}

/// Returns a record-level DP target that the coordinator calibrates σ for.
fn privacy_target() -> PrivacyTarget {
    PrivacyTarget {
        epsilon: 3.0,
        delta: DELTA,
        clip_norm: 1.0,
        min_records: NUM_ROWS as u64,
        org_level: None,
    }
}

/// Returns one NSL-KDD row (43 comma-separated fields, headerless): a normal
/// http connection or a neptune SYN flood, with random counts and bytes.
fn nsl_kdd_row(rng: &mut StdRng) -> String {
    if rng.random_bool(0.5) {
        format!(
            "0,tcp,http,SF,{},{},0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,{},{},0.00,0.00,0.00,0.00,1.00,0.00,0.00,{},255,1.00,0.00,0.03,0.04,0.00,0.00,0.00,0.00,normal,21",
            rng.random_range(150..400),
            rng.random_range(200..20_000),
            rng.random_range(1..20),
            rng.random_range(1..20),
            rng.random_range(1..255),
        )
    } else {
        format!(
            "0,tcp,private,S0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,{},{},1.00,1.00,0.00,0.00,0.05,0.07,0.00,255,{},0.10,0.05,0.00,0.00,1.00,1.00,0.00,0.00,neptune,19",
            rng.random_range(100..511),
            rng.random_range(1..30),
            rng.random_range(1..40),
        )
    }
}

/// Returns a normal http row with `1e38` in duration, src_bytes, land (a 0/1
/// flag), count and serror_rate (a rate).
fn extreme_nsl_kdd_row() -> String {
    "1e38,tcp,http,SF,1e38,8153,1e38,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,1e38,5,1e38,0.20,0.00,0.00,1.00,0.00,0.00,30,255,1.00,0.00,0.03,0.04,0.03,0.01,0.00,0.01,normal,21".to_string()
}

/// Writes a headerless NSL-KDD file of [`NUM_ROWS`] rows (plus
/// `num_extreme_rows` extreme ones spread through it) and loads it through
/// the shipped schema, as `fedshield participant --data` does.
fn write_and_load(path: &Path, schema: &Schema, seed: u64, num_extreme_rows: usize) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut text = String::new();
    for index in 0..NUM_ROWS {
        if num_extreme_rows > 0 && index % (NUM_ROWS / num_extreme_rows) == 0 {
            writeln!(text, "{}", extreme_nsl_kdd_row()).unwrap();
        }
        writeln!(text, "{}", nsl_kdd_row(&mut rng)).unwrap();
    }
    std::fs::write(path, text).unwrap();
    let (dataset, report) = load_dataset(path, schema, &IngestOptions::default()).unwrap();
    // The extreme rows are well-formed numbers: they are kept (and bounded),
    // not skipped.
    assert_eq!(report.skipped.total(), 0, "{report}");
    assert_eq!(dataset.len(), NUM_ROWS + num_extreme_rows);
    dataset
}

/// Starts an in-process participant named `name` on `data` with a record-level
/// budget when `dp` is set.
fn start_site(
    url: &str,
    name: &str,
    work: &Path,
    data: Dataset,
    dp: bool,
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
    if dp {
        config.privacy_budget = Some(PrivacyBudget {
            epsilon: privacy_target().epsilon,
            delta: DELTA,
            org_epsilon: None,
        });
    }
    let (sender, events) = mpsc::unbounded_channel();
    let participant = Participant::new(config, data).unwrap().with_events(sender);
    (tokio::spawn(participant.run(shutdown)), events)
}

/// Returns the first round outcome `events` reports (contributed or failed),
/// skipping joins.
async fn first_round_outcome(
    events: &mut mpsc::UnboundedReceiver<ParticipantEvent>,
) -> ParticipantEvent {
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match events.recv().await {
                Some(ParticipantEvent::Joined) => continue,
                Some(event) => return event,
                None => panic!("the participant stopped without a round outcome"),
            }
        }
    })
    .await;
    outcome.expect("a round outcome within 120 s")
}

/// Runs one round of a coordinator with `spec` (DP-SGD calibrated to
/// [`privacy_target`] when `dp`) and three sites on `datasets`, the first
/// being [`POISONED_SITE`]; asserts that the poisoned site contributed, that
/// its update is in the published version and that the version is finite.
async fn one_round_includes_the_poisoned_site(
    spec: ModelSpec,
    feature_schema_toml: Option<String>,
    datasets: Vec<Dataset>,
    dp: bool,
) {
    let work = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), spec);
    config.round.min_participants = datasets.len();
    config.round.quorum = datasets.len();
    config.round.max_rounds = Some(1);
    config.round.round_deadline = Duration::from_secs(120);
    config.plan = TrainingPlan::new().with_learning_rate(0.5);
    config.feature_schema_toml = feature_schema_toml;
    if dp {
        config.privacy = Some(privacy_target());
    }
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());

    let mut tasks = Vec::new();
    let mut poisoned_events = None;
    for (index, data) in datasets.into_iter().enumerate() {
        let name = if index == 0 {
            POISONED_SITE.to_string()
        } else {
            format!("honest-site-{index}")
        };
        let (task, events) = start_site(&url, &name, work.path(), data, dp, shutdown.clone());
        tasks.push(task);
        if index == 0 {
            poisoned_events = Some(events);
        }
    }
    let mut poisoned_events = poisoned_events.expect("the poisoned site was started");

    let outcome = first_round_outcome(&mut poisoned_events).await;
    assert!(
        matches!(outcome, ParticipantEvent::Contributed { .. }),
        "the site with extreme records did not contribute: {outcome:?}"
    );
    let engine = coordinator.engine().clone();
    wait_until("version 1", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let published = coordinator.engine().current_model();
    assert!(
        published
            .card
            .contributors
            .iter()
            .any(|contributor| contributor == POISONED_SITE),
        "contributors {:?}",
        published.card.contributors
    );
    assert_eq!(published.card.contributors.len(), 3);
    let num_non_finite = published
        .weights
        .params
        .iter()
        .filter(|value| !value.is_finite())
        .count();
    assert_eq!(num_non_finite, 0, "the published model is not finite");
    if dp {
        let privacy = published.card.privacy.clone().expect("a DP guarantee");
        assert_eq!(
            privacy.participants[POISONED_SITE].num_rounds_contributed,
            1
        );
    }

    shutdown.cancel();
    for task in tasks {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_file_row_with_1e38_does_not_make_its_participant_decline() {
    let work = tempfile::tempdir().unwrap();
    let schema = Schema::load(&nsl_kdd_schema_path()).unwrap();
    let poisoned = write_and_load(
        &work.path().join("poisoned.csv"),
        &schema,
        1,
        NUM_EXTREME_ROWS,
    );
    // Every feature of the extreme rows is bounded by the schema's clamps.
    let largest_feature = poisoned
        .features()
        .iter()
        .fold(0.0f32, |largest, feature| largest.max(feature.abs()));
    assert!(largest_feature <= 4.0, "largest feature {largest_feature}");
    let datasets = vec![
        poisoned,
        write_and_load(&work.path().join("honest-1.csv"), &schema, 2, 0),
        write_and_load(&work.path().join("honest-2.csv"), &schema, 3, 0),
    ];
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![16], 2);
    let schema_toml = std::fs::read_to_string(nsl_kdd_schema_path()).unwrap();
    one_round_includes_the_poisoned_site(spec, Some(schema_toml), datasets, true).await;
}

/// Returns synthetic flows with `NUM_EXTREME_ROWS` rows whose features
/// overflow float32 arithmetic, as a library caller that builds its dataset
/// in memory (not through a schema) could produce.
fn flows_with_overflowing_rows() -> Dataset {
    let mut data = synthetic_dataset(OrgProfile::for_org(0), NUM_ROWS, 11);
    for index in 0..NUM_EXTREME_ROWS {
        let extreme = if index % 2 == 0 { 1e38 } else { -1e38 };
        data.push(&vec![extreme; num_flow_features()], 0).unwrap();
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_gradient_under_dp_sgd_contributes_zero_instead_of_declining() {
    let datasets = vec![
        flows_with_overflowing_rows(),
        synthetic_dataset(OrgProfile::for_org(1), NUM_ROWS, 12),
        synthetic_dataset(OrgProfile::for_org(2), NUM_ROWS, 13),
    ];
    one_round_includes_the_poisoned_site(test_spec(), None, datasets, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_row_without_dp_is_left_out_instead_of_declining() {
    let datasets = vec![
        flows_with_overflowing_rows(),
        synthetic_dataset(OrgProfile::for_org(1), NUM_ROWS, 12),
        synthetic_dataset(OrgProfile::for_org(2), NUM_ROWS, 13),
    ];
    one_round_includes_the_poisoned_site(test_spec(), None, datasets, false).await;
}
