//! The long-running commands: `fedshield coordinator` and `fedshield participant`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorError, RoundConfig};
use fedshield_coordinator::{CoordinatorTls, HttpsSettings};
use fedshield_core::privacy::accountant::{
    Conversion, RdpAccountant, SubsampledGaussian, calibrate_noise_multiplier,
};
use fedshield_core::privacy::{OrgPrivacyTarget, PrivacyTarget};
use fedshield_core::schema::Schema;
use fedshield_core::telemetry::{
    OrgProfile, SYNTHETIC_FLOWS_SCHEMA_TOML, synthetic_dataset, synthetic_flows_schema,
};
use fedshield_core::{ModelSpec, ParticipantId, TrainingPlan};
use fedshield_participant::{
    Participant, ParticipantConfig, ParticipantError, PrivacyBudget, RunEnd,
};
use fedshield_proto::metrics_http::serve_metrics;
use fedshield_proto::tls::{ClientTlsFiles, ServerTlsFiles, client_tls_files};
use tokio::net::TcpListener;
use tonic::transport::ClientTlsConfig;
use tracing::info;

use crate::cli::{
    BudgetArgs, CoordinatorArgs, CoordinatorCommand, DpArgs, IssueTokenArgs, ModelArgs,
    ParticipantArgs, ParticipantBudgetArgs, ParticipantCommand, PrivacyArgs, PrivacyCommand,
    TokenFileArgs,
};
use crate::exit::{Exit, ExitStatus};
use crate::offline::{load_labelled, require_labels_for, spec_for};
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
        trim_fraction: args.trim_fraction,
        dp_sgd: None,
        org_dp: None,
        secure_aggregation: None,
    };
    (spec, plan)
}

/// Returns the privacy target the DP flags describe, if DP is on.
pub fn privacy_target(args: &DpArgs) -> Option<PrivacyTarget> {
    let epsilon = args.dp_epsilon?;
    Some(PrivacyTarget {
        epsilon,
        delta: args.dp_delta,
        clip_norm: args.dp_clip_norm,
        min_records: args.dp_min_records,
        org_level: args.org_dp_epsilon.map(|org_epsilon| OrgPrivacyTarget {
            epsilon: org_epsilon,
            clip_norm: args.org_dp_clip_norm,
        }),
    })
}

/// Returns the privacy budget the flags describe, if one is set.
pub fn privacy_budget(args: &BudgetArgs) -> Option<PrivacyBudget> {
    Some(PrivacyBudget {
        epsilon: args.privacy_epsilon?,
        delta: args.privacy_delta,
        org_epsilon: args.privacy_org_epsilon,
    })
}

/// Returns the coordinator configuration the flags describe.
pub fn coordinator_config(args: &CoordinatorArgs) -> Result<CoordinatorConfig> {
    let (mut config, schema) = coordinator_settings(args)?;
    if let Some(path) = &args.eval_data {
        if !schema.is_labelled() {
            bail!(
                "--eval-data {}: the schema has no label column, and evaluation needs labelled data",
                path.display()
            );
        }
        config.evaluation = Some(Arc::new(load_labelled(path, &schema, None, None)?));
    }
    config.tls = coordinator_tls(args)?;
    config.https = coordinator_https(args)?;
    Ok(config)
}

