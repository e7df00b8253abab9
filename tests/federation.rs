//! End-to-end: a coordinator and three participants over real gRPC on
//! 127.0.0.1 train the detection model for three rounds.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use fedshield_coordinator::CoordinatorConfig;
use fedshield_coordinator::engine::RoundOutcome;
use fedshield_core::ModelVersion;
use fedshield_core::model::inference::predict_attack_probability;
use fedshield_core::model::metrics::BinaryMetrics;
use fedshield_core::telemetry::held_out_dataset;
use fedshield_proto::v1::GetStatusRequest;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio_util::sync::CancellationToken;

use common::{start_coordinator, start_participant, test_spec, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_train_three_rounds_and_beat_the_initial_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), test_spec());
    config.round.min_participants = 3;
    config.round.quorum = 3;
    config.round.max_rounds = Some(3);
    config.plan.local_epochs = 2;
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let initial = coordinator.engine().current_model();
    assert_eq!(initial.version, ModelVersion(0));

    let names = ["acme-soc", "globex-sec", "initech-ir"];
    let mut participants = Vec::new();
    for (index, name) in names.iter().enumerate() {
        participants.push(start_participant(
            &url,
            name,
            index,
            dir.path(),
            shutdown.clone(),
        ));
    }
    let engine = coordinator.engine().clone();
    wait_until("model version 3", Duration::from_secs(120), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(3) }
    })
    .await;

    // The status API over gRPC agrees with the engine.
    let mut client = FederationClient::connect(url.clone()).await.unwrap();
    let status = client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.current_model_version, 3);
    assert_eq!(status.num_rounds_completed, 3);
    assert_eq!(status.num_rounds_abandoned, 0);

    // Every round was completed by every participant, versions advanced one by one.
    let summaries = coordinator.engine().status().recent_rounds;
    assert_eq!(summaries.len(), 3);
    for (index, summary) in summaries.iter().enumerate() {
        assert_eq!(summary.base_version, ModelVersion(index as u64));
        assert_eq!(
            summary.outcome,
            RoundOutcome::Completed {
                published: ModelVersion(index as u64 + 1)
            }
        );
        let contributors: BTreeSet<String> = summary
            .contributors
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            contributors,
            names.iter().map(ToString::to_string).collect()
        );
    }
    // Each participant saw its own three contributions.
    for (_, events) in &mut participants {
        let mut contributed = 0;
        while let Ok(event) = events.try_recv() {
            if matches!(
                event,
                fedshield_participant::ParticipantEvent::Contributed { .. }
            ) {
                contributed += 1;
            }
        }
        assert_eq!(contributed, 3);
    }

    // The federated model beats the initial one on held-out telemetry.
    let held_out = held_out_dataset(3000, 99);
    let evaluate = |weights| {
        let scores = predict_attack_probability(weights, held_out.features()).unwrap();
        BinaryMetrics::compute(&scores, held_out.labels())
    };
    let before = evaluate(&initial.weights);
    let after = evaluate(&coordinator.engine().current_model().weights);
    assert!(
        after.accuracy > before.accuracy + 0.05 && after.roc_auc > 0.9,
        "accuracy {:.3} → {:.3}, AUC {:.3} → {:.3}",
        before.accuracy,
        after.accuracy,
        before.roc_auc,
        after.roc_auc
    );

    // Published versions are on disk with their cards and check out.
    for version in 0..=3 {
        let model = coordinator
            .engine()
            .model(ModelVersion(version))
            .await
            .unwrap();
        assert_eq!(model.card.version, version);
        assert_eq!(model.weights.sha256(), model.card.sha256);
    }

    // After the third round every participant is told the federation is
    // complete and stops by itself, before any shutdown.
    for (task, _) in participants {
        let end = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the participant stops once the federation is complete")
            .unwrap()
            .expect("the participant meets no permanent refusal");
        let fedshield_participant::RunEnd::FederationComplete(end) = end else {
            panic!("the participant stopped without the federation's completion: {end:?}");
        };
        assert_eq!(end.final_version, ModelVersion(3));
        assert_eq!(end.num_rounds_completed, 3);
        assert_eq!(
            end.final_sha256,
            coordinator.engine().current_model().card.sha256
        );
    }
    assert_eq!(
        coordinator
            .engine()
            .completion()
            .map(|done| done.final_version),
        Some(ModelVersion(3))
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), coordinator.wait())
        .await
        .expect("coordinator stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_started_before_the_coordinator_connects_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port, free it, and point participants at it before anything listens.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{address}");
    let shutdown = CancellationToken::new();
    let (first, mut first_events) =
        start_participant(&url, "early-bird", 0, dir.path(), shutdown.clone());
    let (second, _) = start_participant(&url, "night-owl", 1, dir.path(), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), test_spec());
    config.round.max_rounds = Some(1);
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let coordinator = fedshield_coordinator::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    let engine = coordinator.engine().clone();
    wait_until("model version 1", Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let mut joined = false;
    while let Ok(event) = first_events.try_recv() {
        joined |= event == fedshield_participant::ParticipantEvent::Joined;
    }
    assert!(joined);
    shutdown.cancel();
    first
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    second
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_coordinator_resumes_from_the_last_published_version() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coordinator");
    let mut config = CoordinatorConfig::for_test(data_dir.clone(), test_spec());
    config.round.max_rounds = Some(1);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config.clone(), shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let participants = [
        start_participant(&url, "alpha", 0, dir.path(), shutdown.clone()),
        start_participant(&url, "beta", 1, dir.path(), shutdown.clone()),
    ];
    let engine = coordinator.engine().clone();
    wait_until("model version 1", Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let published_sha256 = coordinator.engine().current_model().card.sha256.clone();
    shutdown.cancel();
    for (task, _) in participants {
        task.await
            .unwrap()
            .expect("the participant meets no permanent refusal");
    }
    coordinator.wait().await.unwrap();

    let restarted = start_coordinator(config, CancellationToken::new()).await;
    let current = restarted.engine().current_model();
    assert_eq!(current.version, ModelVersion(1));
    assert_eq!(current.card.sha256, published_sha256);
    assert_eq!(current.weights.sha256(), published_sha256);
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoencoder_and_multi_class_models_train_through_federation() {
    let schema = fedshield_core::telemetry::synthetic_flows_schema();
    let input_dim = schema.num_features() as u32;
    let specs = [
        fedshield_core::ModelSpec::autoencoder(input_dim, vec![16, 6]),
        fedshield_core::ModelSpec::mlp(input_dim, vec![16], schema.num_classes() as u32),
    ];
    for spec in specs {
        let dir = tempfile::tempdir().unwrap();
        let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), spec.clone());
        config.round.max_rounds = Some(2);
        config.plan.local_epochs = 3;
        config.evaluation = Some(std::sync::Arc::new(held_out_dataset(2000, 5)));
        let shutdown = CancellationToken::new();
        let coordinator = start_coordinator(config, shutdown.clone()).await;
        let url = format!("http://{}", coordinator.local_addr());
        let initial_metrics = coordinator.engine().current_model().card.metrics.unwrap();
        let participants = [
            start_participant(&url, "one", 0, dir.path(), shutdown.clone()),
            start_participant(&url, "two", 1, dir.path(), shutdown.clone()),
        ];
        let engine = coordinator.engine().clone();
        wait_until("model version 2", Duration::from_secs(60), || {
            let engine = engine.clone();
            async move { engine.current_model().version == ModelVersion(2) }
        })
        .await;
        let card = coordinator.engine().current_model().card.clone();
        assert_eq!(card.spec, spec);
        // Every published version, the federated autoencoder's included,
        // carries thresholds calibrated on the evaluation set's benign rows.
        let calibration = card
            .calibration
            .as_ref()
            .unwrap_or_else(|| panic!("{}: the card has no calibration", spec.kind));
        assert_eq!(calibration.source, "coordinator evaluation set");
        let num_benign = held_out_dataset(2000, 5)
            .labels()
            .iter()
            .filter(|&&label| label == 0)
            .count();
        assert_eq!(calibration.num_benign, num_benign as u64);
        // 0.001 needs 1,000 benign rows; the others are always there.
        let num_targets = if num_benign >= 1000 { 3 } else { 2 };
        assert_eq!(calibration.thresholds.len(), num_targets, "{calibration:?}");
        for fpr in [0.01, 0.05] {
            let entry = calibration
                .threshold_for(fpr)
                .unwrap_or_else(|| panic!("{}: no threshold for {fpr}", spec.kind));
            assert!(entry.realized_fpr <= fpr, "{entry:?}");
        }
        // Listed from the smallest rate up: thresholds fall as the rate grows.
        assert!(
            calibration
                .thresholds
                .windows(2)
                .all(|pair| pair[0].target_fpr < pair[1].target_fpr
                    && pair[0].threshold >= pair[1].threshold),
            "{calibration:?}"
        );
        let metrics = card.metrics.unwrap();
        assert!(
            metrics.roc_auc > initial_metrics.roc_auc,
            "{}: ROC-AUC {:.3} → {:.3}",
            spec.kind,
            initial_metrics.roc_auc,
            metrics.roc_auc
        );
        shutdown.cancel();
        for (task, _) in participants {
            task.await
                .unwrap()
                .expect("the participant meets no permanent refusal");
        }
        coordinator.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_with_another_feature_schema_declines_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(dir.path().join("coordinator"), test_spec());
    config.feature_schema_toml =
        Some(fedshield_core::telemetry::SYNTHETIC_FLOWS_SCHEMA_TOML.to_string());
    config.round.quorum = 1;
    config.round.min_participants = 2;
    config.round.round_deadline = Duration::from_secs(60);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let expected_sha256 = fedshield_core::telemetry::synthetic_flows_schema().sha256();
    assert_eq!(
        coordinator
            .engine()
            .current_model()
            .card
            .feature_schema_sha256
            .as_deref(),
        Some(expected_sha256.as_str())
    );
    let mut participant_config = fedshield_participant::ParticipantConfig::for_test(
        url.clone(),
        fedshield_core::ParticipantId::new("odd-one").unwrap(),
        dir.path().join("odd-one"),
    );
    // The organization read its flows with a schema of its own: one column
    // renamed and another dropped.
    let odd_schema = fedshield_core::schema::Schema::from_toml_str(
        &fedshield_core::telemetry::SYNTHETIC_FLOWS_SCHEMA_TOML
            .replace("name = \"bytes_in\"", "name = \"bytes_received\""),
    )
    .unwrap();
    participant_config.feature_schema_sha256 = Some(odd_schema.sha256());
    participant_config.feature_schema_toml = Some(odd_schema.to_toml_string());
    let (events_sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let data = fedshield_core::telemetry::synthetic_dataset(
        fedshield_core::telemetry::OrgProfile::for_org(0),
        500,
        3,
    );
    let odd = fedshield_participant::Participant::new(participant_config, data)
        .unwrap()
        .with_events(events_sender);
    let odd_task = tokio::spawn(odd.run(shutdown.clone()));
    let (good_task, _) = start_participant(&url, "matching", 1, dir.path(), shutdown.clone());
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            fedshield_participant::ParticipantEvent::RoundFailed { reason, .. } => break reason,
            fedshield_participant::ParticipantEvent::Contributed { .. } => {
                panic!("trained with the wrong schema")
            }
            fedshield_participant::ParticipantEvent::Joined => {}
            fedshield_participant::ParticipantEvent::BudgetExhausted { reason, .. } => {
                panic!("declined for its budget: {reason}")
            }
        }
    };
    assert!(reason.contains("feature schema"), "reason: {reason}");
    // The decline names the differences, not only two hashes.
    assert!(
        reason.contains("column `bytes_in` is in the federation's schema but not in the local one"),
        "reason: {reason}"
    );
    assert!(
        reason
            .contains("column `bytes_received` is in the local schema but not in the federation's"),
        "reason: {reason}"
    );
    // The odd participant declined over gRPC, so the round closes with the
    // matching participant's update long before its 60s deadline.
    let engine = coordinator.engine().clone();
    wait_until("version 1", Duration::from_secs(30), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    assert_eq!(
        coordinator.engine().current_model().card.contributors,
        vec!["matching".to_string()]
    );
    shutdown.cancel();
    odd_task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    good_task
        .await
        .unwrap()
        .expect("the participant meets no permanent refusal");
    coordinator.wait().await.unwrap();
}
