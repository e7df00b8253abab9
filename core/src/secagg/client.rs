//! The participant's side of one SecAgg+ round, as a state machine.
//!
//! A participant goes through the phases of [`Phase`] once per round:
//!
//! 1. advertising: [`ClientRound::new`] draws the two key pairs;
//!    [`ClientRound::public_keys`] is what the coordinator collects.
//! 2. sharing: given the roster (all advertised keys and the graph seed),
//!    [`ClientRound::share_keys`] draws the self-mask seed `b`, splits `b`
//!    and the mask secret key among its neighbours and encrypts each share to
//!    its recipient.
//! 3. masking: given the shares addressed to it, [`ClientRound::mask_input`]
//!    adds PRG(b) and the pairwise masks ±PRG(s_uv) for every neighbour that
//!    shared.
//! 4. unmasking: given who survived and who dropped,
//!    [`ClientRound::unmask_shares`] reveals, once, the self-mask share of
//!    each surviving neighbour and the mask key share of each dropped one.
//!
//! Each state holds only the secrets still needed; a method called in the
//! wrong phase fails with [`SecAggError::WrongPhase`] and changes nothing, and
//! a method that fails leaves the round in its phase.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use super::error::{Phase, Result, SecAggError};
use super::graph::neighbourhoods;
use super::keys::{
    PublicKeys, SHARE_PLAINTEXT_LEN, SecretKeys, decrypt_share, encrypt_share, pairwise_mask_seed,
};
use super::masks::{MaskSign, apply_mask};
use super::shamir::{Share, split};
use crate::ParticipantId;

/// The public parameters of a round, known to every participant and the
/// coordinator before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundSetup {
    /// Round id; bound into every derived key.
    pub round_id: u64,
    /// Neighbourhood size of the graph (see [`super::graph::neighbourhoods`]).
    pub degree: usize,
    /// Shares needed to reconstruct a secret; also the fewest participants
    /// with which a round may go on.
    pub threshold: usize,
    /// Number of u32 elements of each input vector.
    pub vector_len: usize,
}

/// The members that advertised keys (U1), with their keys, and the seed of
/// the neighbour graph, as the coordinator sends them at the end of the
/// advertising phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    /// Seed of the random relabelling of the neighbour graph.
    pub graph_seed: [u8; 32],
    /// Every member of U1 and the public keys it advertised.
    pub members: BTreeMap<ParticipantId, PublicKeys>,
}

/// One encrypted message carrying a share of `from`'s self-mask seed and a
/// share of its mask secret key to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedShare {
    /// The participant whose secrets are shared.
    pub from: ParticipantId,
    /// The neighbour that holds the shares.
    pub to: ParticipantId,
    /// ChaCha20-Poly1305 ciphertext of x ‖ y(b) ‖ y(mask key).
    pub ciphertext: Vec<u8>,
}

/// Which of a participant's two secrets a revealed share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareKind {
    /// A share of the self-mask seed `b`, revealed for survivors.
    SelfMask,
    /// A share of the mask secret key, revealed for dropped participants.
    MaskKey,
}

impl fmt::Display for ShareKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ShareKind::SelfMask => "self-mask",
            ShareKind::MaskKey => "mask key",
        })
    }
}

/// A share a participant reveals in the unmasking phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevealedShare {
    /// The participant whose secret the share belongs to.
    pub owner: ParticipantId,
    /// Which secret.
    pub kind: ShareKind,
    /// The share itself.
    pub share: Share,
}

/// The two shares a participant holds for one neighbour. Zeroized on drop.
struct HeldShares {
    self_mask: Share,
    mask_key: Share,
}

impl Drop for HeldShares {
    fn drop(&mut self) {
        self.self_mask.y.zeroize();
        self.mask_key.y.zeroize();
    }
}

/// A neighbour as seen in the sharing phase.
struct Neighbour {
    /// Its advertised keys.
    keys: PublicKeys,
    /// The x coordinate of the shares it gives me: my 1-based position in its
    /// sorted neighbour list.
    my_x: u8,
}

/// The state of the participant's round; each variant holds what the next
/// step needs.
enum ClientState {
    /// Keys drawn, waiting for the roster.
    Advertising { secrets: SecretKeys },
    /// Shares sent, waiting for the shares addressed to me.
    Sharing {
        secrets: SecretKeys,
        self_mask_seed: Zeroizing<[u8; 32]>,
        neighbours: BTreeMap<ParticipantId, Neighbour>,
    },
    /// Input masked and sent, waiting for the unmask request. Holds the
    /// shares of the neighbours that shared (my view of U2).
    Masking {
        held: BTreeMap<ParticipantId, HeldShares>,
    },
    /// Shares revealed; nothing secret is kept.
    Finished,
}

