//! The driver's decisions: when to open a round and whom to select, when
//! an open round publishes, keeps waiting or is abandoned, and closing it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fedshield_core::aggregation::robust::RobustAggregator;
use fedshield_core::clock::unix_ms;
use fedshield_core::{ParticipantId, RoundId};
use rand::seq::SliceRandom;
use tokio::time::Instant;
use tracing::{Span, info, info_span, warn};

use super::history::push_history;
use super::secure::{SecureDecision, SecureRound};
use super::sessions::SessionEvent;
use super::{Engine, EngineState, OpenRound, RoundOutcome, RoundState, RoundSummary};
use crate::registry::OpenRoundRecord;

impl Engine {
    /// Takes one decision. Returns when the driver should look again.
    pub(super) async fn step(&self) -> Step {
        let now = Instant::now();
        let decision = {
            let mut guard = self.lock_state();
            let state = &mut *guard;
            if let RoundState::Waiting {
                retry_after,
                attempt,
            } = &state.round
            {
                let (retry_after, attempt) = (*retry_after, *attempt);
                if self.complete_if_done(state) {
                    return Step::WaitForChange;
                }
                if let Some(retry_at) = retry_after
                    && now < retry_at
                {
                    return Step::WaitUntil(Some(retry_at));
                }
                if state.sessions.len() < self.inner.config.min_participants {
                    return Step::WaitForChange;
                }
                self.open_round(state, now, attempt);
                return Step::Continue;
            }
            let RoundState::Open(round) = &state.round else {
                unreachable!("the waiting state returned above");
            };
            let sessions = &state.sessions;
            let is_connected = |participant: &ParticipantId| {
                sessions.contains_key(participant) || round.in_flight.contains(participant)
            };
            match round.secure.clone() {
                Some(secure) => match self.evaluate_secure(round, &secure, &is_connected, now) {
                    SecureDecision::KeepWaiting(deadline) => RoundDecision::KeepWaiting(deadline),
                    SecureDecision::Continue => return Step::Continue,
                    SecureDecision::Publish => RoundDecision::Publish,
                    SecureDecision::Abandon(reason) => RoundDecision::Abandon(reason),
                },
                None => self.evaluate_round(round, &round.selected, &is_connected, now),
            }
        };
        match decision {
            RoundDecision::KeepWaiting(deadline) => Step::WaitUntil(Some(deadline)),
            RoundDecision::Publish => {
                self.publish().await;
                Step::Continue
            }
            RoundDecision::Abandon(reason) => {
                self.abandon(reason);
                Step::Continue
            }
        }
    }

    /// Decides what to do with the open round now: `candidates` are the
    /// participants that may deliver an update (the selected ones; under
    /// secure aggregation, those whose shares were handed out), and
    /// `is_connected` says whether one still can (connected or mid-upload).
    /// Under secure aggregation, `Publish` means the masked updates are in.
    pub(super) fn evaluate_round(
        &self,
        round: &OpenRound,
        candidates: &BTreeSet<ParticipantId>,
        is_connected: &dyn Fn(&ParticipantId) -> bool,
        now: Instant,
    ) -> RoundDecision {
        let num_accepted = round.accepted.len();
        // Candidates that may still deliver.
        let num_pending = candidates
            .iter()
            .filter(|participant| !round.has_accepted(participant))
            .filter(|participant| !round.declined.contains(*participant))
            .filter(|participant| is_connected(participant))
            .count();
        // A revocation can shrink the selection below the quorum: then the
        // quorum rule below decides, not this shortcut.
        if num_accepted == candidates.len() && num_accepted >= round.quorum {
            return RoundDecision::Publish;
        }
        if num_pending == 0 && num_accepted >= round.quorum {
            return RoundDecision::Publish;
        }
        if num_accepted + num_pending < round.quorum {
            return RoundDecision::Abandon(format!(
                "quorum of {} is out of reach: {num_accepted} accepted, {num_pending} still able to submit",
                round.quorum
            ));
        }
        if now >= round.deadline {
            if num_accepted >= round.quorum {
                return RoundDecision::Publish;
            }
            return RoundDecision::Abandon(format!(
                "deadline passed with {num_accepted} of {} required updates",
                round.quorum
            ));
        }
        RoundDecision::KeepWaiting(round.deadline)
    }

