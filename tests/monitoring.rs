//! Monitoring end to end: Prometheus metrics of the coordinator and of
//! participants scraped during a short federation over mutual TLS; the
//! coordinator's declines by reason, participants by state and held-out
//! metrics scraped while a round is driven by hand; and the live dashboard
//! rendered by headless Chromium, compared with the status API it renders
//! from.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fedshield_coordinator::metrics::{
    DECLINE_REASONS, EVALUATION_METRICS, PARTICIPANT_STATES, decline_reason,
};
use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::status::StatusReport;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle};
use fedshield_core::privacy::PrivacyTarget;
use fedshield_core::telemetry::{OrgProfile, held_out_dataset, synthetic_dataset};
use fedshield_core::{CoreError, ModelVersion, ParticipantId, RoundId, TrainingPlan};
use fedshield_participant::{
    Participant, ParticipantConfig, ParticipantError, ParticipantMetrics, PrivacyBudget,
};
use fedshield_proto::metrics_http::serve_metrics;
use fedshield_proto::tls::pki::CertificateAuthority;
use fedshield_proto::v1::federation_client::FederationClient;
use fedshield_proto::v1::{UpdateChunk, UpdateHeader, update_chunk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::raw::RawParticipant;
use common::{
    coordinator_tls, curl, free_port, https_settings, localhost_certificate, parse_exposition,
    send_sigterm, start_coordinator, start_participant, test_spec, tool_or_allowed_skip, value,
    wait_for_accepted_updates, wait_until,
};

const DELTA: f64 = 1e-5;
const BUDGET_EPSILON: f64 = 8.0;
const NUM_ROUNDS: u64 = 3;
const PARTICIPANTS: [&str; 2] = ["acme-soc", "globex-sec"];

/// A coordinator over mutual TLS with its HTTPS endpoint, DP rounds and an
/// evaluation set (so that model cards carry metrics and privacy), and two
/// participants with privacy budgets.
struct Federation {
    work: tempfile::TempDir,
    authority: CertificateAuthority,
    coordinator: CoordinatorHandle,
    token: String,
    shutdown: CancellationToken,
    participants: Vec<(
        JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>>,
        ParticipantMetrics,
    )>,
}

impl Federation {
    async fn start() -> Federation {
        let work = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("test CA").unwrap();
        let server = localhost_certificate(&authority);
        std::fs::write(work.path().join("ca.pem"), authority.cert_pem()).unwrap();
        let tokens_path = work.path().join("api-tokens.toml");
        let token = fedshield_coordinator::http::issue_token(&tokens_path, "dashboard").unwrap();
        let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
        config.round.min_participants = PARTICIPANTS.len();
        config.round.quorum = PARTICIPANTS.len();
        config.round.max_rounds = Some(NUM_ROUNDS);
        config.plan = TrainingPlan::new().with_learning_rate(0.5);
        config.privacy = Some(PrivacyTarget {
            epsilon: 2.0,
            delta: DELTA,
            clip_norm: 1.0,
            // The participants hold exactly the minimum, 1,200 records.
            min_records: 1200,
            org_level: None,
        });
        config.evaluation = Some(Arc::new(held_out_dataset(600, 5)));
        config.tls = Some(coordinator_tls(
            &authority,
            &server,
            ParticipantRegistry::allowing(
                PARTICIPANTS.map(|name| ParticipantId::new(name).unwrap()),
            ),
        ));
        config.https = Some(https_settings(&authority, &server, tokens_path));
        let shutdown = CancellationToken::new();
        let coordinator = start_coordinator(config, shutdown.clone()).await;
        Federation {
            work,
            authority,
            coordinator,
            token,
            shutdown,
            participants: Vec::new(),
        }
    }

    fn grpc_url(&self) -> String {
        format!("https://{}", self.coordinator.local_addr())
    }

    fn https_base(&self) -> String {
        format!("https://{}", self.coordinator.https_addr().unwrap())
    }

    fn client_tls(&self, name: &str) -> tonic::transport::ClientTlsConfig {
        common::participant_tls(&self.authority, name)
    }

    /// Starts every participant; returns their metrics.
    fn start_participants(&mut self) {
        for (index, name) in PARTICIPANTS.iter().enumerate() {
            let mut config = ParticipantConfig::for_test(
                self.grpc_url(),
                ParticipantId::new(*name).unwrap(),
                self.work.path().join(name),
            );
            config.tls = Some(self.client_tls(name));
            config.privacy_budget = Some(PrivacyBudget {
                epsilon: BUDGET_EPSILON,
                delta: DELTA,
                org_epsilon: None,
            });
            let data = synthetic_dataset(OrgProfile::for_org(index), 1200, 40 + index as u64);
            let participant = Participant::new(config, data).unwrap();
            let metrics = participant.metrics();
            let task = tokio::spawn(participant.run(self.shutdown.clone()));
            self.participants.push((task, metrics));
        }
    }

    /// Waits until model version `version` or a later one is published
    /// (rounds of this small model take milliseconds: polling may skip some).
    async fn wait_for_version(&self, version: u64) {
        let engine = self.coordinator.engine().clone();
        wait_until(
            &format!("model version {version}"),
            Duration::from_secs(120),
            || {
                let engine = engine.clone();
                async move { engine.current_model().version >= ModelVersion(version) }
            },
        )
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for (task, _) in self.participants {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap()
                .expect("the participant meets no permanent refusal");
        }
        tokio::time::timeout(Duration::from_secs(10), self.coordinator.wait())
            .await
            .expect("coordinator stops")
            .unwrap();
    }
}

/// Serves `render` on a plain-HTTP metrics listener on 127.0.0.1:0.
async fn start_metrics_listener(
    render: fedshield_proto::metrics_http::RenderMetrics,
    shutdown: CancellationToken,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    serve_metrics(listener, render, shutdown);
    address
}

/// GETs `path` over plain HTTP/1.1; returns the status, headers and body.
async fn http_get(address: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Scrapes `/metrics` at `address` until `series` has the value `expected`.
async fn wait_for_sample(address: SocketAddr, series: &str, expected: f64) {
    wait_until(
        &format!("{series} to be {expected}"),
        Duration::from_secs(30),
        || async move { value(&scrape(address).await, series) == expected },
    )
    .await;
}

/// Scrapes `/metrics` at `address` and parses it.
async fn scrape(address: SocketAddr) -> BTreeMap<String, f64> {
    let (status, headers, body) = http_get(address, "/metrics").await;
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    parse_exposition(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rounds_updates_and_privacy_spend_during_a_federation() {
    let mut federation = Federation::start().await;
    let coordinator_metrics = federation.coordinator.engine().metrics().clone();
    let coordinator_address = start_metrics_listener(
        Arc::new(move || coordinator_metrics.render()),
        federation.shutdown.clone(),
    )
    .await;

    // Before anything happened: every metric is there, at zero.
    let before = scrape(coordinator_address).await;
    assert_eq!(
        value(&before, "fedshield_coordinator_rounds_completed_total"),
        0.0
    );
    assert_eq!(value(&before, "fedshield_coordinator_model_version"), 0.0);
    for reason in fedshield_coordinator::metrics::REJECTION_REASONS {
        let series =
            format!("fedshield_coordinator_update_rejections_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&before, &series), 0.0);
    }
    let (status, _, _) = http_get(coordinator_address, "/v1/status").await;
    assert_eq!(status, 404, "the plain listener serves only /metrics");

    federation.start_participants();
    let mut participant_addresses = Vec::new();
    for (_, metrics) in &federation.participants {
        let metrics = metrics.clone();
        participant_addresses.push(
            start_metrics_listener(
                Arc::new(move || metrics.render()),
                federation.shutdown.clone(),
            )
            .await,
        );
    }

    // During the run: the first round completed, the next one is under way.
    federation.wait_for_version(1).await;
    let during = scrape(coordinator_address).await;
    assert!(value(&during, "fedshield_coordinator_rounds_completed_total") >= 1.0);
    assert!(value(&during, "fedshield_coordinator_rounds_opened_total") >= 1.0);
    assert_eq!(
        value(&during, "fedshield_coordinator_connected_participants"),
        PARTICIPANTS.len() as f64
    );
    assert!(value(&during, "fedshield_coordinator_update_bytes_received_total") > 0.0);
    assert!(value(&during, "fedshield_coordinator_updates_accepted_total") >= 2.0);
    assert!(value(&during, "fedshield_coordinator_model_version") >= 1.0);

    // A caller whose certificate the registry does not allow is refused and
    // counted as access_denied.
    let mut intruder = FederationClient::new(
        tonic::transport::Endpoint::from_shared(federation.grpc_url())
            .unwrap()
            .tls_config(federation.client_tls("mallory"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let header = UpdateChunk {
        payload: Some(update_chunk::Payload::Header(UpdateHeader {
            participant_id: "mallory".to_string(),
            ..Default::default()
        })),
    };
    let refused = intruder
        .submit_update(futures::stream::iter([header]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    federation.wait_for_version(NUM_ROUNDS).await;
    let after = scrape(coordinator_address).await;
    assert_eq!(
        value(&after, "fedshield_coordinator_rounds_completed_total"),
        NUM_ROUNDS as f64
    );
    assert_eq!(
        value(&after, "fedshield_coordinator_rounds_abandoned_total"),
        0.0
    );
    assert_eq!(
        value(&after, "fedshield_coordinator_model_version"),
        NUM_ROUNDS as f64
    );
    assert_eq!(
        value(&after, "fedshield_coordinator_updates_accepted_total"),
        (NUM_ROUNDS as usize * PARTICIPANTS.len()) as f64
    );
    let num_params = federation
        .coordinator
        .engine()
        .current_model()
        .weights
        .params
        .len();
    assert!(
        value(&after, "fedshield_coordinator_update_bytes_received_total")
            >= (NUM_ROUNDS as usize * PARTICIPANTS.len() * num_params * 4) as f64
    );
    assert_eq!(
        value(&after, "fedshield_coordinator_round_duration_seconds_count"),
        NUM_ROUNDS as f64
    );
    assert_eq!(
        value(
            &after,
            "fedshield_coordinator_aggregation_duration_seconds_count"
        ),
        NUM_ROUNDS as f64
    );
    assert!(
        value(
            &after,
            "fedshield_coordinator_aggregation_duration_seconds_sum"
        ) > 0.0
    );
    assert!(
        value(
            &after,
            "fedshield_coordinator_model_downloads_total{transport=\"grpc\"}"
        ) >= 2.0
    );
    assert_eq!(
        value(
            &after,
            "fedshield_coordinator_update_rejections_total{reason=\"access_denied\"}"
        ),
        1.0
    );

    // Each participant: three rounds trained, traffic, training time, and
    // the ledger's ε against its budget.
    for address in &participant_addresses {
        // A participant counts its round once the coordinator answered,
        // which may come after the coordinator published.
        let address = *address;
        wait_for_sample(
            address,
            "fedshield_participant_rounds_trained_total",
            NUM_ROUNDS as f64,
        )
        .await;
        let samples = scrape(address).await;
        assert_eq!(
            value(&samples, "fedshield_participant_rounds_trained_total"),
            NUM_ROUNDS as f64
        );
        assert_eq!(
            value(&samples, "fedshield_participant_rounds_declined_total"),
            0.0
        );
        assert!(
            value(
                &samples,
                "fedshield_participant_model_bytes_downloaded_total"
            ) >= (num_params * 4) as f64
        );
        assert_eq!(
            value(
                &samples,
                "fedshield_participant_update_bytes_uploaded_total"
            ),
            (NUM_ROUNDS as usize * num_params * 4) as f64
        );
        assert_eq!(
            value(
                &samples,
                "fedshield_participant_training_duration_seconds_count"
            ),
            NUM_ROUNDS as f64
        );
        let spent = value(&samples, "fedshield_participant_privacy_epsilon_spent");
        let remaining = value(&samples, "fedshield_participant_privacy_epsilon_remaining");
        assert!(spent > 0.0 && spent <= BUDGET_EPSILON, "ε spent {spent}");
        assert!((spent + remaining - BUDGET_EPSILON).abs() < 1e-9);
    }
    // The card's per-participant privacy agrees with the participants' gauges.
    let card = federation.coordinator.engine().current_model().card.clone();
    let privacy = card.privacy.expect("DP rounds put privacy on the card");
    assert_eq!(privacy.participants.len(), PARTICIPANTS.len());

    // The HTTPS endpoint serves the same metrics, with the same credentials
    // as the model downloads.
    if tool_or_allowed_skip("curl", "--version") {
        let base = federation.https_base();
        let work = federation.work.path().to_path_buf();
        let bearer = format!("Authorization: Bearer {}", federation.token);
        let (anonymous, with_token) = tokio::task::spawn_blocking(move || {
            (
                curl(&format!("{base}/metrics"), &work, &[]),
                curl(&format!("{base}/metrics"), &work, &["-H", &bearer]),
            )
        })
        .await
        .unwrap();
        assert_eq!(anonymous.status, 401);
        assert_eq!(with_token.status, 200);
        let samples = parse_exposition(&String::from_utf8(with_token.body).unwrap());
        assert_eq!(
            value(
                &samples,
                "fedshield_coordinator_model_downloads_total{transport=\"https\"}"
            ),
            0.0,
            "a metrics scrape is not a download"
        );
        assert_eq!(
            value(&samples, "fedshield_coordinator_rounds_completed_total"),
            NUM_ROUNDS as f64
        );
    }
    federation.stop().await;
}

/// Returns `participants{state=...}` of every state, in
/// `PARTICIPANT_STATES` order.
fn participant_states(samples: &BTreeMap<String, f64>) -> Vec<(&'static str, f64)> {
    PARTICIPANT_STATES
        .iter()
        .map(|state| {
            let series = format!("fedshield_coordinator_participants{{state=\"{state}\"}}");
            (*state, value(samples, &series))
        })
        .collect()
}

/// Returns `participant_states` expected: the listed states at their
/// counts, every other one at 0.
fn states_with(counts: &[(&str, f64)]) -> Vec<(&'static str, f64)> {
    PARTICIPANT_STATES
        .iter()
        .map(|state| {
            let count = counts
                .iter()
                .find(|(name, _)| name == state)
                .map_or(0.0, |(_, count)| *count);
            (*state, count)
        })
        .collect()
}

/// Returns `round_declines_total` of every reason category.
fn declines(samples: &BTreeMap<String, f64>) -> Vec<(&'static str, f64)> {
    DECLINE_REASONS
        .iter()
        .map(|reason| {
            let series =
                format!("fedshield_coordinator_round_declines_total{{reason=\"{reason}\"}}");
            (*reason, value(samples, &series))
        })
        .collect()
}

#[test]
fn the_reasons_participants_decline_with_fall_in_their_categories() {
    let cases = [
        (
            ParticipantError::BudgetExhausted {
                spent: 1.0,
                would_be: 1.5,
                budget: 1.2,
            }
            .to_string(),
            "budget_exhausted",
        ),
        (
            ParticipantError::OrgBudgetExhausted {
                spent: 1.0,
                would_be: 1.5,
                budget: 1.2,
            }
            .to_string(),
            "budget_exhausted",
        ),
        (
            ParticipantError::from(CoreError::BelowMinimumRecords { min_records: 4000 })
                .to_string(),
            "insufficient_data",
        ),
        (
            ParticipantError::SchemaMismatch {
                federation_sha256: "ab".to_string(),
                local_sha256: "cd".to_string(),
                differences: vec!["column proto only in the federation's schema".to_string()],
            }
            .to_string(),
            "schema_mismatch",
        ),
        (
            ParticipantError::PrivacyRequired.to_string(),
            "privacy_required",
        ),
        (
            ParticipantError::DeadlinePassed(RoundId(3)).to_string(),
            "deadline_passed",
        ),
    ];
    for (reason, category) in cases {
        assert_eq!(decline_reason(&reason), category, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_participant_states_and_held_out_metrics_are_scraped_as_a_round_goes() {
    let work = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(work.path().join("coordinator"), test_spec());
    config.round.min_participants = 4;
    config.round.quorum = 1;
    // Not complete after the round: no participant leaves for that.
    config.round.max_rounds = Some(2);
    config.round.round_deadline = Duration::from_secs(120);
    config.evaluation = Some(Arc::new(held_out_dataset(600, 5)));
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let engine = coordinator.engine().clone();
    let url = format!("http://{}", coordinator.local_addr());
    let metrics = engine.metrics().clone();
    let address =
        start_metrics_listener(Arc::new(move || metrics.render()), shutdown.clone()).await;

    // Before anyone joined: every category and state at 0, and version 0's
    // held-out metrics.
    let before = scrape(address).await;
    assert_eq!(
        declines(&before),
        DECLINE_REASONS.map(|reason| (reason, 0.0))
    );
    assert_eq!(participant_states(&before), states_with(&[]));
    let initial = engine
        .current_model()
        .card
        .metrics
        .expect("version 0 is evaluated");
    assert_eq!(
        value(
            &before,
            "fedshield_coordinator_model_evaluation{metric=\"accuracy\"}"
        ),
        initial.accuracy
    );

    // Three members driven by hand and one real participant: the round
    // opens for all four, and the real one delivers.
    let mut members = Vec::new();
    for name in ["frugal", "leaver", "chatty"] {
        members.push(RawParticipant::join_as(&url, name, "monitoring test").await);
    }
    let (real, _) = start_participant(&url, "acme-soc", 0, work.path(), shutdown.clone());
    let mut round_id = 0;
    for member in &mut members {
        round_id = member.next_announcement().await.round_id;
    }
    wait_for_accepted_updates(
        &engine,
        1,
        "the real participant's update",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        participant_states(&scrape(address).await),
        states_with(&[
            ("connected", 4.0),
            ("selected", 4.0),
            ("training", 3.0),
            ("submitted", 1.0)
        ])
    );

    // A decline with text of the member's choosing counts as `other`, and
    // its text goes nowhere near the exposition.
    let [frugal, leaver, chatty] = <[RawParticipant; 3]>::try_from(members).ok().unwrap();
    let hostile = "evil\"} 1\nfedshield_injected_total 1";
    chatty.decline_with_reason(round_id, hostile).await.unwrap();
    // A member that leaves without a word has left the round.
    drop(leaver);
    wait_for_sample(
        address,
        "fedshield_coordinator_participants{state=\"left_round\"}",
        1.0,
    )
    .await;
    let (_, _, body) = http_get(address, "/metrics").await;
    assert!(
        !body.contains("evil") && !body.contains("fedshield_injected"),
        "{body}"
    );
    let during = parse_exposition(&body);
    assert_eq!(
        participant_states(&during),
        states_with(&[
            ("connected", 3.0),
            ("selected", 4.0),
            ("training", 1.0),
            ("submitted", 1.0),
            ("declined", 1.0),
            ("left_round", 1.0),
        ])
    );

    // The budget decline of a real participant's text closes the round.
    let budget_reason = ParticipantError::BudgetExhausted {
        spent: 1.0,
        would_be: 1.5,
        budget: 1.2,
    }
    .to_string();
    frugal
        .decline_with_reason(round_id, &budget_reason)
        .await
        .unwrap();
    wait_until("version 1", Duration::from_secs(60), || {
        let engine = engine.clone();
        async move { engine.current_model().version == ModelVersion(1) }
    })
    .await;
    let after = scrape(address).await;
    let expected_declines = DECLINE_REASONS.map(|reason| {
        let count = if matches!(reason, "budget_exhausted" | "other") {
            1.0
        } else {
            0.0
        };
        (reason, count)
    });
    assert_eq!(declines(&after), expected_declines);
    // The leaver dropped out, and sits out the next openings.
    assert_eq!(
        participant_states(&after),
        states_with(&[("connected", 3.0), ("sitting_out", 1.0)])
    );
    let published = engine
        .current_model()
        .card
        .metrics
        .expect("version 1 is evaluated");
    assert_eq!(value(&after, "fedshield_coordinator_model_version"), 1.0);
    for (metric, expected) in [
        ("accuracy", published.accuracy),
        ("roc_auc", published.roc_auc),
        ("pr_auc", published.pr_auc),
        ("f1", published.f1),
        (
            "detection_rate_at_1pct_fpr",
            published.detection_rate_at_1pct_fpr,
        ),
    ] {
        let series = format!("fedshield_coordinator_model_evaluation{{metric=\"{metric}\"}}");
        assert_eq!(value(&after, &series), expected, "{series}");
    }
    for metric in EVALUATION_METRICS {
        let series = format!("fedshield_coordinator_model_evaluation{{metric=\"{metric}\"}}");
        assert!(value(&after, &series).is_finite(), "{series}");
    }
    assert_eq!(
        value(&after, "fedshield_coordinator_model_evaluation_examples"),
        600.0
    );

    shutdown.cancel();
    drop((frugal, chatty));
    tokio::time::timeout(Duration::from_secs(30), real)
        .await
        .unwrap()
        .unwrap()
        .expect("the participant meets no permanent refusal");
    tokio::time::timeout(Duration::from_secs(30), coordinator.wait())
        .await
        .expect("coordinator stops")
        .unwrap();
}

/// Returns the Chromium binary, or `None` (the caller skips its test) when
/// none is installed and `FEDSHIELD_REQUIRE_BROWSER=1` (CI) does not ask
/// for one.
fn chromium_or_skip() -> Option<PathBuf> {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    if binary.is_none() {
        assert!(
            std::env::var("FEDSHIELD_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "FEDSHIELD_REQUIRE_BROWSER=1 and chromium is not installed"
        );
        println!("SKIPPED: chromium is not installed (apt-get install chromium)");
    }
    binary
}

/// Flags of every headless Chromium the tests start: no sandbox, GPU or
/// background traffic, and the test CA's certificate accepted.
const HEADLESS_CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--ignore-certificate-errors",
];

/// Returns the text of the element with `id` in `dom`.
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let after = &dom[start..];
    let open_end = after.find('>').unwrap() + 1;
    let close = after[open_end..].find('<').unwrap();
    after[open_end..open_end + close].to_string()
}

/// Returns the value of attribute `name` in the tag `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let marker = format!(" {name}=\"");
    let start = tag
        .find(&marker)
        .unwrap_or_else(|| panic!("no attribute {name} in {tag}"))
        + marker.len();
    let end = tag[start..].find('"').unwrap();
    &tag[start..start + end]
}

/// Returns every opening tag in `dom` that contains `needle`.
fn tags_with<'a>(dom: &'a str, needle: &str) -> Vec<&'a str> {
    dom.split('<')
        .filter(|tag| tag.contains(needle))
        .map(|tag| tag.split('>').next().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_shows_what_the_status_api_reports() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    if !tool_or_allowed_skip("curl", "--version") {
        return;
    }
    let mut federation = Federation::start().await;
    federation.start_participants();
    federation.wait_for_version(NUM_ROUNDS).await;
    let base = federation.https_base();
    let work = federation.work.path().to_path_buf();
    let token = federation.token.clone();
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);

    let (status_response, anonymous_status, anonymous_page, login_response, dom) =
        tokio::task::spawn_blocking({
            let screenshot = screenshot.clone();
            move || {
                let bearer = format!("Authorization: Bearer {token}");
                let status = curl(&format!("{base}/v1/status"), &work, &["-H", &bearer]);
                let anonymous_status = curl(&format!("{base}/v1/status"), &work, &[]);
                let anonymous_page = curl(&format!("{base}/dashboard"), &work, &[]);
                let login = format!("{base}/dashboard/login");
                let wrong_login = curl(&login, &work, &["--data", "token=fst_not-a-token"]);
                assert_eq!(wrong_login.status, 401);
                let login_response = curl(&login, &work, &["--data", &format!("token={token}")]);
                // The browser signs in with the form, as a person would.
                let mut page = LiveBrowser::open(
                    &browser,
                    &format!("{base}/dashboard"),
                    &work.join("chromium-dom"),
                );
                page.sign_in(&token);
                page.wait_for(
                    "document.body.getAttribute('data-rendered-version')",
                    &serde_json::json!(NUM_ROUNDS.to_string()),
                    Duration::from_secs(30),
                );
                let dom = page
                    .evaluate("document.documentElement.outerHTML")
                    .as_str()
                    .expect("the page's HTML is a string")
                    .to_string();
                page.screenshot(&screenshot);
                (
                    status,
                    anonymous_status,
                    anonymous_page,
                    (login_response.status, login_response.headers),
                    dom,
                )
            }
        })
        .await
        .unwrap();
    assert_eq!(status_response.status, 200);
    assert_eq!(anonymous_status.status, 401);
    assert_eq!(anonymous_page.status, 401);
    // Signing in sets a session cookie (never the token) that scripts
    // cannot read and other sites cannot send.
    let (login_status, login_headers) = login_response;
    assert_eq!(login_status, 303, "{login_headers}");
    assert!(
        login_headers.contains("location: /dashboard\r\n"),
        "{login_headers}"
    );
    let cookie = login_headers
        .lines()
        .find(|line| line.starts_with("set-cookie: fedshield_session="))
        .unwrap_or_else(|| panic!("no session cookie in {login_headers}"));
    assert!(
        !cookie.contains(&federation.token[4..]),
        "the cookie holds the token"
    );
    for attribute in ["httponly", "secure", "samesite=strict", "path=/"] {
        assert!(
            cookie.split(';').any(|part| part.trim() == attribute),
            "{cookie} lacks {attribute}"
        );
    }
    let status: StatusReport = serde_json::from_slice(&status_response.body).unwrap();
    assert_eq!(status.num_rounds_completed, NUM_ROUNDS);
    assert_eq!(status.versions.len(), NUM_ROUNDS as usize + 1);

    // The page logged in with the cookie and rendered the status API.
    assert!(
        dom.contains("data-rendered-version"),
        "the dashboard did not render: {dom}"
    );
    assert_eq!(
        text_of(&dom, "current-version"),
        status.current_version.to_string()
    );
    assert_eq!(
        text_of(&dom, "rounds-completed"),
        status.num_rounds_completed.to_string()
    );
    assert_eq!(
        text_of(&dom, "rounds-abandoned"),
        status.num_rounds_abandoned.to_string()
    );
    assert_eq!(
        text_of(&dom, "num-participants"),
        status.participants.len().to_string()
    );

    // The chart has one point per version and metric, at the status API's values.
    let points = tags_with(&dom, "class=\"point\"");
    let series = ["accuracy", "roc_auc", "f1", "pr_auc"];
    assert_eq!(points.len(), series.len() * status.versions.len());
    for version in &status.versions {
        let metrics = version.metrics.expect("versions are evaluated");
        let expected = [
            metrics.accuracy,
            metrics.roc_auc,
            metrics.f1,
            metrics.pr_auc,
        ];
        for (name, expected) in series.iter().zip(expected) {
            let point = points
                .iter()
                .find(|point| {
                    attribute(point, "data-series") == *name
                        && attribute(point, "data-version") == version.version.to_string()
                })
                .unwrap_or_else(|| panic!("no {name} point for version {}", version.version));
            let shown: f64 = attribute(point, "data-value").parse().unwrap();
            assert!(
                (shown - expected).abs() < 1e-9,
                "{name} of v{}: page {shown}, api {expected}",
                version.version
            );
        }
    }
    // Participants, their privacy spend, and download links.
    let latest = status.versions.last().unwrap();
    assert_eq!(latest.privacy.len(), PARTICIPANTS.len());
    let privacy_rows = tags_with(&dom, "data-epsilon=");
    assert_eq!(privacy_rows.len(), latest.privacy.len());
    for spend in &latest.privacy {
        let row = privacy_rows
            .iter()
            .find(|row| attribute(row, "data-participant") == spend.participant)
            .unwrap_or_else(|| panic!("no privacy row of {}", spend.participant));
        let shown: f64 = attribute(row, "data-epsilon").parse().unwrap();
        assert!((shown - spend.reported_epsilon).abs() < 1e-9);
    }
    for participant in &status.participants {
        assert!(dom.contains(&format!("data-participant=\"{}\"", participant.id)));
    }
    for version in &status.versions {
        assert!(dom.contains(&format!("href=\"{}\"", version.weights_url)));
    }
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
    println!("dashboard screenshot: {}", screenshot.display());
    federation.stop().await;
}

/// Reads `path` as JSON lines; every line must be one JSON object.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
            assert!(value.is_object(), "log line is not an object: {line}");
            value
        })
        .collect()
}

fn events<'a>(
    lines: &'a [serde_json::Value],
    message: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    lines
        .iter()
        .filter(move |line| line["message"].as_str() == Some(message))
}

#[test]
fn json_logs_put_each_event_in_its_round_and_participant_call_spans() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let fedshield = |log: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
        command
            .env("RUST_LOG", "info")
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join(log)).unwrap());
        command
    };
    let mut coordinator = fedshield("coordinator.log")
        .args(["coordinator", "--insecure", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(work.path().join("coordinator"))
        .args(["--min-participants", "2", "--quorum", "2", "--rounds", "2"])
        .args(["--hidden", "16"])
        .spawn()
        .unwrap();
    let names = ["org-a", "org-b"];
    let mut participants: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(org, name)| {
            fedshield(&format!("{name}.log"))
                .args(["participant", "--insecure", "--coordinator"])
                .arg(format!("http://127.0.0.1:{port}"))
                .args(["--id", name, "--synthetic-org", &org.to_string()])
                .args(["--synthetic-records", "2000", "--data-dir"])
                .arg(work.path().join(name))
                .spawn()
                .unwrap()
        })
        .collect();
    let coordinator_log = work.path().join("coordinator.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while events(
        &json_lines(&coordinator_log),
        "round completed, model published",
    )
    .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "two rounds were not published in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for child in participants.iter_mut().chain([&mut coordinator]) {
        send_sigterm(child);
        child.wait().unwrap();
    }

    let lines = json_lines(&coordinator_log);
    for line in &lines {
        assert!(line["level"].is_string() && line["timestamp"].is_string());
    }
    // The round's life happens in its span: round id, base version, and
    // the version it published.
    let opened: Vec<_> = events(&lines, "round opened").collect();
    let published: Vec<_> = events(&lines, "round completed, model published").collect();
    assert_eq!(published.len(), 2);
    for event in opened.iter().chain(&published) {
        let span = &event["span"];
        assert_eq!(span["name"], "round", "{event}");
        assert_eq!(span["round"], event["round"], "{event}");
        assert!(span["base_version"].is_string(), "{event}");
    }
    for event in &opened {
        assert_eq!(
            event["span"]["base_version"], event["base_version"],
            "{event}"
        );
    }
    for event in &published {
        assert_eq!(event["span"]["version"], event["version"], "{event}");
    }
    // Each accepted update is logged inside the participant's call, which
    // names the participant, the round and the model version it trained.
    let accepted: Vec<_> = events(&lines, "update accepted").collect();
    assert_eq!(accepted.len(), 4, "two updates in each of two rounds");
    for event in &accepted {
        let span = &event["span"];
        assert_eq!(span["name"], "submit_update", "{event}");
        assert!(
            names.contains(&span["participant"].as_str().unwrap_or_default()),
            "{event}"
        );
        assert!(
            span["round"].is_u64() && span["version"].is_u64(),
            "{event}"
        );
    }
    // A participant logs its round work in a span with its id, the round
    // and the version it trains.
    for name in names {
        let lines = json_lines(&work.path().join(format!("{name}.log")));
        let in_round: Vec<_> = lines
            .iter()
            .filter(|line| line["span"]["round"].is_u64())
            .collect();
        assert!(!in_round.is_empty(), "{name} logged nothing inside a round");
        for line in in_round {
            assert_eq!(line["span"]["participant"], name, "{line}");
            assert!(line["span"]["version"].is_u64(), "{line}");
        }
    }
}

/// Headless Chromium driven over the DevTools protocol: the page stays open
/// while the test reads its live state with `Runtime.evaluate`.
struct LiveBrowser {
    child: Child,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl LiveBrowser {
    fn open(binary: &Path, url: &str, profile: &Path) -> LiveBrowser {
        let mut child = Command::new(binary)
            .args(HEADLESS_CHROMIUM_FLAGS)
            .args(["--remote-debugging-port=0", "--window-size=1280,1600"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it picked into its profile.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let page = loop {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok());
            if let Some(port) = port
                && let Some(page) = devtools_page(port)
            {
                break page;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium's DevTools endpoint did not come up");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(page.as_str()).expect("connect to the page");
        LiveBrowser {
            child,
            socket,
            next_id: 1,
        }
    }

    /// Sends the DevTools command `method` and returns its reply (with
    /// `result` or `error`).
    fn command(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(tungstenite::Message::text(request.to_string()))
            .unwrap();
        loop {
            let message = self.socket.read().expect("read from DevTools");
            let Ok(text) = message.into_text() else {
                continue;
            };
            let reply: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if reply["id"] == id {
                return reply;
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value, or `None`
    /// when it could not run (e.g. the page is navigating) or threw.
    fn try_evaluate(&mut self, expression: &str) -> Option<serde_json::Value> {
        let reply = self.command(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        if !reply["error"].is_null() || !reply["result"]["exceptionDetails"].is_null() {
            return None;
        }
        Some(reply["result"]["result"]["value"].clone())
    }

    /// Evaluates `expression` in the page and returns its value.
    fn evaluate(&mut self, expression: &str) -> serde_json::Value {
        self.try_evaluate(expression)
            .unwrap_or_else(|| panic!("DevTools could not evaluate {expression}"))
    }

    /// Signs in with the dashboard's form: fills in `token` and submits.
    fn sign_in(&mut self, token: &str) {
        self.wait_for(
            "document.getElementById('login') !== null",
            &serde_json::json!(true),
            Duration::from_secs(30),
        );
        let submitted = self.evaluate(&format!(
            "document.querySelector('#login input[name=token]').value = {}; \
             document.getElementById('login').submit(); 'submitted'",
            serde_json::json!(token)
        ));
        assert_eq!(submitted, serde_json::json!("submitted"));
    }

    /// Saves a PNG screenshot of the page to `path`.
    fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let reply = self.command(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        );
        let data = reply["result"]["data"]
            .as_str()
            .unwrap_or_else(|| panic!("no screenshot: {reply}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("the screenshot is base64");
        std::fs::write(path, png).unwrap();
    }

    /// Evaluates `expression` until it returns `expected`; panics after `timeout`.
    fn wait_for(&mut self, expression: &str, expected: &serde_json::Value, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let value = self
                .try_evaluate(expression)
                .unwrap_or(serde_json::Value::Null);
            if value == *expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{expression} is {value}, expected {expected}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LiveBrowser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the DevTools WebSocket address of the first page Chromium
/// lists on `port`, if it lists one yet.
fn devtools_page(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // Chromium answers HTTP/1.1 only, and keeps the connection open: the
    // body ends at its Content-Length.
    write!(
        stream,
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        response.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })?;
        if body.len() < length {
            continue;
        }
        let targets: serde_json::Value = serde_json::from_str(&body[..length]).ok()?;
        return targets
            .as_array()?
            .iter()
            .find(|target| target["type"] == "page")?["webSocketDebuggerUrl"]
            .as_str()
            .map(str::to_string);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_the_federation_live_without_reloading() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let mut federation = Federation::start().await;
    let dashboard = format!("{}/dashboard", federation.https_base());
    let token = federation.token.clone();
    let profile = federation.work.path().join("chromium-live");
    // The page opens before any participant joined: version 0, no rounds.
    let mut browser = tokio::task::spawn_blocking(move || {
        let mut browser = LiveBrowser::open(&binary, &dashboard, &profile);
        browser.sign_in(&token);
        browser.wait_for(
            "document.body.getAttribute('data-rendered-version')",
            &serde_json::json!("0"),
            Duration::from_secs(30),
        );
        assert_eq!(
            browser.evaluate("document.getElementById('rounds-completed').textContent"),
            serde_json::json!("0")
        );
        // Lost if the page reloads.
        browser.evaluate("window.fedshieldTestMarker = 'same page'");
        browser
    })
    .await
    .unwrap();

    federation.start_participants();
    federation.wait_for_version(NUM_ROUNDS).await;
    let status = federation.coordinator.engine().status();
    let num_versions = status.current.version.0 + 1;
    let num_participants = status.connected.len();
    let browser = tokio::task::spawn_blocking(move || {
        // The page polls the status API every 2 s and renders what it gets.
        browser.wait_for(
            "document.getElementById('rounds-completed').textContent",
            &serde_json::json!(NUM_ROUNDS.to_string()),
            Duration::from_secs(20),
        );
        browser.wait_for(
            "document.querySelectorAll('.point').length",
            &serde_json::json!(4 * num_versions),
            Duration::from_secs(20),
        );
        assert_eq!(
            browser.evaluate("document.getElementById('current-version').textContent"),
            serde_json::json!(NUM_ROUNDS.to_string())
        );
        // A poll may land while a participant reconnects between rounds:
        // the count is eventually the coordinator's.
        browser.wait_for(
            "document.getElementById('num-participants').textContent",
            &serde_json::json!(num_participants.to_string()),
            Duration::from_secs(20),
        );
        assert_eq!(
            browser.evaluate("window.fedshieldTestMarker"),
            serde_json::json!("same page"),
            "the dashboard updated by reloading the page"
        );
        browser
    })
    .await
    .unwrap();
    drop(browser);
    federation.stop().await;
}
