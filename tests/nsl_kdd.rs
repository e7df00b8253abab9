//! Real data: NSL-KDD's KDDTrain+ split across five participants, non-IID by
//! attack family, trained federated over real gRPC for ten rounds (FedAvgM,
//! 3 local epochs, an MLP over the attack families) and evaluated on
//! KDDTest+, against the centralized baseline and each participant training
//! alone; and a federation of the binary model (2 local epochs) with and
//! without record-level differential privacy at ε = 1 and ε = 3 per
//! participant; and with secure aggregation, alone and with distributed DP
//! (ε = 8 per record and per organization). Skips when the dataset is
//! absent.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_coordinator::config::SecureAggregationConfig;
use fedshield_core::card::ModelCard;
use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::model::data::Dataset;
use fedshield_core::model::metrics::{BinaryMetrics, evaluate_model};
use fedshield_core::model::training::train_local;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::privacy::{OrgPrivacyTarget, PrivacyTarget};
use fedshield_core::schema::Schema;
use fedshield_core::{ModelSpec, ModelVersion, ParticipantId, TrainingPlan};
use fedshield_participant::{Participant, ParticipantConfig, PrivacyBudget};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use common::{start_coordinator, wait_until};

const NUM_PARTICIPANTS: usize = 5;
const NUM_ROUNDS: u64 = 10;

fn dataset_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/nsl-kdd"
    ))
}

/// Returns the NSL-KDD schema, KDDTrain+ and KDDTest+, or `None` (with a
/// printed reason) when the dataset is absent.
fn load_nsl_kdd() -> Option<(Schema, Dataset, Dataset)> {
    let dir = dataset_dir();
    if !dir.join("KDDTrain+.txt").exists() {
        println!("skipped: NSL-KDD not found at {}", dir.display());
        return None;
    }
    let schema = Schema::load(&PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/nsl-kdd.toml"
    )))
    .unwrap();
    let options = IngestOptions::default();
    let (train, _) = load_dataset(&dir.join("KDDTrain+.txt"), &schema, &options).unwrap();
    let (test, _) = load_dataset(&dir.join("KDDTest+.txt"), &schema, &options).unwrap();
    Some((schema, train, test))
}

/// Returns the model every configuration here trains: an MLP 125→64→32→6
/// over the schema's classes (benign, the four attack families of
/// schemas/nsl-kdd.toml and "other attack"), scored by its log-odds of
/// attack against benign. Learning the families rather than attack vs
/// benign generalizes better to KDDTest+'s unseen attack types (ROC-AUC
/// about 0.94 against 0.90–0.92, federated and centralized alike; see
/// docs/BENCHMARKS.md).
fn nsl_kdd_model(schema: &Schema) -> ModelSpec {
    ModelSpec::mlp(
        schema.num_features() as u32,
        vec![64, 32],
        schema.num_classes() as u32,
    )
}

/// Returns the local training plan of every federation here: 3 local epochs
/// of SGD per round, lr 0.1, batches of 64.
fn nsl_kdd_plan() -> TrainingPlan {
    TrainingPlan::new()
        .with_local_epochs(3)
        .with_batch_size(64)
        .with_learning_rate(0.1)
}

/// Splits the training rows across participants, non-IID by attack family:
/// each family lives mostly (80%) with one or two "home" participants, benign
/// traffic is spread evenly.
fn split_non_iid(train: &Dataset, seed: u64) -> Vec<Dataset> {
    // Classes of schemas/nsl-kdd.toml: 0 benign, 1 dos, 2 probe, 3 r2l, 4 u2r, 5 other.
    let homes: [&[usize]; 6] = [&[0, 1, 2, 3, 4], &[0, 1], &[1, 2], &[3], &[3, 4], &[4]];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut shards: Vec<Vec<usize>> = vec![Vec::new(); NUM_PARTICIPANTS];
    for (index, &class) in train.classes().iter().enumerate() {
        let home = homes[(class as usize).min(5)];
        let participant = if class == 0 || rng.random_bool(0.8) {
            home[rng.random_range(0..home.len())]
        } else {
            rng.random_range(0..NUM_PARTICIPANTS)
        };
        shards[participant].push(index);
    }
    shards.iter().map(|indices| train.select(indices)).collect()
}

