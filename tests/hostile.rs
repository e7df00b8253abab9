//! The coordinator under hostile input, over real gRPC on 127.0.0.1 (plaintext;
//! TLS has its own tests): malformed, oversized, out-of-turn, duplicate and
//! never-ending updates, and floods of connections and bogus joins, sent next
//! to honest participants. Every violation gets a specific status naming the
//! problem, leaves the round exactly as it was, and the round still publishes
//! with the honest participants' updates.
//!
//! The decoders of untrusted bytes also have cargo-fuzz targets in `fuzz/`;
//! the last tests here run the same checks on seeded random input, so that
//! they run on stable without cargo-fuzz.

mod common;

#[path = "../fuzz/src/schema_ingest.rs"]
mod schema_ingest;
#[path = "../fuzz/src/update_decoder.rs"]
mod update_decoder;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedshield_coordinator::engine::RoundOutcome;
use fedshield_coordinator::{CoordinatorConfig, Engine};
use fedshield_core::ModelVersion;
use fedshield_core::model::codec::{MAX_CHUNK_BYTES, params_as_le_bytes};
use fedshield_core::schema::FileFormat;
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use futures::StreamExt as _;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tonic::{Code, Status};

use common::federation::{Federation, honest_names, names};
use common::raw::RawParticipant;
use common::{parse_exposition, test_spec, value, wait_until};
use schema_ingest::{SchemaInput, check_schema_ingest};
use update_decoder::{MAX_FUZZ_PARAMS, UpdateStream, check_update_decoder};

/// How long any single wait of these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

impl Federation {
    /// Waits until the open round has accepted exactly the honest updates.
    async fn wait_for_honest_updates(&self) {
        let engine = self.engine().clone();
        wait_until("the honest updates of the open round", PATIENCE, || {
            let engine = engine.clone();
            async move {
                engine.status().open_round.is_some_and(|round| {
                    names(&round.accepted) == honest_names() && round.accepted.len() == 2
                })
            }
        })
        .await;
    }

    /// Waits until model `version` is published and checks that its round
    /// completed with exactly `contributors`.
    async fn assert_published_by(&self, version: u64, contributors: &BTreeSet<String>) {
        let engine = self.engine().clone();
        wait_until(&format!("model version {version}"), PATIENCE, || {
            let engine = engine.clone();
            async move { engine.current_model().version == ModelVersion(version) }
        })
        .await;
        let status = self.engine().status();
        let summary = status
            .recent_rounds
            .iter()
            .find(|summary| {
                summary.outcome
                    == RoundOutcome::Completed {
                        published: ModelVersion(version),
                    }
            })
            .expect("the round that published the version is in the history");
        assert_eq!(
            names(&summary.contributors),
            *contributors,
            "contributors of version {version}"
        );
    }
}

/// What this file's tests send as a hand-driven participant.
impl RawParticipant {
    /// Returns a well-formed header for `announcement`, declaring `num_params`.
    fn header(&self, announcement: &pb::RoundAnnouncement, num_params: usize) -> pb::UpdateHeader {
        pb::UpdateHeader {
            round_id: announcement.round_id,
            base_model_version: announcement.base_model_version,
            participant_id: self.name.clone(),
            session_token: self.token.clone(),
            num_samples: 100,
            encoding: pb::UpdateEncoding::F32Le as i32,
            num_params: num_params as u64,
            privacy: None,
            upload_slot: String::new(),
        }
    }

    async fn submit(
        &self,
        messages: Vec<pb::UpdateChunk>,
    ) -> Result<pb::SubmitUpdateResponse, Status> {
        self.submit_stream(futures::stream::iter(messages)).await
    }

    async fn submit_stream(
        &self,
        messages: impl futures::Stream<Item = pb::UpdateChunk> + Send + 'static,
    ) -> Result<pb::SubmitUpdateResponse, Status> {
        self.client
            .clone()
            .submit_update(messages)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn decline(&self, round_id: u64) -> Result<(), Status> {
        self.decline_with_reason(round_id, "hostile test is done")
            .await
    }
}

fn header_message(header: pb::UpdateHeader) -> pb::UpdateChunk {
    pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Header(header)),
    }
}

fn data_message(bytes: impl Into<Bytes>) -> pb::UpdateChunk {
    pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Data(bytes.into())),
    }
}