/// Returns the coordinator configuration the flags describe, and its feature schema,
/// without the evaluation data and the TLS settings (whose files only a start reads):
/// what [`CoordinatorConfig::validate`] checks the settings against each other with,
/// before a start and for `--print-config`.
pub fn coordinator_settings(args: &CoordinatorArgs) -> Result<(CoordinatorConfig, Schema)> {
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
    let (model, plan) = model_and_plan(&args.model, &schema);
    if let Some(path) = &args.schema {
        require_labels_for(&model, &schema, path)?;
    }
    let config = CoordinatorConfig {
        round: RoundConfig {
            min_participants: args.min_participants,
            participants_per_round: args.participants_per_round,
            quorum: args.quorum,
            round_deadline: Duration::from_secs(args.round_deadline_secs),
            retry_delay: Duration::from_secs(1),
            max_rounds: args.rounds,
            server_momentum: args.server_momentum,
            server_learning_rate: args.server_learning_rate,
            aggregation: args.aggregation.clone(),
            secure_aggregation: args.secure_aggregation.then_some(
                fedshield_coordinator::config::SecureAggregationConfig {
                    clip_norm: args.secure_aggregation_clip_norm,
                },
            ),
            weighting: fedshield_coordinator::weighting::UpdateWeighting {
                max_samples_per_update: args.max_samples_per_update,
                max_update_weight: args.max_update_weight,
            },
        },
        model,
        init_seed: args.model.init_seed,
        plan,
        data_dir: args.data_dir.clone(),
        artifact_store: args.artifact_store.clone(),
        heartbeat_interval: Duration::from_secs(5),
        chunk_params: fedshield_core::model::codec::DEFAULT_CHUNK_PARAMS,
        max_concurrent_uploads: 2,
        chunk_idle_timeout: Duration::from_secs(30),
        feature_schema_toml: Some(schema_toml),
        evaluation: None,
        privacy: privacy_target(&args.dp),
        accept_weaker_privacy: args.accept_weaker_privacy,
        tls: None,
        https: None,
        listener_limits: args.listener.limits(),
    };
    Ok((config, schema))
}

/// Returns the error of a configuration with `problems`, one per line.
pub fn invalid_configuration(role: &str, problems: &[String]) -> anyhow::Error {
    anyhow::anyhow!("invalid {role} configuration:\n  {}", problems.join("\n  "))
}

/// Returns the HTTPS download endpoint's settings from the flags, if wanted.
fn coordinator_https(args: &CoordinatorArgs) -> Result<Option<HttpsSettings>> {
    let Some(listen) = args.https_listen else {
        return Ok(None);
    };
    let (Some(cert), Some(key), Some(client_ca)) =
        (&args.tls_cert, &args.tls_key, &args.tls_client_ca)
    else {
        anyhow::bail!("--https-listen needs --tls-cert, --tls-key and --tls-client-ca");
    };
    let server_config = ServerTlsFiles {
        cert_chain: cert.clone(),
        key: key.clone(),
        client_ca: client_ca.clone(),
    }
    .load_https()
    .context("failed to load the coordinator's TLS files for https")?;
    Ok(Some(HttpsSettings {
        listen,
        server_config,
        tokens_path: args.api_tokens.clone().unwrap_or_else(|| {
            args.data_dir
                .join(fedshield_coordinator::http::API_TOKENS_FILE_NAME)
        }),
        dashboard_sessions: fedshield_coordinator::dashboard_sessions::DashboardSessionSettings {
            max_age: Duration::from_secs(args.dashboard_session_secs),
            idle_timeout: Duration::from_secs(args.dashboard_idle_secs),
        },
    }))
}

/// Runs `fedshield coordinator issue-token` (`tokens create` with `--name`).
fn issue_token(args: &IssueTokenArgs) -> Result<()> {
    crate::tokens::create(
        &TokenFileArgs {
            data_dir: args.data_dir.clone(),
            api_tokens: args.api_tokens.clone(),
        },
        &args.name,
        &args.lifetime,
    )
}

/// Returns the coordinator's mutual-TLS settings from its flags (`None` with `--insecure`).
fn coordinator_tls(args: &CoordinatorArgs) -> Result<Option<CoordinatorTls>> {
    if args.insecure {
        return Ok(None);
    }
    let (Some(cert), Some(key), Some(client_ca), Some(participants)) = (
        &args.tls_cert,
        &args.tls_key,
        &args.tls_client_ca,
        &args.participants,
    ) else {
        anyhow::bail!(
            "TLS is required: pass --tls-cert, --tls-key, --tls-client-ca and --participants (or --insecure for a local experiment)"
        );
    };
    let server_config = ServerTlsFiles {
        cert_chain: cert.clone(),
        key: key.clone(),
        client_ca: client_ca.clone(),
    }
    .load()
    .context("failed to load the coordinator's TLS files")?;
    let registry = ParticipantRegistry::load(participants).map_err(anyhow::Error::msg)?;
    Ok(Some(CoordinatorTls {
        server_config,
        registry,
        registry_path: Some(participants.clone()),
    }))
}

