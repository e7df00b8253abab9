//! The history of finished rounds: the in-memory summaries status readers
//! see (the last [`ROUND_HISTORY_LEN`]), and the durable history appended
//! by a writer thread of its own, in round order, off the driver's path.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use fedshield_core::clock::unix_ms;
use fedshield_core::{ModelVersion, ParticipantId, RoundId};
use tracing::{Span, warn};

use super::{Engine, EngineState, ROUND_HISTORY_LEN};
use crate::registry::{ModelRegistry, RoundRecord};

/// Outcome of a finished round, kept in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSummary {
    pub round_id: RoundId,
    pub base_version: ModelVersion,
    pub outcome: RoundOutcome,
    pub contributors: Vec<ParticipantId>,
    pub duration: Duration,
    pub reason: String,
}

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    Completed { published: ModelVersion },
    Abandoned,
}

impl RoundSummary {
    /// The version the round published; `None` if it was abandoned.
    pub fn published(&self) -> Option<ModelVersion> {
        match self.outcome {
            RoundOutcome::Completed { published } => Some(published),
            RoundOutcome::Abandoned => None,
        }
    }

    /// The contributors' ids as text, in acceptance order.
    pub fn contributor_names(&self) -> Vec<String> {
        self.contributors.iter().map(ToString::to_string).collect()
    }

    /// How long the round was open, in whole milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.duration.as_millis() as u64
    }
}

impl RoundOutcome {
    /// Returns "completed" or "abandoned".
    pub fn name(self) -> &'static str {
        match self {
            RoundOutcome::Completed { .. } => "completed",
            RoundOutcome::Abandoned => "abandoned",
        }
    }
}

/// What the round history writer thread is asked to do.
enum HistoryCommand {
    /// Append the record (and log a failure inside the round's span).
    Append { record: RoundRecord, span: Span },
    /// Report, once every record queued before is appended.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Appends finished rounds to the durable history on a thread of its own,
/// in the order they are queued. The thread ends once every handle to the
/// engine is dropped and the queue is drained.
pub(super) struct RoundHistoryWriter {
    /// Feeds the writer thread; `None` if the thread could not be started,
    /// in which case records are appended on the caller's thread.
    queue: Option<std::sync::mpsc::Sender<HistoryCommand>>,
    registry: ModelRegistry,
}

impl RoundHistoryWriter {
    pub(super) fn start(registry: ModelRegistry) -> Self {
        let (queue, commands) = std::sync::mpsc::channel::<HistoryCommand>();
        let thread_registry = registry.clone();
        let started = std::thread::Builder::new()
            .name("round-history".to_string())
            .spawn(move || {
                for command in commands {
                    match command {
                        HistoryCommand::Append { record, span } => {
                            span.in_scope(|| append_round_logged(&thread_registry, &record));
                        }
                        HistoryCommand::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        let queue = match started {
            Ok(_) => Some(queue),
            Err(error) => {
                warn!(error = %error, "no round history thread; appending rounds on the driver");
                None
            }
        };
        RoundHistoryWriter { queue, registry }
    }

    /// Queues `record` behind the records queued before it.
    pub(super) fn append(&self, record: RoundRecord) {
        let Some(queue) = &self.queue else {
            append_round_logged(&self.registry, &record);
            return;
        };
        let command = HistoryCommand::Append {
            record,
            span: Span::current(),
        };
        // The thread is gone only if it panicked: append here instead.
        if let Err(std::sync::mpsc::SendError(HistoryCommand::Append { record, .. })) =
            queue.send(command)
        {
            append_round_logged(&self.registry, &record);
        }
    }

    /// Returns once every record queued before the call is appended (or its
    /// failure logged).
    pub(super) async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (done, appended) = tokio::sync::oneshot::channel();
        if queue.send(HistoryCommand::Flush(done)).is_ok() {
            let _ = appended.await;
        }
    }
}

/// Appends a finished round to the durable history (logged on failure: the
/// published versions themselves are already safe).
fn append_round_logged(registry: &ModelRegistry, record: &RoundRecord) {
    if let Err(error) = registry.append_round(record) {
        warn!(round = record.round_id, error = %error, "round not added to the durable history");
    }
}

/// Returns the in-memory summary of a stored round record.
pub(super) fn summary_from_record(record: &RoundRecord) -> RoundSummary {
    RoundSummary {
        round_id: RoundId(record.round_id),
        base_version: ModelVersion(record.base_version),
        outcome: match record.published {
            Some(version) => RoundOutcome::Completed {
                published: ModelVersion(version),
            },
            None => RoundOutcome::Abandoned,
        },
        contributors: record
            .contributors
            .iter()
            .filter_map(|name| ParticipantId::new(name.clone()).ok())
            .collect(),
        duration: Duration::from_millis(record.duration_ms),
        reason: record.reason.clone(),
    }
}

pub(super) fn push_history(history: &mut VecDeque<RoundSummary>, summary: RoundSummary) {
    if history.len() == ROUND_HISTORY_LEN {
        history.pop_front();
    }
    history.push_back(summary);
}

impl Engine {
    /// Queues a finished round for the durable history, behind the rounds
    /// that finished before it (a failure is logged: the published versions
    /// themselves are already safe).
    pub(super) fn record_round(&self, summary: &RoundSummary) {
        let record = RoundRecord {
            round_id: summary.round_id.0,
            base_version: summary.base_version.0,
            published: summary.published().map(|version| version.0),
            contributors: summary.contributor_names(),
            duration_ms: summary.duration_ms(),
            reason: summary.reason.clone(),
            finished_unix_ms: unix_ms(SystemTime::now()),
        };
        self.inner.round_history.append(record);
    }
}

impl EngineState {
    /// Returns how round `round_id` ended, if it is in the history.
    pub(super) fn closed_outcome(&self, round_id: RoundId) -> Option<&'static str> {
        self.history
            .iter()
            .find(|summary| summary.round_id == round_id)
            .map(|summary| summary.outcome.name())
    }
}