fn values_message(values: &[f32]) -> pb::UpdateChunk {
    data_message(Bytes::copy_from_slice(params_as_le_bytes(values)))
}

/// What a refused update must not change: the published version, the open
/// round and its accepted updates, the round counters.
#[derive(Debug, PartialEq)]
struct RoundSnapshot {
    current_version: ModelVersion,
    open_round: Option<u64>,
    accepted: BTreeSet<String>,
    num_rounds_completed: u64,
    num_rounds_abandoned: u64,
}

fn snapshot(engine: &Engine) -> RoundSnapshot {
    let status = engine.status();
    RoundSnapshot {
        current_version: status.current.version,
        open_round: status.open_round.as_ref().map(|round| round.round_id.0),
        accepted: status
            .open_round
            .as_ref()
            .map(|round| names(&round.accepted))
            .unwrap_or_default(),
        num_rounds_completed: status.num_rounds_completed,
        num_rounds_abandoned: status.num_rounds_abandoned,
    }
}

/// Checks that `result` is a refusal with `code` whose message contains
/// `problem`, and that the round is still `before`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    code: Code,
    problem: &str,
    engine: &Engine,
    before: &RoundSnapshot,
) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        code,
        "{what}: unexpected status {:?}: {}",
        status.code(),
        status.message()
    );
    assert!(
        status.message().contains(problem),
        "{what}: message {:?} does not name the problem ({problem:?})",
        status.message()
    );
    assert_eq!(
        snapshot(engine),
        *before,
        "{what} must leave the round unchanged"
    );
}

