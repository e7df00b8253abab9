//! `fedshield demo`: a coordinator and several participants on 127.0.0.1
//! over real gRPC, each participant with its own synthetic telemetry, with
//! the global model evaluated on a held-out set after every round.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fedshield_coordinator::engine::RoundOutcome;
use fedshield_coordinator::{CoordinatorConfig, ParticipantsPerRound, RoundConfig};
use fedshield_core::ModelVersion;
use fedshield_core::ParticipantId;
use std::sync::Arc;

use fedshield_coordinator::CoordinatorTls;
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_core::aggregation::robust::AggregationRule;
use fedshield_core::card::ModelCard;
use fedshield_core::model::metrics::BinaryMetrics;
use fedshield_core::telemetry::{
    OrgProfile, SYNTHETIC_FLOWS_SCHEMA_TOML, held_out_dataset, synthetic_dataset,
    synthetic_flows_schema,
};
use fedshield_participant::{Participant, ParticipantConfig, PrivacyBudget};
use fedshield_proto::tls::pki::CertificateAuthority;
use fedshield_proto::tls::{ListenerLimits, client_tls_config, server_config_pem};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::commands::{model_and_plan, privacy_target};

/// Returns the held-out metrics recorded in a model card.
fn card_metrics(card: &ModelCard) -> Result<BinaryMetrics> {
    card.metrics
        .context("model card has no metrics although the coordinator has an evaluation set")
}

