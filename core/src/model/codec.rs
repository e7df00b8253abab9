//! The wire encoding of model parameters and updates: little-endian IEEE-754
//! float32, split into chunks of whole values.
//!
//! Decoding validates as it goes (alignment, count, finiteness), so a hostile
//! stream is refused at the first bad chunk without buffering the rest.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CoreError, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("fedshield's zero-copy codec assumes a little-endian target");

/// Default number of parameters per chunk: 16 Ki float32 = 64 KiB per
/// message. Large enough to amortize gRPC framing (5 bytes and a protobuf
/// tag per message), small enough that each stream's encode and decode
/// buffers stay small: a coordinator serving K downloads at once holds about
/// one chunk per download, and with 1 MiB chunks its peak memory grew by
/// ~2 MiB per participant (`fedshield bench rounds`, docs/BENCHMARKS.md).
pub const DEFAULT_CHUNK_PARAMS: usize = 16 * 1024;

/// Largest chunk accepted from the network, in bytes (4 MiB).
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Returns the parameters' little-endian bytes without copying.
pub fn params_as_le_bytes(params: &[f32]) -> &[u8] {
    bytemuck::cast_slice(params)
}

/// Splits parameters into wire chunks of at most `chunk_params` values each.
pub fn encode_chunks(params: &[f32], chunk_params: usize) -> impl Iterator<Item = Bytes> + '_ {
    params
        .chunks(chunk_params.max(1))
        .map(|chunk| Bytes::copy_from_slice(params_as_le_bytes(chunk)))
}

/// Returns the wire chunks of a shared parameter vector without copying
/// them: each chunk is a [`Bytes`] view into `owner`'s memory (`view` says
/// where the parameters are), which stays alive until the last chunk is
/// dropped. Nothing is computed until the iterator is advanced, so a
/// stream built on it holds only the chunks in flight.
pub fn shared_chunks<T: Send + Sync + 'static>(
    owner: Arc<T>,
    view: fn(&T) -> &[f32],
    chunk_params: usize,
) -> impl Iterator<Item = Bytes> + Send + 'static {
    let chunk_params = chunk_params.max(1);
    let num_params = view(&owner).len();
    (0..num_params.div_ceil(chunk_params)).map(move |index| {
        let start = index * chunk_params;
        Bytes::from_owner(SharedParamsChunk {
            owner: owner.clone(),
            view,
            start,
            end: (start + chunk_params).min(num_params),
        })
    })
}

/// One chunk of a shared parameter vector, as bytes.
struct SharedParamsChunk<T> {
    owner: Arc<T>,
    view: fn(&T) -> &[f32],
    start: usize,
    end: usize,
}

impl<T> AsRef<[u8]> for SharedParamsChunk<T> {
    fn as_ref(&self) -> &[u8] {
        params_as_le_bytes(&(self.view)(&self.owner)[self.start..self.end])
    }
}

/// Values decoded per block by [`ChunkAssembler::push`]: 64 KiB of float32,
/// so the finiteness check reads what the copy just wrote while it is in cache.
const DECODE_BLOCK_PARAMS: usize = 16 * 1024;

/// Appends the float32 values encoded in `bytes` to `out`.
///
/// # Errors
/// [`CoreError::MisalignedChunk`] if `bytes` is not a whole number of values.
pub fn decode_f32_le_into(bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    if !bytes.len().is_multiple_of(4) {
        return Err(CoreError::MisalignedChunk {
            num_bytes: bytes.len(),
        });
    }
    // One pass, no zero-filling first: `chunks_exact` of 4 bytes reads
    // unaligned input, and `from_le_bytes` is a plain load on a
    // little-endian target (the wire format is the memory format).
    out.extend(
        bytes.chunks_exact(4).map(|value| {
            f32::from_le_bytes(value.try_into().expect("chunks_exact yields 4 bytes"))
        }),
    );
    Ok(())
}

/// Collects one update or model from a stream of chunks, validating each chunk
/// as it arrives: whole values only, never more than `expected_params`, all
/// finite. Memory is one vector of `expected_params` values, allocated once.
pub struct ChunkAssembler {
    expected_params: usize,
    values: Vec<f32>,
}

impl ChunkAssembler {
    /// Returns an assembler for exactly `expected_params` values.
    pub fn new(expected_params: usize) -> Self {
        Self::with_buffer(Vec::new(), expected_params)
    }

    /// Returns an assembler that reuses `buffer`'s allocation: receiving
    /// into a recycled buffer avoids the page faults of a fresh allocation of
    /// a whole model for every update.
    pub fn with_buffer(mut buffer: Vec<f32>, expected_params: usize) -> Self {
        buffer.clear();
        buffer.reserve_exact(expected_params);
        ChunkAssembler {
            expected_params,
            values: buffer,
        }
    }

    /// Returns the buffer for reuse, dropping what it holds.
    pub fn into_buffer(self) -> Vec<f32> {
        self.values
    }

    /// Returns how many values have arrived so far.
    pub fn num_received(&self) -> usize {
        self.values.len()
    }

