//! A model's parameters as one flat float32 vector, with its sha256 and its
//! safetensors file format.

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorInfo, TensorView};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::fsutil::{StagedFile, UNCACHED_ALIGN_BYTES, UncachedFile, write_atomic_with};
use crate::model::ModelSpec;
use crate::model::codec;

/// safetensors metadata key holding the model spec as JSON.
pub const SPEC_METADATA_KEY: &str = "fedshield.spec";

/// The tensors of a model as safetensors views, by name, in file order.
type NamedTensorViews<'data> = Vec<(String, TensorView<'data>)>;

/// A model: its architecture and its parameters in [`ModelSpec::tensor_specs`] order.
#[derive(Clone, PartialEq)]
pub struct ModelWeights {
    pub spec: ModelSpec,
    pub params: Vec<f32>,
}

impl std::fmt::Debug for ModelWeights {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ModelWeights")
            .field("spec", &self.spec)
            .field("num_params", &self.params.len())
            .finish()
    }
}

impl ModelWeights {
    /// Returns weights after checking the spec and the parameter count.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`] or [`CoreError::ParamCountMismatch`].
    pub fn new(spec: ModelSpec, params: Vec<f32>) -> Result<Self> {
        spec.validate()?;
        let expected = spec.num_params();
        if params.len() != expected {
            return Err(CoreError::ParamCountMismatch {
                expected: expected as u64,
                actual: params.len() as u64,
            });
        }
        Ok(ModelWeights { spec, params })
    }

    /// Returns a freshly initialized model: weights and biases drawn from
    /// U(-1/sqrt(d_in), 1/sqrt(d_in)) (Kaiming-uniform, as PyTorch and burn do for
    /// linear layers), deterministic for a seed so every coordinator replica
    /// starts from the same version 0.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`].
    pub fn init(spec: ModelSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = Vec::with_capacity(spec.num_params());
        if spec.is_benchmark_flat() {
            params.extend((0..spec.num_params()).map(|_| rng.random_range(-0.1f32..0.1)));
        }
        for (d_in, d_out) in spec.layer_dims() {
            let bound = 1.0 / (d_in as f32).sqrt();
            for _ in 0..(d_in * d_out + d_out) {
                params.push(rng.random_range(-bound..bound));
            }
        }
        Ok(ModelWeights { spec, params })
    }

    /// Returns the sha256 (lowercase hex) of the parameters' little-endian bytes.
    pub fn sha256(&self) -> String {
        params_sha256(&self.params)
    }

    /// Returns the model as a safetensors file image, with the spec in the
    /// metadata under [`SPEC_METADATA_KEY`] plus `extra_metadata`.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`] if the tensors cannot be laid out.
    pub fn to_safetensors(&self, extra_metadata: HashMap<String, String>) -> Result<Vec<u8>> {
        let (views, metadata) = self.safetensors_views(extra_metadata)?;
        safetensors::serialize(views, Some(metadata))
            .map_err(|error| CoreError::InvalidSpec(format!("safetensors serialization: {error}")))
    }

    /// Returns the tensors as safetensors views into the parameters, and the
    /// file's metadata.
    fn safetensors_views(
        &self,
        extra_metadata: HashMap<String, String>,
    ) -> Result<(NamedTensorViews<'_>, HashMap<String, String>)> {
        let bytes = codec::params_as_le_bytes(&self.params);
        let views = self
            .safetensors_layout()?
            .into_iter()
            .map(|(name, shape, byte_range)| {
                TensorView::new(Dtype::F32, shape, &bytes[byte_range])
                    .map(|view| (name.clone(), view))
                    .map_err(|error| CoreError::InvalidSpec(format!("tensor {name}: {error}")))
            })
            .collect::<Result<_>>()?;
        Ok((views, self.file_metadata(extra_metadata)))
    }

    /// Returns a file's metadata: `extra_metadata` plus the spec as JSON
    /// under [`SPEC_METADATA_KEY`].
    fn file_metadata(&self, extra_metadata: HashMap<String, String>) -> HashMap<String, String> {
        let mut metadata = extra_metadata;
        metadata.insert(
            SPEC_METADATA_KEY.to_string(),
            serde_json::to_string(&self.spec).expect("a model spec serializes to json"),
        );
        metadata
    }

