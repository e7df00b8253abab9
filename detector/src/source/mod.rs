//! Model sources: where verified model versions come from, the first one
//! and, with follow mode, newer ones.
//!
//! - [`file`]: a local model file checked against its card; its directory
//!   is watched for newer versions.
//! - [`coordinator`]: the coordinator's published versions over gRPC, cached by version.

pub mod coordinator;
pub mod file;

use std::sync::Arc;
use std::time::Duration;

use fedshield_core::error::error_chain;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::{DetectorError, Result};
use crate::release::{ModelRelease, ReleaseRules};
use crate::settings::{DetectSettings, ModelSourceSettings};
use coordinator::CoordinatorSource;
use file::LocalSource;

/// Where model versions come from.
pub enum ModelSource {
    Local(LocalSource),
    Coordinator(CoordinatorSource),
}

/// Opens the model source the settings name and loads the first version.
///
/// # Errors
/// A model that cannot be loaded or fails its checks, a schema that does
/// not fit it, or a coordinator that cannot be reached.
pub async fn open_model_source(
    settings: &DetectSettings,
) -> Result<(ModelSource, ReleaseRules, ModelRelease)> {
    match &settings.model_source {
        ModelSourceSettings::File { model, card } => {
            let model_path = model.clone();
            let card_path = card.clone();
            let schema_flag = settings.schema.clone();
            let threshold_flag = settings.threshold;
            let alert_fpr = settings.alert_fpr;
            let (source, rules, release) = tokio::task::spawn_blocking(move || {
                LocalSource::open(
                    model_path,
                    card_path,
                    schema_flag,
                    threshold_flag,
                    alert_fpr,
                )
            })
            .await
            .map_err(|source| DetectorError::Task {
                task: "loading the model",
                source,
            })??;
            Ok((ModelSource::Local(source), rules, release))
        }
        ModelSourceSettings::Coordinator(coordinator) => {
            let (source, rules, release) = CoordinatorSource::open(
                coordinator,
                settings.schema.as_deref(),
                settings.threshold,
                settings.alert_fpr,
            )
            .await?;
            Ok((ModelSource::Coordinator(source), rules, release))
        }
    }
}

impl ModelSource {
    /// Returns true if newer versions may replace the current one.
    pub fn can_switch(&self) -> bool {
        match self {
            ModelSource::Local(_) => true,
            ModelSource::Coordinator(source) => !source.is_pinned(),
        }
    }

    /// Looks for a newer version every `poll_interval` and publishes each one
    /// that passes its checks to `sender`; runs until the receiver is gone.
    /// A version that fails is logged and scoring goes on with the current one.
    pub async fn watch(
        mut self,
        rules: ReleaseRules,
        sender: watch::Sender<Arc<ModelRelease>>,
        poll_interval: Duration,
    ) {
        let rules = Arc::new(rules);
        let mut current = sender.borrow().version;
        loop {
            tokio::time::sleep(poll_interval).await;
            if sender.is_closed() {
                return;
            }
            let found = match &mut self {
                ModelSource::Local(source) => source.newer_release(current, &rules).await,
                ModelSource::Coordinator(source) => source.newer_release(current, &rules).await,
            };
            match found {
                Ok(None) => {}
                Ok(Some(release)) => {
                    debug!(version = %release.version, "newer model version loaded");
                    current = release.version;
                    sender.send_replace(Arc::new(release));
                }
                Err(error) => {
                    warn!(error = %error_chain(&error), "model version check failed; scoring continues with the current version");
                }
            }
        }
    }
}
