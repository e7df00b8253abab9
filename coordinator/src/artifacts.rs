//! Where published model artifacts live: any store of the `object_store`
//! crate, chosen by URL, so that an operator who outgrows one machine changes
//! a URL, not code.
//!
//! - a path or `file:///abs/path`: the local filesystem (the default, under
//!   the data directory); every write is staged, fsynced and renamed, so a
//!   crash leaves either the old object or the new one, never half of one;
//! - `s3://bucket[/prefix]`: Amazon S3 or any S3-compatible store. Credentials,
//!   region and endpoint come from the standard `AWS_*` environment variables
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//!   `AWS_ENDPOINT` for MinIO/Ceph/…, `AWS_ALLOW_HTTP=true` for a plain-HTTP
//!   endpoint). An S3 PUT is atomic: readers see the old object or the new one;
//! - `memory://`: in process memory (tests, throwaway runs).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{CoordinatorError, Result};

/// A store of named artifacts (flat names such as `model-v00000003.json`)
/// under one location.
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The location as the operator gave it, for messages.
    location: String,
    /// The directory of a local store, where objects are plain files that
    /// can also be written in place (see [`ArtifactStore::local_path`]).
    local_directory: Option<PathBuf>,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("location", &self.location)
            .finish()
    }
}

impl ArtifactStore {
    /// Returns the store on the local filesystem under `directory`, creating
    /// the directory if needed.
    ///
    /// # Errors
    /// [`CoordinatorError::ArtifactStoreConfig`] if the directory cannot be
    /// created.
    pub fn local(directory: &Path) -> Result<Self> {
        std::fs::create_dir_all(directory).map_err(|error| {
            CoordinatorError::ArtifactStoreConfig(format!(
                "cannot create the artifact directory {}: {error}",
                directory.display()
            ))
        })?;
        let store = LocalFileSystem::new_with_prefix(directory)
            .map_err(|error| {
                CoordinatorError::ArtifactStoreConfig(format!(
                    "cannot open the artifact directory {}: {error}",
                    directory.display()
                ))
            })?
            .with_fsync(true);
        Ok(ArtifactStore {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            location: directory.display().to_string(),
            local_directory: Some(directory.to_path_buf()),
        })
    }