    /// Writes the model as a safetensors file, atomically, streaming the
    /// parameters to the file (no file image in memory).
    ///
    /// # Errors
    /// [`CoreError::Io`] if the file cannot be written.
    pub fn save_safetensors(
        &self,
        path: &Path,
        extra_metadata: HashMap<String, String>,
    ) -> Result<()> {
        let (views, metadata) = self.safetensors_views(extra_metadata)?;
        write_atomic_with(path, |temp_path| {
            safetensors::serialize_to_file(views, Some(metadata), temp_path)
                .map_err(std::io::Error::other)
        })
    }

    /// Writes the model as a safetensors file, atomically, as
    /// [`Self::save_safetensors`] does, and returns the sha256 of the
    /// parameters (as [`Self::sha256`]), which the file's metadata also holds
    /// under `sha256_key`. See [`Self::stage_safetensors_hashed`].
    ///
    /// # Errors
    /// As [`Self::stage_safetensors_hashed`], and [`CoreError::Io`] if the
    /// file cannot be synced or renamed into place.
    pub fn save_safetensors_hashed(
        &self,
        path: &Path,
        extra_metadata: HashMap<String, String>,
        sha256_key: &str,
    ) -> Result<String> {
        let (staged, sha256) = self.stage_safetensors_hashed(path, extra_metadata, sha256_key)?;
        staged.commit_alone()?;
        Ok(sha256)
    }

    /// Writes the model as a safetensors file staged beside `path` (not
    /// yet synced nor renamed, see [`StagedFile`]) and returns it with the
    /// sha256 of the parameters (as [`Self::sha256`]), which the file's
    /// metadata also holds under `sha256_key`. A caller that commits the
    /// file together with others (the model registry: weights and card)
    /// syncs and renames it itself.
    ///
    /// The sha256 is computed on a second thread while this one writes the
    /// parameters (bypassing the page cache where it can, see
    /// [`UncachedFile`]), so that a large model costs one pass over its
    /// memory on each of two cores instead of two passes one after the
    /// other. The header holds the sha256: the first blocks of the file are
    /// written last, once it is known.
    ///
    /// # Errors
    /// [`CoreError::InvalidSpec`] if the tensors cannot be laid out,
    /// [`CoreError::Io`] if the file cannot be written.
    pub fn stage_safetensors_hashed(
        &self,
        path: &Path,
        extra_metadata: HashMap<String, String>,
        sha256_key: &str,
    ) -> Result<(StagedFile, String)> {
        let layout = self.safetensors_layout()?;
        let mut metadata = self.file_metadata(extra_metadata);
        // A sha256 in hex is 64 characters that JSON does not escape, so the
        // real header has the placeholder's length.
        metadata.insert(sha256_key.to_string(), "0".repeat(64));
        let placeholder_header = safetensors_header(&layout, metadata.clone())?;
        let bytes = codec::params_as_le_bytes(&self.params);
        let total_len = placeholder_header.len() + bytes.len();
        // The header and the start of the parameters, rewritten once the
        // sha256 is known: whole blocks, for writes that bypass the cache.
        let head_len = placeholder_header
            .len()
            .next_multiple_of(UNCACHED_ALIGN_BYTES)
            .min(total_len);
        let mut sha256 = None;
        let staged = StagedFile::write(path, |temp_path| {
            let mut file = UncachedFile::create(temp_path)?;
            let mut pieces: Vec<&[u8]> = std::iter::once(&placeholder_header[..])
                .chain(
                    layout
                        .iter()
                        .map(|(_, _, byte_range)| &bytes[byte_range.clone()]),
                )
                .collect();
            let params_sha256 = std::thread::scope(|scope| {
                let hasher = scope.spawn(|| params_sha256(&self.params));
                let written = file.write_range(&pieces, head_len..total_len);
                let params_sha256 = hasher.join().expect("hashing parameters does not panic");
                written.map(|()| params_sha256)
            })?;
            metadata.insert(sha256_key.to_string(), params_sha256.clone());
            let header = safetensors_header(&layout, metadata).map_err(std::io::Error::other)?;
            if header.len() != placeholder_header.len() {
                return Err(std::io::Error::other(
                    "the safetensors header changed length with the sha256",
                ));
            }
            pieces[0] = &header;
            file.write_range(&pieces, 0..head_len)?;
            file.finish(total_len)?;
            sha256 = Some(params_sha256);
            Ok(())
        })?;
        Ok((
            staged,
            sha256.expect("a successful write computed the sha256"),
        ))
    }