/// Returns the participant's client TLS files from its flags (`None` with `--insecure`).
pub fn participant_tls_files(args: &ParticipantArgs) -> Result<Option<ClientTlsFiles>> {
    let files = client_tls_files(
        &args.coordinator,
        args.insecure,
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_server_name.as_deref(),
    )?;
    Ok(files)
}

/// Returns the participant configuration the flags describe, checked, with `tls` as
/// its TLS settings and no feature schema (that comes with the data).
pub fn participant_config(
    args: &ParticipantArgs,
    tls: Option<ClientTlsConfig>,
) -> Result<ParticipantConfig> {
    let id = args
        .id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--id is required to run a participant"))?;
    let participant_id =
        ParticipantId::new(id).map_err(|reason| anyhow::anyhow!("--id: {reason}"))?;
    if args.data.is_none() && args.synthetic_records == 0 {
        anyhow::bail!("--synthetic-records must be at least 1");
    }
    let config = ParticipantConfig {
        coordinator_url: args.coordinator.clone(),
        participant_id,
        data_dir: args.data_dir.clone(),
        initial_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(30),
        missed_heartbeats: 4,
        feature_schema_sha256: None,
        feature_schema_toml: None,
        privacy_budget: privacy_budget(&args.budget),
        tls,
        shuffle_seed: None,
    };
    config
        .validate()
        .map_err(|problems| invalid_configuration("participant", &problems))?;
    Ok(config)
}

/// Runs `fedshield coordinator` until SIGINT/SIGTERM.
pub async fn coordinator(args: CoordinatorArgs) -> Result<()> {
    match &args.command {
        Some(CoordinatorCommand::IssueToken(token_args)) => return issue_token(token_args),
        Some(CoordinatorCommand::Tokens(tokens_args)) => return crate::tokens::run(tokens_args),
        None => {}
    }
    let config = coordinator_config(&args)?;
    config
        .validate()
        .map_err(|problems| invalid_configuration("coordinator", &problems))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let metrics_listener = bind_metrics_listener(args.metrics_listen).await?;
    let shutdown = shutdown::on_signal();
    let coordinator = fedshield_coordinator::start(config, listener, shutdown.clone())
        .await
        .map_err(|error| match error {
            // Restarting cannot change it: the operator must decide.
            CoordinatorError::PrivacyWeakened { .. } => Exit::new(
                ExitStatus::PrivacyWeakened,
                format!("coordinator failed: {error}"),
            )
            .into(),
            _ => anyhow::anyhow!("coordinator failed: {error}"),
        })?;
    if let Some(metrics_listener) = metrics_listener {
        let metrics = coordinator.engine().metrics().clone();
        serve_metrics(
            metrics_listener,
            Arc::new(move || metrics.render()),
            shutdown.clone(),
        );
    }
    if !args.keep_serving {
        // The end of --rounds stops the coordinator as a signal would.
        let engine = coordinator.engine().clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = engine.completed() => {
                    info!("stopping: the federation is complete (--keep-serving keeps serving downloads)");
                    stop.cancel();
                }
                () = stop.cancelled() => {}
            }
        });
    }
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    match shutdown::finish_within(&shutdown, grace, "the coordinator", coordinator.wait()).await {
        Some(stopped) => stopped.map_err(|error| anyhow::anyhow!("coordinator failed: {error}")),
        None => Ok(()),
    }
}

/// Binds `--metrics-listen`, if given.
async fn bind_metrics_listener(address: Option<SocketAddr>) -> Result<Option<TcpListener>> {
    let Some(address) = address else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on --metrics-listen {address}"))?;
    let address = listener.local_addr().unwrap_or(address);
    info!(%address, "prometheus metrics listening (plain http, GET /metrics)");
    Ok(Some(listener))
}

