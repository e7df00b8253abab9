//! Receiving one update over a stream of parts: its header, then its
//! chunks, held to the limits that keep a slow or hostile sender from
//! holding the coordinator's memory (a header within the idle timeout, each
//! chunk within it, the whole update before the round's deadline, bounded
//! chunk sizes), with an upload permit held while the update is buffered.
//!
//! The transport hands the engine its stream as [`UpdatePart`]s; the gRPC
//! handler only authenticates the caller and converts the result.

use std::time::Duration;

use bytes::Bytes;
use fedshield_core::model::codec::{ChunkAssembler, MAX_CHUNK_BYTES};
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::untrusted_text::loggable_participant_id;
use fedshield_core::{ModelVersion, ParticipantId, RoundId};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, warn};

use super::UpdateRequest;
use super::slots::UploadSlots;
use crate::engine::{Engine, claimed_participant};
use crate::error::CoordinatorError;

/// One message of an update stream, as the transport delivered it.
#[derive(Debug)]
pub enum UpdatePart {
    /// The update's header; the first message of a stream, and only that.
    Header(UpdateHeader),
    /// A chunk of the parameters' bytes.
    Data(Bytes),
    /// A message without a payload.
    Empty,
}

/// What an update's header declares, before any of it is checked.
#[derive(Debug)]
pub struct UpdateHeader {
    /// The participant id the sender claims, checked against its
    /// certificate's before anything else of the header is used.
    pub claimed_participant: String,
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub session_token: String,
    pub num_samples: u64,
    pub num_params: u64,
    pub privacy: Option<PrivacyReport>,
    /// The token of the upload slot reserved for this upload; empty if none.
    pub upload_slot: String,
    pub encoding: ParamEncoding,
}

/// How an update's parameters are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamEncoding {
    /// Little-endian float32, the one encoding accepted.
    F32Le,
    /// Any other encoding, by its wire number.
    Unsupported(i32),
}

/// A failure of the transport an update arrives over.
pub trait UploadTransportError {
    /// Returns the transport's own text when the failure is a message over
    /// the transport's size limit: an oversized chunk, refused as one.
    fn oversized_message(&self) -> Option<&str>;

    /// Returns the failure's code, for logs.
    fn code_for_log(&self) -> String;
}

/// Why an upload or a slot reservation did not succeed.
#[derive(Debug)]
pub enum UploadError<E> {
    /// The engine refused it; counted as a rejected update.
    Refused(CoordinatorError),
    /// The coordinator began stopping while the call waited for a slot.
    ShuttingDown,
    /// The transport failed; handed back to the caller as it came.
    Transport(E),
}

impl<E> From<CoordinatorError> for UploadError<E> {
    fn from(error: CoordinatorError) -> Self {
        UploadError::Refused(error)
    }
}

/// An update folded into its round.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedUpdate {
    pub round_id: RoundId,
    /// Updates accepted in the round so far, this one included.
    pub num_accepted: usize,
}

/// A reserved upload slot, as its holder is told.
#[derive(Debug, Clone)]
pub struct ReservedSlot {
    /// Secret the upload's header names the slot by.
    pub token: String,
    /// How long the slot waits for its upload.
    pub valid_for: Duration,
}

/// Receives updates for the engine: holds the upload slots and the idle
/// timeout every update stream is held to. One per server; cheap to clone.
#[derive(Clone)]
pub struct UploadReceiver {
    engine: Engine,
    slots: UploadSlots,
    chunk_idle_timeout: Duration,
}

impl UploadReceiver {
    /// Returns a receiver for `engine`'s rounds: each message of an update
    /// must arrive within `chunk_idle_timeout`, and a reserved slot no
    /// upload claims within it is released.
    pub fn new(engine: Engine, chunk_idle_timeout: Duration) -> Self {
        UploadReceiver {
            engine,
            slots: UploadSlots::new(chunk_idle_timeout),
            chunk_idle_timeout,
        }
    }

    /// Reserves an upload slot for `participant`'s update to round
    /// `round_id`, waiting for one until the round's deadline or until
    /// `shutdown`.
    ///
    /// # Errors
    /// The session, round and selection checks of
    /// [`Engine::check_may_upload`], [`CoordinatorError::UpdateTooSlow`] if
    /// no slot frees before the deadline, [`UploadError::ShuttingDown`].
    pub async fn reserve_slot<E>(
        &self,
        participant: ParticipantId,
        session_token: &str,
        round_id: RoundId,
        shutdown: &CancellationToken,
    ) -> Result<ReservedSlot, UploadError<E>> {
        let deadline = self
            .engine
            .check_may_upload(&participant, session_token, round_id)
            .inspect_err(|error| warn!(round = %round_id, participant = %participant, error = %error, "upload slot refused"))?;
        let released = self.slots.release_stale(round_id);
        if released > 0 {
            debug!(released, "upload slots of closed rounds released");
        }
        let waiting = self.engine.metrics().waiting_for_upload_slot();
        let permit = tokio::select! {
            permit = self.engine.upload_permits().acquire_owned() => {
                permit.map_err(|_| CoordinatorError::ShuttingDown)?
            }
            () = tokio::time::sleep_until(deadline) => {
                let error = CoordinatorError::UpdateTooSlow { round: round_id };
                warn!(round = %round_id, participant = %participant, error = %error, "no upload slot before the deadline");
                return Err(UploadError::Refused(error));
            }
            () = shutdown.cancelled() => return Err(UploadError::ShuttingDown),
        };
        drop(waiting);
        let token = self.slots.hold(participant, round_id, permit);
        debug!("upload slot reserved");
        Ok(ReservedSlot {
            token,
            valid_for: self.slots.valid_for(),
        })
    }

