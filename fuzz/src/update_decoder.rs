//! The update decoder under arbitrary input.
//!
//! The coordinator decodes an update stream with [`ChunkAssembler`]: the
//! header fixes the number of parameters, then every `data` chunk is pushed
//! as it arrives and `finish` runs when the stream ends. This module feeds the
//! assembler the same way from fuzzer bytes and checks it against a plain
//! reference decoder: it must never panic, must accept exactly the streams
//! that carry `num_params` finite little-endian float32 values in chunks of
//! whole values, must return exactly those values, and must refuse every other
//! stream with the error that names its first problem.
//!
//! Input layout (see [`UpdateStream::parse`]): 4 bytes of declared parameter
//! count, then chunks, each a 2-byte length followed by that many bytes.

use fedshield_core::CoreError;
use fedshield_core::model::codec::ChunkAssembler;

/// Largest declared parameter count, so that one input never makes the
/// assembler reserve more than 256 KiB.
pub const MAX_FUZZ_PARAMS: usize = 1 << 16;

/// An update stream as the coordinator sees it after the header: how many
/// parameters the update must have, and the payloads of its `data` chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateStream<'a> {
    pub num_params: usize,
    pub chunks: Vec<&'a [u8]>,
}

impl<'a> UpdateStream<'a> {
    /// Splits fuzzer bytes into a stream: bytes 0..4 are the declared count
    /// (little-endian u32, missing bytes read as zero) modulo
    /// `MAX_FUZZ_PARAMS + 1`; the rest is a sequence of chunks, each a
    /// little-endian u16 length and then that many bytes (fewer if the input
    /// ends first; a lone trailing byte is an empty chunk).
    pub fn parse(input: &'a [u8]) -> Self {
        let mut count_bytes = [0u8; 4];
        let count_len = input.len().min(4);
        count_bytes[..count_len].copy_from_slice(&input[..count_len]);
        let num_params = u32::from_le_bytes(count_bytes) as usize % (MAX_FUZZ_PARAMS + 1);
        let mut rest = &input[count_len..];
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let prefix_len = rest.len().min(2);
            let mut length_bytes = [0u8; 2];
            length_bytes[..prefix_len].copy_from_slice(&rest[..prefix_len]);
            rest = &rest[prefix_len..];
            let chunk_len = usize::from(u16::from_le_bytes(length_bytes)).min(rest.len());
            let (chunk, after) = rest.split_at(chunk_len);
            chunks.push(chunk);
            rest = after;
        }
        UpdateStream { num_params, chunks }
    }

    /// Returns the fuzzer bytes that [`UpdateStream::parse`] turns back into
    /// this stream, for building seeds and structured random inputs.
    ///
    /// # Panics
    /// If `num_params` exceeds [`MAX_FUZZ_PARAMS`] or a chunk is longer than
    /// `u16::MAX` bytes: such a stream has no encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        assert!(
            self.num_params <= MAX_FUZZ_PARAMS,
            "num_params {} exceeds {MAX_FUZZ_PARAMS}",
            self.num_params
        );
        let mut bytes = (self.num_params as u32).to_le_bytes().to_vec();
        for chunk in &self.chunks {
            let chunk_len = u16::try_from(chunk.len()).expect("chunks are at most u16::MAX bytes");
            bytes.extend_from_slice(&chunk_len.to_le_bytes());
            bytes.extend_from_slice(chunk);
        }
        bytes
    }
}

/// What a correct decoder makes of a stream: its values, or its first problem.
#[derive(Debug)]
enum Expected {
    Accepted(Vec<f32>),
    /// A chunk of `num_bytes` bytes, not a whole number of values.
    Misaligned {
        num_bytes: usize,
    },
    /// A chunk that brings the count to `actual`, over the declared count.
    TooMany {
        actual: u64,
    },
    /// Value `index` (in the whole stream) is NaN or infinite.
    NonFinite {
        index: u64,
    },
    /// The stream ended after `actual` values, fewer than declared.
    TooFew {
        actual: u64,
    },
}

/// Decodes `stream` the obvious way, value by value.
fn reference_decode(stream: &UpdateStream<'_>) -> Expected {
    let mut values = Vec::new();
    for chunk in &stream.chunks {
        if !chunk.len().is_multiple_of(4) {
            return Expected::Misaligned {
                num_bytes: chunk.len(),
            };
        }
        let total = values.len() + chunk.len() / 4;
        if total > stream.num_params {
            return Expected::TooMany {
                actual: total as u64,
            };
        }
        for word in chunk.chunks_exact(4) {
            let value = f32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if !value.is_finite() {
                return Expected::NonFinite {
                    index: values.len() as u64,
                };
            }
            values.push(value);
        }
    }
    if values.len() != stream.num_params {
        return Expected::TooFew {
            actual: values.len() as u64,
        };
    }
    Expected::Accepted(values)
}

/// Feeds `stream` to a [`ChunkAssembler`] as the coordinator does: push each
/// chunk, stop at the first error (the assembler must then be dropped),
/// `finish` at the end of the stream.
fn assemble(stream: &UpdateStream<'_>) -> Result<Vec<f32>, CoreError> {
    let mut assembler = ChunkAssembler::new(stream.num_params);
    for chunk in &stream.chunks {
        assembler.push(chunk)?;
    }
    assembler.finish()
}

/// Decodes fuzzer bytes as an update stream and checks the assembler against
/// the reference decoder. Returns whether the update was accepted.
///
/// # Panics
/// When the assembler panics, accepts a stream that is not exactly
/// `num_params` finite values, returns other values than were sent, or
/// refuses a stream for another reason than its first problem. Panicking is
/// how a fuzz target reports a bug.
pub fn check_update_decoder(input: &[u8]) -> bool {
    let stream = UpdateStream::parse(input);
    let expected = reference_decode(&stream);
    let actual = assemble(&stream);
    match (&expected, &actual) {
        (Expected::Accepted(sent), Ok(decoded)) => {
            assert_eq!(
                decoded.len(),
                stream.num_params,
                "accepted update has the declared number of values"
            );
            assert!(
                decoded.iter().all(|value| value.is_finite()),
                "accepted update has only finite values"
            );
            let sent_bits: Vec<u32> = sent.iter().map(|value| value.to_bits()).collect();
            let decoded_bits: Vec<u32> = decoded.iter().map(|value| value.to_bits()).collect();
            assert_eq!(
                decoded_bits, sent_bits,
                "accepted update has the values sent"
            );
            true
        }
        (
            Expected::Misaligned { num_bytes },
            Err(CoreError::MisalignedChunk {
                num_bytes: reported,
            }),
        ) if reported == num_bytes => false,
        (
            Expected::TooMany { actual: total },
            Err(CoreError::ParamCountMismatch { expected, actual }),
        ) if *expected == stream.num_params as u64 && actual == total => false,
        (
            Expected::NonFinite { index },
            Err(CoreError::NonFiniteParam {
                index: reported,
                value,
            }),
        ) if reported == index && !value.is_finite() => false,
        (
            Expected::TooFew { actual: received },
            Err(CoreError::ParamCountMismatch { expected, actual }),
        ) if *expected == stream.num_params as u64 && actual == received => false,
        _ => panic!(
            "assembler and reference decoder disagree on {} declared parameters in {} chunks: expected {expected:?}, assembler returned {}",
            stream.num_params,
            stream.chunks.len(),
            match &actual {
                Ok(values) => format!("{} values", values.len()),
                Err(error) => format!("error {error:?}"),
            }
        ),
    }
}
