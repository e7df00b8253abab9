//! The coordinator's side of one SecAgg+ round, as a state machine.
//!
//! The coordinator is honest-but-curious: it follows the protocol and tries
//! to learn individual inputs from what it sees. It only relays encrypted
//! shares and adds masked vectors into one running sum, so its memory is
//! O(vector_len) plus O(n·degree) small shares. The participant sets follow
//! Bonawitz et al. 2017:
//!
//! - U1: members that advertised keys ([`ServerRound::close_advertising`]),
//! - U2 ⊆ U1: members that sent their encrypted shares ([`ServerRound::close_sharing`]),
//! - U3 ⊆ U2: members that sent a masked input ([`ServerRound::close_masking`]);
//!   U3 are the survivors, U2 \ U3 the dropped,
//! - the members of U3 that reveal their shares ([`ServerRound::reveal`]).
//!
//! [`ServerRound::unmask`] reconstructs every survivor's self-mask seed and
//! every dropped member's mask key, and subtracts their masks from the sum.
//! The coordinator never asks for, and never accepts, the mask key share of
//! a survivor or the self-mask share of a dropped member.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::client::{EncryptedShare, RevealedShare, Roster, RoundSetup, ShareKind};
use super::error::{Phase, Result, SecAggError};
use super::graph::neighbourhoods;
use super::keys::{
    ENCRYPTED_SHARE_LEN, PublicKeys, is_low_order, pairwise_mask_seed, public_of_secret,
};
use super::masks::MaskSign;
use super::shamir::{Share, combine};
use crate::ParticipantId;

/// Most neighbours a member may have: share x coordinates are one byte.
const MAX_NEIGHBOURS: usize = 255;

/// Who survived the masking phase and who dropped, as sent to the survivors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// U3: the members whose masked input is in the sum; their self-mask
    /// shares are requested.
    pub survivors: BTreeSet<ParticipantId>,
    /// U2 \ U3: the members that shared but sent no input; their mask key
    /// shares are requested.
    pub dropped: BTreeSet<ParticipantId>,
}

/// The result of a round: the wrapping sum of the survivors' inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskedSum {
    /// Σ inputs of the survivors, modulo 2^32.
    pub sum: Vec<u32>,
    /// The members whose inputs are in the sum.
    pub survivors: BTreeSet<ParticipantId>,
}

/// The roster and graph, fixed when advertising closes.
struct Membership {
    /// U1 and their advertised keys.
    members: BTreeMap<ParticipantId, PublicKeys>,
    /// The neighbour graph over U1.
    graph: BTreeMap<ParticipantId, BTreeSet<ParticipantId>>,
}

impl Membership {
    /// Returns the 1-based position of `holder` in `owner`'s sorted neighbour
    /// list: the x coordinate of the shares of `owner` that `holder` holds.
    fn share_x(&self, owner: &ParticipantId, holder: &ParticipantId) -> Option<u8> {
        let position = self
            .graph
            .get(owner)?
            .iter()
            .position(|member| member == holder)?;
        u8::try_from(position + 1).ok()
    }
}

/// The state of the coordinator's round; each variant holds what its phase
/// collects.
enum ServerState {
    /// Collecting public keys from the selected participants.
    Advertising {
        advertised: BTreeMap<ParticipantId, PublicKeys>,
    },
    /// Collecting encrypted shares from U1, filed by recipient.
    Sharing {
        membership: Membership,
        inbox: BTreeMap<ParticipantId, Vec<EncryptedShare>>,
        sharers: BTreeSet<ParticipantId>,
    },
    /// Handing out shares to U2 and summing their masked inputs.
    Masking {
        membership: Membership,
        inbox: BTreeMap<ParticipantId, Vec<EncryptedShare>>,
        sharers: BTreeSet<ParticipantId>,
        maskers: BTreeSet<ParticipantId>,
        sum: Vec<u32>,
    },
    /// Collecting revealed shares from the survivors.
    Unmasking {
        membership: Membership,
        request: UnmaskRequest,
        sum: Vec<u32>,
        revealers: BTreeSet<ParticipantId>,
        revealed: BTreeMap<(ParticipantId, ShareKind), Vec<Share>>,
    },
}

impl ServerState {
    fn phase(&self) -> Phase {
        match self {
            ServerState::Advertising { .. } => Phase::Advertising,
            ServerState::Sharing { .. } => Phase::Sharing,
            ServerState::Masking { .. } => Phase::Masking,
            ServerState::Unmasking { .. } => Phase::Unmasking,
        }
    }
}

