//! The long-running commands: `fedshield coordinator` and `fedshield participant`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use fedshield_coordinator::{CoordinatorConfig, RoundConfig};
use fedshield_core::schema::Schema;
use fedshield_core::telemetry::{
    OrgProfile, SYNTHETIC_FLOWS_SCHEMA_TOML, synthetic_dataset, synthetic_flows_schema,
};
use fedshield_core::{ModelSpec, ParticipantId, TrainingPlan};
use fedshield_participant::{Participant, ParticipantConfig};
use tokio::net::TcpListener;

use crate::cli::{CoordinatorArgs, ModelArgs, ParticipantArgs};
use crate::offline::{load_labelled, spec_for};
use crate::shutdown;

/// Returns the model spec and training plan the flags describe.
pub fn model_and_plan(args: &ModelArgs, schema: &Schema) -> (ModelSpec, TrainingPlan) {
    let spec = spec_for(args, schema);
    let plan = TrainingPlan {
        local_epochs: args.local_epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        max_local_steps: args.max_local_steps,
        weight_decay: args.weight_decay,
    };
    (spec, plan)
}

/// Returns the coordinator configuration the flags describe.
pub fn coordinator_config(args: &CoordinatorArgs) -> Result<CoordinatorConfig> {
    let (schema, schema_toml) = match &args.schema {
        Some(path) => {
            let schema = Schema::load(path)
                .with_context(|| format!("failed to load --schema {}", path.display()))?;
            let toml = schema.to_toml_string();
            (schema, toml)
        }
        None => (
            synthetic_flows_schema(),
            SYNTHETIC_FLOWS_SCHEMA_TOML.to_string(),
        ),
    };
    let evaluation = match &args.eval_data {
        Some(path) => Some(Arc::new(load_labelled(path, &schema, None)?)),
        None => None,
    };
    let (model, plan) = model_and_plan(&args.model, &schema);
    Ok(CoordinatorConfig {
        round: RoundConfig {
            min_participants: args.min_participants,
            participants_per_round: args.participants_per_round,
            quorum: args.quorum,
            round_deadline: Duration::from_secs(args.round_deadline_secs),
            retry_delay: Duration::from_secs(1),
            max_rounds: args.rounds,
            server_momentum: args.server_momentum,
            server_learning_rate: args.server_learning_rate,
        },
        model,
        init_seed: args.model.init_seed,
        plan,
        data_dir: args.data_dir.clone(),
        heartbeat_interval: Duration::from_secs(5),
        chunk_params: fedshield_core::codec::DEFAULT_CHUNK_PARAMS,
        max_concurrent_uploads: 2,
        chunk_idle_timeout: Duration::from_secs(30),
        feature_schema_toml: Some(schema_toml),
        evaluation,
    })
}

/// Runs `fedshield coordinator` until SIGINT/SIGTERM.
pub async fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let config = coordinator_config(&args)?;
    config.validate().map_err(|problems| {
        anyhow::anyhow!(
            "invalid coordinator configuration:\n  {}",
            problems.join("\n  ")
        )
    })?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let shutdown = shutdown::on_signal();
    fedshield_coordinator::run(config, listener, shutdown)
        .await
        .map_err(|error| anyhow::anyhow!("coordinator failed: {error}"))
}

/// Runs `fedshield participant` until SIGINT/SIGTERM.
pub async fn participant(args: ParticipantArgs) -> Result<()> {
    let participant_id =
        ParticipantId::new(args.id.clone()).map_err(|reason| anyhow::anyhow!("--id: {reason}"))?;
    let (data, schema_sha256) = match (&args.data, &args.schema) {
        (Some(data_path), Some(schema_path)) => {
            let schema = Schema::load(schema_path)
                .with_context(|| format!("failed to load --schema {}", schema_path.display()))?;
            (load_labelled(data_path, &schema, None)?, schema.sha256())
        }
        _ => {
            if args.synthetic_records == 0 {
                anyhow::bail!("--synthetic-records must be at least 1");
            }
            let data = synthetic_dataset(
                OrgProfile::for_org(args.synthetic_org),
                args.synthetic_records,
                args.synthetic_seed,
            );
            (data, synthetic_flows_schema().sha256())
        }
    };
    let config = ParticipantConfig {
        coordinator_url: args.coordinator.clone(),
        participant_id,
        data_dir: args.data_dir.clone(),
        initial_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(30),
        missed_heartbeats: 4,
        feature_schema_sha256: Some(schema_sha256),
    };
    let participant = Participant::new(config, data).context("failed to start participant")?;
    participant.run(shutdown::on_signal()).await;
    Ok(())
}
