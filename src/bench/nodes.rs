//! The processes of `fedshield bench rounds`: one coordinator and K
//! participants, each the real code over real gRPC on 127.0.0.1.
//!
//! They talk to the orchestrator through JSON lines on stdout:
//! - coordinator: `{"event":"listening","address":…}` once bound, then after
//!   the last round one `{"event":"round",…}` per completed round and
//!   `{"event":"done",…}` with its peak memory; it keeps its connections
//!   open (so their byte counters can be read) until its stdin is closed;
//! - participant: runs until its stdin is closed, then prints
//!   `{"event":"done",…}` with its rounds and peak memory.
//!
//! Files under the run's directory: `pki/` (CA, server and participant
//! certificates, with `--tls`), `coordinator/`, `participant-<id>/`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorTls, ParticipantsPerRound, RoundConfig};
use fedshield_core::aggregation::robust::AggregationRule;
use fedshield_core::{ModelSpec, ParticipantId, TrainingPlan};
use fedshield_participant::{Participant, ParticipantConfig, ParticipantEvent};
use fedshield_proto::tls::{ListenerLimits, client_tls_config_from_files, server_config_pem};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::process::peak_rss_bytes;
use crate::cli::{BenchCoordinatorNodeArgs, BenchParticipantNodeArgs};

/// DNS name on the benchmark's server certificate.
pub const SERVER_NAME: &str = "localhost";

/// Returns the participant ids of a run with `num_participants` participants.
pub fn participant_ids(num_participants: usize) -> Vec<String> {
    (0..num_participants)
        .map(|index| format!("bench-{index}"))
        .collect()
}

/// Prints one report line for the orchestrator.
fn report(line: &serde_json::Value) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("failed to write a report line")?;
    stdout.flush().context("failed to flush a report line")
}

fn read_pem(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
}

