//! Revocation in the round engine, driven directly (no sockets) on tokio's
//! paused clock: a revoked member leaves the open round, an update it is
//! still sending is refused, and a selection that a revocation empties is
//! abandoned instead of published.

use std::sync::Arc;
use std::time::Duration;

use fedshield_coordinator::CoordinatorError;
use fedshield_coordinator::config::CoordinatorConfig;
use fedshield_coordinator::engine::{
    Announcement, Engine, RoundOutcome, Session, SessionEvent, UpdateRequest,
};
use fedshield_coordinator::registry::ModelRegistry;
use fedshield_coordinator::server::load_or_init_model;
use fedshield_core::{ModelSpec, ModelVersion, ParticipantId};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// An engine and its driver over a temporary data directory.
struct Harness {
    engine: Engine,
    shutdown: CancellationToken,
    driver: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Harness {
    /// Starts an engine whose rounds open with `min_participants`, select
    /// all of them, need `quorum` updates, and last ten minutes.
    async fn start(min_participants: usize, quorum: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            CoordinatorConfig::for_test(dir.path().to_path_buf(), ModelSpec::mlp(4, vec![3], 2));
        config.round.min_participants = min_participants;
        config.round.quorum = quorum;
        config.round.round_deadline = Duration::from_secs(600);
        config.round.retry_delay = Duration::from_secs(1);
        config.round.max_rounds = Some(1);
        config.validate().unwrap();
        let registry = ModelRegistry::open_local(dir.path()).unwrap();
        let initial = load_or_init_model(&config, &registry).await.unwrap();
        let engine = Engine::new(
            config.round.clone(),
            config.plan.clone(),
            registry,
            Arc::new(initial),
            4,
        );
        let shutdown = CancellationToken::new();
        let driver = tokio::spawn(engine.clone().run(shutdown.clone()));
        Harness {
            engine,
            shutdown,
            driver,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.driver.await.unwrap();
    }

    fn request(&self, session: &Session, announcement: &Announcement) -> UpdateRequest {
        UpdateRequest {
            round_id: announcement.round_id,
            base_version: announcement.base_version,
            participant: session.participant.clone(),
            session_token: session.token.clone(),
            num_samples: 10,
            num_params: self.num_params() as u64,
            privacy: None,
        }
    }

    fn num_params(&self) -> usize {
        self.engine.current_model().weights.params.len()
    }

    async fn submit(&self, session: &Session, announcement: &Announcement) -> usize {
        let ticket = self
            .engine
            .begin_update(self.request(session, announcement))
            .unwrap();
        self.engine
            .commit_update(ticket, vec![0.01; self.num_params()])
            .await
            .unwrap()
    }

    /// Waits (on the paused clock) until `condition` holds on the engine.
    async fn wait_for(&self, what: &str, condition: impl Fn(&Engine) -> bool) {
        for _ in 0..10_000 {
            if condition(&self.engine) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn participant(name: &str) -> ParticipantId {
    ParticipantId::new(name).unwrap()
}

async fn next_announcement(session: &mut Session) -> Announcement {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), session.events.recv()).await {
            Ok(Some(SessionEvent::Announcement(announcement))) => return announcement,
            Ok(Some(SessionEvent::Heartbeat { .. })) => continue,
            Ok(None) => panic!("session of {} ended", session.participant),
            Err(_) => panic!("no announcement for {}", session.participant),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_update_still_arriving_from_a_member_revoked_mid_round_is_refused_and_not_folded() {
    let harness = Harness::start(4, 2).await;
    let mut alice = harness.engine.join(participant("alice"));
    let mut bob = harness.engine.join(participant("bob"));
    let mut carol = harness.engine.join(participant("carol"));
    let dave = harness.engine.join(participant("dave"));
    let announcement = next_announcement(&mut alice).await;
    let _ = next_announcement(&mut bob).await;
    let _ = next_announcement(&mut carol).await;
    // Carol's upload is admitted and in transit when she is revoked.
    let carol_ticket = harness
        .engine
        .begin_update(harness.request(&carol, &announcement))
        .unwrap();
    harness.submit(&alice, &announcement).await;
    harness.submit(&bob, &announcement).await;
    harness.engine.revoke(
        &carol.participant,
        carol.session_id,
        "participant carol is revoked",
    );
    let refused = harness
        .engine
        .commit_update(carol_ticket, vec![100.0; harness.num_params()])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CoordinatorError::RevokedDuringRound { .. }),
        "{refused}"
    );
    let status = harness.engine.status();
    let open_round = status.open_round.expect("the round waits for dave");
    assert!(!open_round.selected.contains(&carol.participant));
    assert_eq!(open_round.accepted.len(), 2);
    assert!(!status.connected.contains(&carol.participant));
    assert_eq!(status.revoked.len(), 1);
    assert_eq!(status.revoked[0].participant, carol.participant);
    // Carol's session ends: her event queue is closed.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while carol.events.recv().await.is_some() {}
        })
        .await
        .is_ok()
    );
    // Dave goes away: the round publishes alice's and bob's updates only.
    harness.engine.leave(&dave.participant, dave.session_id);
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    let mut contributors = harness.engine.current_model().card.contributors.clone();
    contributors.sort();
    assert_eq!(contributors, vec!["alice".to_string(), "bob".to_string()]);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn revoking_the_only_selected_member_abandons_the_round_instead_of_publishing_an_empty_one() {
    let harness = Harness::start(1, 1).await;
    let mut alice = harness.engine.join(participant("alice"));
    let _ = next_announcement(&mut alice).await;
    harness.engine.revoke(
        &alice.participant,
        alice.session_id,
        "participant alice is revoked",
    );
    harness
        .wait_for("the round to close", |engine| {
            engine.status().open_round.is_none()
        })
        .await;
    let status = harness.engine.status();
    let summary = status.recent_rounds.last().expect("the round finished");
    assert_eq!(summary.outcome, RoundOutcome::Abandoned, "{summary:?}");
    assert!(summary.reason.contains("quorum"), "{summary:?}");
    assert_eq!(harness.engine.current_model().version, ModelVersion(0));
    harness.stop().await;
}