    /// Decodes and appends one chunk.
    ///
    /// # Errors
    /// [`CoreError::MisalignedChunk`], [`CoreError::ParamCountMismatch`] if the
    /// chunk would overflow the expected count, or [`CoreError::NonFiniteParam`].
    /// On error the assembler must be dropped.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if !chunk.len().is_multiple_of(4) {
            return Err(CoreError::MisalignedChunk {
                num_bytes: chunk.len(),
            });
        }
        let num_values = chunk.len() / 4;
        let total = self.values.len() + num_values;
        if total > self.expected_params {
            return Err(CoreError::ParamCountMismatch {
                expected: self.expected_params as u64,
                actual: total as u64,
            });
        }
        for block in chunk.chunks(DECODE_BLOCK_PARAMS * 4) {
            let start = self.values.len();
            decode_f32_le_into(block, &mut self.values)?;
            check_finite(&self.values[start..], start as u64)?;
        }
        Ok(())
    }

    /// Returns the values once all have arrived.
    ///
    /// # Errors
    /// [`CoreError::ParamCountMismatch`] if the stream ended early.
    pub fn finish(self) -> Result<Vec<f32>> {
        if self.values.len() != self.expected_params {
            return Err(CoreError::ParamCountMismatch {
                expected: self.expected_params as u64,
                actual: self.values.len() as u64,
            });
        }
        Ok(self.values)
    }
}

/// Checks that every value is finite; `first_index` is the index of `values[0]`
/// in the whole vector, for the error message.
///
/// # Errors
/// [`CoreError::NonFiniteParam`] naming the first bad index.
pub fn check_finite(values: &[f32], first_index: u64) -> Result<()> {
    const EXPONENT_MASK: u32 = 0x7f80_0000;
    for (block_index, block) in values.chunks(4096).enumerate() {
        // Branch-free over the block so it vectorizes: a value is NaN or
        // infinite exactly when all its exponent bits are set.
        let any_non_finite = block.iter().fold(false, |seen, value| {
            seen | (value.to_bits() & EXPONENT_MASK == EXPONENT_MASK)
        });
        if any_non_finite {
            let position = block
                .iter()
                .position(|value| !value.is_finite())
                .expect("the block holds a non-finite value");
            return Err(CoreError::NonFiniteParam {
                index: first_index + (block_index * 4096 + position) as u64,
                value: block[position],
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_to_the_original_values() {
        let params: Vec<f32> = (0..1000).map(|i| (i as f32).sin()).collect();
        let mut assembler = ChunkAssembler::new(params.len());
        for chunk in encode_chunks(&params, 64) {
            assembler.push(&chunk).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), params);
    }

    #[test]
    fn assembler_refuses_misaligned_oversized_short_and_non_finite_input() {
        let mut misaligned = ChunkAssembler::new(4);
        assert!(matches!(
            misaligned.push(&[0u8; 5]),
            Err(CoreError::MisalignedChunk { .. })
        ));

        let mut oversized = ChunkAssembler::new(2);
        assert!(matches!(
            oversized.push(params_as_le_bytes(&[1.0, 2.0, 3.0])),
            Err(CoreError::ParamCountMismatch {
                expected: 2,
                actual: 3
            })
        ));

        let mut short = ChunkAssembler::new(3);
        short.push(params_as_le_bytes(&[1.0])).unwrap();
        assert!(short.finish().is_err());

        let mut non_finite = ChunkAssembler::new(4);
        non_finite.push(params_as_le_bytes(&[1.0, 2.0])).unwrap();
        let error = non_finite
            .push(params_as_le_bytes(&[f32::NAN, 0.0]))
            .unwrap_err();
        assert!(matches!(error, CoreError::NonFiniteParam { index: 2, .. }));
        let mut infinite = ChunkAssembler::new(1);
        assert!(infinite.push(params_as_le_bytes(&[f32::INFINITY])).is_err());
    }

    #[test]
    fn shared_chunks_view_the_owner_without_copying() {
        let params: Arc<Vec<f32>> = Arc::new((0..1000).map(|i| i as f32 * 0.5).collect());
        let chunks: Vec<Bytes> = shared_chunks(params.clone(), |owner| owner, 300).collect();
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks[1].as_ptr(),
            params_as_le_bytes(&params[300..]).as_ptr()
        );
        let mut assembler = ChunkAssembler::new(params.len());
        for chunk in &chunks {
            assembler.push(chunk).unwrap();
        }
        assert_eq!(assembler.finish().unwrap(), *params);
    }

    #[test]
    fn non_finite_value_in_a_later_block_is_found_with_its_index() {
        let mut params = vec![1.0f32; 3 * DECODE_BLOCK_PARAMS];
        params[2 * DECODE_BLOCK_PARAMS + 5] = f32::NEG_INFINITY;
        let mut assembler = ChunkAssembler::new(params.len());
        let error = assembler.push(params_as_le_bytes(&params)).unwrap_err();
        assert!(matches!(
            error,
            CoreError::NonFiniteParam { index, .. } if index == (2 * DECODE_BLOCK_PARAMS + 5) as u64
        ));
    }

    #[test]
    fn finite_values_whose_sum_overflows_are_accepted() {
        assert!(check_finite(&[f32::MAX, f32::MAX], 0).is_ok());
    }
}
