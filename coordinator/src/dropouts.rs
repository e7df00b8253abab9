//! Members that leave rounds they were selected for, and how that makes them
//! selected less often.
//!
//! An unexplained dropout: a participant selected for a round whose `Join`
//! session ended while the round was open, and that had neither an update
//! accepted nor declined the round by the time the round closed (published
//! or abandoned). A participant that reconnects and delivers before the
//! round closes did not drop out; a decline is an explanation and does not
//! count. Leaving on purpose once the other members' updates are in is how
//! a member makes rounds fail; before participants re-sent their stored
//! updates, each such failure also cost every honest member a privacy spend.
//!
//! The rule, deterministic:
//! - Each dropout adds a strike (at most [`MAX_STRIKES`]) and makes the
//!   participant sit out the next `2^(strikes - 1)` round openings at which
//!   it is connected: 1, 2, 4, 8, 16, then 32.
//! - Each of its updates accepted into a round that closes works one strike
//!   off (the sit-out already begun is served in full).
//! - Selection takes participants that are not sitting out first (in the
//!   random order of the round's sample); one that sits out is selected only
//!   when the round could not reach its quorum without it, fewest strikes
//!   first. Every opening at which a sitting-out participant is connected
//!   counts as one round sat out, whether or not it had to be selected.
//!
//! The records live in memory: a coordinator restart forgives everyone.
//! They are shown in the status JSON (`dropouts`, and per connected
//! participant), on the dashboard, and counted in the metrics.

use std::collections::HashMap;

use fedshield_core::ParticipantId;

/// Most strikes a participant collects; its sit-out is then `2^(MAX_STRIKES - 1)` rounds.
pub const MAX_STRIKES: u32 = 6;

/// One participant's dropout history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropoutRecord {
    /// Unexplained dropouts since the coordinator started.
    pub num_dropouts: u64,
    /// Dropouts not yet worked off by accepted updates (at most [`MAX_STRIKES`]).
    pub strikes: u32,
    /// Round openings it still sits out (counted while it is connected).
    pub sit_out_rounds_left: u32,
}

impl DropoutRecord {
    /// Returns whether the participant sits out the next round opening.
    pub fn is_sitting_out(&self) -> bool {
        self.sit_out_rounds_left > 0
    }
}

/// Returns how many round openings a participant with `strikes` strikes
/// sits out after its latest dropout: `2^(strikes - 1)`, 0 without strikes.
pub fn sit_out_rounds(strikes: u32) -> u32 {
    match strikes {
        0 => 0,
        strikes => 1 << (strikes.min(MAX_STRIKES) - 1),
    }
}

/// The dropout records of every participant that ever dropped out.
#[derive(Debug, Default)]
pub struct DropoutTracker {
    records: HashMap<ParticipantId, DropoutRecord>,
}

impl DropoutTracker {
    /// Returns an empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an unexplained dropout of `participant` and returns its record.
    pub fn record_dropout(&mut self, participant: &ParticipantId) -> DropoutRecord {
        let record = self.records.entry(participant.clone()).or_default();
        record.num_dropouts += 1;
        record.strikes = (record.strikes + 1).min(MAX_STRIKES);
        record.sit_out_rounds_left = sit_out_rounds(record.strikes);
        *record
    }

    /// Records an update of `participant` accepted into a round that
    /// closed: one strike is worked off.
    pub fn record_contribution(&mut self, participant: &ParticipantId) {
        if let Some(record) = self.records.get_mut(participant) {
            record.strikes = record.strikes.saturating_sub(1);
        }
    }

    /// Returns `participant`'s record (all zero if it never dropped out).
    pub fn record(&self, participant: &ParticipantId) -> DropoutRecord {
        self.records.get(participant).copied().unwrap_or_default()
    }

    /// Returns every record, by participant id.
    pub fn records(&self) -> Vec<(ParticipantId, DropoutRecord)> {
        let mut records: Vec<(ParticipantId, DropoutRecord)> = self
            .records
            .iter()
            .map(|(participant, record)| (participant.clone(), *record))
            .collect();
        records.sort_by(|left, right| left.0.cmp(&right.0));
        records
    }