/// Runs the benchmark's coordinator: FedAvg over all K participants every
/// round (quorum K), a flat model of P parameters, `rounds` rounds.
///
/// # Errors
/// Startup failures, or no round completing for 10 minutes.
pub async fn coordinator_node(args: BenchCoordinatorNodeArgs) -> Result<()> {
    let num_params = args.params;
    let pki = args.work_dir.join("pki");
    let tls = if args.tls {
        let ids = participant_ids(args.participants)
            .into_iter()
            .map(|id| ParticipantId::new(id).map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        Some(CoordinatorTls {
            server_config: server_config_pem(
                &read_pem(&pki.join("server.pem"))?,
                &read_pem(&pki.join("server.key"))?,
                &read_pem(&pki.join("ca.pem"))?,
            )
            .context("failed to configure the coordinator's TLS")?,
            registry: ParticipantRegistry::allowing(ids),
            registry_path: None,
        })
    } else {
        None
    };
    let config = CoordinatorConfig {
        round: RoundConfig {
            min_participants: args.participants,
            participants_per_round: ParticipantsPerRound::Fraction(1.0),
            quorum: args.participants,
            round_deadline: Duration::from_secs(600),
            retry_delay: Duration::from_millis(200),
            max_rounds: Some(args.rounds),
            server_momentum: 0.0,
            server_learning_rate: 1.0,
            aggregation: AggregationRule::FedAvg,
            weighting: fedshield_coordinator::weighting::UpdateWeighting::default(),
            secure_aggregation: args.secure_aggregation.then_some(
                fedshield_coordinator::config::SecureAggregationConfig {
                    clip_norm: fedshield_core::plan::DEFAULT_SECURE_AGGREGATION_CLIP_NORM,
                },
            ),
        },
        model: ModelSpec::benchmark_flat(num_params),
        init_seed: 1,
        plan: TrainingPlan::new(),
        data_dir: args.work_dir.join("coordinator"),
        artifact_store: None,
        heartbeat_interval: Duration::from_secs(5),
        chunk_params: fedshield_core::model::codec::DEFAULT_CHUNK_PARAMS,
        max_concurrent_uploads: args.max_concurrent_uploads,
        chunk_idle_timeout: Duration::from_secs(120),
        feature_schema_toml: None,
        evaluation: None,
        privacy: None,
        accept_weaker_privacy: false,
        tls,
        https: None,
        // All participants run on this host and connect at once, on
        // loaded cores: no per-IP caps, and time for slow handshakes.
        listener_limits: ListenerLimits {
            handshake_timeout: Duration::from_secs(30),
            ..ListenerLimits::single_host()
        },
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind 127.0.0.1:0")?;
    let shutdown = CancellationToken::new();
    let coordinator = fedshield_coordinator::start(config, listener, shutdown.clone())
        .await
        .context("failed to start the coordinator")?;
    report(&json!({"event": "listening", "address": coordinator.local_addr().to_string()}))?;
    let mut published = coordinator.engine().subscribe_published();
    while published.borrow_and_update().version.0 < args.rounds {
        tokio::time::timeout(Duration::from_secs(600), published.changed())
            .await
            .context("no round completed for 600s")?
            .context("the coordinator stopped")?;
    }
    let status = coordinator.engine().status();
    let mut rounds: Vec<_> = status
        .recent_rounds
        .iter()
        .filter(|summary| summary.outcome.name() == "completed")
        .collect();
    rounds.sort_by_key(|summary| summary.round_id);
    for summary in rounds {
        report(&json!({
            "event": "round",
            "round": summary.round_id.0,
            "seconds": summary.duration.as_secs_f64(),
            "num_contributors": summary.contributors.len(),
        }))?;
    }
    report(&json!({
        "event": "done",
        "peak_rss_bytes": peak_rss_bytes(),
        "num_rounds_completed": status.num_rounds_completed,
        "num_rounds_abandoned": status.num_rounds_abandoned,
    }))?;
    stdin_closed().await;
    coordinator
        .stop()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
}

/// Runs one benchmark participant until its stdin is closed.
///
/// # Errors
/// Configuration or certificate errors.
pub async fn participant_node(args: BenchParticipantNodeArgs) -> Result<()> {
    let pki = args.work_dir.join("pki");
    let tls = if args.tls {
        Some(
            client_tls_config_from_files(
                pki.join("ca.pem"),
                pki.join(format!("{}.pem", args.id)),
                pki.join(format!("{}.key", args.id)),
                SERVER_NAME,
            )
            .context("failed to load the participant's TLS files")?,
        )
    } else {
        None
    };
    let config = ParticipantConfig {
        coordinator_url: args.coordinator.clone(),
        participant_id: ParticipantId::new(args.id.clone()).map_err(anyhow::Error::msg)?,
        data_dir: args.work_dir.join(format!("participant-{}", args.id)),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        missed_heartbeats: 24,
        feature_schema_sha256: None,
        feature_schema_toml: None,
        privacy_budget: None,
        tls,
        shuffle_seed: None,
    };
    let (events, mut received_events) = mpsc::unbounded_channel();
    // The connection stays open after the last round until stdin closes:
    // the orchestrator reads its bytes from the kernel first.
    let participant = Participant::benchmark(config, args.increment)?
        .with_events(events)
        .linger_after_completion();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stdin_closed().await;
        stop.cancel();
    });
    let task = tokio::spawn(participant.run(shutdown.clone()));
    let mut num_contributed = 0u64;
    let mut num_failed = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = received_events.recv() => match event {
                Some(ParticipantEvent::Contributed { .. }) => num_contributed += 1,
                Some(ParticipantEvent::RoundFailed { round_id, reason }) => {
                    num_failed += 1;
                    warn!(round = %round_id, reason = %reason, "benchmark round failed");
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    let _ = task.await;
    report(&json!({
        "event": "done",
        "id": args.id,
        "num_rounds_contributed": num_contributed,
        "num_rounds_failed": num_failed,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

/// Returns once stdin is closed: the orchestrator's way to stop a node.
/// Reading stdin blocks, so it happens on a thread of its own.
async fn stdin_closed() {
    let (closed, on_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let _ = on_closed.await;
}
