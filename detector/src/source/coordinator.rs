//! The coordinator's published versions over gRPC (`GetStatus`, then
//! `DownloadModel`), sha256-checked against the model card in the download's
//! header and cached by version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedshield_core::ModelVersion;
use fedshield_core::card::ModelCard;
use fedshield_core::error::error_chain;
use fedshield_core::model::cache::ModelCache;
use fedshield_core::model::calibration::ThresholdCalibration;
use fedshield_core::model::weights::ModelWeights;
use fedshield_core::schema::Schema;
use fedshield_proto::download::download_model;
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info};

use crate::error::{DetectorError, Result};
use crate::release::{CardFacts, ModelRelease, ReleaseRules, load_schema_flag};
use crate::settings::CoordinatorSettings;

/// Largest gRPC message accepted from the coordinator: one model chunk and headroom.
const MAX_MESSAGE_BYTES: usize = fedshield_core::model::codec::MAX_CHUNK_BYTES + 64 * 1024;

/// Longest wait for the coordinator's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for one model download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The coordinator's published versions over gRPC, cached by version.
pub struct CoordinatorSource {
    url: String,
    client: FederationClient<Channel>,
    cache: ModelCache,
    cache_dir: PathBuf,
    /// `--version`: this version only, never switched.
    pinned: Option<ModelVersion>,
    /// sha256 of the schema events are read with; a newer version whose card
    /// declares another schema is refused.
    schema_sha256: String,
}

/// What the header of a version's download says about it.
struct PublishedCard {
    /// sha256 of the parameters.
    sha256: String,
    /// The feature schema of the model card, checked against the card's sha256 of it.
    schema: Option<Schema>,
    /// The card's alert threshold calibration (none from a coordinator that
    /// sends no card, or a card without one).
    calibration: Option<ThresholdCalibration>,
}

impl PublishedCard {
    /// Returns what the release of this version needs from its card.
    fn facts(&self) -> CardFacts {
        CardFacts {
            sha256: self.sha256.clone(),
            calibration: self.calibration.clone(),
        }
    }
}

impl CoordinatorSource {
    /// Connects to the coordinator, resolves the schema (its model card's;
    /// `schema_flag` may stand in for a card without one, and must be the
    /// same schema otherwise) and loads the first version: `--version`, or the latest.
    ///
    /// # Errors
    /// A coordinator that cannot be reached or refuses, a version that is
    /// not published or fails its checks, or a schema that does not fit.
    pub async fn open(
        settings: &CoordinatorSettings,
        schema_flag: Option<&Path>,
        threshold_flag: Option<f64>,
        alert_fpr: Option<f64>,
    ) -> Result<(Self, ReleaseRules, ModelRelease)> {
        let url = &settings.url;
        let mut source = CoordinatorSource::connect(settings).await?;
        let version = source.target_version().await?;
        let card = source.published_card(version).await?;
        let facts = card.facts();
        let schema = match (schema_flag, card.schema) {
            (Some(path), declared) => {
                let schema = load_schema_flag(path)?;
                if let Some(declared) = declared
                    && declared.sha256() != schema.sha256()
                {
                    return Err(DetectorError::SchemaFlagMismatch {
                        path: path.to_path_buf(),
                        flag_sha256: schema.sha256(),
                        version,
                        declared_sha256: declared.sha256(),
                        declared_by: "its model card".to_string(),
                    });
                }
                schema
            }
            (None, Some(declared)) => declared,
            (None, None) => {
                return Err(DetectorError::NoPublishedSchema {
                    version,
                    url: url.clone(),
                });
            }
        };
        source.schema_sha256 = schema.sha256();
        let rules = ReleaseRules {
            schema,
            threshold_flag,
            alert_fpr,
        };
        let weights = source.fetch(version, &card.sha256).await?;
        let release = rules.release(version, weights, None, facts)?;
        Ok((source, rules, release))
    }