    /// Returns how many participants sit out the next round opening.
    pub fn num_sitting_out(&self) -> usize {
        self.records
            .values()
            .filter(|record| record.is_sitting_out())
            .count()
    }

    /// Selects a round's participants from `candidates` (the connected
    /// participants, in the round's random order): up to `num_wanted` that
    /// are not sitting out, then, only while fewer than `quorum` are
    /// selected, participants that sit out, fewest strikes first. Every
    /// candidate that sits out has one round opening less to sit out.
    pub fn select(
        &mut self,
        candidates: Vec<ParticipantId>,
        num_wanted: usize,
        quorum: usize,
    ) -> Vec<ParticipantId> {
        let (mut sitting_out, eligible): (Vec<ParticipantId>, Vec<ParticipantId>) = candidates
            .into_iter()
            .partition(|participant| self.record(participant).is_sitting_out());
        let mut selected: Vec<ParticipantId> = eligible.into_iter().take(num_wanted).collect();
        // Stable: ties keep the random order.
        sitting_out.sort_by_key(|participant| self.record(participant).strikes);
        let needed = quorum.min(num_wanted);
        for participant in &sitting_out {
            if selected.len() >= needed {
                break;
            }
            selected.push(participant.clone());
        }
        for participant in &sitting_out {
            if let Some(record) = self.records.get_mut(participant) {
                record.sit_out_rounds_left -= 1;
            }
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> ParticipantId {
        ParticipantId::new(name).unwrap()
    }

    fn candidates() -> Vec<ParticipantId> {
        ["alpha", "beta", "gamma", "mallory"]
            .iter()
            .map(|name| id(name))
            .collect()
    }

    #[test]
    fn sit_outs_double_with_each_strike_up_to_the_cap() {
        let sit_outs: Vec<u32> = (0..=8).map(sit_out_rounds).collect();
        assert_eq!(sit_outs, vec![0, 1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn a_repeated_dropper_is_selected_in_rounds_one_three_and_six_of_ten() {
        let mut tracker = DropoutTracker::new();
        let mut rounds_with_mallory = Vec::new();
        for round in 1..=10 {
            let selected = tracker.select(candidates(), 4, 3);
            if selected.contains(&id("mallory")) {
                rounds_with_mallory.push(round);
                tracker.record_dropout(&id("mallory"));
            } else {
                assert_eq!(selected.len(), 3, "round {round}");
            }
        }
        assert_eq!(rounds_with_mallory, vec![1, 3, 6]);
        let record = tracker.record(&id("mallory"));
        assert_eq!(record.num_dropouts, 3);
        assert_eq!(record.strikes, 3);
        // Its four rounds sat out are served by round 10.
        assert_eq!(record.sit_out_rounds_left, 0);
    }

    #[test]
    fn a_participant_sitting_out_is_selected_when_the_quorum_needs_it() {
        let mut tracker = DropoutTracker::new();
        tracker.record_dropout(&id("mallory"));
        tracker.record_dropout(&id("gamma"));
        tracker.record_dropout(&id("gamma"));
        // Only two others: the quorum of three takes the one with fewer strikes.
        let selected = tracker.select(
            vec![id("alpha"), id("gamma"), id("mallory"), id("beta")],
            4,
            3,
        );
        assert_eq!(selected, vec![id("alpha"), id("beta"), id("mallory")]);
        assert_eq!(tracker.record(&id("mallory")).sit_out_rounds_left, 0);
        assert_eq!(tracker.record(&id("gamma")).sit_out_rounds_left, 1);
        assert_eq!(tracker.num_sitting_out(), 1);
    }

    #[test]
    fn accepted_updates_work_strikes_off() {
        let mut tracker = DropoutTracker::new();
        tracker.record_dropout(&id("mallory"));
        tracker.record_dropout(&id("mallory"));
        tracker.record_contribution(&id("mallory"));
        assert_eq!(tracker.record(&id("mallory")).strikes, 1);
        // The next dropout starts from one strike: two rounds, not four.
        assert_eq!(
            tracker.record_dropout(&id("mallory")).sit_out_rounds_left,
            2
        );
        tracker.record_contribution(&id("honest"));
        assert_eq!(tracker.record(&id("honest")), DropoutRecord::default());
    }
}