/// The coordinator's side of one SecAgg+ round.
pub struct ServerRound {
    setup: RoundSetup,
    /// The participants selected for the round; only they may advertise.
    selected: BTreeSet<ParticipantId>,
    graph_seed: [u8; 32],
    state: ServerState,
}

impl std::fmt::Debug for ServerRound {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerRound")
            .field("setup", &self.setup)
            .field("num_selected", &self.selected.len())
            .field("phase", &self.state.phase())
            .finish_non_exhaustive()
    }
}

fn unknown(participant: &ParticipantId, set: &'static str) -> SecAggError {
    SecAggError::UnknownParticipant {
        participant: participant.clone(),
        set,
    }
}

impl ServerRound {
    /// Returns a round in the advertising phase. `graph_seed` should be drawn
    /// fresh by the coordinator for every round.
    pub fn new(setup: RoundSetup, selected: BTreeSet<ParticipantId>, graph_seed: [u8; 32]) -> Self {
        ServerRound {
            setup,
            selected,
            graph_seed,
            state: ServerState::Advertising {
                advertised: BTreeMap::new(),
            },
        }
    }

    /// Returns the phase whose messages the round collects.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Returns the round's setup.
    pub fn setup(&self) -> &RoundSetup {
        &self.setup
    }

    fn wrong_phase(&self, expected: Phase) -> SecAggError {
        SecAggError::WrongPhase {
            expected,
            actual: self.state.phase(),
        }
    }

    /// Returns the neighbours of `who` once advertising has closed.
    pub fn neighbours(&self, who: &ParticipantId) -> Option<&BTreeSet<ParticipantId>> {
        let membership = match &self.state {
            ServerState::Advertising { .. } => return None,
            ServerState::Sharing { membership, .. }
            | ServerState::Masking { membership, .. }
            | ServerState::Unmasking { membership, .. } => membership,
        };
        membership.graph.get(who)
    }

    /// Records the public keys of `who`.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`] when `who` was not selected,
    /// [`SecAggError::Duplicate`] when it already advertised,
    /// [`SecAggError::LowOrderKey`] for a key of small order,
    /// [`SecAggError::Malformed`] when a key equals its other key or one
    /// already advertised by another member.
    pub fn advertise(&mut self, who: &ParticipantId, keys: PublicKeys) -> Result<()> {
        let ServerState::Advertising { advertised } = &mut self.state else {
            return Err(self.wrong_phase(Phase::Advertising));
        };
        if !self.selected.contains(who) {
            return Err(unknown(who, "selection"));
        }
        if advertised.contains_key(who) {
            return Err(SecAggError::Duplicate {
                phase: Phase::Advertising,
                participant: who.clone(),
            });
        }
        if is_low_order(&keys.cipher_public) || is_low_order(&keys.mask_public) {
            return Err(SecAggError::LowOrderKey {
                participant: who.clone(),
            });
        }
        if keys.cipher_public == keys.mask_public {
            return Err(SecAggError::Malformed(format!(
                "{who} advertised the same public key twice"
            )));
        }
        for (other, other_keys) in advertised.iter() {
            let other_publics = [other_keys.cipher_public, other_keys.mask_public];
            if other_publics.contains(&keys.cipher_public)
                || other_publics.contains(&keys.mask_public)
            {
                return Err(SecAggError::Malformed(format!(
                    "{who} advertised a public key already used by {other}"
                )));
            }
        }
        advertised.insert(who.clone(), keys);
        Ok(())
    }

