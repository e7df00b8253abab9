//! Sending an update: the deadline check, an upload slot when the
//! coordinator asks for one, then the header and the delta streamed in
//! chunks that are views into the update (no second copy).

use std::sync::Arc;

use fedshield_core::clock::unix_ms_now;
use fedshield_core::model::codec::{DEFAULT_CHUNK_PARAMS, shared_chunks};
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::{ModelVersion, ParticipantId, RoundId};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;
use tracing::{debug, info};

use super::{Participant, ParticipantEvent, Workload};
use crate::error::{ParticipantError, Result};

/// Where and when an update goes: the round it is for, as announced.
pub(super) struct SubmitTarget {
    pub(super) round_id: RoundId,
    pub(super) base_version: ModelVersion,
    pub(super) deadline_unix_ms: u64,
    /// Whether to reserve an upload slot before uploading.
    pub(super) reserve_slot_first: bool,
    pub(super) session_token: String,
}

/// An update ready to be sent, trained now or stored by an earlier attempt.
pub(super) struct ReadyUpdate {
    pub(super) delta: Vec<f32>,
    pub(super) num_steps: u64,
    pub(super) mean_loss: f32,
    /// The FedAvg weight declared (1 under DP: data sizes stay private).
    pub(super) num_samples: u64,
    pub(super) privacy: Option<PrivacyReport>,
    pub(super) update_sha256: Option<String>,
    pub(super) resent: bool,
}

impl Participant {
    /// Sends a ready update for the round `target` describes, if its
    /// deadline has not passed.
    pub(super) async fn submit_ready(
        &self,
        client: &mut FederationClient<Channel>,
        target: SubmitTarget,
        ready: ReadyUpdate,
    ) -> Result<ParticipantEvent> {
        let SubmitTarget {
            round_id,
            base_version,
            deadline_unix_ms,
            reserve_slot_first,
            session_token,
        } = target;
        if unix_ms_now() > deadline_unix_ms {
            return Err(ParticipantError::DeadlinePassed(round_id));
        }
        let mut delta = ready.delta;
        if let Some(tamper) = &self.tamper {
            tamper(&mut delta);
        }
        let upload_slot = if reserve_slot_first {
            reserve_upload_slot(
                client,
                round_id,
                &self.config.participant_id,
                &session_token,
            )
            .await?
        } else {
            String::new()
        };
        let header = pb::UpdateHeader {
            round_id: round_id.0,
            base_model_version: base_version.0,
            participant_id: self.config.participant_id.to_string(),
            session_token,
            upload_slot,
            num_samples: ready.num_samples,
            encoding: pb::UpdateEncoding::F32Le as i32,
            num_params: delta.len() as u64,
            privacy: ready.privacy.as_ref().map(pb::PrivacyReport::from),
        };
        let delta = Arc::new(delta);
        let num_update_bytes = delta.len() * std::mem::size_of::<f32>();
        let response = submit_shared_update(client, header, delta.clone()).await?;
        self.metrics.uploaded(num_update_bytes);
        // Once the coordinator answered, the transport has normally dropped
        // its views of the update: keep the memory for the next download
        // (benchmark mode), or let it go if a view is still alive.
        if let Ok(buffer) = Arc::try_unwrap(delta) {
            self.recycle_buffer(buffer);
        }
        info!(
            num_steps = ready.num_steps,
            mean_loss = ready.mean_loss,
            num_accepted = response.num_updates_accepted,
            resent = ready.resent,
            "update submitted"
        );
        Ok(ParticipantEvent::Contributed {
            round_id,
            base_version,
            num_steps: ready.num_steps,
            mean_loss: ready.mean_loss,
            resent: ready.resent,
            update_sha256: ready.update_sha256,
        })
    }

    /// Returns the model-sized buffer kept from the last round (empty if none).
    pub(super) fn take_spare_buffer(&self) -> Vec<f32> {
        std::mem::take(
            &mut *self
                .spare_buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Keeps `buffer` for the next download, in benchmark mode only.
    fn recycle_buffer(&self, mut buffer: Vec<f32>) {
        if matches!(self.workload, Workload::BenchmarkNoOp { .. }) {
            buffer.clear();
            *self
                .spare_buffer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = buffer;
        }
    }
}

/// Streams an update: the header, then the delta in chunks. The chunks are
/// views into `delta` made as the transport asks for them, so sending holds
/// no second copy of the update.
///
/// # Errors
/// The coordinator's refusal.
pub async fn submit_update(
    client: &mut FederationClient<Channel>,
    header: pb::UpdateHeader,
    delta: Vec<f32>,
) -> Result<pb::SubmitUpdateResponse> {
    submit_shared_update(client, header, Arc::new(delta)).await
}

/// Waits for one of the coordinator's upload slots and returns its token,
/// for the header of the upload that follows at once. A coordinator that
/// does not offer slots (`UNIMPLEMENTED`) gets uploads without one: they
/// then wait for a slot inside `SubmitUpdate`.
///
/// # Errors
/// The coordinator's refusal (as it would refuse the update: session,
/// round, selection, deadline).
pub async fn reserve_upload_slot(
    client: &mut FederationClient<Channel>,
    round_id: RoundId,
    participant_id: &ParticipantId,
    session_token: &str,
) -> Result<String> {
    let reserved = client
        .reserve_upload_slot(pb::ReserveUploadSlotRequest {
            round_id: round_id.0,
            participant_id: participant_id.to_string(),
            session_token: session_token.to_string(),
        })
        .await;
    match reserved {
        Ok(slot) => Ok(slot.into_inner().slot_token),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            debug!("the coordinator offers no upload slots; uploading without one");
            Ok(String::new())
        }
        Err(status) => Err(status.into()),
    }
}

/// [`submit_update`] of an update the caller keeps a handle to.
async fn submit_shared_update(
    client: &mut FederationClient<Channel>,
    header: pb::UpdateHeader,
    delta: Arc<Vec<f32>>,
) -> Result<pb::SubmitUpdateResponse> {
    let header_message = pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Header(header)),
    };
    let chunks =
        shared_chunks(delta, |delta| delta, DEFAULT_CHUNK_PARAMS).map(|data| pb::UpdateChunk {
            payload: Some(pb::update_chunk::Payload::Data(data)),
        });
    let messages = futures::stream::iter(std::iter::once(header_message).chain(chunks));
    Ok(client.submit_update(messages).await?.into_inner())
}
