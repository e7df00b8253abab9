//! Upload slots reserved ahead of an upload (`ReserveUploadSlot`).
//!
//! The coordinator receives at most `max_concurrent_uploads` updates at
//! once. An upload that starts without a slot waits for one inside its
//! `SubmitUpdate` call, and HTTP/2 has by then let the participant send a
//! first stream window of data, which the coordinator's transport buffers:
//! memory per waiting participant, so the window has to stay small. A
//! participant that reserves a slot first waits in a call that carries no
//! data, and its upload then streams at full speed from the first byte; this
//! is what lets the receive windows be large without the coordinator's
//! memory growing with the number of participants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedshield_core::{ParticipantId, RoundId};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::engine::sessions::new_session_token;

/// Upload slots held for participants, at most one each.
#[derive(Clone)]
pub struct UploadSlots {
    held: Arc<Mutex<HashMap<ParticipantId, HeldSlot>>>,
    valid_for: Duration,
}

struct HeldSlot {
    token: String,
    round_id: RoundId,
    permit: OwnedSemaphorePermit,
}

impl UploadSlots {
    /// Returns an empty set; a slot no upload claims within `valid_for` is
    /// released.
    pub fn new(valid_for: Duration) -> Self {
        UploadSlots {
            held: Arc::new(Mutex::new(HashMap::new())),
            valid_for,
        }
    }

    /// How long a reserved slot waits for its upload.
    pub fn valid_for(&self) -> Duration {
        self.valid_for
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, HeldSlot>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds `permit` for `participant`'s upload to `round_id` and returns
    /// the slot's token. A slot the participant held before is released.
    /// Must be called within a tokio runtime (it schedules the expiry).
    pub fn hold(
        &self,
        participant: ParticipantId,
        round_id: RoundId,
        permit: OwnedSemaphorePermit,
    ) -> String {
        let token = new_session_token();
        let replaced = self.lock().insert(
            participant.clone(),
            HeldSlot {
                token: token.clone(),
                round_id,
                permit,
            },
        );
        drop(replaced);
        let slots = self.clone();
        let expiring = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(slots.valid_for).await;
            let mut held = slots.lock();
            if held
                .get(&participant)
                .is_some_and(|slot| slot.token == expiring)
            {
                held.remove(&participant);
                debug!(participant = %participant, round = %round_id, "upload slot expired unused");
            }
        });
        token
    }

    /// Takes the slot `participant` holds under `token` for `round_id`, if
    /// it still does; any other slot of the participant is released.
    pub fn take(
        &self,
        participant: &ParticipantId,
        round_id: RoundId,
        token: &str,
    ) -> Option<OwnedSemaphorePermit> {
        let slot = self.lock().remove(participant)?;
        (slot.token == token && slot.round_id == round_id).then_some(slot.permit)
    }

    /// Releases the slots held for rounds other than `open_round`, the one
    /// round open now: their uploads would be refused, and a participant
    /// that reserved a slot and then crashed, or whose round closed first,
    /// must not keep it from the open round's uploads until it expires.
    /// Returns how many were released.
    pub fn release_stale(&self, open_round: RoundId) -> usize {
        let mut held = self.lock();
        let before = held.len();
        held.retain(|_, slot| slot.round_id == open_round);
        before - held.len()
    }

    /// Number of slots held and not yet claimed.
    #[cfg(test)]
    fn num_held(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn participant(name: &str) -> ParticipantId {
        ParticipantId::new(name.to_string()).expect("valid id")
    }

    #[tokio::test]
    async fn a_slot_is_taken_once_by_its_participant_token_and_round() {
        let permits = Arc::new(Semaphore::new(2));
        let slots = UploadSlots::new(Duration::from_secs(60));
        let permit = permits.clone().acquire_owned().await.expect("permit");
        let token = slots.hold(participant("a"), RoundId(3), permit);
        assert_eq!(permits.available_permits(), 1);
        assert!(slots.take(&participant("b"), RoundId(3), &token).is_none());
        assert!(
            slots.take(&participant("a"), RoundId(4), &token).is_none(),
            "a slot of another round is not taken, and is released"
        );
        assert_eq!(permits.available_permits(), 2);

        let permit = permits.clone().acquire_owned().await.expect("permit");
        let token = slots.hold(participant("a"), RoundId(3), permit);
        assert!(slots.take(&participant("a"), RoundId(3), "wrong").is_none());
        assert_eq!(permits.available_permits(), 2, "a wrong token releases it");

        let permit = permits.clone().acquire_owned().await.expect("permit");
        let token_again = slots.hold(participant("a"), RoundId(3), permit);
        assert_ne!(token, token_again);
        let taken = slots.take(&participant("a"), RoundId(3), &token_again);
        assert!(taken.is_some());
        assert_eq!(
            permits.available_permits(),
            1,
            "the taken slot holds its permit"
        );
        drop(taken);
        assert_eq!(permits.available_permits(), 2);
        assert_eq!(slots.num_held(), 0);
    }

    #[tokio::test]
    async fn a_second_reservation_releases_the_first_and_unused_slots_expire() {
        let permits = Arc::new(Semaphore::new(2));
        let slots = UploadSlots::new(Duration::from_millis(50));
        let first = permits.clone().acquire_owned().await.expect("permit");
        let first_token = slots.hold(participant("a"), RoundId(1), first);
        let second = permits.clone().acquire_owned().await.expect("permit");
        let _second_token = slots.hold(participant("a"), RoundId(1), second);
        assert_eq!(permits.available_permits(), 1, "one slot per participant");
        assert!(
            slots
                .take(&participant("a"), RoundId(1), &first_token)
                .is_none()
        );
        assert_eq!(permits.available_permits(), 2);

        let third = permits.clone().acquire_owned().await.expect("permit");
        let _third_token = slots.hold(participant("b"), RoundId(1), third);
        assert_eq!(permits.available_permits(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(permits.available_permits(), 2, "an unclaimed slot expires");
        assert_eq!(slots.num_held(), 0);
    }

    #[tokio::test]
    async fn slots_of_closed_rounds_are_released() {
        let permits = Arc::new(Semaphore::new(2));
        let slots = UploadSlots::new(Duration::from_secs(60));
        let old = permits.clone().acquire_owned().await.expect("permit");
        slots.hold(participant("a"), RoundId(1), old);
        let current = permits.clone().acquire_owned().await.expect("permit");
        let token = slots.hold(participant("b"), RoundId(2), current);
        assert_eq!(permits.available_permits(), 0);
        assert_eq!(slots.release_stale(RoundId(2)), 1);
        assert_eq!(permits.available_permits(), 1);
        assert!(slots.take(&participant("b"), RoundId(2), &token).is_some());
    }
}