    /// Closes advertising: the members that advertised form U1, and the
    /// returned roster (their keys and the graph seed) goes to each of them.
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] with fewer than `threshold + 1`
    /// members; [`SecAggError::InvalidSetup`] when the degree gives some
    /// member fewer than `threshold` (or more than 255) neighbours.
    pub fn close_advertising(&mut self) -> Result<Roster> {
        let ServerState::Advertising { advertised } = &mut self.state else {
            return Err(self.wrong_phase(Phase::Advertising));
        };
        if self.setup.threshold == 0 {
            return Err(SecAggError::InvalidSetup(
                "the threshold must be at least 1".to_string(),
            ));
        }
        if advertised.len() < self.setup.threshold + 1 {
            return Err(SecAggError::TooFewSurvivors {
                stage: "advertising",
                num_survivors: advertised.len(),
                threshold: self.setup.threshold + 1,
            });
        }
        let member_ids: BTreeSet<ParticipantId> = advertised.keys().cloned().collect();
        let graph = neighbourhoods(&member_ids, self.setup.degree, &self.graph_seed);
        for (member, neighbours) in &graph {
            if neighbours.len() < self.setup.threshold || neighbours.len() > MAX_NEIGHBOURS {
                return Err(SecAggError::InvalidSetup(format!(
                    "degree {} gives {member} {} neighbours; the threshold is {} and at most {MAX_NEIGHBOURS} are allowed",
                    self.setup.degree,
                    neighbours.len(),
                    self.setup.threshold
                )));
            }
        }
        let members = std::mem::take(advertised);
        let roster = Roster {
            graph_seed: self.graph_seed,
            members: members.clone(),
        };
        self.state = ServerState::Sharing {
            membership: Membership { members, graph },
            inbox: BTreeMap::new(),
            sharers: BTreeSet::new(),
        };
        Ok(roster)
    }

    /// Records the encrypted shares of `who`: exactly one per neighbour, all
    /// from `who`, each of the one valid ciphertext length.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`] when `who` is not in U1,
    /// [`SecAggError::Duplicate`] when it already shared,
    /// [`SecAggError::Malformed`] for a wrong sender, recipient, count or size.
    pub fn submit_shares(
        &mut self,
        who: &ParticipantId,
        shares: Vec<EncryptedShare>,
    ) -> Result<()> {
        let ServerState::Sharing {
            membership,
            inbox,
            sharers,
        } = &mut self.state
        else {
            return Err(self.wrong_phase(Phase::Sharing));
        };
        let Some(neighbours) = membership.graph.get(who) else {
            return Err(unknown(who, "roster"));
        };
        if sharers.contains(who) {
            return Err(SecAggError::Duplicate {
                phase: Phase::Sharing,
                participant: who.clone(),
            });
        }
        if shares.len() != neighbours.len() {
            return Err(SecAggError::Malformed(format!(
                "{who} sent {} shares for its {} neighbours",
                shares.len(),
                neighbours.len()
            )));
        }
        let mut recipients = BTreeSet::new();
        for share in &shares {
            if share.from != *who {
                return Err(SecAggError::Malformed(format!(
                    "{who} sent a share marked as from {}",
                    share.from
                )));
            }
            if !neighbours.contains(&share.to) {
                return Err(SecAggError::Malformed(format!(
                    "{who} sent a share to {}, which is not its neighbour",
                    share.to
                )));
            }
            if !recipients.insert(&share.to) {
                return Err(SecAggError::Malformed(format!(
                    "{who} sent two shares to {}",
                    share.to
                )));
            }
            if share.ciphertext.len() != ENCRYPTED_SHARE_LEN {
                return Err(SecAggError::Malformed(format!(
                    "{who} sent a share of {} bytes to {}, expected {ENCRYPTED_SHARE_LEN}",
                    share.ciphertext.len(),
                    share.to
                )));
            }
        }
        for share in shares {
            inbox.entry(share.to.clone()).or_default().push(share);
        }
        sharers.insert(who.clone());
        Ok(())
    }

    /// Closes sharing: the members that shared form U2, less those that
    /// could never be unmasked.
    ///
    /// A member's secrets are shared only with its neighbours, so it needs at
    /// least `threshold` neighbours in U2 to hold them; members with fewer are
    /// left out (their shares are not handed out, so nobody masks with them),
    /// which may leave others short in turn, until every member of U2 has
    /// `threshold` neighbours in U2. Without this a single member with a
    /// thin neighbourhood would make the whole round fail at unmasking. With
    /// the complete graph this needs `threshold + 1` members in U2.
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] with fewer than `threshold + 1` left
    /// in U2.
    pub fn close_sharing(&mut self) -> Result<()> {
        let ServerState::Sharing {
            membership,
            inbox,
            sharers,
        } = &mut self.state
        else {
            return Err(self.wrong_phase(Phase::Sharing));
        };
        let threshold = self.setup.threshold;
        let mut kept = sharers.clone();
        loop {
            let thin: Vec<ParticipantId> = kept
                .iter()
                .filter(|member| membership.graph[*member].intersection(&kept).count() < threshold)
                .cloned()
                .collect();
            if thin.is_empty() {
                break;
            }
            for member in &thin {
                kept.remove(member);
            }
        }
        if kept.len() < threshold + 1 {
            return Err(SecAggError::TooFewSurvivors {
                stage: "sharing",
                num_survivors: kept.len(),
                threshold: threshold + 1,
            });
        }
        *sharers = kept;
        let membership = std::mem::replace(
            membership,
            Membership {
                members: BTreeMap::new(),
                graph: BTreeMap::new(),
            },
        );
        let inbox = std::mem::take(inbox);
        let sharers = std::mem::take(sharers);
        self.state = ServerState::Masking {
            membership,
            inbox,
            sharers,
            maskers: BTreeSet::new(),
            sum: vec![0; self.setup.vector_len],
        };
        Ok(())
    }

    /// Returns the encrypted shares addressed to `who` (a member of U2) by
    /// the other members of U2.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`] when `who` is not in U2.
    pub fn shares_for(&self, who: &ParticipantId) -> Result<Vec<EncryptedShare>> {
        let ServerState::Masking { inbox, sharers, .. } = &self.state else {
            return Err(self.wrong_phase(Phase::Masking));
        };
        if !sharers.contains(who) {
            return Err(unknown(who, "sharers"));
        }
        let shares = inbox.get(who).map_or(&[][..], Vec::as_slice);
        Ok(shares
            .iter()
            .filter(|share| sharers.contains(&share.from))
            .cloned()
            .collect())
    }

    /// Returns the participants that advertised keys: so far while
    /// advertising, U1 once it closed.
    pub fn advertisers(&self) -> BTreeSet<ParticipantId> {
        match &self.state {
            ServerState::Advertising { advertised } => advertised.keys().cloned().collect(),
            ServerState::Sharing { membership, .. }
            | ServerState::Masking { membership, .. }
            | ServerState::Unmasking { membership, .. } => {
                membership.members.keys().cloned().collect()
            }
        }
    }

    /// Returns the survivors that revealed their shares so far (empty
    /// before the unmasking).
    pub fn revealers(&self) -> BTreeSet<ParticipantId> {
        match &self.state {
            ServerState::Unmasking { revealers, .. } => revealers.clone(),
            _ => BTreeSet::new(),
        }
    }

    /// Returns U2 (the members whose shares were handed out) once sharing has
    /// closed, and the members that shared so far before.
    pub fn sharers(&self) -> BTreeSet<ParticipantId> {
        match &self.state {
            ServerState::Advertising { .. } => BTreeSet::new(),
            ServerState::Sharing { sharers, .. } | ServerState::Masking { sharers, .. } => {
                sharers.clone()
            }
            ServerState::Unmasking { request, .. } => {
                request.survivors.union(&request.dropped).cloned().collect()
            }
        }
    }

    /// Adds the masked input of `who` (a member of U2) into the running sum.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`] when `who` is not in U2,
    /// [`SecAggError::Duplicate`] when it already sent its input,
    /// [`SecAggError::Malformed`] for a wrong length.
    pub fn add_masked_input(&mut self, who: &ParticipantId, masked: &[u32]) -> Result<()> {
        let ServerState::Masking {
            sharers,
            maskers,
            sum,
            ..
        } = &mut self.state
        else {
            return Err(self.wrong_phase(Phase::Masking));
        };
        if !sharers.contains(who) {
            return Err(unknown(who, "sharers"));
        }
        if maskers.contains(who) {
            return Err(SecAggError::Duplicate {
                phase: Phase::Masking,
                participant: who.clone(),
            });
        }
        if masked.len() != sum.len() {
            return Err(SecAggError::Malformed(format!(
                "{who} sent a masked input of {} elements, expected {}",
                masked.len(),
                sum.len()
            )));
        }
        for (total, &value) in sum.iter_mut().zip(masked) {
            *total = total.wrapping_add(value);
        }
        maskers.insert(who.clone());
        Ok(())
    }

    /// Closes masking: the members that sent an input (U3) survive, the rest
    /// of U2 dropped. Returns the request to send to every survivor.
    ///
    /// # Errors
    /// [`SecAggError::TooFewSurvivors`] with fewer than `threshold` in U3.
    pub fn close_masking(&mut self) -> Result<UnmaskRequest> {
        let ServerState::Masking {
            membership,
            sharers,
            maskers,
            sum,
            ..
        } = &mut self.state
        else {
            return Err(self.wrong_phase(Phase::Masking));
        };
        if maskers.len() < self.setup.threshold {
            return Err(SecAggError::TooFewSurvivors {
                stage: "masking",
                num_survivors: maskers.len(),
                threshold: self.setup.threshold,
            });
        }
        let request = UnmaskRequest {
            survivors: maskers.clone(),
            dropped: sharers.difference(maskers).cloned().collect(),
        };
        let membership = std::mem::replace(
            membership,
            Membership {
                members: BTreeMap::new(),
                graph: BTreeMap::new(),
            },
        );
        let sum = std::mem::take(sum);
        self.state = ServerState::Unmasking {
            membership,
            request: request.clone(),
            sum,
            revealers: BTreeSet::new(),
            revealed: BTreeMap::new(),
        };
        Ok(request)
    }

    /// Records the shares revealed by survivor `who`: each must belong to a
    /// neighbour of `who` named in the request, be of the kind the request
    /// asked for that neighbour, and carry `who`'s x coordinate.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`] when `who` is not a survivor,
    /// [`SecAggError::Duplicate`] when it already revealed,
    /// [`SecAggError::WrongShareKind`] for a share of the other kind,
    /// [`SecAggError::Malformed`] for an owner that is not a requested
    /// neighbour, a wrong x or two shares of one owner.
    pub fn reveal(&mut self, who: &ParticipantId, shares: Vec<RevealedShare>) -> Result<()> {
        let ServerState::Unmasking {
            membership,
            request,
            revealers,
            revealed,
            ..
        } = &mut self.state
        else {
            return Err(self.wrong_phase(Phase::Unmasking));
        };
        if !request.survivors.contains(who) {
            return Err(unknown(who, "survivors"));
        }
        if revealers.contains(who) {
            return Err(SecAggError::Duplicate {
                phase: Phase::Unmasking,
                participant: who.clone(),
            });
        }
        let neighbours = &membership.graph[who];
        let mut owners = BTreeSet::new();
        for revealed_share in &shares {
            let owner = &revealed_share.owner;
            if !neighbours.contains(owner) {
                return Err(SecAggError::Malformed(format!(
                    "{who} revealed a share of {owner}, which is not its neighbour"
                )));
            }
            let expected = if request.survivors.contains(owner) {
                ShareKind::SelfMask
            } else if request.dropped.contains(owner) {
                ShareKind::MaskKey
            } else {
                return Err(SecAggError::Malformed(format!(
                    "{who} revealed a share of {owner}, which the unmask request does not name"
                )));
            };
            if revealed_share.kind != expected {
                return Err(SecAggError::WrongShareKind {
                    owner: owner.clone(),
                    expected,
                    actual: revealed_share.kind,
                });
            }
            if membership.share_x(owner, who) != Some(revealed_share.share.x) {
                return Err(SecAggError::Malformed(format!(
                    "{who} revealed a share of {owner} with x = {}, which is not its coordinate",
                    revealed_share.share.x
                )));
            }
            if !owners.insert(owner) {
                return Err(SecAggError::Malformed(format!(
                    "{who} revealed two shares of {owner}"
                )));
            }
        }
        for revealed_share in shares {
            revealed
                .entry((revealed_share.owner, revealed_share.kind))
                .or_default()
                .push(revealed_share.share);
        }
        revealers.insert(who.clone());
        Ok(())
    }

    /// Returns the members whose secret still lacks `threshold` revealed
    /// shares (survivors' self-mask seeds, dropped members' mask keys); empty
    /// outside the unmasking phase.
    pub fn missing_for_unmask(&self) -> Vec<ParticipantId> {
        let ServerState::Unmasking {
            request, revealed, ..
        } = &self.state
        else {
            return Vec::new();
        };
        let num_held = |owner: &ParticipantId, kind: ShareKind| {
            revealed.get(&(owner.clone(), kind)).map_or(0, Vec::len)
        };
        let mut missing: Vec<ParticipantId> = request
            .survivors
            .iter()
            .filter(|owner| num_held(owner, ShareKind::SelfMask) < self.setup.threshold)
            .chain(
                request
                    .dropped
                    .iter()
                    .filter(|owner| num_held(owner, ShareKind::MaskKey) < self.setup.threshold),
            )
            .cloned()
            .collect();
        missing.sort();
        missing
    }

    /// Returns how many shares the coordinator holds per owner and kind: what
    /// it could try to reconstruct (for audits and tests).
    pub fn revealed_share_counts(&self) -> BTreeMap<(ParticipantId, ShareKind), usize> {
        let ServerState::Unmasking { revealed, .. } = &self.state else {
            return BTreeMap::new();
        };
        revealed
            .iter()
            .map(|(key, shares)| (key.clone(), shares.len()))
            .collect()
    }

    /// Returns the shares the coordinator holds of `owner`'s secret of `kind`
    /// (for audits and tests: everything a curious coordinator could combine).
    pub fn revealed_shares(&self, owner: &ParticipantId, kind: ShareKind) -> Vec<Share> {
        let ServerState::Unmasking { revealed, .. } = &self.state else {
            return Vec::new();
        };
        revealed
            .get(&(owner.clone(), kind))
            .cloned()
            .unwrap_or_default()
    }

    /// Reconstructs the survivors' self-mask seeds and the dropped members'
    /// mask keys, removes all their masks from the running sum and returns
    /// the sum of the survivors' inputs.
    ///
    /// # Errors
    /// [`SecAggError::TooFewShares`] when a secret lacks shares (see
    /// [`ServerRound::missing_for_unmask`]), [`SecAggError::KeyMismatch`]
    /// when a reconstructed mask key does not match its advertised key,
    /// [`SecAggError::Reconstruction`] for inconsistent shares.
    pub fn unmask(self) -> Result<UnmaskedSum> {
        let phase = self.state.phase();
        let ServerState::Unmasking {
            membership,
            request,
            mut sum,
            revealed,
            ..
        } = self.state
        else {
            return Err(SecAggError::WrongPhase {
                expected: Phase::Unmasking,
                actual: phase,
            });
        };
        let threshold = self.setup.threshold;
        let shares_of = |owner: &ParticipantId, kind: ShareKind| -> Result<&[Share]> {
            let shares = revealed
                .get(&(owner.clone(), kind))
                .map_or(&[][..], Vec::as_slice);
            if shares.len() < threshold {
                return Err(SecAggError::TooFewShares {
                    owner: owner.clone(),
                    kind,
                    num_shares: shares.len(),
                    threshold,
                });
            }
            Ok(shares)
        };
        // Check every secret first, so a failure names the first short owner
        // before any reconstruction work.
        for owner in &request.survivors {
            shares_of(owner, ShareKind::SelfMask)?;
        }
        for owner in &request.dropped {
            shares_of(owner, ShareKind::MaskKey)?;
        }
        // Every mask to take off, with the sign that takes it off; the
        // secrets are small, the expansions are the work.
        let mut masks: Vec<(Zeroizing<[u8; 32]>, MaskSign)> = Vec::new();
        for dropped in &request.dropped {
            let mask_secret =
                Zeroizing::new(combine(shares_of(dropped, ShareKind::MaskKey)?, threshold)?);
            if public_of_secret(&mask_secret) != membership.members[dropped].mask_public {
                return Err(SecAggError::KeyMismatch {
                    owner: dropped.clone(),
                });
            }
            let secret_key = StaticSecret::from(*mask_secret);
            // Every surviving neighbour added ±PRG(s_uv) for the dropped
            // member, which had shared with it; remove it with the opposite sign.
            for survivor in membership.graph[dropped].intersection(&request.survivors) {
                let seed = pairwise_mask_seed(
                    self.setup.round_id,
                    &secret_key,
                    dropped,
                    survivor,
                    &membership.members[survivor].mask_public,
                )?;
                let survivor_sign = if survivor < dropped {
                    MaskSign::Add
                } else {
                    MaskSign::Subtract
                };
                masks.push((seed, survivor_sign.opposite()));
            }
        }
        for survivor in &request.survivors {
            let self_mask_seed = Zeroizing::new(combine(
                shares_of(survivor, ShareKind::SelfMask)?,
                threshold,
            )?);
            masks.push((self_mask_seed, MaskSign::Subtract));
        }
        remove_masks(&mut sum, &masks);
        Ok(UnmaskedSum {
            sum,
            survivors: request.survivors,
        })
    }
}