/// Returns a coordinator configuration where a raw participant and the two
/// honest ones are all sampled for every round (it opens once the three are
/// connected), and two honest updates make the quorum.
fn three_party_config() -> CoordinatorConfig {
    // The data directory is set by `Federation::start`.
    let mut config = CoordinatorConfig::for_test(PathBuf::new(), test_spec());
    config.round.min_participants = 3;
    config.round.quorum = 2;
    config.round.max_rounds = Some(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_updates_are_refused_and_the_round_publishes_the_honest_updates() {
    let mut federation = Federation::start(three_party_config()).await;
    let engine = federation.engine().clone();
    let mut mallory = RawParticipant::join_as(&federation.url, "mallory", "hostile-test").await;
    federation.start_honest();
    let announcement = mallory.next_announcement().await;
    // The honest updates arrive first; mallory, sampled and connected, keeps
    // the round open while it tries everything below.
    federation.wait_for_honest_updates().await;
    let before = snapshot(&engine);
    assert_eq!(before.open_round, Some(announcement.round_id));
    let num_params = federation.num_params();
    let delta = vec![0.001f32; num_params];
    let header = || header_message(mallory.header(&announcement, num_params));

    let truncated = mallory
        .submit(vec![header(), values_message(&delta[..num_params / 2])])
        .await;
    assert_refused(
        "truncated stream",
        truncated,
        Code::InvalidArgument,
        &format!(
            "stream ended early: parameter count mismatch: expected {num_params} parameters, got {}",
            num_params / 2
        ),
        &engine,
        &before,
    );

    let declared_too_many = mallory
        .submit(vec![
            header_message(mallory.header(&announcement, num_params + 1)),
            values_message(&delta),
        ])
        .await;
    assert_refused(
        "header declaring more parameters than the model has",
        declared_too_many,
        Code::InvalidArgument,
        &format!("header declares {} parameters", num_params + 1),
        &engine,
        &before,
    );
    let declared_too_few = mallory
        .submit(vec![
            header_message(mallory.header(&announcement, 1)),
            values_message(&delta[..1]),
        ])
        .await;
    assert_refused(
        "header declaring fewer parameters than the model has",
        declared_too_few,
        Code::InvalidArgument,
        &format!("header declares 1 parameters, model version 0 has {num_params}"),
        &engine,
        &before,
    );

    let more_than_declared = mallory
        .submit(vec![
            header(),
            values_message(&delta),
            values_message(&[0.5]),
        ])
        .await;
    assert_refused(
        "more data than declared",
        more_than_declared,
        Code::InvalidArgument,
        &format!("expected {num_params} parameters, got {}", num_params + 1),
        &engine,
        &before,
    );

    let misaligned = mallory
        .submit(vec![
            header(),
            data_message(Bytes::copy_from_slice(
                &params_as_le_bytes(&delta[..10])[..39],
            )),
        ])
        .await;
    assert_refused(
        "chunk whose length is not a multiple of 4",
        misaligned,
        Code::InvalidArgument,
        "39 bytes, which is not a multiple of 4",
        &engine,
        &before,
    );

    let mut with_nan = delta.clone();
    with_nan[7] = f32::NAN;
    let nan = mallory
        .submit(vec![header(), values_message(&with_nan)])
        .await;
    assert_refused(
        "NaN value",
        nan,
        Code::InvalidArgument,
        "parameter 7 is not finite (NaN)",
        &engine,
        &before,
    );
    let mut with_infinity = delta.clone();
    with_infinity[num_params - 1] = f32::INFINITY;
    let infinity = mallory
        .submit(vec![
            header(),
            values_message(&with_infinity[..10]),
            values_message(&with_infinity[10..]),
        ])
        .await;
    assert_refused(
        "+infinity value in a later chunk",
        infinity,
        Code::InvalidArgument,
        &format!("parameter {} is not finite (inf)", num_params - 1),
        &engine,
        &before,
    );

    // Over the coordinator's chunk limit, within gRPC's message limit: the
    // coordinator's own check refuses it.
    let over_chunk_limit = mallory
        .submit(vec![header(), data_message(vec![0u8; MAX_CHUNK_BYTES + 4])])
        .await;
    assert_refused(
        "chunk over the coordinator's limit",
        over_chunk_limit,
        Code::InvalidArgument,
        &format!(
            "chunk of {} bytes exceeds the limit of {MAX_CHUNK_BYTES}",
            MAX_CHUNK_BYTES + 4
        ),
        &engine,
        &before,
    );
    // Over gRPC's message limit: tonic refuses it while decoding.
    let over_message_limit = mallory
        .submit(vec![
            header(),
            data_message(vec![0u8; MAX_CHUNK_BYTES + 1024 * 1024]),
        ])
        .await;
    assert_refused(
        "chunk over the gRPC message limit",
        over_message_limit,
        Code::InvalidArgument,
        &format!("exceeds the limit of {MAX_CHUNK_BYTES}"),
        &engine,
        &before,
    );

    let mut no_samples = mallory.header(&announcement, num_params);
    no_samples.num_samples = 0;
    let zero_weight = mallory
        .submit(vec![header_message(no_samples), values_message(&delta)])
        .await;
    assert_refused(
        "update weighing zero samples",
        zero_weight,
        Code::InvalidArgument,
        "num_samples is 0",
        &engine,
        &before,
    );
    let mut unspecified_encoding = mallory.header(&announcement, num_params);
    unspecified_encoding.encoding = pb::UpdateEncoding::Unspecified as i32;
    let unknown_encoding = mallory
        .submit(vec![
            header_message(unspecified_encoding),
            values_message(&delta),
        ])
        .await;
    assert_refused(
        "unspecified encoding",
        unknown_encoding,
        Code::InvalidArgument,
        "encoding 0 is not supported",
        &engine,
        &before,
    );
    let payloadless = mallory
        .submit(vec![header(), pb::UpdateChunk { payload: None }])
        .await;
    assert_refused(
        "message without payload",
        payloadless,
        Code::InvalidArgument,
        "empty chunk message",
        &engine,
        &before,
    );

    // The server is still up, and the round publishes exactly the honest
    // updates once mallory gives up.
    let mut status_client = FederationClient::connect(federation.url.clone())
        .await
        .unwrap();
    status_client
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("the coordinator still answers");
    mallory.decline(announcement.round_id).await.unwrap();
    federation.assert_published_by(1, &honest_names()).await;
    federation.stop().await;
}

/// Returns the value of `series` in the coordinator's metrics.
fn metric(engine: &Engine, series: &str) -> f64 {
    value(&parse_exposition(&engine.metrics().render()), series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_without_a_valid_privacy_report_are_refused_in_a_dp_round_and_counted_as_such() {
    let mut config = CoordinatorConfig::for_test(PathBuf::new(), test_spec());
    config.round.min_participants = 1;
    config.round.quorum = 1;
    config.round.max_rounds = Some(1);
    config.privacy = Some(fedshield_core::privacy::PrivacyTarget {
        epsilon: 2.0,
        delta: 1e-5,
        clip_norm: 1.0,
        min_records: 1280,
        org_level: None,
    });
    let federation = Federation::start(config).await;
    let engine = federation.engine().clone();
    let mut mallory = RawParticipant::join_as(&federation.url, "mallory", "hostile-test").await;
    let announcement = mallory.next_announcement().await;
    assert!(
        announcement
            .plan
            .as_ref()
            .is_some_and(|plan| plan.dp_sgd.is_some()),
        "the round announces its DP-SGD plan"
    );
    let before = snapshot(&engine);
    let num_params = federation.num_params();
    let delta = vec![0.001f32; num_params];
    let series = "fedshield_coordinator_update_rejections_total{reason=\"privacy_report\"}";
    assert_eq!(metric(&engine, series), 0.0);

    let result = mallory
        .submit(vec![
            header_message(mallory.header(&announcement, num_params)),
            values_message(&delta),
        ])
        .await;
    assert_refused(
        "DP update without a privacy report",
        result,
        Code::InvalidArgument,
        "carries no privacy report",
        &engine,
        &before,
    );
    let mut header = mallory.header(&announcement, num_params);
    header.privacy = Some(pb::PrivacyReport {
        epsilon: f64::NAN,
        delta: 1e-5,
        org_epsilon: None,
        num_rounds: 1,
    });
    let result = mallory
        .submit(vec![header_message(header), values_message(&delta)])
        .await;
    assert_refused(
        "DP update with a NaN epsilon",
        result,
        Code::InvalidArgument,
        "reported epsilon is NaN, must be finite and non-negative",
        &engine,
        &before,
    );
    assert_eq!(metric(&engine, series), 2.0);
    assert_eq!(
        metric(
            &engine,
            "fedshield_coordinator_update_rejections_total{reason=\"malformed\"}"
        ),
        0.0
    );
    mallory.decline(announcement.round_id).await.unwrap();
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_turn_forged_and_duplicate_updates_are_refused_and_leave_the_round_unchanged() {
    let mut config = three_party_config();
    // mallory (hostile), carol (honest, then resubmits), and the two honest
    // participants; eve joins after the round opened.
    config.round.min_participants = 4;
    // No end after the first round: a complete federation would end
    // mallory's session, and the late update below must meet the closed
    // round, not a missing session.
    config.round.max_rounds = None;
    let mut federation = Federation::start(config).await;
    let engine = federation.engine().clone();
    let mut mallory = RawParticipant::join_as(&federation.url, "mallory", "hostile-test").await;
    let mut carol = RawParticipant::join_as(&federation.url, "carol", "hostile-test").await;
    federation.start_honest();
    let announcement = mallory.next_announcement().await;
    assert_eq!(carol.next_announcement().await, announcement);
    federation.wait_for_honest_updates().await;
    let eve = RawParticipant::join_as(&federation.url, "eve", "hostile-test").await;
    let num_params = federation.num_params();
    let base = federation.engine().current_model();
    let delta = vec![0.001f32; num_params];
    let before = snapshot(&engine);

    let mut wrong_round = mallory.header(&announcement, num_params);
    wrong_round.round_id += 1;
    let result = mallory
        .submit(vec![header_message(wrong_round), values_message(&delta)])
        .await;
    assert_refused(
        "update for another round",
        result,
        Code::FailedPrecondition,
        &format!(
            "round {} is not the open round {}",
            announcement.round_id + 1,
            announcement.round_id
        ),
        &engine,
        &before,
    );

    let mut wrong_base = mallory.header(&announcement, num_params);
    wrong_base.base_model_version = 7;
    let result = mallory
        .submit(vec![header_message(wrong_base), values_message(&delta)])
        .await;
    assert_refused(
        "update against another base version",
        result,
        Code::FailedPrecondition,
        "update is based on model version 7",
        &engine,
        &before,
    );

    let result = eve
        .submit(vec![
            header_message(eve.header(&announcement, num_params)),
            values_message(&delta),
        ])
        .await;
    assert_refused(
        "update from a participant that was not selected",
        result,
        Code::PermissionDenied,
        &format!(
            "participant eve was not selected for round {}",
            announcement.round_id
        ),
        &engine,
        &before,
    );

    let mut forged_token = mallory.header(&announcement, num_params);
    forged_token.session_token = "f".repeat(32);
    let result = mallory
        .submit(vec![header_message(forged_token), values_message(&delta)])
        .await;
    assert_refused(
        "forged session token",
        result,
        Code::Unauthenticated,
        "session token does not match participant mallory's current session",
        &engine,
        &before,
    );
    let mut impersonation = mallory.header(&announcement, num_params);
    impersonation.participant_id = "carol".to_string();
    let result = mallory
        .submit(vec![header_message(impersonation), values_message(&delta)])
        .await;
    assert_refused(
        "another participant's id with one's own session token",
        result,
        Code::Unauthenticated,
        "session token does not match participant carol's current session",
        &engine,
        &before,
    );
    let mut never_joined = mallory.header(&announcement, num_params);
    never_joined.participant_id = "nobody".to_string();
    let result = mallory
        .submit(vec![header_message(never_joined), values_message(&delta)])
        .await;
    assert_refused(
        "participant that never joined",
        result,
        Code::Unauthenticated,
        "participant nobody has no open session",
        &engine,
        &before,
    );
    let mut invalid_id = mallory.header(&announcement, num_params);
    invalid_id.participant_id = "../../etc/passwd".to_string();
    let result = mallory
        .submit(vec![header_message(invalid_id), values_message(&delta)])
        .await;
    assert_refused(
        "participant id that is not a valid id",
        result,
        Code::InvalidArgument,
        "invalid participant id",
        &engine,
        &before,
    );

    // carol's first update is accepted; a second one for the same round,
    // however different, is refused and never folded.
    let accepted = carol
        .submit(vec![
            header_message(carol.header(&announcement, num_params)),
            values_message(&delta),
        ])
        .await
        .expect("carol's first update is accepted");
    assert_eq!(accepted.num_updates_accepted, 3);
    let with_carol = snapshot(&engine);
    assert_eq!(
        with_carol.accepted,
        ["acme-soc", "carol", "globex-sec"]
            .iter()
            .map(ToString::to_string)
            .collect()
    );
    let result = carol
        .submit(vec![
            header_message(carol.header(&announcement, num_params)),
            values_message(&vec![1.0e6f32; num_params]),
        ])
        .await;
    assert_refused(
        "second update from the same participant for the same round",
        result,
        Code::AlreadyExists,
        &format!(
            "participant carol already submitted an update for round {}",
            announcement.round_id
        ),
        &engine,
        &with_carol,
    );
    let result = carol.decline(announcement.round_id).await;
    assert_refused(
        "declining after submitting",
        result,
        Code::AlreadyExists,
        "already submitted",
        &engine,
        &with_carol,
    );

    mallory.decline(announcement.round_id).await.unwrap();
    let mut contributors = honest_names();
    contributors.insert("carol".to_string());
    federation.assert_published_by(1, &contributors).await;
    // The duplicate's huge values never reached the aggregate.
    let published = federation.engine().current_model();
    let largest_step = published
        .weights
        .params
        .iter()
        .zip(&base.weights.params)
        .map(|(after, before)| (after - before).abs())
        .fold(0.0f32, f32::max);
    assert!(
        largest_step < 100.0,
        "a refused duplicate was folded: a parameter moved by {largest_step}"
    );
    // Updates for the closed round are refused as such.
    let after_publish = snapshot(&engine);
    let result = mallory
        .submit(vec![
            header_message(mallory.header(&announcement, num_params)),
            values_message(&delta),
        ])
        .await;
    assert_refused(
        "update for the completed round",
        result,
        Code::FailedPrecondition,
        &format!("round {} is closed (completed)", announcement.round_id),
        &engine,
        &after_publish,
    );
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_update_streams_are_refused_after_the_idle_timeout_and_free_their_upload_slot() {
    let idle_timeout = Duration::from_millis(300);
    let mut config = three_party_config();
    config.chunk_idle_timeout = idle_timeout;
    // One upload slot: a stalled stream that kept it would block every
    // honest update of the next round.
    config.max_concurrent_uploads = 1;
    config.round.max_rounds = Some(2);
    let mut federation = Federation::start(config).await;
    let engine = federation.engine().clone();
    let permits = engine.upload_permits();
    let mut mallory = RawParticipant::join_as(&federation.url, "mallory", "hostile-test").await;
    federation.start_honest();
    let announcement = mallory.next_announcement().await;
    federation.wait_for_honest_updates().await;
    let num_params = federation.num_params();
    let before = snapshot(&engine);
    assert_eq!(permits.available_permits(), 1);

    // A stream that never sends its header.
    let started = Instant::now();
    let result = mallory.submit_stream(futures::stream::pending()).await;
    assert!(started.elapsed() >= idle_timeout);
    assert_refused(
        "stream without a header",
        result,
        Code::DeadlineExceeded,
        "no update header received in time",
        &engine,
        &before,
    );

    // A header, then nothing. While it stalls it holds the upload slot and
    // mallory's upload in progress; a second upload of mallory is refused.
    let header = header_message(mallory.header(&announcement, num_params));
    let stalled = {
        let messages = futures::stream::iter([header.clone()]).chain(futures::stream::pending());
        let client = mallory.client.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let result = client.clone().submit_update(messages).await;
            (result.map(tonic::Response::into_inner), started.elapsed())
        })
    };
    wait_until("the stalled upload holds the slot", PATIENCE, || {
        let permits = permits.clone();
        async move { permits.available_permits() == 0 }
    })
    .await;
    let concurrent = mallory
        .submit(vec![header.clone(), values_message(&vec![0.0; num_params])])
        .await;
    assert_refused(
        "second upload while the first is in progress",
        concurrent,
        Code::AlreadyExists,
        "participant mallory is already uploading an update",
        &engine,
        &before,
    );
    let (result, elapsed) = stalled.await.unwrap();
    assert!(elapsed >= idle_timeout, "refused after {elapsed:?}");
    assert_refused(
        "header then silence",
        result,
        Code::DeadlineExceeded,
        &format!(
            "update stream for round {} went idle",
            announcement.round_id
        ),
        &engine,
        &before,
    );
    assert_eq!(permits.available_permits(), 1, "the slot is free again");

    // A header and a chunk, then silence.
    let started = Instant::now();
    let result = mallory
        .submit_stream(
            futures::stream::iter([header.clone(), values_message(&[0.0; 8])])
                .chain(futures::stream::pending()),
        )
        .await;
    assert!(started.elapsed() >= idle_timeout);
    assert_refused(
        "chunk then silence",
        result,
        Code::DeadlineExceeded,
        "went idle",
        &engine,
        &before,
    );
    assert_eq!(permits.available_permits(), 1, "the slot is free again");

    // A header, then empty chunks more often than the idle timeout: the
    // stream never progresses, and must not hold the slot forever.
    let empty_chunks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((data_message(Bytes::new()), ()))
    });
    let result = tokio::time::timeout(
        PATIENCE,
        mallory.submit_stream(futures::stream::iter([header.clone()]).chain(empty_chunks)),
    )
    .await
    .expect("a stream of empty chunks is refused");
    assert_refused(
        "empty chunks that never progress",
        result,
        Code::InvalidArgument,
        "empty data chunk",
        &engine,
        &before,
    );
    assert_eq!(permits.available_permits(), 1, "the slot is free again");

    // Round 1 publishes the honest updates; in round 2 the honest updates
    // must go through the one slot the stalled streams held.
    mallory.decline(announcement.round_id).await.unwrap();
    federation.assert_published_by(1, &honest_names()).await;
    let next = mallory.next_announcement().await;
    assert_eq!(next.base_model_version, 1);
    mallory.decline(next.round_id).await.unwrap();
    federation.assert_published_by(2, &honest_names()).await;
    federation.stop().await;
}

/// Opens `count` TCP connections to `address`: even ones stay silent, odd
/// ones send garbage (random bytes, HTTP/1.1, a broken HTTP/2 preface).
async fn open_hostile_connections(
    address: SocketAddr,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<TcpStream> {
    let garbage: Vec<Vec<u8>> = (0..count)
        .map(|index| match index % 6 {
            1 => {
                let mut bytes = vec![0u8; rng.random_range(1..2048)];
                rng.fill(&mut bytes[..]);
                bytes
            }
            3 => b"GET /fedshield.v1.Federation/Join HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            5 => {
                // The client preface, then a frame header announcing a
                // 16 MiB DATA frame on stream 1 that never comes.
                let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
                bytes
            }
            _ => Vec::new(),
        })
        .collect();
    futures::future::join_all(garbage.into_iter().map(|bytes| async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        if !bytes.is_empty() {
            // The server may close first; what matters is that it stays up.
            let _ = stream.write_all(&bytes).await;
        }
        stream
    }))
    .await
}

/// Calls `Join` with `count` random ids at once, each on its own connection:
/// invalid ids must be refused; valid ones are welcomed and hang up at once.
async fn bogus_joins(url: &str, count: usize, rng: &mut ChaCha8Rng) {
    let ids: Vec<(String, bool)> = (0..count)
        .map(|index| match index % 4 {
            0 => (format!("bogus-{:016x}", rng.random::<u64>()), true),
            1 => ("x".repeat(rng.random_range(200..2000)), false),
            2 => (
                (0..rng.random_range(1..40))
                    .map(|_| char::from_u32(rng.random_range(0x20..0x3000)).unwrap_or('?'))
                    .chain(std::iter::once('/'))
                    .collect(),
                false,
            ),
            _ => (String::new(), false),
        })
        .collect();
    let calls = ids.into_iter().map(|(id, valid)| async move {
        let mut client = FederationClient::connect(url.to_string()).await.unwrap();
        let result = client
            .join(pb::JoinRequest {
                participant_id: id.clone(),
                client_version: "bogus".to_string(),
            })
            .await;
        match (valid, result) {
            (true, Ok(response)) => {
                let mut events = response.into_inner();
                let first = events
                    .message()
                    .await
                    .unwrap()
                    .and_then(|event| event.event);
                assert!(
                    matches!(first, Some(pb::coordinator_event::Event::Welcome(_))),
                    "bogus participant {id} is welcomed"
                );
            }
            (false, Err(status)) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{id:?}");
                assert!(
                    status.message().contains("invalid participant id"),
                    "{}",
                    status.message()
                );
            }
            (valid, result) => panic!(
                "join as {id:?} (valid: {valid}) got {:?}",
                result.map(|_| ())
            ),
        }
    });
    futures::future::join_all(calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_garbage_connections_and_bogus_joins_does_not_stop_the_honest_round() {
    // The data directory is set by `Federation::start`.
    let mut config = CoordinatorConfig::for_test(PathBuf::new(), test_spec());
    config.round.max_rounds = Some(1);
    let mut federation = Federation::start(config).await;
    let address = federation.coordinator.local_addr();
    let mut rng = ChaCha8Rng::seed_from_u64(7);

    let connections = open_hostile_connections(address, 200, &mut rng).await;
    federation.start_honest();
    bogus_joins(&federation.url, 50, &mut rng).await;
    // A second wave while the honest participants train.
    let more_connections = open_hostile_connections(address, 200, &mut rng).await;
    bogus_joins(&federation.url, 50, &mut rng).await;

    // Bogus sessions may have been sampled into rounds that were then
    // abandoned; the one that publishes has exactly the honest updates.
    federation.assert_published_by(1, &honest_names()).await;
    let engine = federation.engine().clone();
    // The honest participants leave too once told the federation is
    // complete (`max_rounds`); no bogus session outlives its connection.
    wait_until("the bogus sessions are gone", PATIENCE, || {
        let engine = engine.clone();
        async move { names(&engine.status().connected).is_subset(&honest_names()) }
    })
    .await;
    let mut client = FederationClient::connect(federation.url.clone())
        .await
        .unwrap();
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("the coordinator still answers")
        .into_inner();
    assert_eq!(status.current_model_version, 1);
    drop(connections);
    drop(more_connections);
    federation.stop().await;
}

#[test]
fn update_decoder_accepts_exactly_the_well_formed_streams_on_random_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x00f0_55ed);
    // Raw random bytes: almost always refused, never a panic.
    for _ in 0..2000 {
        let mut input = vec![0u8; rng.random_range(0..600)];
        rng.fill(&mut input[..]);
        check_update_decoder(&input);
    }
    // Structured streams: whole values, mostly well-formed, some with one
    // flaw (a NaN or infinity, a stray byte, one value too many or too few).
    let mut num_accepted = 0;
    for _ in 0..2000 {
        let num_params = rng.random_range(0..=300usize);
        let mut values: Vec<f32> = (0..num_params)
            .map(|_| rng.random_range(-1.0e3f32..1.0e3))
            .collect();
        let mut bytes = params_as_le_bytes(&values).to_vec();
        match rng.random_range(0..8) {
            0 if num_params > 0 => {
                let index = rng.random_range(0..num_params);
                let poison = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.random_range(0..3)];
                bytes[index * 4..index * 4 + 4].copy_from_slice(&poison.to_le_bytes());
            }
            1 => bytes.insert(rng.random_range(0..=bytes.len()), 0x42),
            2 => bytes.extend_from_slice(&1.0f32.to_le_bytes()),
            3 if num_params > 0 => {
                values.pop();
                bytes.truncate(bytes.len() - 4);
            }
            _ => {}
        }
        let mut chunks = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            // Whole values per chunk, as a sender would split them; a flaw
            // of a stray byte shows in the chunk that holds it.
            let chunk_len = (4 * rng.random_range(1..=64usize)).min(rest.len());
            let (chunk, after) = rest.split_at(chunk_len);
            chunks.push(chunk);
            rest = after;
        }
        let stream = UpdateStream { num_params, chunks };
        let input = stream.to_bytes();
        assert_eq!(UpdateStream::parse(&input), stream);
        if check_update_decoder(&input) {
            num_accepted += 1;
        }
    }
    assert!(
        num_accepted > 500,
        "the accepting path is exercised ({num_accepted} accepted)"
    );
    // The largest declared count is honoured, and no more.
    let largest = UpdateStream {
        num_params: MAX_FUZZ_PARAMS,
        chunks: Vec::new(),
    };
    assert!(!check_update_decoder(&largest.to_bytes()));
}

