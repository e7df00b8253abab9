//! Checking a round's feature schema against the local one: a participant
//! whose data was read with another schema must not train, and its decline
//! names what differs, from the schema the base model's card carries. A
//! participant whose schema has no labels trains only an autoencoder.

use fedshield_core::schema::Schema;
use fedshield_core::schema::diff::schema_differences;
use fedshield_core::{ModelSpec, ModelVersion};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;
use tracing::debug;

use crate::config::ParticipantConfig;
use crate::error::{ParticipantError, Result};

/// Checks the round's schema (`federation_sha256`, empty when the
/// coordinator has none) against the local one.
///
/// # Errors
/// [`ParticipantError::SchemaMismatch`] when they differ, listing the
/// differences (or, when the card's schema cannot be read, saying why).
pub(crate) async fn check_round_schema(
    client: &mut FederationClient<Channel>,
    config: &ParticipantConfig,
    federation_sha256: &str,
    base_version: ModelVersion,
) -> Result<()> {
    let Some(local_sha256) = &config.feature_schema_sha256 else {
        return Ok(());
    };
    if federation_sha256.is_empty() || federation_sha256 == local_sha256 {
        return Ok(());
    }
    let differences = match &config.feature_schema_toml {
        Some(local_toml) => match federation_schema(client, base_version).await {
            Ok(federation_toml) => schema_differences(&federation_toml, local_toml)
                .unwrap_or_else(|problem| vec![problem]),
            Err(problem) => {
                debug!(problem = %problem, "the federation's schema could not be compared");
                vec![format!(
                    "the federation's schema could not be read to compare: {problem}"
                )]
            }
        },
        None => vec!["the local schema's text is not known to compare".to_string()],
    };
    Err(ParticipantError::SchemaMismatch {
        federation_sha256: federation_sha256.to_string(),
        local_sha256: local_sha256.clone(),
        differences,
    })
}

/// Refuses to train a model that learns from labels (a classifier) on local
/// data that the local schema leaves unlabelled.
///
/// # Errors
/// [`ParticipantError::Config`] saying that the schema has no label column
/// and that only the autoencoder trains on unlabelled data.
pub(crate) fn check_labels_for_model(config: &ParticipantConfig, spec: &ModelSpec) -> Result<()> {
    if spec.is_autoencoder() {
        return Ok(());
    }
    let Some(local_toml) = &config.feature_schema_toml else {
        return Ok(());
    };
    let refusal = Schema::from_toml_str(local_toml)
        .ok()
        .and_then(|schema| schema.classifier_refusal());
    match refusal {
        Some(reason) => Err(ParticipantError::Config(format!(
            "the federation trains a {}: {reason}",
            spec.kind
        ))),
        None => Ok(()),
    }
}

/// Returns the feature schema (TOML) the card of model `version` carries,
/// reading only the download's first message.
async fn federation_schema(
    client: &mut FederationClient<Channel>,
    version: ModelVersion,
) -> std::result::Result<String, String> {
    let mut stream = client
        .download_model(pb::DownloadModelRequest {
            model_version: version.0,
            preferred_chunk_params: 0,
        })
        .await
        .map_err(|status| format!("model download refused: {}", status.message()))?
        .into_inner();
    let header = match stream.message().await {
        Ok(Some(pb::ModelChunk {
            payload: Some(pb::model_chunk::Payload::Header(header)),
        })) => header,
        Ok(_) => return Err("the model download did not start with a header".to_string()),
        Err(status) => return Err(format!("model download failed: {}", status.message())),
    };
    // The rest of the stream is not needed: dropping it cancels the call.
    drop(stream);
    let card: serde_json::Value = serde_json::from_str(&header.card_json)
        .map_err(|error| format!("the model card is not JSON: {error}"))?;
    match card.get("feature_schema") {
        Some(serde_json::Value::String(toml)) => Ok(toml.clone()),
        _ => Err(format!(
            "the card of model version {version} has no feature schema"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_schema(schema_toml: &str) -> ParticipantConfig {
        let mut config = ParticipantConfig::for_test(
            "http://127.0.0.1:1".to_string(),
            fedshield_core::ParticipantId::new("acme").unwrap(),
            std::path::PathBuf::from("unused"),
        );
        config.feature_schema_toml = Some(schema_toml.to_string());
        config
    }

    #[test]
    fn a_classifier_round_is_refused_on_unlabelled_data_and_an_autoencoder_is_not() {
        let unlabelled = config_with_schema(
            "columns = [{ name = \"x\", kind = \"numeric\", transforms = [{ clamp = { min = 0.0, max = 1.0 } }] }]",
        );
        let classifier = ModelSpec::mlp(1, vec![4], 2);
        let error = check_labels_for_model(&unlabelled, &classifier)
            .unwrap_err()
            .to_string();
        assert!(
            error
                .contains("the federation trains a mlp-classifier: the schema has no label column"),
            "{error}"
        );
        assert!(
            error.contains("only the autoencoder trains on unlabelled data"),
            "{error}"
        );
        let autoencoder = ModelSpec::autoencoder(1, vec![4]);
        assert!(check_labels_for_model(&unlabelled, &autoencoder).is_ok());
        let labelled = config_with_schema(&Schema::for_test().to_toml_string());
        assert!(check_labels_for_model(&labelled, &classifier).is_ok());
    }
}