/// Runs `fedshield participant` until SIGINT/SIGTERM.
pub async fn participant(args: ParticipantArgs) -> Result<()> {
    if let Some(ParticipantCommand::Budget(budget_args)) = &args.command {
        return participant_budget(budget_args);
    }
    let tls = participant_tls_files(&args)?
        .map(|files| files.load("participant"))
        .transpose()?;
    let mut config = participant_config(&args, tls)?;
    if let Some(cert) = &args.tls_cert {
        check_certificate_names(cert, &config.participant_id)?;
    }
    let (data, schema) = match (&args.data, &args.schema) {
        (Some(data_path), Some(schema_path)) => {
            let schema = Schema::load(schema_path)
                .with_context(|| format!("failed to load --schema {}", schema_path.display()))?;
            let labels_from = args.labels_from.as_deref();
            (
                load_labelled(data_path, &schema, None, labels_from)?,
                schema,
            )
        }
        _ => {
            let data = synthetic_dataset(
                OrgProfile::for_org(args.synthetic_org),
                args.synthetic_records,
                args.synthetic_seed,
            );
            (data, synthetic_flows_schema())
        }
    };
    config.feature_schema_sha256 = Some(schema.sha256());
    config.feature_schema_toml = Some(schema.to_toml_string());
    let metrics_listener = bind_metrics_listener(args.metrics_listen).await?;
    let participant = Participant::new(config, data).context("failed to start participant")?;
    let shutdown = shutdown::on_signal();
    if let Some(metrics_listener) = metrics_listener {
        let metrics = participant.metrics();
        serve_metrics(
            metrics_listener,
            Arc::new(move || metrics.render()),
            shutdown.clone(),
        );
    }
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let run = participant.run(shutdown.clone());
    match shutdown::finish_within(&shutdown, grace, "the participant", run).await {
        None | Some(Ok(RunEnd::Stopped)) => Ok(()),
        Some(Ok(RunEnd::FederationComplete(end))) => {
            println!(
                "federation complete: {} rounds published; final model version {} (sha256 {})",
                end.num_rounds_completed, end.final_version, end.final_sha256
            );
            Ok(())
        }
        Some(Err(error)) => Err(permanent_exit(error)),
    }
}

/// Returns the error (with its exit status) for a condition that ended
/// the participant for good.
fn permanent_exit(error: ParticipantError) -> anyhow::Error {
    let (status, advice) = match &error {
        ParticipantError::Denied { .. } => (
            ExitStatus::Denied,
            "ask the coordinator's operator to add (or restore) this participant in its registry",
        ),
        ParticipantError::BudgetExhausted { .. } | ParticipantError::OrgBudgetExhausted { .. } => (
            ExitStatus::BudgetExhausted,
            "no round of this federation fits the remaining privacy budget; only a larger \
             --privacy-epsilon (a decision for your organization) would let it take part again",
        ),
        _ => return anyhow::Error::new(error).context("participant failed"),
    };
    Exit::new(status, format!("{error}; {advice}")).into()
}

/// Checks that the client certificate at `cert` names `id`: the
/// coordinator takes a participant's identity from its certificate's
/// subject common name, and refuses a participant that claims another.
fn check_certificate_names(cert: &std::path::Path, id: &ParticipantId) -> Result<()> {
    let certificates = fedshield_proto::tls::load_certificates(cert)
        .with_context(|| format!("failed to read --tls-cert {}", cert.display()))?;
    let leaf = certificates
        .first()
        .with_context(|| format!("--tls-cert {} holds no certificate", cert.display()))?;
    let identity = fedshield_proto::tls::PeerIdentity::from_der(leaf).with_context(|| {
        format!(
            "failed to read the subject of --tls-cert {}",
            cert.display()
        )
    })?;
    if identity.common_name != id.as_str() {
        return Err(Exit::new(
            ExitStatus::IdentityMismatch,
            format!(
                "--tls-cert {} is issued to participant {:?}, but --id is {:?}; the coordinator \
                 would refuse every call. Use the certificate issued for {:?} \
                 (`fedshield certs participant --id {}`) or correct --id",
                cert.display(),
                identity.common_name,
                id.as_str(),
                id.as_str(),
                id.as_str()
            ),
        )
        .into());
    }
    Ok(())
}

