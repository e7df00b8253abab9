//! Receiving one masked update of a secure round: its header, then chunks of
//! little-endian u32, held to the limits plain updates are held to (a header
//! within the idle timeout, each chunk within it, the whole update before
//! the round's deadline, bounded chunk sizes, an upload permit while it is
//! buffered), then added to the round's running sum.

use std::time::Duration;

use bytes::Bytes;
use fedshield_core::model::codec::MAX_CHUNK_BYTES;
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::{ModelVersion, ParticipantId, RoundId};
use futures::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use super::receive::{FirstPart, next_part, read_header};
use super::{ReceivedUpdate, UploadError, UploadTransportError};
use crate::engine::{Engine, claimed_participant};
use crate::error::CoordinatorError;

/// The header of a masked update, as the transport decoded it.
#[derive(Debug)]
pub struct MaskedUpdateHeader {
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub claimed_participant: String,
    pub session_token: String,
    pub num_values: u64,
    pub privacy: Option<PrivacyReport>,
    /// The token of a reserved upload slot; empty without one.
    pub upload_slot: String,
}

/// One message of a masked update stream.
#[derive(Debug)]
pub enum MaskedPart {
    Header(MaskedUpdateHeader),
    Data(Bytes),
    Empty,
}

/// Frees the participant's upload if the masked update does not arrive whole.
struct InFlight<'a> {
    engine: &'a Engine,
    participant: ParticipantId,
    round_id: RoundId,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.engine
                .abort_masked_update(&self.participant, self.round_id);
        }
    }
}

impl Engine {
    /// Receives one masked update from `parts` and adds it to its round's
    /// sum: reads the header, checks that it names `authenticated`, admits
    /// it ([`Engine::begin_masked_update`]), waits for an upload permit,
    /// assembles the values and commits them.
    ///
    /// # Errors
    /// [`UploadError::Refused`] with the reason, or
    /// [`UploadError::Transport`] with a failure of the stream itself.
    pub async fn receive_masked<S, E>(
        &self,
        authenticated: Option<&ParticipantId>,
        mut parts: S,
        idle_timeout: Duration,
        take_slot: impl FnOnce(&ParticipantId, RoundId, &str) -> Option<OwnedSemaphorePermit>,
    ) -> Result<ReceivedUpdate, UploadError<E>>
    where
        S: Stream<Item = Result<MaskedPart, E>> + Unpin,
        E: UploadTransportError,
    {
        let header = read_header(
            &mut parts,
            idle_timeout,
            "a masked update header",
            "masked update stream",
            |part| match part {
                MaskedPart::Header(header) => FirstPart::Header(header),
                MaskedPart::Data(_) => FirstPart::Data,
                MaskedPart::Empty => FirstPart::Empty,
            },
        )
        .await?;
        let participant = claimed_participant(
            authenticated,
            header.claimed_participant,
            "submit_masked_update",
        )?;
        let round_id = header.round_id;
        let (vector_len, deadline) = self
            .begin_masked_update(
                &participant,
                &header.session_token,
                round_id,
                header.base_version,
                header.privacy.as_ref(),
            )
            .inspect_err(|error| warn!(round = %round_id, participant = %participant, error = %error, "masked update refused"))?;
        let mut in_flight = InFlight {
            engine: self,
            participant: participant.clone(),
            round_id,
            done: false,
        };
        let refused = |error: CoordinatorError| {
            warn!(round = %round_id, participant = %participant, error = %error, "masked update refused");
            UploadError::Refused(error)
        };
        if header.num_values != vector_len as u64 {
            return Err(refused(CoordinatorError::MalformedUpdate(format!(
                "header declares {} values, round {round_id} masks vectors of {vector_len}",
                header.num_values
            ))));
        }
        // A reserved slot streams at once; without one, the upload waits
        // for a permit here with the transport's flow control holding back
        // its sender.
        let reserved = match header.upload_slot.as_str() {
            "" => None,
            token => take_slot(&participant, round_id, token),
        };
        let _permit = match reserved {
            Some(permit) => permit,
            None => self
                .upload_permits()
                .acquire_owned()
                .await
                .map_err(|_| CoordinatorError::ShuttingDown)?,
        };
        let mut values: Vec<u32> = Vec::with_capacity(vector_len);
        // Bytes of a value split across two chunks.
        let mut carry: Vec<u8> = Vec::with_capacity(4);
        loop {
            let part =
                match next_part(&mut parts, idle_timeout, deadline, round_id, &participant).await {
                    Ok(Some(part)) => part,
                    Ok(None) => break,
                    Err(UploadError::Refused(error)) => return Err(refused(error)),
                    Err(other) => return Err(other),
                };
            let data = match part {
                MaskedPart::Data(data) if data.len() > MAX_CHUNK_BYTES => {
                    return Err(refused(CoordinatorError::MalformedUpdate(format!(
                        "chunk of {} bytes exceeds the limit of {MAX_CHUNK_BYTES}",
                        data.len()
                    ))));
                }
                MaskedPart::Data(data) if data.is_empty() => {
                    return Err(refused(CoordinatorError::MalformedUpdate(
                        "empty data chunk".to_string(),
                    )));
                }
                MaskedPart::Data(data) => data,
                MaskedPart::Header(_) => {
                    return Err(refused(CoordinatorError::MalformedUpdate(
                        "second header in one masked update stream".to_string(),
                    )));
                }
                MaskedPart::Empty => {
                    return Err(refused(CoordinatorError::MalformedUpdate(
                        "empty chunk message".to_string(),
                    )));
                }
            };
            self.metrics().update_bytes_received(data.len());
            let num_values_after = values.len() + (carry.len() + data.len()) / 4;
            if num_values_after > vector_len {
                return Err(refused(CoordinatorError::MalformedUpdate(format!(
                    "more than the {vector_len} values the round masks"
                ))));
            }
            let mut bytes: &[u8] = &data;
            if !carry.is_empty() {
                let needed = 4 - carry.len();
                let taken = needed.min(bytes.len());
                carry.extend_from_slice(&bytes[..taken]);
                bytes = &bytes[taken..];
                if carry.len() == 4 {
                    values.push(u32::from_le_bytes([carry[0], carry[1], carry[2], carry[3]]));
                    carry.clear();
                }
            }
            let mut words = bytes.chunks_exact(4);
            values.extend(
                words
                    .by_ref()
                    .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]])),
            );
            carry.extend_from_slice(words.remainder());
        }
        if values.len() != vector_len || !carry.is_empty() {
            return Err(refused(CoordinatorError::MalformedUpdate(format!(
                "stream ended early: {} of {vector_len} values",
                values.len()
            ))));
        }
        let engine = self.clone();
        let committing = participant.clone();
        let privacy = header.privacy;
        let num_accepted = tokio::task::spawn_blocking(move || {
            engine.commit_masked_update(&committing, round_id, &values, privacy)
        })
        .await
        .map_err(|error| CoordinatorError::TaskFailed(format!("adding a masked update: {error}")))?
        .map_err(refused)?;
        // The commit took the participant out of the uploads in flight.
        in_flight.done = true;
        info!(round = %round_id, participant = %participant, num_values = vector_len, num_accepted, "masked update received");
        Ok(ReceivedUpdate {
            round_id,
            num_accepted,
        })
    }
}
