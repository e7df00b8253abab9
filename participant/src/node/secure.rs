//! A round under secure aggregation (SecAgg+), on the participant's side:
//! the key phases before training, then the update clipped, rotated,
//! quantized, noised (distributed discrete Gaussian) and masked, and at the
//! end the shares the coordinator needs to unmask the sum (never both kinds
//! of share of one participant; the protocol state refuses such a request).

use std::collections::BTreeSet;

use fedshield_core::ParticipantId;
use fedshield_core::plan::SecureAggregationPlan;
use fedshield_core::privacy::distributed::{SecAggEncoding, padded_dim};
use fedshield_core::privacy::noise::os_seeded_rng;
use fedshield_core::secagg::{
    ClientRound, EncryptedShare, PublicKeys, RevealedShare, Roster, RoundSetup, ShareKind,
};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;
use tracing::{info, warn};

use super::upload::{ReadyUpdate, SubmitTarget};
use super::{Participant, ParticipantEvent};
use crate::error::{ParticipantError, Result};

/// Environment variable that makes a participant stop answering (and
/// sleep) right after its masked update is accepted, so that the dropout
/// tests can kill it at that point. Never set it in production.
pub const HANG_AFTER_MASKED_UPDATE_ENV: &str = "FEDSHIELD_TEST_HANG_AFTER_MASKED_UPDATE";

/// The participant's protocol state of one secure round, after the key
/// phases.
pub(super) struct SecureSession {
    round: ClientRound,
    shares_for_me: Vec<EncryptedShare>,
    rotation_seed: [u8; 32],
    vector_len: usize,
}

fn protocol(message: impl Into<String>) -> ParticipantError {
    ParticipantError::Protocol(message.into())
}

fn key(bytes: &[u8], what: &str) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| protocol(format!("{what} has {} bytes, expected 32", bytes.len())))
}

fn participant_id(id: String) -> Result<ParticipantId> {
    ParticipantId::new(id).map_err(|error| protocol(format!("bad participant id: {error}")))
}

