//! Dropouts under secure aggregation, with real processes and SIGKILL: eight
//! participant processes of the `fedshield` binary (the benchmark
//! participant, whose update adds a known constant to every parameter) join
//! a coordinator over mutual TLS. Some of them stop answering right after
//! their masked update is accepted and are killed with SIGKILL there. Up to
//! the tolerated number (the neighbourhood's degree minus the threshold),
//! the round still publishes the exact average of all eight updates; one
//! more, and the round is abandoned with the reason and nothing is
//! published.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fedshield_coordinator::config::{ParticipantsPerRound, SecureAggregationConfig};
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle};
use fedshield_core::secagg::graph::{recommended_degree, recommended_threshold};
use fedshield_core::{ModelSpec, ModelVersion, ParticipantId};
use fedshield_proto::tls::pki::CertificateAuthority;
use tokio_util::sync::CancellationToken;

use common::{coordinator_tls, localhost_certificate, wait_until};

const NUM_PARTICIPANTS: usize = 8;
const NUM_PARAMS: u32 = 4096;
const HANG_LINE: &str = "fedshield-test: masked update accepted, hanging";

fn name(index: usize) -> String {
    format!("org-{index}")
}

fn increment(index: usize) -> f32 {
    0.01 * (index as f32 + 1.0)
}

/// The participants a survivor may lose among its neighbours and still be
/// unmasked.
fn tolerated_dropouts() -> usize {
    let degree = recommended_degree(NUM_PARTICIPANTS);
    degree - recommended_threshold(degree)
}

struct Run {
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    coordinator: CoordinatorHandle,
    children: Vec<Child>,
}

async fn start(num_victims: usize) -> (Run, mpsc::Receiver<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let authority = CertificateAuthority::generate("dropout test CA").unwrap();
    std::fs::write(pki.join("ca.pem"), authority.cert_pem()).unwrap();
    let mut ids = Vec::new();
    for index in 0..NUM_PARTICIPANTS {
        let certificate = authority.issue_client(&name(index), 1).unwrap();
        std::fs::write(
            pki.join(format!("{}.pem", name(index))),
            &certificate.cert_pem,
        )
        .unwrap();
        std::fs::write(
            pki.join(format!("{}.key", name(index))),
            &certificate.key_pem,
        )
        .unwrap();
        ids.push(ParticipantId::new(name(index)).unwrap());
    }
    let server = localhost_certificate(&authority);
    let mut config = CoordinatorConfig::for_test(
        dir.path().join("coordinator"),
        ModelSpec::benchmark_flat(NUM_PARAMS),
    );
    config.round.min_participants = NUM_PARTICIPANTS;
    config.round.participants_per_round = ParticipantsPerRound::Count(NUM_PARTICIPANTS);
    config.round.quorum = NUM_PARTICIPANTS;
    config.round.max_rounds = Some(1);
    config.round.round_deadline = Duration::from_secs(60);
    config.round.retry_delay = Duration::from_secs(600);
    config.round.secure_aggregation = Some(SecureAggregationConfig { clip_norm: 100.0 });
    config.tls = Some(coordinator_tls(
        &authority,
        &server,
        ParticipantRegistry::allowing(ids),
    ));
    let shutdown = CancellationToken::new();
    let coordinator = common::start_coordinator(config, shutdown.clone()).await;
    let url = format!("https://{}", coordinator.local_addr());
    let (hung, hung_receiver) = mpsc::channel();
    let mut children = Vec::new();
    for index in 0..NUM_PARTICIPANTS {
        children.push(spawn_participant(
            dir.path(),
            &url,
            index,
            index < num_victims,
            hung.clone(),
        ));
    }
    (
        Run {
            _dir: dir,
            shutdown,
            coordinator,
            children,
        },
        hung_receiver,
    )
}

fn spawn_participant(
    work_dir: &Path,
    url: &str,
    index: usize,
    victim: bool,
    hung: mpsc::Sender<usize>,
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
    command
        .args(["bench", "participant-node", "--tls", "--work-dir"])
        .arg(work_dir)
        .args(["--coordinator", url, "--id", &name(index), "--increment"])
        .arg(increment(index).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if victim {
        command.env("FEDSHIELD_TEST_HANG_AFTER_MASKED_UPDATE", "1");
    }
    let mut child = command.spawn().expect("the fedshield binary starts");
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(HANG_LINE) {
                let _ = hung.send(index);
            }
        }
    });
    child
}

/// Waits until `num_victims` participants hang after their masked update,
/// and kills each with SIGKILL.
fn kill_victims(run: &mut Run, hung: &mpsc::Receiver<usize>, num_victims: usize) {
    for _ in 0..num_victims {
        let index = hung
            .recv_timeout(Duration::from_secs(120))
            .expect("a victim reports its masked update accepted");
        // `Child::kill` is SIGKILL on unix: no chance to say goodbye.
        run.children[index].kill().unwrap();
        run.children[index].wait().unwrap();
        eprintln!("killed participant {index} with SIGKILL after its masked update");
    }
}

async fn stop(mut run: Run) {
    run.shutdown.cancel();
    for child in &mut run.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), run.coordinator.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_to_the_tolerated_dropouts_killed_after_masking_the_round_publishes_the_exact_sum() {
    let num_victims = tolerated_dropouts();
    assert!(num_victims >= 1, "eight participants tolerate a dropout");
    let (mut run, hung) = start(num_victims).await;
    let engine = run.coordinator.engine().clone();
    let base = engine.current_model();
    tokio::task::block_in_place(|| kill_victims(&mut run, &hung, num_victims));
    wait_until("the round to publish", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let published = engine.current_model();
    // The victims' updates are in the sum: they were masked and accepted
    // before they died, and their self-masks were rebuilt from shares.
    let expected: f64 = (0..NUM_PARTICIPANTS)
        .map(|index| f64::from(increment(index)))
        .sum::<f64>()
        / NUM_PARTICIPANTS as f64;
    let worst = published
        .weights
        .params
        .iter()
        .zip(&base.weights.params)
        .map(|(new, old)| ((f64::from(*new) - f64::from(*old)) - expected).abs())
        .fold(0.0f64, f64::max);
    assert!(
        worst < 1e-4,
        "the published step differs from the average increment {expected} by up to {worst}"
    );
    let summary = published
        .card
        .aggregation
        .as_ref()
        .and_then(|aggregation| aggregation.secure_aggregation.clone())
        .unwrap();
    assert_eq!(summary.num_survivors, NUM_PARTICIPANTS);
    stop(run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dropout_more_than_tolerated_abandons_the_round_and_publishes_nothing() {
    let num_victims = tolerated_dropouts() + 1;
    let (mut run, hung) = start(num_victims).await;
    let engine = run.coordinator.engine().clone();
    tokio::task::block_in_place(|| kill_victims(&mut run, &hung, num_victims));
    wait_until(
        "the round to be abandoned",
        Duration::from_secs(120),
        || {
            let engine = engine.clone();
            async move { engine.status().num_rounds_abandoned >= 1 }
        },
    )
    .await;
    let status = engine.status();
    let abandoned = status
        .recent_rounds
        .iter()
        .find(|summary| summary.outcome.name() == "abandoned")
        .expect("the abandoned round is in the history");
    assert!(
        abandoned.reason.contains("cannot unmask"),
        "the reason says why: {}",
        abandoned.reason
    );
    assert_eq!(engine.current_model().version, ModelVersion(0));
    stop(run).await;
}