/// Runs the demo and returns the path of the final model.
pub async fn run(args: DemoArgs) -> Result<PathBuf> {
    if args.participants < 2 {
        anyhow::bail!(
            "--participants must be at least 2 (got {})",
            args.participants
        );
    }
    if args.rounds == 0 {
        anyhow::bail!("--rounds must be at least 1");
    }
    if args.records == 0 || args.held_out_records == 0 {
        anyhow::bail!("--records and --held-out-records must be at least 1");
    }
    let started = Instant::now();
    let schema = synthetic_flows_schema();
    let (spec, plan) = model_and_plan(&args.model, &schema);
    let held_out = Arc::new(held_out_dataset(
        args.held_out_records,
        args.seed.wrapping_add(1_000_000),
    ));
    // A fresh federation every time: earlier demo runs must not be resumed,
    // and the demo organizations' ledgers start empty.
    let coordinator_dir = args.data_dir.join("coordinator");
    let participant_dirs: Vec<PathBuf> = (0..args.participants)
        .map(|index| args.data_dir.join(format!("participant-{index}")))
        .collect();
    for directory in std::iter::once(&coordinator_dir).chain(&participant_dirs) {
        if directory.exists() {
            std::fs::remove_dir_all(directory)
                .with_context(|| format!("failed to clear {}", directory.display()))?;
        }
    }
    let privacy = privacy_target(&args.dp);
    // Mutual TLS with an ephemeral CA made for this run: a server certificate
    // for localhost and 127.0.0.1, one client certificate per organization.
    let authority = CertificateAuthority::generate("fedshield demo CA")
        .context("failed to create the demo CA")?;
    let server_certificate = authority
        .issue_server(
            &["localhost".to_string()],
            &[std::net::IpAddr::from([127, 0, 0, 1])],
            1,
        )
        .context("failed to issue the demo server certificate")?;
    let participant_ids: Vec<ParticipantId> = (0..args.participants)
        .map(|index| ParticipantId::new(format!("org-{index}")).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let tls = CoordinatorTls {
        server_config: server_config_pem(
            &server_certificate.cert_pem,
            &server_certificate.key_pem,
            authority.cert_pem(),
        )
        .context("failed to configure the demo's TLS")?,
        registry: ParticipantRegistry::allowing(participant_ids.iter().cloned()),
        registry_path: None,
    };
    let config = CoordinatorConfig {
        round: RoundConfig {
            min_participants: args.participants,
            participants_per_round: ParticipantsPerRound::Fraction(1.0),
            quorum: args.participants.div_ceil(2).max(2),
            round_deadline: Duration::from_secs(60),
            retry_delay: Duration::from_millis(200),
            max_rounds: Some(args.rounds),
            server_momentum: 0.0,
            server_learning_rate: 1.0,
            aggregation: AggregationRule::FedAvg,
            weighting: fedshield_coordinator::weighting::UpdateWeighting::default(),
            secure_aggregation: None,
        },
        model: spec.clone(),
        init_seed: args.model.init_seed,
        plan,
        data_dir: coordinator_dir.clone(),
        artifact_store: None,
        heartbeat_interval: Duration::from_secs(2),
        chunk_params: fedshield_core::model::codec::DEFAULT_CHUNK_PARAMS,
        max_concurrent_uploads: 2,
        chunk_idle_timeout: Duration::from_secs(30),
        feature_schema_toml: Some(SYNTHETIC_FLOWS_SCHEMA_TOML.to_string()),
        // The coordinator scores each version on the demo's held-out set, so
        // the lines below print the same metrics as the model cards hold.
        evaluation: Some(held_out.clone()),
        privacy: privacy.clone(),
        // A fresh data directory every run: no stored lineage to weaken.
        accept_weaker_privacy: false,
        tls: Some(tls),
        https: None,
        // Every demo participant runs here and connects at once.
        listener_limits: ListenerLimits::single_host(),
    };
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind 127.0.0.1:0")?;
    let coordinator = fedshield_coordinator::start(config, listener, shutdown.clone())
        .await
        .context("failed to start the coordinator")?;
    let url = format!("https://{}", coordinator.local_addr());
    let initial = card_metrics(&coordinator.engine().current_model().card)?;
    println!(
        "fedshield demo: coordinator on {url} (mutual TLS, ephemeral CA), {} participants, {} rounds, model {:?} ({} parameters)",
        args.participants,
        args.rounds,
        spec.hidden_dims,
        spec.num_params()
    );
    println!(
        "round  0 | initial model      | accuracy {:.3} | F1 {:.3} | AUC {:.3} | PR-AUC {:.3} | DR@1%FPR {:.3}",
        initial.accuracy,
        initial.f1,
        initial.roc_auc,
        initial.pr_auc,
        initial.detection_rate_at_1pct_fpr
    );
    let mut participant_tasks = Vec::new();
    for (index, participant_dir) in participant_dirs.iter().enumerate() {
        let participant_id = participant_ids[index].clone();
        let client_certificate = authority
            .issue_client(participant_id.as_str(), 1)
            .context("failed to issue a demo client certificate")?;
        let data = synthetic_dataset(
            OrgProfile::for_org(index),
            args.records,
            args.seed.wrapping_add(index as u64),
        );
        let config = ParticipantConfig {
            coordinator_url: url.clone(),
            participant_id,
            data_dir: participant_dir.clone(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            missed_heartbeats: 5,
            feature_schema_sha256: Some(schema.sha256()),
            feature_schema_toml: Some(schema.to_toml_string()),
            // Each demo organization holds exactly the budget the federation promises.
            privacy_budget: privacy.as_ref().map(|target| PrivacyBudget {
                epsilon: target.epsilon,
                delta: target.delta,
                org_epsilon: target.org_level.as_ref().map(|org| org.epsilon),
            }),
            tls: Some(client_tls_config(
                authority.cert_pem(),
                &client_certificate.cert_pem,
                &client_certificate.key_pem,
                "localhost",
            )),
            shuffle_seed: None,
        };
        let participant = Participant::new(config, data)?;
        participant_tasks.push(tokio::spawn(participant.run(shutdown.clone())));
    }
    let mut published = coordinator.engine().subscribe_published();
    let mut last_reported = ModelVersion(0);
    let target = ModelVersion(args.rounds);
    let mut final_metrics = initial;
    while last_reported < target {
        tokio::time::timeout(Duration::from_secs(120), published.changed())
            .await
            .context("no round completed for 120s")?
            .context("coordinator stopped")?;
        let current = published.borrow_and_update().version;
        let history = coordinator.engine().status().recent_rounds;
        while last_reported < current {
            let version = last_reported.next();
            let model = coordinator.engine().model(version).await?;
            let metrics = card_metrics(&model.card)?;
            let summary = history
                .iter()
                .find(|summary| summary.outcome == RoundOutcome::Completed { published: version });
            let (num_contributors, duration) = summary
                .map(|summary| (summary.contributors.len(), summary.duration))
                .unwrap_or((model.card.contributors.len(), Duration::ZERO));
            println!(
                "round {:>2} | participants {:>2}/{:<2} | accuracy {:.3} | F1 {:.3} | AUC {:.3} | PR-AUC {:.3} | DR@1%FPR {:.3} | {:>5.2}s",
                version.0,
                num_contributors,
                args.participants,
                metrics.accuracy,
                metrics.f1,
                metrics.roc_auc,
                metrics.pr_auc,
                metrics.detection_rate_at_1pct_fpr,
                duration.as_secs_f64()
            );
            final_metrics = metrics;
            last_reported = version;
        }
    }
    shutdown.cancel();
    for task in participant_tasks {
        let _ = task.await;
    }
    let final_model = coordinator.engine().current_model();
    let final_path = coordinator_dir
        .join("models")
        .join(format!("model-v{:08}.safetensors", final_model.version.0));
    coordinator
        .wait()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if let Some(privacy) = &final_model.card.privacy {
        println!(
            "privacy: ({:.3}, {:e})-DP per organization's records with at least {} of them (DP-SGD, expected batch {}, sigma {:.3}, clip {}, {} steps per round){}",
            privacy.epsilon,
            privacy.delta,
            privacy.dp_sgd.min_records,
            privacy.dp_sgd.expected_batch_size,
            privacy.dp_sgd.noise_multiplier,
            privacy.dp_sgd.clip_norm,
            privacy.dp_sgd.steps_per_round,
            match privacy.org_epsilon {
                Some(org_epsilon) => format!(
                    "; ({org_epsilon:.3}, {:e})-DP per organization",
                    privacy.delta
                ),
                None => String::new(),
            }
        );
    }
    println!(
        "done in {:.1}s: accuracy {:.3} → {:.3}, AUC {:.3} → {:.3}; final model (version {}, sha256 {}) in {}",
        started.elapsed().as_secs_f64(),
        initial.accuracy,
        final_metrics.accuracy,
        initial.roc_auc,
        final_metrics.roc_auc,
        final_model.version,
        &final_model.card.sha256[..16],
        final_path.display()
    );
    Ok(final_path)
}