    /// Receives one masked update of a secure round from `parts`
    /// ([`Engine::receive_masked`]), with the upload slot its header names.
    ///
    /// # Errors
    /// As [`Engine::receive_masked`].
    pub async fn receive_masked<S, E>(
        &self,
        authenticated: Option<&ParticipantId>,
        parts: S,
    ) -> Result<ReceivedUpdate, UploadError<E>>
    where
        S: Stream<Item = Result<super::MaskedPart, E>> + Unpin,
        E: UploadTransportError,
    {
        self.engine
            .receive_masked(
                authenticated,
                parts,
                self.chunk_idle_timeout,
                |participant, round_id, token| {
                    self.slots.release_stale(round_id);
                    self.slots.take(participant, round_id, token)
                },
            )
            .await
    }

    /// Receives one update from `parts` and folds it into its round: reads
    /// the header, checks that it names `authenticated` (`None` without
    /// TLS), admits it ([`Engine::begin_update`]), takes its reserved slot
    /// or waits for an upload permit, assembles the chunks and commits the
    /// update ([`Engine::commit_update`]). Records the participant, round
    /// and base version on the current span.
    ///
    /// # Errors
    /// [`UploadError::Refused`] with the reason the update was refused, or
    /// [`UploadError::Transport`] with a failure of the stream itself.
    pub async fn receive<S, E>(
        &self,
        authenticated: Option<&ParticipantId>,
        mut parts: S,
    ) -> Result<ReceivedUpdate, UploadError<E>>
    where
        S: Stream<Item = Result<UpdatePart, E>> + Unpin,
        E: UploadTransportError,
    {
        let idle_timeout = self.chunk_idle_timeout;
        let header = read_header(
            &mut parts,
            idle_timeout,
            "an update header",
            "update stream",
            |part| match part {
                UpdatePart::Header(header) => FirstPart::Header(header),
                UpdatePart::Data(_) => FirstPart::Data,
                UpdatePart::Empty => FirstPart::Empty,
            },
        )
        .await?;
        if let ParamEncoding::Unsupported(encoding) = header.encoding {
            return Err(UploadError::Refused(CoordinatorError::MalformedUpdate(
                format!("encoding {encoding} is not supported; use UPDATE_ENCODING_F32_LE"),
            )));
        }
        let span = Span::current();
        span.record(
            "participant",
            loggable_participant_id(&header.claimed_participant).as_str(),
        );
        span.record("round", header.round_id.0);
        span.record("version", header.base_version.0);
        let participant =
            claimed_participant(authenticated, header.claimed_participant, "submit_update")?;
        let round_id = header.round_id;
        let reserved = match header.upload_slot.as_str() {
            "" => None,
            token => {
                let reserved = self.slots.take(&participant, round_id, token);
                if reserved.is_none() {
                    debug!(round = %round_id, participant = %participant, "upload slot unknown or expired; the upload waits for one");
                }
                reserved
            }
        };
        let ticket = self
            .engine
            .begin_update(UpdateRequest {
                round_id,
                base_version: header.base_version,
                participant: participant.clone(),
                session_token: header.session_token,
                num_samples: header.num_samples,
                num_params: header.num_params,
                privacy: header.privacy,
            })
            .inspect_err(|error| warn!(round = %round_id, participant = %participant, error = %error, "update refused"))?;
        // Bounded memory: at most `max_concurrent_uploads` updates are
        // buffered at once; an upload without a reserved slot waits here
        // with the transport's flow control holding back its sender.
        let _permit = match reserved {
            Some(permit) => permit,
            None => {
                self.slots.release_stale(round_id);
                let _waiting = self.engine.metrics().waiting_for_upload_slot();
                self.engine
                    .upload_permits()
                    .acquire_owned()
                    .await
                    .map_err(|_| CoordinatorError::ShuttingDown)?
            }
        };
        let refused = |error: CoordinatorError| {
            warn!(round = %round_id, participant = %participant, error = %error, "update refused");
            UploadError::Refused(error)
        };
        let mut assembler =
            ChunkAssembler::with_buffer(self.engine.take_receive_buffer(), ticket.num_params());
        loop {
            // Each chunk must come within the idle timeout, and the whole
            // update before the round's deadline: a sender dripping one small
            // chunk just inside each idle timeout cannot hold its upload slot
            // past the round.
            let part = match next_part(
                &mut parts,
                idle_timeout,
                ticket.deadline(),
                round_id,
                &participant,
            )
            .await
            {
                Ok(Some(part)) => part,
                Ok(None) => break,
                Err(UploadError::Refused(error)) => return Err(refused(error)),
                Err(other) => return Err(other),
            };
            let refusal = match part {
                UpdatePart::Data(data) if data.len() > MAX_CHUNK_BYTES => Some(format!(
                    "chunk of {} bytes exceeds the limit of {MAX_CHUNK_BYTES}",
                    data.len()
                )),
                // An empty chunk adds nothing but restarts the idle timeout:
                // a stream of them would hold an upload slot forever.
                UpdatePart::Data(data) if data.is_empty() => Some("empty data chunk".to_string()),
                UpdatePart::Data(data) => {
                    self.engine.metrics().update_bytes_received(data.len());
                    assembler.push(&data).err().map(|error| error.to_string())
                }
                UpdatePart::Header(_) => Some("second header in one update stream".to_string()),
                UpdatePart::Empty => Some("empty chunk message".to_string()),
            };
            if let Some(reason) = refusal {
                return Err(refused(CoordinatorError::MalformedUpdate(reason)));
            }
        }
        let num_received = assembler.num_received();
        let delta = assembler.finish().map_err(|error| {
            warn!(round = %round_id, participant = %participant, num_received, "update stream ended early");
            UploadError::Refused(CoordinatorError::MalformedUpdate(format!(
                "stream ended early: {error}"
            )))
        })?;
        let num_accepted = self
            .engine
            .commit_update(ticket, delta)
            .await
            .map_err(refused)?;
        info!(round = %round_id, participant = %participant, num_params = num_received, "update received");
        Ok(ReceivedUpdate {
            round_id,
            num_accepted,
        })
    }
}