impl ClientState {
    fn phase(&self) -> Phase {
        match self {
            ClientState::Advertising { .. } => Phase::Advertising,
            ClientState::Sharing { .. } => Phase::Sharing,
            ClientState::Masking { .. } => Phase::Masking,
            ClientState::Finished => Phase::Finished,
        }
    }
}

/// The participant's side of one SecAgg+ round.
pub struct ClientRound {
    me: ParticipantId,
    setup: RoundSetup,
    /// The public halves of this round's key pairs, kept after the secrets go.
    public_keys: PublicKeys,
    state: ClientState,
}

impl fmt::Debug for ClientRound {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClientRound")
            .field("me", &self.me)
            .field("setup", &self.setup)
            .field("phase", &self.state.phase())
            .finish_non_exhaustive()
    }
}

impl ClientRound {
    /// Returns a new round for participant `me`, with fresh key pairs.
    pub fn new<R: CryptoRng + ?Sized>(me: ParticipantId, setup: RoundSetup, rng: &mut R) -> Self {
        let secrets = SecretKeys::generate(rng);
        ClientRound {
            me,
            setup,
            public_keys: secrets.public(),
            state: ClientState::Advertising { secrets },
        }
    }

    /// Returns the phase whose message this participant sends next.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Returns the participant's id.
    pub fn participant(&self) -> &ParticipantId {
        &self.me
    }

    /// Returns the public keys to advertise.
    pub fn public_keys(&self) -> PublicKeys {
        self.public_keys.clone()
    }

    fn wrong_phase(&self, expected: Phase) -> SecAggError {
        SecAggError::WrongPhase {
            expected,
            actual: self.state.phase(),
        }
    }

    /// Draws the self-mask seed and returns the encrypted shares of it and of
    /// the mask secret key, one message per neighbour in `roster`'s graph.
    ///
    /// # Errors
    /// [`SecAggError::UnknownParticipant`] when I am not in the roster,
    /// [`SecAggError::Malformed`] when the roster carries other keys for me,
    /// [`SecAggError::TooFewSurvivors`] when I have fewer neighbours than the
    /// threshold, [`SecAggError::LowOrderKey`] for a neighbour's bad key.
    pub fn share_keys<R: CryptoRng + ?Sized>(
        &mut self,
        roster: &Roster,
        rng: &mut R,
    ) -> Result<Vec<EncryptedShare>> {
        let ClientState::Advertising { secrets } = &self.state else {
            return Err(self.wrong_phase(Phase::Advertising));
        };
        let Some(my_keys) = roster.members.get(&self.me) else {
            return Err(SecAggError::UnknownParticipant {
                participant: self.me.clone(),
                set: "roster",
            });
        };
        if *my_keys != self.public_keys {
            return Err(SecAggError::Malformed(format!(
                "the roster carries other public keys for {} than it advertised",
                self.me
            )));
        }
        let member_ids: BTreeSet<ParticipantId> = roster.members.keys().cloned().collect();
        let graph = neighbourhoods(&member_ids, self.setup.degree, &roster.graph_seed);
        let my_neighbours = &graph[&self.me];
        if my_neighbours.len() < self.setup.threshold {
            return Err(SecAggError::TooFewSurvivors {
                stage: "sharing",
                num_survivors: my_neighbours.len(),
                threshold: self.setup.threshold,
            });
        }
        let mut self_mask_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(self_mask_seed.as_mut());
        let mask_secret = Zeroizing::new(secrets.mask.to_bytes());
        let num_neighbours = my_neighbours.len();
        let self_mask_shares = split(&self_mask_seed, self.setup.threshold, num_neighbours, rng)?;
        let mask_key_shares = split(&mask_secret, self.setup.threshold, num_neighbours, rng)?;

        let mut messages = Vec::with_capacity(num_neighbours);
        let mut neighbours = BTreeMap::new();
        for ((recipient, self_mask_share), mask_key_share) in my_neighbours
            .iter()
            .zip(&self_mask_shares)
            .zip(&mask_key_shares)
        {
            let recipient_keys = &roster.members[recipient];
            let mut plaintext = Zeroizing::new([0u8; SHARE_PLAINTEXT_LEN]);
            plaintext[0] = self_mask_share.x;
            plaintext[1..33].copy_from_slice(&self_mask_share.y);
            plaintext[33..].copy_from_slice(&mask_key_share.y);
            let ciphertext = encrypt_share(
                self.setup.round_id,
                &secrets.cipher,
                &self.me,
                recipient,
                &recipient_keys.cipher_public,
                &plaintext,
            )?;
            messages.push(EncryptedShare {
                from: self.me.clone(),
                to: recipient.clone(),
                ciphertext,
            });
            let my_position = graph[recipient]
                .iter()
                .position(|member| *member == self.me)
                .expect("the graph is symmetric");
            let my_x = u8::try_from(my_position + 1).map_err(|_| {
                SecAggError::InvalidSetup(format!("{recipient} has more than 255 neighbours"))
            })?;
            neighbours.insert(
                recipient.clone(),
                Neighbour {
                    keys: recipient_keys.clone(),
                    my_x,
                },
            );
        }
        for share in self_mask_shares.into_iter().chain(mask_key_shares) {
            let mut share = share;
            share.y.zeroize();
        }
        let ClientState::Advertising { secrets } =
            std::mem::replace(&mut self.state, ClientState::Finished)
        else {
            unreachable!("the phase was checked above");
        };
        self.state = ClientState::Sharing {
            secrets,
            self_mask_seed,
            neighbours,
        };
        Ok(messages)
    }

