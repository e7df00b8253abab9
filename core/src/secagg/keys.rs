//! Key pairs, pairwise key agreement and share encryption.
//!
//! Each participant draws two X25519 key pairs per round: the *cipher* pair,
//! from which the pairwise keys that encrypt secret shares are derived, and the
//! *mask* pair, from which the pairwise mask seeds are derived (Bonawitz et al.
//! 2017, §4, keys `c` and `s`). Only the mask secret key is ever secret-shared.
//!
//! Every derived key goes through HKDF-SHA256 whose `info` binds a purpose
//! label, the round id and the two participant ids, so that a key can never be
//! reused across rounds, pairs or purposes.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use rand::CryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::error::{Result, SecAggError};
use crate::ParticipantId;

/// HKDF label of the pairwise mask seeds.
const MASK_LABEL: &[u8] = b"fedshield secagg v1 mask";
/// HKDF label of the pairwise share-encryption keys.
const SHARE_LABEL: &[u8] = b"fedshield secagg v1 share";
/// Label of the associated data of an encrypted share.
const SHARE_AAD_LABEL: &[u8] = b"fedshield secagg v1 share aad";

/// Length of the plaintext of an encrypted share: the share's x coordinate,
/// then the y bytes of the self-mask seed share and of the mask key share.
pub const SHARE_PLAINTEXT_LEN: usize = 1 + 32 + 32;
/// Length of an encrypted share: the plaintext plus the 16-byte Poly1305 tag.
pub const ENCRYPTED_SHARE_LEN: usize = SHARE_PLAINTEXT_LEN + 16;

/// The two public keys a participant advertises for a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeys {
    /// X25519 public key of the share-encryption key pair.
    pub cipher_public: [u8; 32],
    /// X25519 public key of the mask key pair.
    pub mask_public: [u8; 32],
}

/// The two secret keys of a participant for one round. `StaticSecret`
/// zeroizes itself on drop.
pub struct SecretKeys {
    /// Secret of the share-encryption key pair; never leaves the participant.
    pub(crate) cipher: StaticSecret,
    /// Secret of the mask key pair; secret-shared among the neighbours so the
    /// coordinator can remove the pairwise masks of a participant that drops.
    pub(crate) mask: StaticSecret,
}

impl SecretKeys {
    /// Returns two fresh key pairs drawn from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut cipher_bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(cipher_bytes.as_mut());
        let mut mask_bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(mask_bytes.as_mut());
        SecretKeys {
            cipher: StaticSecret::from(*cipher_bytes),
            mask: StaticSecret::from(*mask_bytes),
        }
    }

    /// Returns the public keys to advertise.
    pub fn public(&self) -> PublicKeys {
        PublicKeys {
            cipher_public: PublicKey::from(&self.cipher).to_bytes(),
            mask_public: PublicKey::from(&self.mask).to_bytes(),
        }
    }
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretKeys(..)")
    }
}

/// Returns the X25519 public key of a 32-byte secret (as reconstructed from
/// shares), to compare with an advertised key.
pub(crate) fn public_of_secret(secret_bytes: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret_bytes)).to_bytes()
}

/// Returns whether `public` is a point of small order, whose Diffie-Hellman
/// output is all zeros for every clamped secret (clamping clears the cofactor).
pub(crate) fn is_low_order(public: &[u8; 32]) -> bool {
    let probe = StaticSecret::from([0x5a; 32]);
    !probe
        .diffie_hellman(&PublicKey::from(*public))
        .was_contributory()
}

/// Appends `id` with a two-byte length prefix, so concatenations are unambiguous.
fn push_id(buffer: &mut Vec<u8>, id: &ParticipantId) {
    let bytes = id.as_str().as_bytes();
    let len = u16::try_from(bytes.len()).expect("participant ids are at most 128 bytes");
    buffer.extend_from_slice(&len.to_be_bytes());
    buffer.extend_from_slice(bytes);
}

