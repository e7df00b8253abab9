//! Poisoning: five participants on synthetic telemetry, one of them
//! malicious (update scaled by 100, sign-flipped, replaced by random noise,
//! or trained on flipped labels), against each aggregation rule. Every rule
//! and attack is held to a property (see `property`): FedAvg degrades under
//! every attack; Multi-Krum keeps the held-out accuracy within 2 points of
//! the honest participants alone under all four, norm bounding and trimmed
//! mean under the magnitude attacks (scaled, random noise) and beat FedAvg
//! under the others; the coordinate-wise median wins back at least half of
//! what FedAvg loses to a magnitude attack and does no worse than FedAvg
//! under the others.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_core::aggregation::robust::AggregationRule;
use fedshield_core::model::data::Dataset;
use fedshield_core::model::metrics::BinaryMetrics;
use fedshield_core::telemetry::{OrgProfile, held_out_dataset, synthetic_dataset};
use fedshield_core::{ModelVersion, ParticipantId};
use fedshield_participant::node::UpdateTamper;
use fedshield_participant::{Participant, ParticipantConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use tokio_util::sync::CancellationToken;

use common::{start_coordinator, test_spec, wait_until};

const NUM_ROUNDS: u64 = 30;
const NUM_HONEST: usize = 4;
const ROWS: usize = 1500;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Attack {
    Scaled,
    SignFlipped,
    RandomNoise,
    LabelFlipped,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Scaled => "update × 100",
            Attack::SignFlipped => "sign-flipped update",
            Attack::RandomNoise => "random-noise update",
            Attack::LabelFlipped => "label-flipped data",
        }
    }
}

fn honest_data(index: usize) -> Dataset {
    synthetic_dataset(OrgProfile::for_org(index), ROWS, 900 + index as u64)
}

/// Returns `data` with every label flipped (attack ↔ benign).
fn flipped(data: &Dataset) -> Dataset {
    let mut flipped = Dataset::new(data.num_features());
    for index in 0..data.len() {
        flipped
            .push(data.row(index), 1 - data.labels()[index].min(1))
            .unwrap();
    }
    flipped
}

fn tamper_for(attack: Attack) -> Option<UpdateTamper> {
    match attack {
        Attack::Scaled => Some(Arc::new(|update: &mut [f32]| {
            update.iter_mut().for_each(|value| *value *= 100.0);
        })),
        Attack::SignFlipped => Some(Arc::new(|update: &mut [f32]| {
            update.iter_mut().for_each(|value| *value = -*value);
        })),
        Attack::RandomNoise => {
            let rng = Mutex::new(StdRng::seed_from_u64(5));
            let noise = Normal::new(0.0f32, 1.0).unwrap();
            Some(Arc::new(move |update: &mut [f32]| {
                let mut rng = rng.lock().unwrap();
                update
                    .iter_mut()
                    .for_each(|value| *value = noise.sample(&mut *rng));
            }))
        }
        Attack::LabelFlipped => None,
    }
}