    /// Checks and decrypts the shares addressed to me, then masks `input` in
    /// place: input + PRG(b) + Σ ±PRG(s_uv) over the neighbours v that shared,
    /// with + when I sort before v and − otherwise, so each pair cancels in
    /// the sum. The senders of the shares are my view of U2.
    ///
    /// At least `threshold` neighbours must have shared: they are also the
    /// only holders of my shares, and with fewer my self-mask could never be
    /// removed, so masking would be pointless.
    ///
    /// `input` is changed only when every check passes.
    ///
    /// # Errors
    /// [`SecAggError::Malformed`] for a share not addressed to me or of the
    /// wrong x, [`SecAggError::UnknownParticipant`] for a sender that is not my
    /// neighbour, [`SecAggError::Duplicate`] for two shares of one sender,
    /// [`SecAggError::Decryption`] for a tampered ciphertext,
    /// [`SecAggError::TooFewSurvivors`] with fewer than `threshold` senders.
    pub fn mask_input(
        &mut self,
        shares_for_me: Vec<EncryptedShare>,
        input: &mut [u32],
    ) -> Result<()> {
        let ClientState::Sharing {
            secrets,
            self_mask_seed,
            neighbours,
        } = &self.state
        else {
            return Err(self.wrong_phase(Phase::Sharing));
        };
        if input.len() != self.setup.vector_len {
            return Err(SecAggError::Malformed(format!(
                "the input has {} elements, the round expects {}",
                input.len(),
                self.setup.vector_len
            )));
        }
        let mut held: BTreeMap<ParticipantId, HeldShares> = BTreeMap::new();
        for message in &shares_for_me {
            if message.to != self.me {
                return Err(SecAggError::Malformed(format!(
                    "a share from {} is addressed to {}, not to {}",
                    message.from, message.to, self.me
                )));
            }
            let Some(sender) = neighbours.get(&message.from) else {
                return Err(SecAggError::UnknownParticipant {
                    participant: message.from.clone(),
                    set: "neighbourhood",
                });
            };
            if held.contains_key(&message.from) {
                return Err(SecAggError::Duplicate {
                    phase: Phase::Sharing,
                    participant: message.from.clone(),
                });
            }
            let plaintext = decrypt_share(
                self.setup.round_id,
                &secrets.cipher,
                &message.from,
                &sender.keys.cipher_public,
                &self.me,
                &message.ciphertext,
            )?;
            if plaintext[0] != sender.my_x {
                return Err(SecAggError::Malformed(format!(
                    "the share from {} has x = {}, expected {}",
                    message.from, plaintext[0], sender.my_x
                )));
            }
            let mut self_mask = Share {
                x: plaintext[0],
                y: [0; 32],
            };
            self_mask.y.copy_from_slice(&plaintext[1..33]);
            let mut mask_key = Share {
                x: plaintext[0],
                y: [0; 32],
            };
            mask_key.y.copy_from_slice(&plaintext[33..]);
            held.insert(
                message.from.clone(),
                HeldShares {
                    self_mask,
                    mask_key,
                },
            );
        }
        if held.len() < self.setup.threshold {
            return Err(SecAggError::TooFewSurvivors {
                stage: "masking",
                num_survivors: held.len(),
                threshold: self.setup.threshold,
            });
        }
        let mut pairwise_seeds = Vec::with_capacity(held.len());
        for peer in held.keys() {
            let seed = pairwise_mask_seed(
                self.setup.round_id,
                &secrets.mask,
                &self.me,
                peer,
                &neighbours[peer].keys.mask_public,
            )?;
            let sign = if self.me < *peer {
                MaskSign::Add
            } else {
                MaskSign::Subtract
            };
            pairwise_seeds.push((seed, sign));
        }
        apply_mask(input, self_mask_seed, MaskSign::Add);
        for (seed, sign) in &pairwise_seeds {
            apply_mask(input, seed, *sign);
        }
        // Dropping the Sharing state zeroizes b and both secret keys.
        self.state = ClientState::Masking { held };
        Ok(())
    }

