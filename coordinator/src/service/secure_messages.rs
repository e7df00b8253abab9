//! Secure-aggregation messages to and from their domain types, each field
//! checked (key and share lengths, evaluation points, participant ids)
//! before the engine sees it.

use fedshield_core::secagg::{EncryptedShare, PublicKeys, RevealedShare, Roster, Share, ShareKind};
use fedshield_core::{ParticipantId, RoundId};
use fedshield_proto::v1 as pb;

use crate::engine::{MaskedPart, MaskedUpdateHeader};
use crate::error::CoordinatorError;

/// Largest ciphertext of one encrypted share pair the coordinator relays.
const MAX_SHARE_CIPHERTEXT_BYTES: usize = 1024;

fn key(bytes: &[u8], name: &str) -> Result<[u8; 32], CoordinatorError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        CoordinatorError::SecureAggregation(format!(
            "{name} has {} bytes, an X25519 public key has 32",
            bytes.len()
        ))
    })
}

fn participant(id: String, field: &str) -> Result<ParticipantId, CoordinatorError> {
    ParticipantId::new(id).map_err(|error| {
        CoordinatorError::SecureAggregation(format!("{field} is not a participant id: {error}"))
    })
}

/// Returns the public keys of an `AdvertiseKeys` request.
pub(super) fn public_keys(
    cipher_public: &[u8],
    mask_public: &[u8],
) -> Result<PublicKeys, CoordinatorError> {
    Ok(PublicKeys {
        cipher_public: key(cipher_public, "cipher_public_key")?,
        mask_public: key(mask_public, "mask_public_key")?,
    })
}

/// Returns the roster message of round `round_id`.
pub(super) fn roster_message(round_id: RoundId, roster: &Roster) -> pb::SecureAggregationRoster {
    pb::SecureAggregationRoster {
        round_id: round_id.0,
        graph_seed: roster.graph_seed.to_vec(),
        members: roster
            .members
            .iter()
            .map(|(member, keys)| pb::ParticipantKeys {
                participant_id: member.to_string(),
                cipher_public_key: keys.cipher_public.to_vec(),
                mask_public_key: keys.mask_public.to_vec(),
            })
            .collect(),
    }
}

/// Returns the shares of a `ShareKeys` request.
pub(super) fn encrypted_shares(
    shares: Vec<pb::EncryptedShare>,
) -> Result<Vec<EncryptedShare>, CoordinatorError> {
    shares
        .into_iter()
        .map(|share| {
            if share.ciphertext.len() > MAX_SHARE_CIPHERTEXT_BYTES {
                return Err(CoordinatorError::SecureAggregation(format!(
                    "an encrypted share has {} bytes, at most {MAX_SHARE_CIPHERTEXT_BYTES} are relayed",
                    share.ciphertext.len()
                )));
            }
            Ok(EncryptedShare {
                from: participant(share.from_participant, "from_participant")?,
                to: participant(share.to_participant, "to_participant")?,
                ciphertext: share.ciphertext,
            })
        })
        .collect()
}

/// Returns the message of one relayed share.
pub(super) fn encrypted_share_message(share: EncryptedShare) -> pb::EncryptedShare {
    pb::EncryptedShare {
        from_participant: share.from.to_string(),
        to_participant: share.to.to_string(),
        ciphertext: share.ciphertext,
    }
}

/// Returns the shares of a `RevealShares` request.
pub(super) fn revealed_shares(
    shares: Vec<pb::RevealedShare>,
) -> Result<Vec<RevealedShare>, CoordinatorError> {
    shares
        .into_iter()
        .map(|share| {
            let kind = match pb::ShareKind::try_from(share.kind) {
                Ok(pb::ShareKind::SelfMask) => ShareKind::SelfMask,
                Ok(pb::ShareKind::MaskKey) => ShareKind::MaskKey,
                _ => {
                    return Err(CoordinatorError::SecureAggregation(format!(
                        "share kind {} is neither SHARE_KIND_SELF_MASK nor SHARE_KIND_MASK_KEY",
                        share.kind
                    )));
                }
            };
            let x = u8::try_from(share.x)
                .ok()
                .filter(|x| *x != 0)
                .ok_or_else(|| {
                    CoordinatorError::SecureAggregation(format!(
                        "share point x = {} is not in 1..=255",
                        share.x
                    ))
                })?;
            let y = <[u8; 32]>::try_from(share.y.as_slice()).map_err(|_| {
                CoordinatorError::SecureAggregation(format!(
                    "a share has {} bytes, shares have 32",
                    share.y.len()
                ))
            })?;
            Ok(RevealedShare {
                owner: participant(share.owner, "owner")?,
                kind,
                share: Share { x, y },
            })
        })
        .collect()
}

/// Returns the engine's view of one masked-update message.
pub(super) fn masked_part(chunk: pb::MaskedUpdateChunk) -> MaskedPart {
    match chunk.payload {
        Some(pb::masked_update_chunk::Payload::Header(header)) => {
            MaskedPart::Header(MaskedUpdateHeader {
                round_id: RoundId(header.round_id),
                base_version: fedshield_core::ModelVersion(header.base_model_version),
                claimed_participant: header.participant_id,
                session_token: header.session_token,
                num_values: header.num_values,
                privacy: header
                    .privacy
                    .map(fedshield_core::privacy::PrivacyReport::from),
                upload_slot: header.upload_slot,
            })
        }
        Some(pb::masked_update_chunk::Payload::Data(data)) => MaskedPart::Data(data),
        None => MaskedPart::Empty,
    }
}
