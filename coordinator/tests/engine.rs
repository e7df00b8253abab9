//! Round engine edge cases, driven directly (no sockets) on tokio's paused
//! clock so deadlines are exact and instant.

use std::sync::Arc;
use std::time::Duration;

use fedshield_coordinator::CoordinatorError;
use fedshield_coordinator::config::{CoordinatorConfig, ParticipantsPerRound};
use fedshield_coordinator::engine::{
    Announcement, Engine, RoundOutcome, Session, SessionEvent, UpdateRequest,
};
use fedshield_coordinator::registry::ModelRegistry;
use fedshield_coordinator::server::load_or_init_model;
use fedshield_core::{ModelSpec, ModelVersion, ParticipantId, RoundId};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

struct Harness {
    engine: Engine,
    shutdown: CancellationToken,
    driver: tokio::task::JoinHandle<()>,
    dir: TempDir,
}

impl Harness {
    async fn start(configure: impl FnOnce(&mut CoordinatorConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            CoordinatorConfig::for_test(dir.path().to_path_buf(), ModelSpec::mlp(4, vec![3], 2));
        config.round.round_deadline = Duration::from_secs(10);
        config.round.retry_delay = Duration::from_secs(1);
        configure(&mut config);
        config.validate().unwrap();
        let registry = ModelRegistry::open_local(dir.path()).unwrap();
        let initial = load_or_init_model(&config, &registry).await.unwrap();
        let engine = Engine::new(
            config.round.clone(),
            config.plan.clone(),
            registry,
            Arc::new(initial),
            2,
        );
        let shutdown = CancellationToken::new();
        let driver = tokio::spawn(engine.clone().run(shutdown.clone()));
        Harness {
            engine,
            shutdown,
            driver,
            dir,
        }
    }

    /// Stops the driver and waits for it; returns the data directory.
    async fn stop(self) -> TempDir {
        self.shutdown.cancel();
        self.driver.await.unwrap();
        self.dir
    }

    fn num_params(&self) -> usize {
        self.engine.current_model().weights.params.len()
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

    async fn submit(
        &self,
        session: &Session,
        announcement: &Announcement,
    ) -> Result<usize, CoordinatorError> {
        let ticket = self
            .engine
            .begin_update(self.request(session, announcement))?;
        self.engine
            .commit_update(ticket, vec![0.01; self.num_params()])
            .await
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
            Ok(Some(SessionEvent::Complete(completion))) => {
                panic!(
                    "{} was told the federation is complete: {completion:?}",
                    session.participant
                )
            }
            Ok(None) => panic!("session of {} ended", session.participant),
            Err(_) => panic!("no announcement for {}", session.participant),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn round_publishes_the_next_version_when_every_selected_participant_submitted() {
    let harness = Harness::start(|_| {}).await;
    let mut alice = harness.engine.join(participant("alice"));
    let mut bob = harness.engine.join(participant("bob"));
    let announcement_alice = next_announcement(&mut alice).await;
    let announcement_bob = next_announcement(&mut bob).await;
    assert_eq!(announcement_alice.round_id, announcement_bob.round_id);
    assert_eq!(announcement_alice.base_version, ModelVersion(0));
    let base_params = harness.engine.current_model().weights.params.clone();
    assert_eq!(
        harness.submit(&alice, &announcement_alice).await.unwrap(),
        1
    );
    assert_eq!(harness.submit(&bob, &announcement_bob).await.unwrap(), 2);
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    let published = harness.engine.current_model();
    // Both deltas are 0.01 everywhere, so the average moves every parameter by 0.01.
    for (new, old) in published.weights.params.iter().zip(&base_params) {
        assert!((new - old - 0.01).abs() < 1e-6);
    }
    assert_eq!(
        published.card.contributors,
        vec!["alice".to_string(), "bob".to_string()]
    );
    assert_eq!(published.card.parent, Some(0));
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_round_published_just_before_shutdown_is_in_the_durable_history_once_the_driver_stopped()
{
    let harness = Harness::start(|_| {}).await;
    let mut alice = harness.engine.join(participant("alice"));
    let mut bob = harness.engine.join(participant("bob"));
    let announcement_alice = next_announcement(&mut alice).await;
    let announcement_bob = next_announcement(&mut bob).await;
    let mut published = harness.engine.subscribe_published();
    harness.submit(&alice, &announcement_alice).await.unwrap();
    harness.submit(&bob, &announcement_bob).await.unwrap();
    published.changed().await.unwrap();
    assert_eq!(published.borrow().version, ModelVersion(1));
    // Stop at once: the round's history record may still be queued.
    let dir = harness.stop().await;
    let registry = ModelRegistry::open_local(dir.path()).unwrap();
    let (records, num_completed, _) = registry.round_history(10).unwrap();
    assert_eq!(num_completed, 1);
    assert_eq!(records[0].round_id, announcement_alice.round_id.0);
    assert_eq!(records[0].published, Some(1));
    assert_eq!(records[0].contributors, ["alice", "bob"]);
}

#[tokio::test(start_paused = true)]
async fn update_for_a_wrong_round_or_base_version_is_refused_and_changes_nothing() {
    let harness = Harness::start(|_| {}).await;
    let mut alice = harness.engine.join(participant("alice"));
    let _bob = harness.engine.join(participant("bob"));
    let announcement = next_announcement(&mut alice).await;

    let mut wrong_round = harness.request(&alice, &announcement);
    wrong_round.round_id = RoundId(announcement.round_id.0 + 7);
    assert!(matches!(
        harness.engine.begin_update(wrong_round),
        Err(CoordinatorError::WrongRound { .. })
    ));

    let mut wrong_base = harness.request(&alice, &announcement);
    wrong_base.base_version = ModelVersion(3);
    assert!(matches!(
        harness.engine.begin_update(wrong_base),
        Err(CoordinatorError::WrongBaseVersion { .. })
    ));

    let mut wrong_size = harness.request(&alice, &announcement);
    wrong_size.num_params += 1;
    assert!(matches!(
        harness.engine.begin_update(wrong_size),
        Err(CoordinatorError::MalformedUpdate(_))
    ));

    let mut wrong_token = harness.request(&alice, &announcement);
    wrong_token.session_token = "forged".into();
    assert!(matches!(
        harness.engine.begin_update(wrong_token),
        Err(CoordinatorError::BadSessionToken(_))
    ));

    let mut stranger = harness.request(&alice, &announcement);
    stranger.participant = participant("mallory");
    assert!(matches!(
        harness.engine.begin_update(stranger),
        Err(CoordinatorError::NotJoined(_))
    ));

    let status = harness.engine.status();
    let round = status.open_round.expect("round still open");
    assert_eq!(round.round_id, announcement.round_id);
    assert!(round.accepted.is_empty(), "no refused update may count");
    assert_eq!(status.current.version, ModelVersion(0));
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn duplicate_and_concurrent_updates_from_one_participant_are_refused() {
    let harness = Harness::start(|config| config.round.quorum = 1).await;
    let mut alice = harness.engine.join(participant("alice"));
    let _bob = harness.engine.join(participant("bob"));
    let announcement = next_announcement(&mut alice).await;
    let first_ticket = harness
        .engine
        .begin_update(harness.request(&alice, &announcement))
        .unwrap();
    assert!(matches!(
        harness
            .engine
            .begin_update(harness.request(&alice, &announcement)),
        Err(CoordinatorError::UploadInProgress { .. })
    ));
    // An abandoned upload (client went away) frees the slot for a retry.
    drop(first_ticket);
    assert_eq!(harness.submit(&alice, &announcement).await.unwrap(), 1);
    assert!(matches!(
        harness.submit(&alice, &announcement).await,
        Err(CoordinatorError::DuplicateUpdate { .. })
    ));
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn participant_disconnecting_mid_round_lets_the_round_close_at_quorum() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 3;
        config.round.quorum = 2;
    })
    .await;
    let mut alice = harness.engine.join(participant("alice"));
    let mut bob = harness.engine.join(participant("bob"));
    let carol = harness.engine.join(participant("carol"));
    let announcement = next_announcement(&mut alice).await;
    let _ = next_announcement(&mut bob).await;
    harness.submit(&alice, &announcement).await.unwrap();
    harness.submit(&bob, &announcement).await.unwrap();
    // Carol goes away: the round need not wait for the deadline.
    harness.engine.leave(&carol.participant, carol.session_id);
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    let status = harness.engine.status();
    let summary = status.recent_rounds.last().unwrap();
    assert_eq!(
        summary.outcome,
        RoundOutcome::Completed {
            published: ModelVersion(1)
        }
    );
    assert_eq!(summary.contributors.len(), 2);
    assert!(
        summary.duration < Duration::from_secs(10),
        "closed before the deadline"
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn round_whose_quorum_becomes_unreachable_is_abandoned_and_retried() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 2;
        config.round.quorum = 2;
    })
    .await;
    let mut alice = harness.engine.join(participant("alice"));
    let bob = harness.engine.join(participant("bob"));
    let first = next_announcement(&mut alice).await;
    harness.submit(&alice, &first).await.unwrap();
    harness.engine.leave(&bob.participant, bob.session_id);
    harness
        .wait_for("abandon", |engine| {
            engine.status().num_rounds_abandoned == 1
        })
        .await;
    assert_eq!(
        harness.engine.current_model().version,
        ModelVersion(0),
        "nothing published"
    );
    // Alice's update for the abandoned round is refused as closed.
    assert!(matches!(
        harness.submit(&alice, &first).await,
        Err(CoordinatorError::RoundClosed {
            outcome: "abandoned",
            ..
        })
    ));
    // Bob comes back: the same base version is retried in a new round.
    let mut bob = harness.engine.join(participant("bob"));
    let retry = next_announcement(&mut alice).await;
    assert!(retry.round_id > first.round_id);
    assert_eq!(retry.base_version, ModelVersion(0));
    let retry_bob = next_announcement(&mut bob).await;
    assert_eq!(retry_bob.round_id, retry.round_id);
    assert_eq!(harness.engine.status().open_round.unwrap().attempt, 2);
    harness.submit(&alice, &retry).await.unwrap();
    harness.submit(&bob, &retry_bob).await.unwrap();
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn quorum_never_reached_by_the_deadline_publishes_no_version() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 3;
        config.round.quorum = 3;
        config.round.retry_delay = Duration::from_secs(5);
    })
    .await;
    let mut alice = harness.engine.join(participant("alice"));
    let _bob = harness.engine.join(participant("bob"));
    let _carol = harness.engine.join(participant("carol"));
    let announcement = next_announcement(&mut alice).await;
    harness.submit(&alice, &announcement).await.unwrap();
    // Bob and Carol stay connected but silent until the deadline (10s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let status = harness.engine.status();
    assert_eq!(status.num_rounds_abandoned, 1);
    assert_eq!(status.num_rounds_completed, 0);
    assert_eq!(status.current.version, ModelVersion(0));
    let summary = status.recent_rounds.last().unwrap();
    assert_eq!(summary.outcome, RoundOutcome::Abandoned);
    assert!(
        summary.reason.contains("deadline"),
        "reason: {}",
        summary.reason
    );
    assert!(
        harness.engine.model(ModelVersion(1)).await.is_err(),
        "no version 1 exists"
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn late_update_after_the_round_completed_is_refused_as_closed() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 3;
        config.round.quorum = 2;
    })
    .await;
    let mut alice = harness.engine.join(participant("alice"));
    let mut bob = harness.engine.join(participant("bob"));
    let mut carol = harness.engine.join(participant("carol"));
    let announcement = next_announcement(&mut alice).await;
    let _ = next_announcement(&mut bob).await;
    let _ = next_announcement(&mut carol).await;
    harness.submit(&alice, &announcement).await.unwrap();
    harness.submit(&bob, &announcement).await.unwrap();
    // Carol is admitted but her upload is still in transit at the deadline.
    let carol_ticket = harness
        .engine
        .begin_update(harness.request(&carol, &announcement))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    let result = harness
        .engine
        .commit_update(carol_ticket, vec![5.0; harness.num_params()])
        .await;
    assert!(matches!(
        result,
        Err(CoordinatorError::RoundClosed {
            outcome: "completed",
            ..
        })
    ));
    let card = &harness.engine.current_model().card;
    assert_eq!(
        card.contributors,
        vec!["alice".to_string(), "bob".to_string()]
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn sampling_announces_to_the_configured_number_of_participants() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 4;
        config.round.quorum = 2;
        config.round.participants_per_round = ParticipantsPerRound::Count(2);
    })
    .await;
    let _sessions: Vec<Session> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| harness.engine.join(participant(name)))
        .collect();
    harness
        .wait_for("open round", |engine| engine.status().open_round.is_some())
        .await;
    let round = harness.engine.status().open_round.unwrap();
    assert_eq!(round.selected.len(), 2);
    assert_eq!(round.quorum, 2);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn selected_participant_that_reconnects_is_announced_the_open_round_again() {
    let harness = Harness::start(|_| {}).await;
    let mut alice = harness.engine.join(participant("alice"));
    let _bob = harness.engine.join(participant("bob"));
    let announcement = next_announcement(&mut alice).await;
    let mut alice_again = harness.engine.join(participant("alice"));
    // The old session's stream ends; the new one gets the same round.
    assert!(alice.events.recv().await.is_none());
    let again = next_announcement(&mut alice_again).await;
    assert_eq!(again.round_id, announcement.round_id);
    // The old session's token no longer works.
    assert!(matches!(
        harness.submit(&alice, &announcement).await,
        Err(CoordinatorError::BadSessionToken(_))
    ));
    assert_eq!(harness.submit(&alice_again, &again).await.unwrap(), 1);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn declining_participant_lets_the_round_close_without_waiting_for_the_deadline() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 3;
        config.round.quorum = 2;
    })
    .await;
    let mut alice = harness.engine.join(participant("alice"));
    let mut bob = harness.engine.join(participant("bob"));
    let mut carol = harness.engine.join(participant("carol"));
    let announcement = next_announcement(&mut alice).await;
    let _ = next_announcement(&mut bob).await;
    let _ = next_announcement(&mut carol).await;
    // A forged token cannot decline on Carol's behalf.
    assert!(matches!(
        harness.engine.decline(
            &carol.participant,
            "forged",
            announcement.round_id,
            "budget"
        ),
        Err(CoordinatorError::BadSessionToken(_))
    ));
    harness.submit(&alice, &announcement).await.unwrap();
    harness.submit(&bob, &announcement).await.unwrap();
    harness
        .engine
        .decline(
            &carol.participant,
            &carol.token,
            announcement.round_id,
            "privacy budget exhausted",
        )
        .unwrap();
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    let summary = harness
        .engine
        .status()
        .recent_rounds
        .last()
        .unwrap()
        .clone();
    assert!(
        summary.duration < Duration::from_secs(10),
        "closed before the deadline"
    );
    // Declining a round that is no longer open is refused.
    assert!(
        harness
            .engine
            .decline(
                &carol.participant,
                &carol.token,
                announcement.round_id,
                "late"
            )
            .is_err()
    );
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dp_round_refuses_updates_without_a_valid_privacy_report_and_states_the_guarantee() {
    let harness = Harness::start(|config| {
        config.round.quorum = 1;
        config.plan.dp_sgd = Some(fedshield_core::plan::DpSgdPlan::new(64, 1280, 1.2, 1.0, 20));
    })
    .await;
    harness.engine.set_privacy_delta(1e-5);
    let mut alice = harness.engine.join(participant("alice"));
    let _bob = harness.engine.join(participant("bob"));
    let announcement = next_announcement(&mut alice).await;
    assert!(announcement.plan.dp_sgd.is_some());

    let missing = harness.request(&alice, &announcement);
    let refused = harness.engine.begin_update(missing);
    assert!(
        matches!(&refused, Err(CoordinatorError::InvalidPrivacyReport(reason)) if reason.contains("privacy report")),
        "{:?}",
        refused.err()
    );
    let report = fedshield_core::privacy::PrivacyReport {
        epsilon: 0.7,
        delta: 1e-5,
        org_epsilon: None,
        num_rounds: 1,
    };
    let mut not_finite = harness.request(&alice, &announcement);
    not_finite.privacy = Some(fedshield_core::privacy::PrivacyReport {
        epsilon: f64::INFINITY,
        ..report
    });
    assert!(matches!(
        harness.engine.begin_update(not_finite),
        Err(CoordinatorError::InvalidPrivacyReport(_))
    ));
    assert!(
        harness
            .engine
            .status()
            .open_round
            .unwrap()
            .accepted
            .is_empty()
    );

    let mut good = harness.request(&alice, &announcement);
    good.privacy = Some(report);
    // A DP update weighs one, whatever the size of its data.
    good.num_samples = 1;
    let ticket = harness.engine.begin_update(good).unwrap();
    harness
        .engine
        .commit_update(ticket, vec![0.01; harness.num_params()])
        .await
        .unwrap();
    harness
        .wait_for("version 1", |engine| {
            engine.current_model().version == ModelVersion(1)
        })
        .await;
    let privacy = harness
        .engine
        .current_model()
        .card
        .privacy
        .clone()
        .expect("the card states the guarantee");
    let line = &privacy.participants["alice"];
    assert_eq!(line.reported, report);
    assert_eq!(line.num_rounds_contributed, 1);
    // The model's ε is the larger of the report and what the plan implies.
    assert_eq!(privacy.epsilon, line.plan_epsilon.max(0.7));
    assert!(!privacy.participants.contains_key("bob"));
    harness.stop().await;
}

// Revocation: a revoked member leaves the open round, an update it is still
// sending is refused, and a selection that a revocation empties is abandoned
// instead of published.

#[tokio::test(start_paused = true)]
async fn an_update_still_arriving_from_a_member_revoked_mid_round_is_refused_and_not_folded() {
    let harness = Harness::start(|config| {
        config.round.min_participants = 4;
        config.round.quorum = 2;
        config.round.round_deadline = Duration::from_secs(600);
        config.round.max_rounds = Some(1);
    })
    .await;
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
    harness.submit(&alice, &announcement).await.unwrap();
    harness.submit(&bob, &announcement).await.unwrap();
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
    let harness = Harness::start(|config| {
        config.round.min_participants = 1;
        config.round.quorum = 1;
        config.round.round_deadline = Duration::from_secs(600);
        config.round.max_rounds = Some(1);
    })
    .await;
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
