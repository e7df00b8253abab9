//! `fedshield detect`: the flags become the detector's settings, and
//! [`fedshield_detector::run`] scores the events until the input ends or a
//! SIGINT or SIGTERM arrives.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use fedshield_core::ModelVersion;
use fedshield_core::model::calibration::{STANDARD_ALERT_FPRS, standard_alert_fpr};
use fedshield_core::schema::FileFormat;
use fedshield_detector::output::SuppressionSettings;
use fedshield_detector::{
    AlertOptions, CoordinatorSettings, DetectSettings, ModelSourceSettings, OutputSettings,
};
use fedshield_proto::tls::{ClientTlsFiles, client_tls_files};

use crate::cli::{DetectArgs, EventFormat};

/// Runs `fedshield detect` until the input ends (or forever with `--follow`
/// on a file). SIGINT or SIGTERM stops it after the read under way, with
/// what was read scored and written, and exit status 0.
///
/// # Errors
/// Bad flags, and the errors of [`fedshield_detector::run`].
pub async fn run(args: DetectArgs) -> Result<()> {
    let settings = detect_settings(&args)?;
    fedshield_detector::run(settings, crate::shutdown::on_signal()).await?;
    Ok(())
}

/// Checks the settings against each other, reading no file: before scoring and for
/// `--print-config`.
///
/// # Errors
/// The first problem, naming its flags.
pub fn check_settings(args: &DetectArgs) -> Result<()> {
    if let Some(threshold) = args.threshold
        && !threshold.is_finite()
    {
        bail!("--threshold must be a finite number, got {threshold}");
    }
    if let Some(alert_fpr) = args.alert_fpr
        && standard_alert_fpr(alert_fpr).is_none()
    {
        bail!(
            "--alert-fpr {alert_fpr} is not a calibrated false-positive rate: model cards calibrate {}",
            STANDARD_ALERT_FPRS
                .map(|target| target.to_string())
                .join(", ")
        );
    }
    if let Some(url) = &args.coordinator {
        detector_tls_files(args, url)?;
    }
    Ok(())
}

/// Returns the detector's settings from the flags.
///
/// # Errors
/// As [`check_settings`], and a model source that is not exactly one of
/// `--model` and `--coordinator` (with `--cache-dir`).
fn detect_settings(args: &DetectArgs) -> Result<DetectSettings> {
    check_settings(args)?;
    let batch_events = usize::try_from(args.batch_size).context("--batch-size is too large")?;
    let model_source = match (&args.model, &args.coordinator) {
        (Some(model), None) => ModelSourceSettings::File {
            model: model.clone(),
            card: args
                .card
                .clone()
                .unwrap_or_else(|| model.with_extension("json")),
        },
        (None, Some(url)) => {
            let cache_dir = args
                .cache_dir
                .clone()
                .context("--coordinator needs --cache-dir")?;
            ModelSourceSettings::Coordinator(CoordinatorSettings {
                url: url.clone(),
                tls: detector_tls_files(args, url)?,
                version: args.version.map(ModelVersion),
                cache_dir,
            })
        }
        _ => bail!("give either --model or --coordinator"),
    };
    Ok(DetectSettings {
        model_source,
        schema: args.schema.clone(),
        events: args.events.clone(),
        format: args.format.map(|format| match format {
            EventFormat::Csv => FileFormat::Csv,
            EventFormat::Jsonl => FileFormat::Jsonl,
            EventFormat::Zeek => FileFormat::Zeek,
        }),
        follow: args.follow,
        threshold: args.threshold,
        alert_fpr: args.alert_fpr.and_then(standard_alert_fpr),
        poll_interval: Duration::from_secs(args.poll_secs),
        batch_events,
        output: OutputSettings::JsonLinesStdout,
        alerts: AlertOptions {
            alerts_only: args.alerts_only,
            explain_top_k: usize::try_from(args.explain_top_k)
                .context("--explain-top-k is too large")?,
            include_fields: args
                .include_fields
                .iter()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .collect(),
            suppression: match (&args.suppress_key, args.suppress_secs) {
                (Some(key), Some(secs)) => Some(SuppressionSettings {
                    key: key.clone(),
                    window: Duration::from_secs(secs),
                }),
                _ => None,
            },
        },
        flush_wait: Duration::from_secs(args.flush_secs),
    })
}

/// Returns the client TLS files the flags name (`None` with `--insecure`).
fn detector_tls_files(args: &DetectArgs, url: &str) -> Result<Option<ClientTlsFiles>> {
    let files = client_tls_files(
        url,
        args.insecure,
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_server_name.as_deref(),
    )?;
    Ok(files)
}