#[test]
fn schema_parser_and_featurizer_never_panic_on_random_input() {
    let seeds = [
        include_str!("../schemas/synthetic-flows.toml"),
        include_str!("../schemas/nsl-kdd.toml"),
    ];
    let alphabet = b"0123456789.,-+eE \"\n\r\tabcxyz{}[]:NaNinf";
    let mut rng = ChaCha8Rng::seed_from_u64(0x5c4e_3a11);
    let mut num_parsed = 0;
    for iteration in 0..300 {
        // A seed schema with a few bytes changed: often still valid, so the
        // featurizer runs through schemas nobody wrote.
        let mut schema = seeds[iteration % seeds.len()].as_bytes().to_vec();
        for _ in 0..rng.random_range(0..4) {
            let index = rng.random_range(0..schema.len());
            schema[index] = alphabet[rng.random_range(0..alphabet.len())];
        }
        let rows: Vec<u8> = (0..rng.random_range(0..400))
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let format = if iteration % 3 == 0 {
            FileFormat::Jsonl
        } else {
            FileFormat::Csv
        };
        let input = SchemaInput {
            schema_toml: &schema,
            format,
            rows: &rows,
        };
        if check_schema_ingest(&input.to_bytes()) {
            num_parsed += 1;
        }
    }
    assert!(
        num_parsed > 30,
        "mutated schemas that still parse are exercised ({num_parsed})"
    );
    for _ in 0..300 {
        let mut input = vec![0u8; rng.random_range(0..800)];
        rng.fill(&mut input[..]);
        check_schema_ingest(&input);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_dripping_chunks_inside_the_idle_timeout_is_refused_at_the_round_deadline() {
    let mut config = three_party_config();
    config.chunk_idle_timeout = Duration::from_secs(2);
    config.round.round_deadline = Duration::from_millis(1500);
    config.max_concurrent_uploads = 1;
    let mut federation = Federation::start(config).await;
    let engine = federation.engine().clone();
    let mut mallory = RawParticipant::join_as(&federation.url, "mallory", "hostile-test").await;
    federation.start_honest();
    let announcement = mallory.next_announcement().await;
    let num_params = federation.num_params();
    // One parameter every 200 ms: always well inside the idle timeout, and
    // far too slow to finish before the deadline.
    let header = header_message(mallory.header(&announcement, num_params));
    let drip = futures::stream::iter(std::iter::once(header)).chain(futures::stream::unfold(
        (),
        |()| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((values_message(&[0.0]), ()))
        },
    ));
    let started = Instant::now();
    let status = mallory.submit_stream(drip).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("round's deadline"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "held for {:?}",
        started.elapsed()
    );
    // The slot is freed (honest uploads queued behind the drip take it in
    // turn, then it comes back), and the dripping update was never counted.
    let permits = engine.upload_permits();
    wait_until("the upload slot is free", PATIENCE, || {
        let permits = permits.clone();
        async move { permits.available_permits() == 1 }
    })
    .await;
    let accepted = engine
        .status()
        .open_round
        .map(|round| names(&round.accepted))
        .unwrap_or_default();
    assert!(!accepted.contains("mallory"));
    federation.stop().await;
}