    /// Returns the tensors as the safetensors file lays them out (sorted by
    /// name, as the `safetensors` crate does): name, shape and the range of
    /// the parameters' little-endian bytes each one holds.
    fn safetensors_layout(&self) -> Result<SafetensorsLayout> {
        let mut in_spec_order = Vec::new();
        let mut offset = 0;
        for tensor in self.spec.tensor_specs() {
            let num_bytes = tensor.num_values() * 4;
            in_spec_order.push((tensor.name, tensor.shape, offset..offset + num_bytes));
            offset += num_bytes;
        }
        if offset != self.params.len() * 4 {
            return Err(CoreError::InvalidSpec(format!(
                "the tensors hold {} parameters, the model has {}",
                offset / 4,
                self.params.len()
            )));
        }
        in_spec_order.sort_by(|(left, _, _), (right, _, _)| left.cmp(right));
        Ok(in_spec_order)
    }

    /// Reads a model from a safetensors file written by [`Self::save_safetensors`].
    ///
    /// # Errors
    /// [`CoreError::Io`] or [`CoreError::MalformedModelFile`] saying what is wrong.
    pub fn load_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| CoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors(&bytes).map_err(|reason| CoreError::MalformedModelFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a safetensors image; the error says what is wrong.
    pub fn from_safetensors(bytes: &[u8]) -> std::result::Result<Self, String> {
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|error| error.to_string())?;
        let spec_json = metadata
            .metadata()
            .as_ref()
            .and_then(|entries| entries.get(SPEC_METADATA_KEY))
            .ok_or_else(|| format!("metadata key {SPEC_METADATA_KEY:?} is missing"))?;
        let spec: ModelSpec = serde_json::from_str(spec_json)
            .map_err(|error| format!("metadata {SPEC_METADATA_KEY:?}: {error}"))?;
        spec.validate().map_err(|error| error.to_string())?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|error| error.to_string())?;
        let mut params = Vec::with_capacity(spec.num_params());
        for tensor in spec.tensor_specs() {
            let view = tensors
                .tensor(&tensor.name)
                .map_err(|_| format!("tensor {:?} is missing", tensor.name))?;
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "tensor {:?} has dtype {:?}, expected F32",
                    tensor.name,
                    view.dtype()
                ));
            }
            if view.shape() != tensor.shape.as_slice() {
                return Err(format!(
                    "tensor {:?} has shape {:?}, expected {:?}",
                    tensor.name,
                    view.shape(),
                    tensor.shape
                ));
            }
            codec::decode_f32_le_into(view.data(), &mut params)
                .map_err(|error| format!("tensor {:?}: {error}", tensor.name))?;
        }
        Ok(ModelWeights { spec, params })
    }
}

/// Computes [`params_sha256`] incrementally, from the wire chunks of the
/// parameters as they arrive (the wire format is their little-endian bytes),
/// so a download is checked without a second pass over the model.
#[derive(Default)]
pub struct ParamsSha256(Sha256);

impl ParamsSha256 {
    /// Returns a hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next little-endian bytes of the parameters.
    pub fn update(&mut self, le_bytes: &[u8]) {
        self.0.update(le_bytes);
    }