/// Runs a federation of the honest participants (plus one attacker, if
/// any) under `rule` and returns the last version's held-out metrics.
/// `observe`, if given, sees every update of the first honest participant.
async fn run(
    rule: AggregationRule,
    attack: Option<Attack>,
    observe: Option<UpdateTamper>,
) -> BinaryMetrics {
    let work = tempfile::tempdir().unwrap();
    let num_participants = NUM_HONEST + usize::from(attack.is_some());
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.round.min_participants = num_participants;
    config.round.quorum = num_participants;
    config.round.max_rounds = Some(NUM_ROUNDS);
    config.round.round_deadline = Duration::from_secs(60);
    config.round.aggregation = rule;
    config.max_concurrent_uploads = num_participants;
    config.evaluation = Some(Arc::new(held_out_dataset(3000, 77)));
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let mut tasks = Vec::new();
    for index in 0..num_participants {
        let malicious = attack.filter(|_| index == NUM_HONEST);
        let name = if malicious.is_some() {
            "mallory".to_string()
        } else {
            format!("honest-{index}")
        };
        let config = ParticipantConfig::for_test(
            url.clone(),
            ParticipantId::new(name.clone()).unwrap(),
            work.path().join(&name),
        );
        // The attacker looks like one more organization (profile 4).
        let data = match malicious {
            Some(Attack::LabelFlipped) => flipped(&honest_data(index)),
            _ => honest_data(index),
        };
        let mut participant = Participant::new(config, data).unwrap();
        if let Some(tamper) = malicious.and_then(tamper_for) {
            participant = participant.with_update_tamper(tamper);
        }
        if index == 0
            && let Some(observe) = &observe
        {
            participant = participant.with_update_tamper(observe.clone());
        }
        tasks.push(tokio::spawn(participant.run(shutdown.clone())));
    }
    let engine = coordinator.engine().clone();
    wait_until("all rounds", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(NUM_ROUNDS) }
    })
    .await;
    let metrics = coordinator
        .engine()
        .current_model()
        .card
        .metrics
        .expect("the coordinator scores each version");
    shutdown.cancel();
    for task in tasks {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robust_rules_hold_accuracy_under_one_malicious_participant_and_fedavg_does_not() {
    // The honest federation, watching the L2 norms of an honest participant's
    // updates: an operator sets the norm bound from what honest updates look like.
    let norms = Arc::new(Mutex::new(Vec::new()));
    let recorder = norms.clone();
    let observe: UpdateTamper = Arc::new(move |update: &mut [f32]| {
        let norm = update
            .iter()
            .map(|value| f64::from(*value).powi(2))
            .sum::<f64>()
            .sqrt();
        recorder.lock().unwrap().push(norm);
    });
    let honest = run(AggregationRule::FedAvg, None, Some(observe)).await;
    let mut norms = norms.lock().unwrap().clone();
    norms.sort_by(f64::total_cmp);
    let median_norm = norms[norms.len() / 2];
    println!(
        "honest participants only (FedAvg): accuracy {:.4}, ROC-AUC {:.4}; honest update norms {:.3}..{:.3}, median {median_norm:.3}",
        honest.accuracy,
        honest.roc_auc,
        norms[0],
        norms[norms.len() - 1]
    );
    let rules = vec![
        AggregationRule::FedAvg,
        AggregationRule::NormBounded {
            max_norm: (2.0 * median_norm * 1000.0).round() / 1000.0,
        },
        "trimmed-mean:0.2".parse().unwrap(),
        AggregationRule::Median,
        "multi-krum:1".parse().unwrap(),
    ];
    let attacks = [
        Attack::Scaled,
        Attack::SignFlipped,
        Attack::RandomNoise,
        Attack::LabelFlipped,
    ];
    let mut table = Vec::new();
    for attack in attacks {
        let mut row = Vec::new();
        for rule in &rules {
            let metrics = run(rule.clone(), Some(attack), None).await;
            row.push(metrics.accuracy);
        }
        table.push((attack, row));
    }
    let header: Vec<String> = rules.iter().map(ToString::to_string).collect();
    println!("| attack (1 of 5 participants) | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(rules.len()));
    println!(
        "| none (4 honest participants only) | {} |",
        vec![format!("{:.4}", honest.accuracy); rules.len()].join(" | ")
    );
    for (attack, row) in &table {
        let cells: Vec<String> = row
            .iter()
            .map(|accuracy| format!("{accuracy:.4}"))
            .collect();
        println!("| {} | {} |", attack.name(), cells.join(" | "));
    }
    let fedavg_column = rules
        .iter()
        .position(|rule| *rule == AggregationRule::FedAvg)
        .expect("fedavg is among the rules");
    for (attack, row) in &table {
        let fedavg = row[fedavg_column];
        for (rule, accuracy) in rules.iter().zip(row) {
            let property = property(rule, *attack);
            assert!(
                property.holds(*accuracy, honest.accuracy, fedavg),
                "{rule} under {}: accuracy {accuracy:.4} breaks {property:?} (honest only {:.4}, fedavg under the same attack {fedavg:.4})",
                attack.name(),
                honest.accuracy
            );
        }
    }
}

/// What an aggregation rule must achieve against one attacker: the held-out
/// accuracy of its last version compared with the honest participants alone
/// and with FedAvg under the same attack.
#[derive(Debug, Clone, Copy)]
enum Property {
    /// No defence: the attack costs more than 5 points.
    Degrades,
    /// Within 2 points of the honest participants alone.
    Holds,
    /// Wins back at least half of the accuracy FedAvg loses to the same attack:
    /// the attacker's update, however large, moves each coordinate at most to
    /// the edge of the honest values.
    RecoversHalfOfFedAvgLoss,
    /// Better than FedAvg under the same attack: the attacker gets through, with
    /// less effect.
    BeatsFedAvg,
    /// At most 2 points below FedAvg under the same attack: an update of
    /// ordinary size pointing the wrong way is no outlier, and the rule throws
    /// away honest signal too.
    NoWorseThanFedAvg,
}

impl Property {
    /// Returns whether `accuracy` has this property, given the honest-only
    /// accuracy and FedAvg's under the same attack.
    fn holds(self, accuracy: f64, honest: f64, fedavg: f64) -> bool {
        match self {
            Property::Degrades => accuracy < honest - 0.05,
            Property::Holds => accuracy >= honest - 0.02,
            Property::RecoversHalfOfFedAvgLoss => accuracy - fedavg >= (honest - fedavg) / 2.0,
            Property::BeatsFedAvg => accuracy > fedavg,
            Property::NoWorseThanFedAvg => accuracy >= fedavg - 0.02,
        }
    }
}

/// Returns what `rule` must achieve against `attack` (docs/BENCHMARKS.md has
/// the numbers). Every rule and attack has one: a new rule must say its own.
fn property(rule: &AggregationRule, attack: Attack) -> Property {
    // Magnitude attacks send an outlier; the others an update of ordinary size.
    let magnitude = matches!(attack, Attack::Scaled | Attack::RandomNoise);
    match rule {
        AggregationRule::FedAvg => Property::Degrades,
        // Multi-Krum leaves the attacker out whatever it sends.
        AggregationRule::MultiKrum { .. } => Property::Holds,
        // Norm bounding and trimmed mean bound how far one update can move the
        // model: they stop the magnitude attacks, and blunt the others.
        AggregationRule::NormBounded { .. } | AggregationRule::TrimmedMean { .. } => {
            if magnitude {
                Property::Holds
            } else {
                Property::BeatsFedAvg
            }
        }
        // The coordinate-wise median of five resists the outlier, but with
        // non-IID organizations it discards much honest signal.
        AggregationRule::Median => {
            if magnitude {
                Property::RecoversHalfOfFedAvgLoss
            } else {
                Property::NoWorseThanFedAvg
            }
        }
    }
}
