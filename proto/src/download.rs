//! Downloading a published model version from the coordinator
//! (`DownloadModel`): the header, then the parameters in chunks, decoded,
//! validated and sha256-checked in one pass. Participants and detectors both
//! download this way.

use fedshield_core::model::codec::{ChunkAssembler, DEFAULT_CHUNK_PARAMS};
use fedshield_core::model::weights::{ModelWeights, ParamsSha256};
use fedshield_core::{CoreError, ModelSpec, ModelVersion};
use tonic::transport::Channel;
use tracing::debug;

use crate::v1 as pb;
use crate::v1::federation_client::FederationClient;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("coordinator refused the call: {0}")]
    Refused(#[from] tonic::Status),
    #[error("protocol violation by the coordinator: {0}")]
    Protocol(String),
    #[error("downloaded model version {version} has sha256 {actual}, expected {expected}")]
    ChecksumMismatch {
        version: ModelVersion,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Receives the progress of a download: counts of bytes only.
pub trait DownloadProgress {
    /// Called once the header has been read: the download of `version` will
    /// carry `total_bytes` bytes of parameters.
    fn start(&mut self, version: ModelVersion, total_bytes: u64) {
        let _ = (version, total_bytes);
    }

    /// Called after each chunk of `num_bytes` bytes, `done` of `total` so far.
    fn advance(&mut self, num_bytes: u64, done: u64, total: u64) {
        let _ = (num_bytes, done, total);
    }
}

/// No progress shown.
impl DownloadProgress for () {}

/// Downloads one model version and checks it against `expected_sha256` and
/// its own header.
///
/// # Errors
/// A refused call, a malformed stream, or [`DownloadError::ChecksumMismatch`].
pub async fn download_model(
    client: &mut FederationClient<Channel>,
    version: ModelVersion,
    expected_sha256: &str,
    progress: &mut impl DownloadProgress,
) -> Result<ModelWeights, DownloadError> {
    download_model_into(client, version, expected_sha256, Vec::new(), progress).await
}

/// [`download_model`] into `buffer`'s memory (its contents are dropped).
/// The sha256 is computed from the chunks as they arrive, in the same pass
/// as decoding and validation.
///
/// # Errors
/// As [`download_model`].
pub async fn download_model_into(
    client: &mut FederationClient<Channel>,
    version: ModelVersion,
    expected_sha256: &str,
    buffer: Vec<f32>,
    progress: &mut impl DownloadProgress,
) -> Result<ModelWeights, DownloadError> {
    let mut stream = client
        .download_model(pb::DownloadModelRequest {
            model_version: version.0,
            preferred_chunk_params: DEFAULT_CHUNK_PARAMS as u32,
        })
        .await?
        .into_inner();
    let header = match stream.message().await?.and_then(|chunk| chunk.payload) {
        Some(pb::model_chunk::Payload::Header(header)) => header,
        _ => {
            return Err(DownloadError::Protocol(
                "model download did not start with a header".into(),
            ));
        }
    };
    if header.model_version != version.0 {
        return Err(DownloadError::Protocol(format!(
            "asked for model version {version}, got {}",
            header.model_version
        )));
    }
    let spec_message = header
        .spec
        .ok_or_else(|| DownloadError::Protocol("model header has no spec".into()))?;
    let spec = ModelSpec::from(spec_message);
    spec.validate()?;
    if header.num_params != spec.num_params() as u64 {
        return Err(DownloadError::Protocol(format!(
            "model header declares {} parameters, its spec has {}",
            header.num_params,
            spec.num_params()
        )));
    }
    let mut assembler = ChunkAssembler::with_buffer(buffer, spec.num_params());
    let mut hasher = ParamsSha256::new();
    let total_bytes = header.num_params * 4;
    progress.start(version, total_bytes);
    let mut num_bytes = 0u64;
    while let Some(chunk) = stream.message().await? {
        match chunk.payload {
            Some(pb::model_chunk::Payload::Data(data)) => {
                hasher.update(&data);
                assembler.push(&data)?;
                num_bytes += data.len() as u64;
                progress.advance(data.len() as u64, num_bytes, total_bytes);
            }
            _ => {
                return Err(DownloadError::Protocol(
                    "unexpected message in model download".into(),
                ));
            }
        }
    }
    let params = assembler.finish()?;
    let actual = hasher.finish();
    if actual != expected_sha256 || actual != header.sha256 {
        return Err(DownloadError::ChecksumMismatch {
            version,
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    debug!(version = %version, num_params = params.len(), "model downloaded");
    Ok(ModelWeights::new(spec, params)?)
}