    fn open_round(&self, state: &mut EngineState, now: Instant, attempt: u32) {
        let config = &self.inner.config;
        let mut candidates: Vec<ParticipantId> = state.sessions.keys().cloned().collect();
        candidates.sort();
        candidates.shuffle(&mut rand::rng());
        let mut num_selected = config.participants_per_round.resolve(candidates.len());
        // The scale of secure aggregation keeps a sum of at most this many
        // updates from wrapping.
        if let Some(secure) = &self.inner.plan.secure_aggregation {
            num_selected = num_selected.min(secure.max_participants as usize);
        }
        // Participants that left earlier rounds sit some out (crate::dropouts).
        let selected: BTreeSet<ParticipantId> = state
            .dropouts
            .select(candidates, num_selected, config.quorum)
            .into_iter()
            .collect();
        self.inner
            .metrics
            .set_participants_sitting_out(state.dropouts.num_sitting_out());
        let mut quorum = config.quorum.min(selected.len()).max(1);
        let round_id = RoundId(state.next_round_id);
        state.next_round_id += 1;
        let deadline_unix_ms = unix_ms(SystemTime::now() + config.round_deadline);
        let base = state.current.clone();
        let span = info_span!(
            "round",
            round = %round_id,
            base_version = %base.version,
            version = tracing::field::Empty,
            attempt,
        );
        let _entered = span.clone().entered();
        let rule = &self.inner.config.aggregation;
        // A secure round sums masked updates in its own state: no plain
        // aggregate, so no second model-sized buffer.
        let secure = self.inner.plan.secure_aggregation.as_ref().map(|_| {
            Arc::new(SecureRound::new(
                round_id,
                &selected,
                base.weights.params.len(),
                config.round_deadline,
                now,
            ))
        });
        if let Some(secure) = &secure {
            // Fewer survivors than the threshold could not be unmasked.
            quorum = quorum.max(secure.setup.threshold).min(selected.len());
        }
        let aggregate = if secure.is_some() {
            None
        } else {
            let sum_buffer = if RobustAggregator::is_streaming(rule) {
                self.take_receive_buffer()
            } else {
                Vec::new()
            };
            Some(
                RobustAggregator::with_buffer(rule, base.weights.params.len(), sum_buffer)
                    .expect("the aggregation rule was validated with the configuration"),
            )
        };
        let round = OpenRound {
            round_id,
            aggregate: Arc::new(Mutex::new(aggregate)),
            secure,
            base,
            selected,
            accepted: Vec::new(),
            in_flight: BTreeSet::new(),
            declined: BTreeSet::new(),
            quorum,
            deadline: now + config.round_deadline,
            deadline_unix_ms,
            attempt,
            opened_at: now,
            span,
        };
        let record = OpenRoundRecord {
            round_id: round_id.0,
            base_version: round.base.version.0,
            opened_unix_ms: unix_ms(SystemTime::now()),
        };
        // A restart numbers the first round on a version one past the round
        // that published it (`Engine::new`), so the record of such a round
        // repeats what the stored version already says: it is written after
        // the announcements, in the background, instead of holding them back
        // for its fsyncs. A retry's id cannot be derived that way, so its
        // record is durable before anyone is told of the round.
        let id_derivable_from_base = round
            .base
            .card
            .round_id
            .map_or(1, |published_by| published_by + 1)
            == round_id.0;
        if !id_derivable_from_base {
            self.write_open_round_record(&record);
        }
        let announcement = round.announcement(&self.inner.plan, self.inner.upload_permits_total);
        for participant in &round.selected {
            if let Some(session) = state.sessions.get(participant)
                && session
                    .events
                    .try_send(SessionEvent::Announcement(announcement.clone()))
                    .is_err()
            {
                warn!(round = %round_id, participant = %participant, "announcement could not be queued");
            }
        }
        info!(
            round = %round_id,
            base_version = %round.base.version,
            num_selected = round.selected.len(),
            quorum,
            attempt,
            "round opened"
        );
        state.round = RoundState::Open(Box::new(round));
        self.inner.metrics.round_opened();
        if id_derivable_from_base {
            let engine = self.clone();
            let span = Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| engine.write_open_round_record(&record));
            });
        }
    }

    /// Writes the open round's record, unless the record of a later round
    /// is already written (a background write may finish after the round it
    /// describes closed and the next one opened).
    fn write_open_round_record(&self, record: &OpenRoundRecord) {
        let mut last_recorded = self
            .inner
            .last_open_round_recorded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *last_recorded > record.round_id {
            return;
        }
        match self.inner.registry.record_open_round(record) {
            Ok(()) => *last_recorded = record.round_id,
            Err(error) => {
                warn!(round = record.round_id, error = %error, "open round not recorded; a restart would open a new round instead")
            }
        }
    }

    /// Takes the open round out of the state machine and closes its
    /// aggregate to further folds; returns `None` if no round is open. The
    /// aggregate is `None` if it was already closed.
    pub(super) fn close_open_round(&self) -> Option<(OpenRound, Option<RobustAggregator>)> {
        let aggregate = {
            let state = self.lock_state();
            match &state.round {
                RoundState::Open(round) => round.aggregate.clone(),
                RoundState::Waiting { .. } => return None,
            }
        };
        // Aggregate, then state: the documented lock order. Taking the
        // aggregate closes it to further folds; folds that finished before
        // are already recorded as accepted.
        let fed_avg = aggregate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let mut state = self.lock_state();
        let previous = std::mem::replace(
            &mut state.round,
            RoundState::Waiting {
                retry_after: None,
                attempt: 1,
            },
        );
        match previous {
            RoundState::Open(round) => {
                self.record_dropouts(&mut state, &round);
                Some((*round, fed_avg))
            }
            RoundState::Waiting { .. } => None,
        }
    }

    /// Notes, as `round` closes, who dropped out of it (left without an
    /// update or a decline) and who contributed ([`crate::dropouts`]).
    fn record_dropouts(&self, state: &mut EngineState, round: &OpenRound) {
        for (participant, _, _) in &round.accepted {
            state.dropouts.record_contribution(participant);
        }
        let left_before_delivering = std::mem::take(&mut state.left_open_round_before_delivering);
        for participant in &left_before_delivering {
            if round.has_accepted(participant) || round.declined.contains(participant) {
                continue;
            }
            let record = state.dropouts.record_dropout(participant);
            self.inner.metrics.round_dropout();
            warn!(
                round = %round.round_id,
                participant = %participant,
                num_dropouts = record.num_dropouts,
                strikes = record.strikes,
                sit_out_rounds = record.sit_out_rounds_left,
                "participant left a round it was selected for without an update or a decline"
            );
        }
        self.inner
            .metrics
            .set_participants_sitting_out(state.dropouts.num_sitting_out());
    }

    /// Abandons the open round: nothing is published, the same base version
    /// is retried after the configured delay.
    fn abandon(&self, reason: String) {
        if let Some((round, _discarded)) = self.close_open_round() {
            self.finish_abandoned(round, reason);
        }
    }

    pub(super) fn finish_abandoned(&self, round: OpenRound, reason: String) {
        let _entered = round.span.clone().entered();
        if let Some(secure) = &round.secure {
            secure.close(&reason);
        }
        warn!(round = %round.round_id, base_version = %round.base.version, attempt = round.attempt, reason = %reason, "round abandoned");
        let mut state = self.lock_state();
        state.num_rounds_abandoned += 1;
        state.round = RoundState::Waiting {
            retry_after: Some(Instant::now() + self.inner.config.retry_delay),
            attempt: round.attempt + 1,
        };
        let summary = RoundSummary {
            round_id: round.round_id,
            base_version: round.base.version,
            outcome: RoundOutcome::Abandoned,
            contributors: round
                .accepted
                .iter()
                .map(|(participant, _, _)| participant.clone())
                .collect(),
            duration: round.opened_at.elapsed(),
            reason,
        };
        push_history(&mut state.history, summary.clone());
        self.inner.metrics.round_abandoned(summary.duration);
        drop(state);
        self.record_round(&summary);
    }
}

pub(super) enum Step {
    /// Look again immediately.
    Continue,
    /// Sleep until the instant (or a change).
    WaitUntil(Option<Instant>),
    /// Sleep until something changes.
    WaitForChange,
}

pub(super) enum RoundDecision {
    KeepWaiting(Instant),
    Publish,
    Abandon(String),
}