    /// Returns the sha256 (lowercase hex) of everything added.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Tensors in file order: name, shape, range of the parameters' bytes.
type SafetensorsLayout = Vec<(String, Vec<usize>, std::ops::Range<usize>)>;

/// Returns the start of a safetensors file for `layout`: the header's length
/// (u64, little-endian) and the JSON header, padded with spaces to a multiple
/// of 8 bytes, exactly as the `safetensors` crate writes them.
fn safetensors_header(
    layout: &SafetensorsLayout,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut data_offset = 0;
    let tensors = layout
        .iter()
        .map(|(name, shape, byte_range)| {
            let info = TensorInfo {
                dtype: Dtype::F32,
                shape: shape.clone(),
                data_offsets: (data_offset, data_offset + byte_range.len()),
            };
            data_offset += byte_range.len();
            (name.clone(), info)
        })
        .collect();
    let header = Metadata::new(Some(metadata), tensors)
        .map_err(|error| CoreError::InvalidSpec(format!("safetensors layout: {error}")))?;
    let mut json = serde_json::to_vec(&header).expect("a safetensors header serializes to json");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + json.len());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

/// Returns the sha256 (lowercase hex) of parameters' little-endian float32 bytes.
pub fn params_sha256(params: &[f32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(codec::params_as_le_bytes(params));
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_spec_and_parameters() {
        let weights = ModelWeights::init(ModelSpec::mlp(6, vec![5], 2), 7).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        weights.save_safetensors(&path, HashMap::new()).unwrap();
        let loaded = ModelWeights::load_safetensors(&path).unwrap();
        assert_eq!(loaded, weights);
        assert_eq!(loaded.sha256(), weights.sha256());
    }

    #[test]
    fn incremental_sha256_of_chunks_is_the_sha256_of_the_parameters() {
        let params: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25).collect();
        let mut hasher = ParamsSha256::new();
        for chunk in codec::encode_chunks(&params, 333) {
            hasher.update(&chunk);
        }
        assert_eq!(hasher.finish(), params_sha256(&params));
    }

    #[test]
    fn benchmark_flat_model_is_one_tensor_that_round_trips() {
        let weights = ModelWeights::init(ModelSpec::benchmark_flat(1000), 3).unwrap();
        assert_eq!(weights.params.len(), 1000);
        assert_eq!(weights.spec.tensor_specs().len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        weights.save_safetensors(&path, HashMap::new()).unwrap();
        assert_eq!(ModelWeights::load_safetensors(&path).unwrap(), weights);
        assert!(ModelSpec::benchmark_flat(0).validate().is_err());
    }

    #[test]
    fn hashed_save_writes_the_same_model_and_returns_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            ModelSpec::mlp(6, vec![5, 4], 3),
            ModelSpec::benchmark_flat(1000),
        ] {
            let weights = ModelWeights::init(spec, 11).unwrap();
            let path = dir.path().join("model.safetensors");
            let extra = HashMap::from([("fedshield.version".to_string(), "7".to_string())]);
            let sha256 = weights
                .save_safetensors_hashed(&path, extra.clone(), "fedshield.sha256")
                .unwrap();
            assert_eq!(sha256, weights.sha256());
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(ModelWeights::from_safetensors(&bytes).unwrap(), weights);
            // The same file as the safetensors crate writes, up to the
            // order of the metadata entries.
            let mut metadata = extra;
            metadata.insert("fedshield.sha256".to_string(), sha256.clone());
            let image = weights.to_safetensors(metadata.clone()).unwrap();
            assert_eq!(bytes.len(), image.len());
            assert_eq!(
                bytes[bytes.len() - weights.params.len() * 4..],
                image[image.len() - weights.params.len() * 4..]
            );
            let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
            let mut expected = metadata;
            expected.insert(
                SPEC_METADATA_KEY.to_string(),
                serde_json::to_string(&weights.spec).unwrap(),
            );
            assert_eq!(header.metadata().as_ref(), Some(&expected));
        }
    }

    #[test]
    fn init_is_deterministic_per_seed() {
        let spec = ModelSpec::mlp(6, vec![5], 2);
        let first = ModelWeights::init(spec.clone(), 1).unwrap();
        assert_eq!(first, ModelWeights::init(spec.clone(), 1).unwrap());
        assert_ne!(first, ModelWeights::init(spec, 2).unwrap());
    }

    #[test]
    fn truncated_model_file_is_reported_not_panicked() {
        let weights = ModelWeights::init(ModelSpec::mlp(6, vec![5], 2), 7).unwrap();
        let image = weights.to_safetensors(HashMap::new()).unwrap();
        assert!(ModelWeights::from_safetensors(&image[..image.len() - 8]).is_err());
        assert!(ModelWeights::from_safetensors(b"not a model").is_err());
    }
}