/// Runs `fedshield participant budget`: the ledger's spend and what is left.
fn participant_budget(args: &ParticipantBudgetArgs) -> Result<()> {
    let budget = privacy_budget(&args.budget);
    if let Some(budget) = &budget {
        budget.validate().map_err(|problems| {
            anyhow::anyhow!("invalid privacy budget:\n  {}", problems.join("\n  "))
        })?;
    }
    let delta = args.budget.privacy_delta;
    let spend = fedshield_participant::ledger::inspect(&args.data_dir, delta)
        .context("failed to read the privacy ledger")?;
    let remaining = budget.map(|budget| (budget.epsilon - spend.epsilon).max(0.0));
    let org_remaining = budget
        .and_then(|budget| budget.org_epsilon)
        .map(|org_budget| (org_budget - spend.org_epsilon.unwrap_or(0.0)).max(0.0));
    if args.json {
        let value = serde_json::json!({
            "ledger": args.data_dir.join(fedshield_participant::ledger::LEDGER_FILE_NAME),
            "num_rounds": spend.num_rounds,
            "delta": delta,
            "spent_epsilon": spend.epsilon,
            "budget_epsilon": budget.map(|budget| budget.epsilon),
            "remaining_epsilon": remaining,
            "spent_org_epsilon": spend.org_epsilon,
            "budget_org_epsilon": budget.and_then(|budget| budget.org_epsilon),
            "remaining_org_epsilon": org_remaining,
        });
        println!("{value}");
        return Ok(());
    }
    println!("rounds recorded:  {}", spend.num_rounds);
    println!("delta:            {delta:e}");
    match (budget, remaining) {
        (Some(budget), Some(remaining)) => {
            println!(
                "epsilon spent:    {:.4} of {:.4} ({remaining:.4} remaining)",
                spend.epsilon, budget.epsilon
            );
        }
        _ => println!("epsilon spent:    {:.4} (no budget given)", spend.epsilon),
    }
    if let Some(org_epsilon) = spend.org_epsilon {
        match org_remaining {
            Some(org_remaining) => {
                println!("org epsilon:      {org_epsilon:.4} spent ({org_remaining:.4} remaining)")
            }
            None => println!("org epsilon:      {org_epsilon:.4} spent"),
        }
    }
    Ok(())
}

/// Runs `fedshield privacy epsilon|sigma`.
pub fn privacy(args: PrivacyArgs) -> Result<()> {
    match args.command {
        PrivacyCommand::Epsilon(args) => {
            let mechanism = SubsampledGaussian {
                sampling_rate: args.q,
                noise_multiplier: args.sigma,
                num_steps: args.steps,
            };
            mechanism.validate()?;
            let mut accountant = RdpAccountant::new();
            accountant.compose(&mechanism)?;
            let tight = accountant.epsilon(args.delta, Conversion::Tight)?;
            let classic = accountant.epsilon(args.delta, Conversion::Classic)?;
            if args.json {
                let value = serde_json::json!({
                    "q": args.q,
                    "sigma": args.sigma,
                    "steps": args.steps,
                    "delta": args.delta,
                    "epsilon": tight.epsilon,
                    "optimal_order": tight.optimal_order,
                    "epsilon_classic_conversion": classic.epsilon,
                });
                println!("{value}");
            } else {
                println!(
                    "epsilon = {:.4} at delta = {:e} (Renyi order {}; classic conversion gives {:.4})",
                    tight.epsilon, args.delta, tight.optimal_order, classic.epsilon
                );
            }
        }
        PrivacyCommand::Sigma(args) => {
            let sigma = calibrate_noise_multiplier(args.q, args.steps, args.epsilon, args.delta)?;
            let achieved = fedshield_core::privacy::accountant::epsilon(
                &SubsampledGaussian {
                    sampling_rate: args.q,
                    noise_multiplier: sigma,
                    num_steps: args.steps,
                },
                args.delta,
            )?;
            if args.json {
                let value = serde_json::json!({
                    "q": args.q,
                    "steps": args.steps,
                    "epsilon": args.epsilon,
                    "delta": args.delta,
                    "sigma": sigma,
                    "achieved_epsilon": achieved,
                });
                println!("{value}");
            } else {
                println!(
                    "sigma = {sigma:.4} (gives epsilon = {achieved:.4} at delta = {:e})",
                    args.delta
                );
            }
        }
    }
    Ok(())
}