    /// Returns the store a URL names (see the module documentation);
    /// a string without a scheme is a local directory.
    ///
    /// # Errors
    /// [`CoordinatorError::ArtifactStoreConfig`] naming what is wrong with the
    /// URL or the S3 settings.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, &[])
    }

    /// As [`ArtifactStore::from_url`], with S3 settings that take precedence
    /// over the environment: `object_store`'s configuration keys, such as
    /// `aws_endpoint`, `aws_region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_allow_http`.
    ///
    /// # Errors
    /// As [`ArtifactStore::from_url`]; an unknown key is named.
    pub fn from_url_with(url: &str, s3_options: &[(&str, &str)]) -> Result<Self> {
        let invalid =
            |reason: String| CoordinatorError::ArtifactStoreConfig(format!("{url:?}: {reason}"));
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err(invalid("the artifact store location is empty".to_string()));
            }
            return Self::local(Path::new(url));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(
                        "a file URL needs an absolute path (file:///var/lib/fedshield/models)"
                            .to_string(),
                    ));
                }
                Self::local(&PathBuf::from(rest))
            }
            "memory" => Ok(ArtifactStore {
                store: Arc::new(InMemory::new()),
                prefix: prefix_of(rest).map_err(invalid)?,
                location: url.to_string(),
                local_directory: None,
            }),
            "s3" | "s3a" => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(
                        "the URL names no bucket (s3://bucket/prefix)".into(),
                    ));
                }
                install_tls_provider();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in s3_options {
                    let key: AmazonS3ConfigKey = key
                        .parse()
                        .map_err(|error| invalid(format!("S3 option {key:?}: {error}")))?;
                    builder = builder.with_config(key, *value);
                }
                let store = builder
                    .build()
                    .map_err(|error| invalid(format!("S3 settings: {error}")))?;
                Ok(ArtifactStore {
                    store: Arc::new(store),
                    prefix: prefix_of(path).map_err(invalid)?,
                    location: url.to_string(),
                    local_directory: None,
                })
            }
            other => Err(invalid(format!(
                "unsupported scheme {other:?}: use a directory, file:///path, s3://bucket/prefix or memory://"
            ))),
        }
    }

    /// Returns the location as configured.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Returns the file that holds `name` in a local store, `None` for other
    /// stores. Writing it with [`fedshield_core::fsutil::write_atomic_with`]
    /// (staged, fsynced, renamed, directory fsynced) is as durable and
    /// atomic as [`ArtifactStore::put`], and lets a large object be streamed
    /// to disk instead of built in memory first.
    pub fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.local_directory
            .as_ref()
            .map(|directory| directory.join(name))
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    fn error(&self, name: &str, error: impl fmt::Display) -> CoordinatorError {
        CoordinatorError::Artifact {
            location: format!("{}/{name}", self.location.trim_end_matches('/')),
            reason: error.to_string(),
        }
    }

    /// Writes `name` as one atomic object.
    ///
    /// # Errors
    /// [`CoordinatorError::Artifact`] if the store refuses the write.
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from_bytes(bytes))
            .await
            .map_err(|error| self.error(name, error))?;
        Ok(())
    }

    /// Reads `name`; `None` if it does not exist.
    ///
    /// # Errors
    /// [`CoordinatorError::Artifact`] if it exists and cannot be read.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let result = match self.store.get(&self.path(name)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.error(name, error)),
        };
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|error| self.error(name, error))
    }

    /// Returns the names of all objects directly under the store's location.
    ///
    /// # Errors
    /// [`CoordinatorError::Artifact`] if the store cannot be listed.
    pub async fn list(&self) -> Result<Vec<String>> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|error| self.error("", error))?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|object| object.location.filename().map(str::to_string))
            .collect())
    }

    /// Deletes `name` (tests and tools; the coordinator never deletes a
    /// published version).
    ///
    /// # Errors
    /// [`CoordinatorError::Artifact`] if the store refuses.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.store
            .delete(&self.path(name))
            .await
            .map_err(|error| self.error(name, error))
    }
}

/// Parses the key prefix part of a URL.
fn prefix_of(path: &str) -> std::result::Result<ObjectPath, String> {
    ObjectPath::parse(path.trim_matches('/'))
        .map_err(|error| format!("invalid key prefix {path:?}: {error}"))
}

/// S3 over HTTPS uses rustls with the process's default provider: ring,
/// as everywhere else in the binary.
fn install_tls_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another component may have installed it already; either way ring
        // (the only provider compiled in) is the one in use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_round_trips_lists_and_reports_missing_objects() {
        let directory = tempfile::tempdir().unwrap();
        let store = ArtifactStore::from_url(directory.path().to_str().unwrap()).unwrap();
        assert_eq!(store.get("absent.json").await.unwrap(), None);
        store
            .put("model-v00000000.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        store
            .put("model-v00000000.json", Bytes::from_static(b"{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(
            store.get("model-v00000000.json").await.unwrap().unwrap(),
            Bytes::from_static(b"{\"a\":1}")
        );
        // The object is a plain file the operator can inspect, and no
        // staging file is left beside it.
        let names: Vec<String> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["model-v00000000.json".to_string()]);
        assert_eq!(
            store.list().await.unwrap(),
            vec!["model-v00000000.json".to_string()]
        );
    }

    #[tokio::test]
    async fn file_and_memory_urls_work_and_prefixes_separate_stores() {
        let directory = tempfile::tempdir().unwrap();
        let url = format!("file://{}", directory.path().display());
        let store = ArtifactStore::from_url(&url).unwrap();
        store.put("a", Bytes::from_static(b"1")).await.unwrap();
        assert!(directory.path().join("a").is_file());

        let memory = ArtifactStore::from_url("memory://models/v1").unwrap();
        memory.put("b", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(memory.list().await.unwrap(), vec!["b".to_string()]);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("", "empty"),
            ("ftp://host/models", "unsupported scheme \"ftp\""),
            ("file://relative/dir", "absolute path"),
            ("s3://", "no bucket"),
        ] {
            let error = ArtifactStore::from_url(url).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }
}