fn line(name: &str, metrics: &BinaryMetrics) -> String {
    format!(
        "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
        metrics.accuracy,
        metrics.f1,
        metrics.roc_auc,
        metrics.pr_auc,
        metrics.detection_rate_at_1pct_fpr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_mlp_on_nsl_kdd_matches_the_centralized_baseline() {
    let Some((schema, train, test)) = load_nsl_kdd() else {
        return;
    };
    let test = Arc::new(test);
    let shards = split_non_iid(&train, 42);

    let spec = nsl_kdd_model(&schema);
    let plan = nsl_kdd_plan();

    let federated = run_federation(&spec, &plan, &shards, &test, None)
        .await
        .metrics
        .expect("the coordinator scored the version");

    // The same model and passes over the data, centrally and per participant.
    let initial = ModelWeights::init(spec.clone(), 1).unwrap();
    let centralized_plan = plan.clone().with_local_epochs(NUM_ROUNDS as u32);
    let (centralized, solo) = tokio::task::spawn_blocking(move || {
        let train_and_evaluate = |data: &Dataset| {
            let outcome = train_local(&initial, data, &centralized_plan, 7).unwrap();
            let weights = ModelWeights::new(initial.spec.clone(), outcome.params).unwrap();
            evaluate_model(&weights, &test, None).unwrap()
        };
        let centralized = train_and_evaluate(&train);
        let solo: Vec<BinaryMetrics> = shards.iter().map(train_and_evaluate).collect();
        (centralized, solo)
    })
    .await
    .unwrap();

    println!("| model | accuracy | F1 | ROC-AUC | PR-AUC | detection @1% FPR |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "{}",
        line(
            &format!("federated, {NUM_PARTICIPANTS} participants, {NUM_ROUNDS} rounds"),
            &federated
        )
    );
    println!("{}", line("centralized", &centralized));
    for (index, metrics) in solo.iter().enumerate() {
        println!("{}", line(&format!("site-{index} alone"), metrics));
    }
    // The sites' shuffling is seeded here; with OS-seeded shuffling, as in
    // production, runs differ, and the bounds leave room for that (measured
    // values are in docs/BENCHMARKS.md).
    let mean_solo_auc = solo.iter().map(|metrics| metrics.roc_auc).sum::<f64>() / solo.len() as f64;
    // Measured at round 10 over 31 runs: ROC-AUC 0.935–0.948, accuracy up
    // to 0.9 points below centralized; one run dipped in its last round, to
    // 0.9226 and 2.3 points below (docs/BENCHMARKS.md).
    assert!(
        federated.roc_auc >= 0.92,
        "federated ROC-AUC {:.4}",
        federated.roc_auc
    );
    assert!(
        federated.accuracy >= centralized.accuracy - 0.015,
        "federated accuracy {:.4} vs centralized {:.4}",
        federated.accuracy,
        centralized.accuracy
    );
    assert!(
        federated.roc_auc > mean_solo_auc + 0.03,
        "federated ROC-AUC {:.4} vs single sites' mean {mean_solo_auc:.4}",
        federated.roc_auc
    );
}

/// Runs a federation of one participant per shard over gRPC for
/// [`NUM_ROUNDS`] rounds (FedAvgM β = 0.5, the coordinator scoring each
/// version on `test`) and returns the last version's model card. Prints the
/// metrics of every version.
async fn run_federation(
    spec: &ModelSpec,
    plan: &TrainingPlan,
    shards: &[Dataset],
    test: &Arc<Dataset>,
    privacy: Option<PrivacyTarget>,
) -> ModelCard {
    run_federation_with(spec, plan, shards, test, privacy, false).await
}

/// [`run_federation`], with secure aggregation (`--secure-aggregation`)
/// when `secure` is set.
async fn run_federation_with(
    spec: &ModelSpec,
    plan: &TrainingPlan,
    shards: &[Dataset],
    test: &Arc<Dataset>,
    privacy: Option<PrivacyTarget>,
    secure: bool,
) -> ModelCard {
    let work = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), spec.clone());
    config.round.min_participants = shards.len();
    config.round.quorum = shards.len();
    config.round.max_rounds = Some(NUM_ROUNDS);
    config.round.round_deadline = Duration::from_secs(300);
    // FedAvgM: server momentum counters the drift of non-IID sites.
    config.round.server_momentum = 0.5;
    config.plan = plan.clone();
    config.evaluation = Some(test.clone());
    config.privacy = privacy.clone();
    if secure {
        config.round.secure_aggregation = Some(SecureAggregationConfig {
            clip_norm: fedshield_core::plan::DEFAULT_SECURE_AGGREGATION_CLIP_NORM,
        });
    }
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let mut tasks = Vec::new();
    for (index, shard) in shards.iter().enumerate() {
        let participant_id = ParticipantId::new(format!("site-{index}")).unwrap();
        let mut participant_config = ParticipantConfig::for_test(
            url.clone(),
            participant_id,
            work.path().join(format!("site-{index}")),
        );
        participant_config.privacy_budget = privacy.as_ref().map(|target| PrivacyBudget {
            epsilon: target.epsilon,
            delta: target.delta,
            org_epsilon: target.org_level.as_ref().map(|org| org.epsilon),
        });
        // A fixed shuffling seed per site makes the run reproducible (the
        // coordinator's folding order still varies with arrival order).
        participant_config.shuffle_seed = Some(index as u64);
        let participant = Participant::new(participant_config, shard.clone()).unwrap();
        tasks.push(tokio::spawn(participant.run(shutdown.clone())));
    }
    let engine = coordinator.engine().clone();
    wait_until("ten rounds", Duration::from_secs(900), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(NUM_ROUNDS) }
    })
    .await;
    let label = match &privacy {
        Some(target) => format!("epsilon {}", target.epsilon),
        None => "no DP".to_string(),
    };
    let label = if secure {
        format!("secure aggregation, {label}")
    } else {
        label
    };
    for version in 1..=NUM_ROUNDS {
        let card = coordinator
            .engine()
            .model(ModelVersion(version))
            .await
            .unwrap()
            .card
            .clone();
        let metrics = card.metrics.unwrap();
        println!(
            "{label}: version {version:>2}: accuracy {:.4} ROC-AUC {:.4}",
            metrics.accuracy, metrics.roc_auc
        );
    }
    let card = coordinator.engine().current_model().card.clone();
    shutdown.cancel();
    for task in tasks {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();
    card
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_mlp_with_differential_privacy_stays_close_to_the_non_private_model() {
    let Some((schema, train, test)) = load_nsl_kdd() else {
        return;
    };
    let test = Arc::new(test);
    let shards = split_non_iid(&train, 42);
    // The binary model and 2-epoch plan the DP numbers of docs/BENCHMARKS.md
    // are for. The multi-class model of the test above gains nothing under
    // DP-SGD (ROC-AUC 0.909 at ε = 3 against 0.942 without DP): whatever the
    // model, per-example clipping holds DP-SGD near 0.91, so this test
    // compares DP with the model and plan it stays close to.
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![64, 32], 2);
    let plan = nsl_kdd_plan().with_local_epochs(2);
    let non_private = run_federation(&spec, &plan, &shards, &test, None)
        .await
        .metrics
        .unwrap();
    // The public minimum data size is the smallest shard, and the expected
    // batch size B gives it the sampling rate 0.01 (every participant
    // samples with B/N, at most 0.01).
    let min_records = shards.iter().map(Dataset::len).min().unwrap() as u64;
    let dp_plan = plan.clone().with_batch_size((min_records / 100) as u32);
    let mut results = Vec::new();
    for epsilon in [1.0, 3.0] {
        let target = PrivacyTarget {
            epsilon,
            delta: 1e-5,
            clip_norm: 1.0,
            min_records,
            org_level: None,
        };
        // The same plan; only DP-SGD (calibrated by the coordinator) is added.
        let card = run_federation(&spec, &dp_plan, &shards, &test, Some(target)).await;
        let privacy = card.privacy.clone().expect("the card states the guarantee");
        assert_eq!(privacy.participants.len(), NUM_PARTICIPANTS);
        assert!(
            privacy.epsilon <= epsilon * 1.0001,
            "model epsilon {} above the target {epsilon}",
            privacy.epsilon
        );
        for line in privacy.participants.values() {
            assert_eq!(line.num_rounds_contributed, NUM_ROUNDS);
            assert_eq!(line.reported.num_rounds, NUM_ROUNDS);
            // The plan states the worst case (the smallest shard); larger
            // shards sample with a smaller q and spend less.
            assert!(line.reported.epsilon <= line.plan_epsilon + 1e-9);
        }
        println!(
            "epsilon {epsilon}: sigma {:.4}, {} steps per round",
            privacy.dp_sgd.noise_multiplier, privacy.dp_sgd.steps_per_round
        );
        results.push((epsilon, card.metrics.unwrap()));
    }
    println!("| federated model | accuracy | F1 | ROC-AUC | PR-AUC | detection @1% FPR |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("{}", line("no DP", &non_private));
    for (epsilon, metrics) in &results {
        println!(
            "{}",
            line(&format!("ε = {epsilon}, δ = 1e-5 per participant"), metrics)
        );
    }
    let (_, at_three) = &results[1];
    assert!(
        at_three.roc_auc >= non_private.roc_auc - 0.03,
        "ROC-AUC at epsilon 3: {:.4}, without DP: {:.4}",
        at_three.roc_auc,
        non_private.roc_auc
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_aggregation_on_nsl_kdd_matches_plain_fedavg_and_records_distributed_dp() {
    let Some((schema, train, test)) = load_nsl_kdd() else {
        return;
    };
    let test = Arc::new(test);
    let shards = split_non_iid(&train, 42);
    let spec = ModelSpec::mlp(schema.num_features() as u32, vec![64, 32], 2);
    let plan = nsl_kdd_plan().with_local_epochs(2);
    let plain = run_federation(&spec, &plan, &shards, &test, None)
        .await
        .metrics
        .unwrap();
    // Secure aggregation alone: the same average, up to quantization.
    let secure_card = run_federation_with(&spec, &plan, &shards, &test, None, true).await;
    let summary = secure_card
        .aggregation
        .as_ref()
        .and_then(|aggregation| aggregation.secure_aggregation.clone())
        .expect("the card states secure aggregation");
    assert_eq!(summary.secure_aggregation, "yes");
    assert_eq!(summary.num_survivors, NUM_PARTICIPANTS);
    let secure = secure_card.metrics.unwrap();
    // `--secure-aggregation --dp-epsilon 8 --org-dp-epsilon 8`: DP-SGD per
    // record and distributed discrete Gaussian noise per organization.
    let min_records = shards.iter().map(Dataset::len).min().unwrap() as u64;
    let dp_plan = plan.clone().with_batch_size((min_records / 100) as u32);
    let org_epsilon = 8.0;
    let target = PrivacyTarget {
        epsilon: 8.0,
        delta: 1e-5,
        clip_norm: 1.0,
        min_records,
        org_level: Some(OrgPrivacyTarget {
            epsilon: org_epsilon,
            clip_norm: 1.0,
        }),
    };
    let distributed_card =
        run_federation_with(&spec, &dp_plan, &shards, &test, Some(target), true).await;
    let privacy = distributed_card
        .privacy
        .clone()
        .expect("the card states the guarantee");
    let model_org_epsilon = privacy
        .org_epsilon
        .expect("every round had organization-level DP");
    assert!(
        model_org_epsilon <= org_epsilon * 1.0001,
        "organization-level epsilon {model_org_epsilon} above the target {org_epsilon}"
    );
    assert!(
        privacy
            .org_mechanism
            .as_deref()
            .is_some_and(|mechanism| mechanism.contains("distributed discrete Gaussian")),
        "{:?}",
        privacy.org_mechanism
    );
    let distributed_summary = distributed_card
        .aggregation
        .as_ref()
        .and_then(|aggregation| aggregation.secure_aggregation.clone())
        .unwrap();
    assert!(distributed_summary.distributed_dp.is_some());
    let distributed = distributed_card.metrics.unwrap();
    println!("| federated model | accuracy | F1 | ROC-AUC | PR-AUC | detection @1% FPR |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("{}", line("plain FedAvg, no DP", &plain));
    println!("{}", line("secure aggregation, no DP", &secure));
    println!(
        "{}",
        line(
            "secure aggregation, ε = 8 per record and ε = 8 per organization (distributed DP)",
            &distributed
        )
    );
    println!(
        "organization-level: noise variance {:?}, rho {:?} per round, model org epsilon {model_org_epsilon:.3}",
        distributed_card
            .plan
            .secure_aggregation
            .as_ref()
            .and_then(|secure| secure.distributed_dp.as_ref().map(|dp| dp.noise_variance)),
        distributed_card
            .plan
            .secure_aggregation
            .as_ref()
            .and_then(|secure| secure.rho_per_round()),
    );
    // Masking and quantization cost no accuracy (the two runs differ only
    // by quantization and the float order of folding, which ten non-IID
    // rounds with momentum amplify a little: the DP test's tolerance).
    assert!(
        secure.roc_auc >= plain.roc_auc - 0.03,
        "secure aggregation ROC-AUC {:.4}, plain {:.4}",
        secure.roc_auc,
        plain.roc_auc
    );
    assert!(distributed.roc_auc.is_finite() && distributed.accuracy.is_finite());
}

/// Attack types of KDDTest+ that never occur in KDDTrain+ (dataset README).
const NOVEL_ATTACKS: [&str; 17] = [
    "apache2",
    "httptunnel",
    "mailbomb",
    "mscan",
    "named",
    "processtable",
    "ps",
    "saint",
    "sendmail",
    "snmpgetattack",
    "snmpguess",
    "sqlattack",
    "udpstorm",
    "worm",
    "xlock",
    "xsnoop",
    "xterm",
];

#[test]
fn autoencoder_trained_on_normal_traffic_detects_attack_types_never_seen_in_training() {
    let Some((schema, train, test)) = load_nsl_kdd() else {
        return;
    };
    let spec = ModelSpec::autoencoder(schema.num_features() as u32, vec![32, 8]);
    let initial = ModelWeights::init(spec.clone(), 1).unwrap();
    let plan = TrainingPlan::new().with_local_epochs(10);
    let outcome = train_local(&initial, &train, &plan, 3).unwrap();
    let weights = ModelWeights::new(spec, outcome.params).unwrap();
    let scores = fedshield_core::model::inference::score_rows(&weights, test.features()).unwrap();
    let threshold =
        fedshield_core::model::metrics::threshold_at_fpr(&scores, test.labels(), 0.01).unwrap();
    let (mut novel, mut novel_detected) = (0usize, 0usize);
    for (index, score) in scores.iter().enumerate() {
        if NOVEL_ATTACKS.contains(&test.raw_label(index)) {
            novel += 1;
            novel_detected += usize::from(*score > threshold);
        }
    }
    let metrics = BinaryMetrics::compute_at(&scores, test.labels(), f64::from(threshold));
    let novel_rate = novel_detected as f64 / novel as f64;
    println!(
        "autoencoder on KDDTest+: ROC-AUC {:.4}, detection at 1% FPR {:.4}, on {novel} rows of unseen attack types {novel_rate:.4}",
        metrics.roc_auc, metrics.detection_rate_at_1pct_fpr
    );
    assert!(metrics.roc_auc > 0.9, "ROC-AUC {:.4}", metrics.roc_auc);
    assert!(
        novel_rate > 0.3,
        "unseen attack types detected at 1% FPR: {novel_rate:.4}"
    );
}