/// Takes `masks` off `sum`, the vector split into one window per available
/// core, each thread expanding every mask over its own window only
/// ([`crate::secagg::masks::apply_mask_at`]): the coordinator's unmasking
/// scales with its cores, and needs no memory beyond the sum.
fn remove_masks(sum: &mut [u32], masks: &[(Zeroizing<[u8; 32]>, MaskSign)]) {
    /// Below this many words a window is not worth a thread.
    const MIN_WINDOW_WORDS: usize = 1 << 16;
    let num_threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(sum.len().div_ceil(MIN_WINDOW_WORDS))
        .max(1);
    let window_words = sum.len().div_ceil(num_threads).max(1);
    std::thread::scope(|scope| {
        for (index, window) in sum.chunks_mut(window_words).enumerate() {
            scope.spawn(move || {
                for (seed, sign) in masks {
                    crate::secagg::masks::apply_mask_at(window, index * window_words, seed, *sign);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    use super::*;
    use crate::secagg::ClientRound;

    fn id(index: usize) -> ParticipantId {
        ParticipantId::new(format!("m{index}")).expect("valid")
    }

    /// Returns a server in the unmasking phase of a 4-member complete-graph
    /// round, the clients' answers and the request.
    fn unmasking_round() -> (ServerRound, BTreeMap<ParticipantId, Vec<RevealedShare>>) {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let setup = RoundSetup {
            round_id: 1,
            degree: 3,
            threshold: 2,
            vector_len: 8,
        };
        let members: BTreeSet<ParticipantId> = (0..4).map(id).collect();
        let mut server = ServerRound::new(setup.clone(), members.clone(), [4; 32]);
        let mut clients: BTreeMap<ParticipantId, ClientRound> = members
            .iter()
            .map(|member| {
                (
                    member.clone(),
                    ClientRound::new(member.clone(), setup.clone(), &mut rng),
                )
            })
            .collect();
        for (member, client) in &clients {
            server
                .advertise(member, client.public_keys())
                .expect("accepted");
        }
        let roster = server.close_advertising().expect("enough members");
        for (member, client) in &mut clients {
            let shares = client.share_keys(&roster, &mut rng).expect("sharing works");
            server.submit_shares(member, shares).expect("accepted");
        }
        server.close_sharing().expect("enough sharers");
        for (member, client) in &mut clients {
            let mut input = vec![0u32; 8];
            let shares = server.shares_for(member).expect("shared");
            client
                .mask_input(shares, &mut input)
                .expect("masking works");
            server.add_masked_input(member, &input).expect("accepted");
        }
        let request = server.close_masking().expect("enough survivors");
        let answers = clients
            .iter_mut()
            .map(|(member, client)| {
                let shares = client
                    .unmask_shares(&request.survivors, &request.dropped)
                    .expect("answered");
                (member.clone(), shares)
            })
            .collect();
        (server, answers)
    }

    #[test]
    fn a_revealed_share_with_another_holders_x_is_refused() {
        let (mut server, answers) = unmasking_round();
        let mut shares = answers[&id(0)].clone();
        shares[0].share.x = shares[0].share.x % 3 + 1;
        assert!(matches!(
            server.reveal(&id(0), shares),
            Err(SecAggError::Malformed(_))
        ));
        assert!(
            server.revealed_share_counts().is_empty(),
            "a refused reveal records nothing"
        );
        let missing = server.missing_for_unmask();
        assert_eq!(missing.len(), 4);
    }

    #[test]
    fn unmasking_with_shares_of_one_holder_names_the_short_owner() {
        let (mut server, answers) = unmasking_round();
        server
            .reveal(&id(0), answers[&id(0)].clone())
            .expect("accepted");
        let error = server
            .unmask()
            .expect_err("one share each is below threshold 2");
        assert!(
            matches!(
                &error,
                SecAggError::TooFewShares {
                    num_shares: 0,
                    threshold: 2,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_degree_below_the_threshold_is_refused_when_advertising_closes() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let setup = RoundSetup {
            round_id: 1,
            degree: 2,
            threshold: 3,
            vector_len: 8,
        };
        let members: BTreeSet<ParticipantId> = (0..10).map(id).collect();
        let mut server = ServerRound::new(setup.clone(), members.clone(), [4; 32]);
        for member in &members {
            let client = ClientRound::new(member.clone(), setup.clone(), &mut rng);
            server
                .advertise(member, client.public_keys())
                .expect("accepted");
        }
        assert!(matches!(
            server.close_advertising(),
            Err(SecAggError::InvalidSetup(_))
        ));
    }
}