/// Returns the next part of an upload stream, `None` at its end. Each part
/// must come within `idle_timeout`, and the whole upload before the round's
/// `deadline`: a sender dripping one small chunk just inside each idle
/// timeout cannot hold its upload slot past the round. A message over the
/// transport's limit is refused as an oversized chunk.
///
/// # Errors
/// [`UploadError::Refused`] for a timeout or an oversized message,
/// [`UploadError::Transport`] for any other failure of the stream.
pub(super) async fn next_part<S, T, E>(
    parts: &mut S,
    idle_timeout: Duration,
    deadline: tokio::time::Instant,
    round_id: RoundId,
    participant: &ParticipantId,
) -> Result<Option<T>, UploadError<E>>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: UploadTransportError,
{
    let until_deadline = deadline.saturating_duration_since(tokio::time::Instant::now());
    let wait = idle_timeout.min(until_deadline);
    match tokio::time::timeout(wait, parts.next()).await {
        Err(_) => Err(UploadError::Refused(if wait < idle_timeout {
            CoordinatorError::UpdateTooSlow { round: round_id }
        } else {
            CoordinatorError::UpdateStalled {
                round: round_id,
                idle_ms: idle_timeout.as_millis() as u64,
            }
        })),
        Ok(Some(Err(failure))) => {
            if let Some(detail) = failure.oversized_message() {
                return Err(UploadError::Refused(CoordinatorError::MalformedUpdate(
                    format!("chunk exceeds the limit of {MAX_CHUNK_BYTES} bytes ({detail})"),
                )));
            }
            warn!(round = %round_id, participant = %participant, code = %failure.code_for_log(), "update stream failed");
            Err(UploadError::Transport(failure))
        }
        Ok(None) => Ok(None),
        Ok(Some(Ok(part))) => Ok(Some(part)),
    }
}

/// What the first message of an upload stream is.
pub(super) enum FirstPart<H> {
    Header(H),
    Data,
    Empty,
}

/// Returns the header an upload stream must open with, within
/// `idle_timeout`. The refusals name the header (`header_name`, "an update
/// header") and the stream (`stream_name`, "update stream").
///
/// # Errors
/// [`CoordinatorError::NoUpdateHeader`] after the timeout,
/// [`CoordinatorError::MalformedUpdate`] for data first or no message,
/// [`UploadError::Transport`] for a failure of the stream.
pub(super) async fn read_header<S, P, E, H>(
    parts: &mut S,
    idle_timeout: Duration,
    header_name: &str,
    stream_name: &str,
    classify: impl FnOnce(P) -> FirstPart<H>,
) -> Result<H, UploadError<E>>
where
    S: Stream<Item = Result<P, E>> + Unpin,
{
    let first = tokio::time::timeout(idle_timeout, parts.next())
        .await
        .map_err(|_| CoordinatorError::NoUpdateHeader {
            idle_ms: idle_timeout.as_millis() as u64,
        })?
        .transpose()
        .map_err(UploadError::Transport)?;
    match first.map(classify) {
        Some(FirstPart::Header(header)) => Ok(header),
        Some(FirstPart::Data) => Err(UploadError::Refused(CoordinatorError::MalformedUpdate(
            format!("first message must be {header_name}, got data"),
        ))),
        Some(FirstPart::Empty) | None => Err(UploadError::Refused(
            CoordinatorError::MalformedUpdate(format!("{stream_name} has no header")),
        )),
    }
}
