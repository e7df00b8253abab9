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
    AlertFormatName, AlertOptions, CoordinatorSettings, DetectSettings, ModelSourceSettings,
    OutputSettings, SinkOptions, SinkSpec,
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
        output: output_settings(args)?,
        metrics_listen: args.metrics_listen,
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

/// Returns the format and sinks the flags name.
///
/// # Errors
/// An unknown format, sink or facility, a webhook without its secret, or a
/// secret file that cannot be read; each names its flag.
fn output_settings(args: &DetectArgs) -> Result<OutputSettings> {
    let format: AlertFormatName = args
        .alert_format
        .parse()
        .with_context(|| format!("--alert-format {:?}", args.alert_format))?;
    let sinks = args
        .sinks
        .iter()
        .map(|text| {
            text.parse::<SinkSpec>()
                .with_context(|| format!("--sink {text:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sink_options = SinkOptions {
        queue_capacity_records: usize::try_from(args.sink_queue)
            .context("--sink-queue is too large")?,
        syslog_tls_ca_file: args.sink_ca.clone(),
        webhook_tls_ca_file: args.sink_ca.clone(),
        ..SinkOptions::default()
    };
    sink_options.syslog_facility = fedshield_detector::sinks::syslog_facility_code(
        &args.syslog_facility,
    )
    .with_context(|| {
        format!(
            "--syslog-facility {:?} is not a syslog facility (kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0 … local7)",
            args.syslog_facility
        )
    })?;
    if let Some(path) = &args.webhook_secret_file {
        let mut secret = std::fs::read(path)
            .with_context(|| format!("failed to read --webhook-secret-file {}", path.display()))?;
        while secret
            .last()
            .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
        {
            secret.pop();
        }
        if secret.is_empty() {
            bail!("--webhook-secret-file {} is empty", path.display());
        }
        sink_options.webhook_secret = Some(secret);
    }
    let has_webhook = sinks
        .iter()
        .any(|spec| matches!(spec, SinkSpec::Webhook { .. }));
    if has_webhook && sink_options.webhook_secret.is_none() {
        bail!(
            "an https:// --sink needs --webhook-secret-file: every request is signed with its HMAC-SHA256"
        );
    }
    let has_syslog_tls = sinks
        .iter()
        .any(|spec| spec.to_string().starts_with("syslog+tls"));
    if has_syslog_tls && args.sink_ca.is_none() {
        bail!("a syslog+tls:// --sink needs --sink-ca, the CA its server's certificate chains to");
    }
    Ok(OutputSettings {
        format,
        sinks,
        sink_options,
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
