//! Completion: once the federation has published the rounds it was started
//! for (`RoundConfig::max_rounds`, counted over its whole history), no round
//! opens again and every participant is told so on its `Join` stream.
//!
//! The engine keeps the completion in its state, so that a participant that
//! joins later (a coordinator that keeps serving downloads) is told at once,
//! and cancels a token the binary waits on to stop the coordinator.

use fedshield_core::ModelVersion;
use tracing::info;

use super::{Engine, EngineState, RoundState, SessionEvent};

/// How the federation ended, as participants are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The model version the federation ended with.
    pub final_version: ModelVersion,
    /// sha256 (hex) of that version's parameters.
    pub final_sha256: String,
    /// Rounds published over the federation's whole history.
    pub num_rounds_completed: u64,
}

impl EngineState {
    /// Returns the completion the state has reached under `max_rounds`, if
    /// any: no round is open and `max_rounds` rounds were published.
    fn reached_completion(&self, max_rounds: Option<u64>) -> Option<Completion> {
        let max_rounds = max_rounds?;
        let waiting = matches!(self.round, RoundState::Waiting { .. });
        (waiting && self.num_rounds_completed >= max_rounds).then(|| Completion {
            final_version: self.current.version,
            final_sha256: self.current.card.sha256.clone(),
            num_rounds_completed: self.num_rounds_completed,
        })
    }
}

impl Engine {
    /// Returns whether the federation is complete, marking it so and
    /// telling every connected participant the first time. Called by the
    /// driver under the state lock, before it would open a round.
    pub(super) fn complete_if_done(&self, state: &mut EngineState) -> bool {
        if state.completion.is_some() {
            return true;
        }
        let Some(completion) = state.reached_completion(self.inner.config.max_rounds) else {
            return false;
        };
        info!(
            num_rounds_completed = completion.num_rounds_completed,
            final_version = %completion.final_version,
            sha256 = %completion.final_sha256,
            num_connected = state.sessions.len(),
            "federation complete: every round it was started for is published; no round opens again"
        );
        for session in state.sessions.values() {
            // The queue is bounded; a session whose queue is full is one
            // that reads nothing, and it learns on its next `Join`.
            let _ = session
                .events
                .try_send(SessionEvent::Complete(completion.clone()));
        }
        state.completion = Some(completion);
        self.inner.completed.cancel();
        true
    }

    /// Returns the completion, once the federation is complete.
    pub fn completion(&self) -> Option<Completion> {
        self.lock_state().completion.clone()
    }

    /// Waits until the federation is complete (never, without
    /// `max_rounds`).
    pub async fn completed(&self) {
        self.inner.completed.cancelled().await;
    }
}