    /// Returns true when `--version` pins the version: it is never switched.
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    async fn connect(settings: &CoordinatorSettings) -> Result<Self> {
        let url = &settings.url;
        let cache_dir = &settings.cache_dir;
        let tls = settings
            .tls
            .as_ref()
            .map(|files| files.load("detector"))
            .transpose()?;
        let mut endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|source| DetectorError::InvalidUrl {
                url: url.clone(),
                source,
            })?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(DetectorError::ApplyTls)?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024))
            .connect()
            .await
            .map_err(|error| DetectorError::Connect {
                url: url.clone(),
                reason: error_chain(&error),
            })?;
        std::fs::create_dir_all(cache_dir).map_err(|source| DetectorError::CreateCacheDir {
            directory: cache_dir.clone(),
            source,
        })?;
        Ok(CoordinatorSource {
            url: url.to_string(),
            client: FederationClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            cache: ModelCache::new(cache_dir),
            cache_dir: cache_dir.to_path_buf(),
            pinned: settings.version,
            schema_sha256: String::new(),
        })
    }

    /// Returns the latest published version and its sha256.
    async fn latest(&mut self) -> Result<(ModelVersion, String)> {
        let status = tokio::time::timeout(
            STATUS_TIMEOUT,
            self.client.get_status(pb::GetStatusRequest {}),
        )
        .await
        .map_err(|_| DetectorError::StatusTimeout {
            url: self.url.clone(),
            timeout_secs: STATUS_TIMEOUT.as_secs(),
        })?
        .map_err(|source| DetectorError::Status {
            url: self.url.clone(),
            source,
        })?
        .into_inner();
        Ok((
            ModelVersion(status.current_model_version),
            status.current_model_sha256,
        ))
    }

    /// Returns the version to start with: `--version`, or the latest.
    async fn target_version(&mut self) -> Result<ModelVersion> {
        let (latest, _) = self.latest().await?;
        match self.pinned {
            None => Ok(latest),
            Some(pinned) if pinned > latest => Err(DetectorError::NotPublished {
                pinned,
                url: self.url.clone(),
                latest,
            }),
            Some(pinned) => Ok(pinned),
        }
    }

    /// Returns the sha256 and feature schema of a published version: the
    /// header of its download carries its model card (the rest of the
    /// stream is not read).
    async fn published_card(&mut self, version: ModelVersion) -> Result<PublishedCard> {
        let mut stream = self
            .client
            .download_model(pb::DownloadModelRequest {
                model_version: version.0,
                preferred_chunk_params: 0,
            })
            .await
            .map_err(|source| DetectorError::DownloadRefused {
                url: self.url.clone(),
                version,
                source,
            })?
            .into_inner();
        let first = tokio::time::timeout(STATUS_TIMEOUT, stream.message())
            .await
            .map_err(|_| DetectorError::HeaderTimeout {
                url: self.url.clone(),
            })?
            .map_err(|source| DetectorError::DownloadStream { version, source })?;
        match first.and_then(|chunk| chunk.payload) {
            Some(pb::model_chunk::Payload::Header(header)) if header.model_version == version.0 => {
                card_of_header(&header, version, &self.url)
            }
            _ => Err(DetectorError::NoHeader {
                url: self.url.clone(),
                version,
            }),
        }
    }

    /// Returns a version's weights from the cache, or downloads (sha256-checked) and caches them.
    async fn fetch(&mut self, version: ModelVersion, sha256: &str) -> Result<ModelWeights> {
        let cache = self.cache.clone();
        let expected = sha256.to_string();
        let cached = tokio::task::spawn_blocking(move || cache.get(version, &expected))
            .await
            .map_err(|source| DetectorError::Task {
                task: "reading the model cache",
                source,
            })?;
        if let Some(weights) = cached {
            debug!(version = %version, "model version found in the cache");
            return Ok(weights);
        }
        let weights = tokio::time::timeout(
            DOWNLOAD_TIMEOUT,
            download_model(&mut self.client, version, sha256, &mut ()),
        )
        .await
        .map_err(|_| DetectorError::DownloadTimeout {
            version,
            url: self.url.clone(),
            timeout_secs: DOWNLOAD_TIMEOUT.as_secs(),
        })?
        .map_err(|source| DetectorError::Download {
            version,
            url: self.url.clone(),
            source,
        })?;
        let cache = self.cache.clone();
        let to_cache = weights.clone();
        tokio::task::spawn_blocking(move || cache.put(version, &to_cache))
            .await
            .map_err(|source| DetectorError::Task {
                task: "writing the model cache",
                source,
            })?
            .map_err(|source| DetectorError::CacheModel {
                version,
                directory: self.cache_dir.clone(),
                source,
            })?;
        info!(version = %version, sha256 = %sha256, "model version downloaded");
        Ok(weights)
    }

    /// Returns the latest version if it is newer than `current`.
    ///
    /// # Errors
    /// A coordinator that does not answer, or a version that fails its checks.
    pub async fn newer_release(
        &mut self,
        current: ModelVersion,
        rules: &ReleaseRules,
    ) -> Result<Option<ModelRelease>> {
        let (latest, _) = self.latest().await?;
        if latest <= current {
            return Ok(None);
        }
        let refused = |source: DetectorError| DetectorError::Refused {
            version: latest,
            source: Box::new(source),
        };
        let card = self.published_card(latest).await.map_err(refused)?;
        if let Some(schema) = &card.schema
            && schema.sha256() != self.schema_sha256
        {
            return Err(refused(DetectorError::SchemaChanged {
                declared: schema.sha256(),
                in_use: self.schema_sha256.clone(),
            }));
        }
        let weights = self.fetch(latest, &card.sha256).await?;
        rules
            .release(latest, weights, None, card.facts())
            .map(Some)
            .map_err(refused)
    }
}

/// Reads the model card a download header carries.
fn card_of_header(
    header: &pb::ModelHeader,
    version: ModelVersion,
    url: &str,
) -> Result<PublishedCard> {
    if header.card_json.is_empty() {
        // A coordinator from before cards travelled with downloads.
        return Ok(PublishedCard {
            sha256: header.sha256.clone(),
            schema: None,
            calibration: None,
        });
    }
    let card: ModelCard =
        serde_json::from_str(&header.card_json).map_err(|source| DetectorError::PublishedCard {
            url: url.to_string(),
            version,
            source,
        })?;
    if card.sha256 != header.sha256 || card.version != version.0 {
        return Err(DetectorError::PublishedCardMismatch {
            url: url.to_string(),
            version,
            card_version: card.version,
            card_sha256: card.sha256,
            header_sha256: header.sha256.clone(),
        });
    }
    let schema = match &card.feature_schema {
        None => None,
        Some(text) => {
            let schema =
                Schema::from_toml_str(text).map_err(|source| DetectorError::PublishedSchema {
                    url: url.to_string(),
                    version,
                    source,
                })?;
            if let Some(expected) = &card.feature_schema_sha256
                && *expected != schema.sha256()
            {
                return Err(DetectorError::PublishedSchemaSha256 {
                    url: url.to_string(),
                    version,
                    expected: expected.clone(),
                    actual: schema.sha256(),
                });
            }
            Some(schema)
        }
    };
    Ok(PublishedCard {
        sha256: card.sha256,
        schema,
        calibration: card.calibration,
    })
}