impl Participant {
    /// Runs the key phases of a secure round: advertises fresh keys, gets
    /// the roster, sends the encrypted shares of its secrets and receives
    /// the shares addressed to it.
    ///
    /// # Errors
    /// A protocol error for a setup or roster the participant cannot work
    /// with, or the coordinator's refusal.
    pub(super) async fn secure_key_phases(
        &self,
        client: &mut FederationClient<Channel>,
        target: &SubmitTarget,
        setup: &pb::SecureAggregationRound,
    ) -> Result<SecureSession> {
        let me = self.config.participant_id.clone();
        let rotation_seed = key(&setup.rotation_seed, "the round's rotation seed")?;
        let vector_len = usize::try_from(setup.vector_len)
            .map_err(|_| protocol("the round's vector length does not fit in memory"))?;
        let round_setup = RoundSetup {
            round_id: target.round_id.0,
            degree: setup.degree as usize,
            threshold: setup.threshold as usize,
            vector_len,
        };
        let mut rng = os_seeded_rng()?;
        let mut round = ClientRound::new(me.clone(), round_setup, &mut rng);
        let keys = round.public_keys();
        let roster = client
            .advertise_keys(pb::AdvertiseKeysRequest {
                round_id: target.round_id.0,
                participant_id: me.to_string(),
                session_token: target.session_token.clone(),
                cipher_public_key: keys.cipher_public.to_vec(),
                mask_public_key: keys.mask_public.to_vec(),
            })
            .await?
            .into_inner();
        let mut members = std::collections::BTreeMap::new();
        for member in roster.members {
            let keys = PublicKeys {
                cipher_public: key(&member.cipher_public_key, "a roster cipher key")?,
                mask_public: key(&member.mask_public_key, "a roster mask key")?,
            };
            members.insert(participant_id(member.participant_id)?, keys);
        }
        let roster = Roster {
            graph_seed: key(&roster.graph_seed, "the roster's graph seed")?,
            members,
        };
        let shares = round
            .share_keys(&roster, &mut rng)
            .map_err(|error| protocol(format!("secure aggregation roster refused: {error}")))?;
        info!(
            num_members = roster.members.len(),
            num_shares = shares.len(),
            "secure aggregation keys advertised; sharing secrets with neighbours"
        );
        let received = client
            .share_keys(pb::ShareKeysRequest {
                round_id: target.round_id.0,
                participant_id: me.to_string(),
                session_token: target.session_token.clone(),
                shares: shares
                    .into_iter()
                    .map(|share| pb::EncryptedShare {
                        from_participant: share.from.to_string(),
                        to_participant: share.to.to_string(),
                        ciphertext: share.ciphertext,
                    })
                    .collect(),
            })
            .await?
            .into_inner();
        let shares_for_me = received
            .shares
            .into_iter()
            .map(|share| {
                Ok(EncryptedShare {
                    from: participant_id(share.from_participant)?,
                    to: participant_id(share.to_participant)?,
                    ciphertext: share.ciphertext,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SecureSession {
            round,
            shares_for_me,
            rotation_seed,
            vector_len,
        })
    }

    /// Encodes, masks and sends `ready`'s update for a secure round, then
    /// answers the coordinator's unmask request.
    ///
    /// # Errors
    /// A protocol error (the encoding, the masks, an unmask request that
    /// asks for both kinds of share of one participant), or the
    /// coordinator's refusal.
    pub(super) async fn submit_secure(
        &self,
        client: &mut FederationClient<Channel>,
        target: SubmitTarget,
        ready: ReadyUpdate,
        session: SecureSession,
        plan: &SecureAggregationPlan,
    ) -> Result<ParticipantEvent> {
        let SecureSession {
            mut round,
            shares_for_me,
            rotation_seed,
            vector_len,
        } = session;
        let mut delta = ready.delta;
        if let Some(tamper) = &self.tamper {
            tamper(&mut delta);
        }
        let num_params = delta.len();
        if padded_dim(num_params) != vector_len {
            return Err(protocol(format!(
                "the round masks vectors of {vector_len} values, a model of {num_params} parameters pads to {}",
                padded_dim(num_params)
            )));
        }
        let encoding = SecAggEncoding::for_plan(plan, num_params, rotation_seed)?;
        // Encoding (rotation, rounding, the exact noise sampler) and the
        // mask expansion are CPU work: off the async threads.
        let (masked, mut round) = tokio::task::spawn_blocking(move || -> Result<_> {
            let started = std::time::Instant::now();
            let mut rng = os_seeded_rng()?;
            let encoded = encoding.encode(&delta, &mut rng)?;
            let encoded_ms = started.elapsed().as_millis() as u64;
            let mut values = encoded.values;
            round
                .mask_input(shares_for_me, &mut values)
                .map_err(|error| protocol(format!("masking refused: {error}")))?;
            info!(
                encode_ms = encoded_ms,
                mask_ms = started.elapsed().as_millis() as u64 - encoded_ms,
                clipped = encoded.clipped,
                "update encoded and masked"
            );
            Ok((values, round))
        })
        .await
        .map_err(|error| protocol(format!("masking task failed: {error}")))??;
        // When more were selected than the coordinator receives at once,
        // wait for a slot before streaming (its memory stays bounded).
        let upload_slot = if target.reserve_slot_first {
            super::upload::reserve_upload_slot(
                client,
                target.round_id,
                &self.config.participant_id,
                &target.session_token,
            )
            .await?
        } else {
            String::new()
        };
        let header = pb::MaskedUpdateHeader {
            round_id: target.round_id.0,
            base_model_version: target.base_version.0,
            participant_id: self.config.participant_id.to_string(),
            session_token: target.session_token.clone(),
            num_values: masked.len() as u64,
            privacy: ready.privacy.as_ref().map(pb::PrivacyReport::from),
            upload_slot,
        };
        let num_bytes = masked.len() * 4;
        let response = submit_masked(client, header, masked).await?;
        self.metrics.uploaded(num_bytes);
        info!(
            num_accepted = response.num_updates_accepted,
            num_values = vector_len,
            "masked update submitted"
        );
        if std::env::var_os(HANG_AFTER_MASKED_UPDATE_ENV).is_some() {
            warn!(
                "masked update accepted; not answering anything more ({HANG_AFTER_MASKED_UPDATE_ENV} is set)"
            );
            println!("fedshield-test: masked update accepted, hanging");
            std::future::pending::<()>().await;
        }
        let request = client
            .await_unmask(pb::AwaitUnmaskRequest {
                round_id: target.round_id.0,
                participant_id: self.config.participant_id.to_string(),
                session_token: target.session_token.clone(),
            })
            .await?
            .into_inner();
        let survivors = request
            .survivors
            .into_iter()
            .map(participant_id)
            .collect::<Result<BTreeSet<_>>>()?;
        let dropped = request
            .dropped
            .into_iter()
            .map(participant_id)
            .collect::<Result<BTreeSet<_>>>()?;
        // The distributed noise is planned for at least `min_participants`
        // updates: a sum of fewer would carry too little of it.
        if let Some(distributed) = &plan.distributed_dp
            && survivors.len() < distributed.min_participants as usize
        {
            return Err(protocol(format!(
                "the unmask request names {} survivors, and the plan's distributed DP needs the noise of at least {}: no shares are revealed",
                survivors.len(),
                distributed.min_participants
            )));
        }
        let revealed = round
            .unmask_shares(&survivors, &dropped)
            .map_err(|error| protocol(format!("unmask request refused: {error}")))?;
        info!(
            num_survivors = survivors.len(),
            num_dropped = dropped.len(),
            num_shares = revealed.len(),
            "revealing shares for the unmasking"
        );
        client
            .reveal_shares(pb::RevealSharesRequest {
                round_id: target.round_id.0,
                participant_id: self.config.participant_id.to_string(),
                session_token: target.session_token,
                shares: revealed.into_iter().map(revealed_message).collect(),
            })
            .await?;
        Ok(ParticipantEvent::Contributed {
            round_id: target.round_id,
            base_version: target.base_version,
            num_steps: ready.num_steps,
            mean_loss: ready.mean_loss,
            resent: false,
            update_sha256: None,
        })
    }
}

fn revealed_message(share: RevealedShare) -> pb::RevealedShare {
    pb::RevealedShare {
        owner: share.owner.to_string(),
        kind: match share.kind {
            ShareKind::SelfMask => pb::ShareKind::SelfMask,
            ShareKind::MaskKey => pb::ShareKind::MaskKey,
        } as i32,
        x: u32::from(share.share.x),
        y: share.share.y.to_vec(),
    }
}

/// Streams a masked update: the header, then the values in chunks of
/// little-endian u32.
async fn submit_masked(
    client: &mut FederationClient<Channel>,
    header: pb::MaskedUpdateHeader,
    masked: Vec<u32>,
) -> Result<pb::SubmitUpdateResponse> {
    const CHUNK_VALUES: usize = fedshield_core::model::codec::DEFAULT_CHUNK_PARAMS;
    let header_message = pb::MaskedUpdateChunk {
        payload: Some(pb::masked_update_chunk::Payload::Header(header)),
    };
    // Each chunk's bytes are made as the transport asks for them: no
    // second copy of the whole update.
    let num_chunks = masked.len().div_ceil(CHUNK_VALUES);
    let chunks = (0..num_chunks).map(move |index| {
        let start = index * CHUNK_VALUES;
        let end = (start + CHUNK_VALUES).min(masked.len());
        let mut bytes = Vec::with_capacity((end - start) * 4);
        for value in &masked[start..end] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        pb::MaskedUpdateChunk {
            payload: Some(pb::masked_update_chunk::Payload::Data(bytes.into())),
        }
    });
    let messages = futures::stream::iter(std::iter::once(header_message).chain(chunks));
    Ok(client.submit_masked_update(messages).await?.into_inner())
}