    /// Returns, once per round, the shares the coordinator needs to unmask
    /// the sum: for each neighbour whose shares I hold, its self-mask share
    /// when it survived, its mask key share when it dropped, nothing when it
    /// is in neither set.
    ///
    /// # Errors
    /// [`SecAggError::BothShareKindsRequested`] when the sets intersect
    /// (answering would let the coordinator unmask that participant's input),
    /// [`SecAggError::UnknownParticipant`] when I am not a survivor,
    /// [`SecAggError::TooFewSurvivors`] with fewer than `threshold`
    /// survivors, [`SecAggError::WrongPhase`] when already answered.
    pub fn unmask_shares(
        &mut self,
        survivors: &BTreeSet<ParticipantId>,
        dropped: &BTreeSet<ParticipantId>,
    ) -> Result<Vec<RevealedShare>> {
        let ClientState::Masking { held } = &self.state else {
            return Err(self.wrong_phase(Phase::Masking));
        };
        if let Some(owner) = survivors.intersection(dropped).next() {
            return Err(SecAggError::BothShareKindsRequested {
                owner: owner.clone(),
            });
        }
        if !survivors.contains(&self.me) {
            return Err(SecAggError::UnknownParticipant {
                participant: self.me.clone(),
                set: "survivors",
            });
        }
        if survivors.len() < self.setup.threshold {
            return Err(SecAggError::TooFewSurvivors {
                stage: "unmasking",
                num_survivors: survivors.len(),
                threshold: self.setup.threshold,
            });
        }
        let mut revealed = Vec::new();
        for (owner, shares) in held {
            let (kind, share) = if survivors.contains(owner) {
                (ShareKind::SelfMask, &shares.self_mask)
            } else if dropped.contains(owner) {
                (ShareKind::MaskKey, &shares.mask_key)
            } else {
                continue;
            };
            revealed.push(RevealedShare {
                owner: owner.clone(),
                kind,
                share: share.clone(),
            });
        }
        self.state = ClientState::Finished;
        Ok(revealed)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    use super::*;

    fn setup() -> RoundSetup {
        RoundSetup {
            round_id: 9,
            degree: 2,
            threshold: 2,
            vector_len: 4,
        }
    }

    #[test]
    fn masking_before_sharing_is_refused_and_changes_nothing() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let mut round =
            ClientRound::new(ParticipantId::new("a").expect("valid"), setup(), &mut rng);
        let mut input = [5u32; 4];
        let result = round.mask_input(Vec::new(), &mut input);
        assert!(matches!(
            result,
            Err(SecAggError::WrongPhase {
                expected: Phase::Sharing,
                actual: Phase::Advertising
            })
        ));
        assert_eq!(input, [5; 4]);
        assert_eq!(round.phase(), Phase::Advertising);
    }

    #[test]
    fn sharing_sends_one_share_per_neighbour_and_an_input_of_the_wrong_length_is_refused() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let ids: Vec<ParticipantId> = ["a", "b", "c"]
            .iter()
            .map(|name| ParticipantId::new(*name).expect("valid"))
            .collect();
        let mut rounds: Vec<ClientRound> = ids
            .iter()
            .map(|id| ClientRound::new(id.clone(), setup(), &mut rng))
            .collect();
        let roster = Roster {
            graph_seed: [0; 32],
            members: rounds
                .iter()
                .map(|round| (round.participant().clone(), round.public_keys()))
                .collect(),
        };
        let shares = rounds[0]
            .share_keys(&roster, &mut rng)
            .expect("sharing works");
        let recipients: Vec<&ParticipantId> = shares.iter().map(|share| &share.to).collect();
        assert_eq!(recipients, vec![&ids[1], &ids[2]]);
        assert!(shares.iter().all(|share| share.from == ids[0]));
        let mut short_input = [0u32; 3];
        assert!(matches!(
            rounds[0].mask_input(Vec::new(), &mut short_input),
            Err(SecAggError::Malformed(_))
        ));
        assert_eq!(rounds[0].phase(), Phase::Sharing);
    }
}