/// Returns `label ‖ round_id ‖ first ‖ second` (ids length-prefixed).
fn context(label: &[u8], round_id: u64, first: &ParticipantId, second: &ParticipantId) -> Vec<u8> {
    let mut info = Vec::with_capacity(label.len() + 8 + 4 + 2 * ParticipantId::MAX_LEN);
    info.extend_from_slice(label);
    info.extend_from_slice(&round_id.to_be_bytes());
    push_id(&mut info, first);
    push_id(&mut info, second);
    info
}

/// Returns HKDF-SHA256(X25519(secret, peer_public), info) as a 32-byte key,
/// refusing a peer key of small order.
fn agree(
    secret: &StaticSecret,
    peer: &ParticipantId,
    peer_public: &[u8; 32],
    info: &[u8],
) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(SecAggError::LowOrderKey {
            participant: peer.clone(),
        });
    }
    let hkdf = Hkdf::<Sha256>::new(None, shared.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf.expand(info, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(key)
}

/// Returns the pairwise mask seed `s_uv` of `me` and `peer` for the round.
/// Both sides derive the same seed: the ids enter the context in sorted order.
///
/// # Errors
/// [`SecAggError::LowOrderKey`] when the peer's mask key has small order.
pub(crate) fn pairwise_mask_seed(
    round_id: u64,
    my_mask_secret: &StaticSecret,
    me: &ParticipantId,
    peer: &ParticipantId,
    peer_mask_public: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>> {
    let (low, high) = if me < peer { (me, peer) } else { (peer, me) };
    let info = context(MASK_LABEL, round_id, low, high);
    agree(my_mask_secret, peer, peer_mask_public, &info)
}

/// Returns the key that encrypts the one share message from `sender` to
/// `recipient` in this round. The direction is part of the context, so the
/// two messages of a pair are under different keys.
fn share_key(
    round_id: u64,
    my_cipher_secret: &StaticSecret,
    peer: &ParticipantId,
    peer_cipher_public: &[u8; 32],
    sender: &ParticipantId,
    recipient: &ParticipantId,
) -> Result<Zeroizing<[u8; 32]>> {
    let info = context(SHARE_LABEL, round_id, sender, recipient);
    agree(my_cipher_secret, peer, peer_cipher_public, &info)
}

/// Encrypts the share message from `sender` (me) to `recipient` with
/// ChaCha20-Poly1305. The key is derived for this round and this ordered pair
/// and encrypts exactly one message, so the fixed all-zero nonce never
/// repeats under a key. The associated data binds round, sender and recipient.
pub(crate) fn encrypt_share(
    round_id: u64,
    my_cipher_secret: &StaticSecret,
    sender: &ParticipantId,
    recipient: &ParticipantId,
    recipient_cipher_public: &[u8; 32],
    plaintext: &[u8; SHARE_PLAINTEXT_LEN],
) -> Result<Vec<u8>> {
    let key = share_key(
        round_id,
        my_cipher_secret,
        recipient,
        recipient_cipher_public,
        sender,
        recipient,
    )?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let aad = context(SHARE_AAD_LABEL, round_id, sender, recipient);
    let ciphertext = cipher
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("chacha20poly1305 encryption of a short message cannot fail");
    Ok(ciphertext)
}

/// Decrypts the share message from `sender` to `recipient` (me).
///
/// # Errors
/// [`SecAggError::Decryption`] when the tag does not verify or the length is
/// wrong; [`SecAggError::LowOrderKey`] for a sender key of small order.
pub(crate) fn decrypt_share(
    round_id: u64,
    my_cipher_secret: &StaticSecret,
    sender: &ParticipantId,
    sender_cipher_public: &[u8; 32],
    recipient: &ParticipantId,
    ciphertext: &[u8],
) -> Result<Zeroizing<[u8; SHARE_PLAINTEXT_LEN]>> {
    let decryption_error = || SecAggError::Decryption {
        from: sender.clone(),
    };
    if ciphertext.len() != ENCRYPTED_SHARE_LEN {
        return Err(decryption_error());
    }
    let key = share_key(
        round_id,
        my_cipher_secret,
        sender,
        sender_cipher_public,
        sender,
        recipient,
    )?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    let aad = context(SHARE_AAD_LABEL, round_id, sender, recipient);
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| decryption_error())?,
    );
    let mut fixed = Zeroizing::new([0u8; SHARE_PLAINTEXT_LEN]);
    if plaintext.len() != SHARE_PLAINTEXT_LEN {
        return Err(decryption_error());
    }
    fixed.copy_from_slice(&plaintext);
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::ChaCha20Rng;

    use super::*;

    fn id(name: &str) -> ParticipantId {
        ParticipantId::new(name).expect("valid test id")
    }

    #[test]
    fn both_sides_of_a_pair_derive_the_same_mask_seed() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let alice = SecretKeys::generate(&mut rng);
        let bob = SecretKeys::generate(&mut rng);
        let from_alice = pairwise_mask_seed(
            7,
            &alice.mask,
            &id("alice"),
            &id("bob"),
            &bob.public().mask_public,
        )
        .expect("contributory");
        let from_bob = pairwise_mask_seed(
            7,
            &bob.mask,
            &id("bob"),
            &id("alice"),
            &alice.public().mask_public,
        )
        .expect("contributory");
        assert_eq!(*from_alice, *from_bob);
        let next_round = pairwise_mask_seed(
            8,
            &alice.mask,
            &id("alice"),
            &id("bob"),
            &bob.public().mask_public,
        )
        .expect("contributory");
        assert_ne!(*from_alice, *next_round);
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let alice = SecretKeys::generate(&mut rng);
        let identity_point = [0u8; 32];
        assert!(is_low_order(&identity_point));
        assert!(!is_low_order(&alice.public().mask_public));
        let result = pairwise_mask_seed(1, &alice.mask, &id("alice"), &id("eve"), &identity_point);
        assert!(matches!(result, Err(SecAggError::LowOrderKey { .. })));
    }

    #[test]
    fn a_share_decrypts_only_for_its_round_and_direction() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let alice = SecretKeys::generate(&mut rng);
        let bob = SecretKeys::generate(&mut rng);
        let plaintext = [9u8; SHARE_PLAINTEXT_LEN];
        let ciphertext = encrypt_share(
            5,
            &alice.cipher,
            &id("alice"),
            &id("bob"),
            &bob.public().cipher_public,
            &plaintext,
        )
        .expect("contributory");
        assert_eq!(ciphertext.len(), ENCRYPTED_SHARE_LEN);
        let alice_public = alice.public().cipher_public;
        let decrypted = decrypt_share(
            5,
            &bob.cipher,
            &id("alice"),
            &alice_public,
            &id("bob"),
            &ciphertext,
        )
        .expect("decrypts");
        assert_eq!(*decrypted, plaintext);
        let other_round = decrypt_share(
            6,
            &bob.cipher,
            &id("alice"),
            &alice_public,
            &id("bob"),
            &ciphertext,
        );
        assert!(matches!(other_round, Err(SecAggError::Decryption { .. })));
        let mut tampered = ciphertext.clone();
        tampered[0] ^= 1;
        let tampered_result = decrypt_share(
            5,
            &bob.cipher,
            &id("alice"),
            &alice_public,
            &id("bob"),
            &tampered,
        );
        assert!(matches!(
            tampered_result,
            Err(SecAggError::Decryption { .. })
        ));
    }

    #[test]
    fn a_reconstructed_secret_gives_the_advertised_public_key() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let keys = SecretKeys::generate(&mut rng);
        assert_eq!(
            public_of_secret(&keys.mask.to_bytes()),
            keys.public().mask_public
        );
    }
}
