//! A plaintext coordinator on 127.0.0.1 with two honest participants that run
//! the real participant code, for tests that put a hostile member next to
//! them (each test file adds its own waits and checks in an
//! `impl Federation` block of its own).

use std::collections::BTreeSet;
use std::time::Duration;

use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle, Engine};
use fedshield_core::ParticipantId;
use fedshield_participant::ParticipantEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{start_coordinator, start_participant};

/// The honest participants; they run the real participant code.
pub const HONEST: [&str; 2] = ["acme-soc", "globex-sec"];

/// How long stopping the participants or the coordinator may take.
const STOP_PATIENCE: Duration = Duration::from_secs(60);

/// A coordinator and the honest participants training with it.
pub struct Federation {
    /// The test's directory: the coordinator's and participants' data.
    pub dir: tempfile::TempDir,
    /// Stops the coordinator and the participants.
    pub shutdown: CancellationToken,
    /// The running coordinator.
    pub coordinator: CoordinatorHandle,
    /// The coordinator's gRPC address, `http://127.0.0.1:port`.
    pub url: String,
    /// The honest participants' tasks and events.
    pub honest: Vec<(
        super::ParticipantTask,
        mpsc::UnboundedReceiver<ParticipantEvent>,
    )>,
}

impl Federation {
    /// Starts a coordinator with `config` (its data directory is replaced by
    /// a fresh temporary one); honest participants join with
    /// [`Federation::start_honest`].
    pub async fn start(mut config: CoordinatorConfig) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        config.data_dir = dir.path().join("coordinator");
        let shutdown = CancellationToken::new();
        let coordinator = start_coordinator(config, shutdown.clone()).await;
        let url = format!("http://{}", coordinator.local_addr());
        Federation {
            dir,
            shutdown,
            coordinator,
            url,
            honest: Vec::new(),
        }
    }

    /// Starts the honest participants, which join at once.
    pub fn start_honest(&mut self) {
        for (index, name) in HONEST.iter().enumerate() {
            self.honest.push(start_participant(
                &self.url,
                name,
                index,
                self.dir.path(),
                self.shutdown.clone(),
            ));
        }
    }

    /// Returns the coordinator's round engine.
    pub fn engine(&self) -> &Engine {
        self.coordinator.engine()
    }

    /// Returns the number of parameters of the current model.
    pub fn num_params(&self) -> usize {
        self.engine().current_model().weights.params.len()
    }

    /// Stops the participants, then the coordinator, and waits for all of them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (task, _) in self.honest {
            let end = tokio::time::timeout(STOP_PATIENCE, task)
                .await
                .expect("participant stops")
                .expect("participant task does not panic")
                .expect("an honest participant meets no permanent refusal");
            // Stopped by the shutdown, or told first that the federation
            // completed (its `max_rounds`), with the version it ended on.
            if let fedshield_participant::RunEnd::FederationComplete(end) = end {
                let completion = self
                    .coordinator
                    .engine()
                    .completion()
                    .expect("a participant is told of a completion that happened");
                assert_eq!(end.final_version, completion.final_version);
                assert_eq!(end.final_sha256, completion.final_sha256);
            }
        }
        tokio::time::timeout(STOP_PATIENCE, self.coordinator.wait())
            .await
            .expect("coordinator stops")
            .expect("coordinator stops cleanly");
    }
}

/// Returns the ids as strings, for comparing sets of participants.
pub fn names(participants: &[ParticipantId]) -> BTreeSet<String> {
    participants.iter().map(ToString::to_string).collect()
}

/// Returns the honest participants' ids.
pub fn honest_names() -> BTreeSet<String> {
    HONEST.iter().map(ToString::to_string).collect()
}
