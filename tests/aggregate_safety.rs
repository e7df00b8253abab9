//! The aggregate can never become non-finite, over real gRPC on 127.0.0.1:
//! hostile clients send updates built to overflow the float32 aggregate
//! (huge declared example counts, values at the float32 limit, colluding
//! members at the weight cap, a server momentum step past the limit) next to
//! honest participants running the real participant code. Each attack is
//! refused with INVALID_ARGUMENT naming the problem, or its round is
//! abandoned with the reason and nothing published; every published version,
//! as downloaded over gRPC, is finite, and later rounds still publish.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fedshield_coordinator::CoordinatorConfig;
use fedshield_coordinator::engine::{RoundOutcome, RoundSummary};
use fedshield_coordinator::weighting::UpdateWeighting;
use fedshield_core::ModelVersion;
use fedshield_core::model::codec::{MAX_CHUNK_BYTES, params_as_le_bytes};
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tonic::{Code, Status};

use common::federation::{Federation, honest_names, names};
use common::raw::RawParticipant;
use common::{test_spec, wait_until};

/// How long any single wait of these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The exact attack of the finding: 2^40 declared examples.
const ATTACK_NUM_SAMPLES: u64 = 1 << 40;

/// The exact attack of the finding: every value 3.0e38 (finite).
const ATTACK_VALUE: f32 = 3.0e38;

impl Federation {
    /// Waits until model `version` is published and returns the summary of
    /// the round that published it.
    async fn wait_for_version(&self, version: u64) -> RoundSummary {
        let engine = self.engine().clone();
        wait_until(&format!("model version {version}"), PATIENCE, || {
            let engine = engine.clone();
            async move { engine.current_model().version >= ModelVersion(version) }
        })
        .await;
        self.engine()
            .status()
            .recent_rounds
            .into_iter()
            .find(|summary| summary.published() == Some(ModelVersion(version)))
            .expect("the round that published the version is in the history")
    }

    /// Waits until a round was abandoned and returns its summary.
    async fn wait_for_abandoned_round(&self) -> RoundSummary {
        let engine = self.engine().clone();
        wait_until("an abandoned round", PATIENCE, || {
            let engine = engine.clone();
            async move { engine.status().num_rounds_abandoned >= 1 }
        })
        .await;
        self.engine()
            .status()
            .recent_rounds
            .into_iter()
            .find(|summary| summary.outcome == RoundOutcome::Abandoned)
            .expect("the abandoned round is in the history")
    }

    /// Downloads model `version` over gRPC, as participants and detectors
    /// do, and returns its parameters decoded without any finiteness check.
    async fn download(&self, version: u64) -> Vec<f32> {
        let mut client = FederationClient::connect(self.url.clone()).await.unwrap();
        let mut stream = client
            .download_model(pb::DownloadModelRequest {
                model_version: version,
                preferred_chunk_params: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut params = Vec::new();
        let mut num_declared = None;
        while let Some(chunk) = stream.message().await.unwrap() {
            match chunk.payload {
                Some(pb::model_chunk::Payload::Header(header)) => {
                    num_declared = Some(header.num_params as usize);
                }
                Some(pb::model_chunk::Payload::Data(data)) => params.extend(
                    data.chunks_exact(4)
                        .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap())),
                ),
                None => panic!("empty model chunk"),
            }
        }
        assert_eq!(Some(params.len()), num_declared, "version {version} size");
        params
    }

    /// Downloads model `version` and checks that every parameter is finite.
    async fn assert_downloaded_version_is_finite(&self, version: u64) -> Vec<f32> {
        let params = self.download(version).await;
        let non_finite: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(_, value)| !value.is_finite())
            .map(|(index, _)| index)
            .collect();
        assert!(
            non_finite.is_empty(),
            "version {version} has {} non-finite parameters of {}, first at {:?}",
            non_finite.len(),
            params.len(),
            non_finite.first()
        );
        params
    }
}

/// What this file's tests send as a hand-driven participant.
impl RawParticipant {
    /// Submits `values` for `announcement`'s round, declaring `num_samples`
    /// examples and, when given, a privacy report.
    async fn submit(
        &self,
        announcement: &pb::RoundAnnouncement,
        num_samples: u64,
        privacy: Option<pb::PrivacyReport>,
        values: &[f32],
    ) -> Result<pb::SubmitUpdateResponse, Status> {
        let header = pb::UpdateHeader {
            round_id: announcement.round_id,
            base_model_version: announcement.base_model_version,
            participant_id: self.name.clone(),
            session_token: self.token.clone(),
            num_samples,
            encoding: pb::UpdateEncoding::F32Le as i32,
            num_params: values.len() as u64,
            privacy,
            upload_slot: String::new(),
        };
        let mut messages = vec![pb::UpdateChunk {
            payload: Some(pb::update_chunk::Payload::Header(header)),
        }];
        for chunk in values.chunks(MAX_CHUNK_BYTES / 4) {
            messages.push(pb::UpdateChunk {
                payload: Some(pb::update_chunk::Payload::Data(Bytes::copy_from_slice(
                    params_as_le_bytes(chunk),
                ))),
            });
        }
        self.client
            .clone()
            .submit_update(futures::stream::iter(messages))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Tells the coordinator it will not submit for `round_id`.
    async fn decline(&self, round_id: u64) {
        self.decline_with_reason(round_id, "the attack is over")
            .await
            .unwrap();
    }
}

/// Checks that `result` is a refusal with INVALID_ARGUMENT whose message
/// contains every one of `problems`.
fn assert_invalid_argument<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Status>,
    problems: &[&str],
) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{what}: unexpected status {:?}: {}",
        status.code(),
        status.message()
    );
    for problem in problems {
        assert!(
            status.message().contains(problem),
            "{what}: message {:?} does not name {problem:?}",
            status.message()
        );
    }
}

/// Returns a configuration in which every connected participant is sampled,
/// a round opens once `num_participants` are connected and two updates make
/// the quorum.
fn config_for(num_participants: usize, max_rounds: u64) -> CoordinatorConfig {
    // The data directory is set by `Federation::start`.
    let mut config = CoordinatorConfig::for_test(PathBuf::new(), test_spec());
    config.round.min_participants = num_participants;
    config.round.quorum = 2;
    config.round.max_rounds = Some(max_rounds);
    config.round.round_deadline = Duration::from_secs(60);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_declaring_two_to_the_forty_samples_of_3e38_is_refused_and_later_rounds_publish_finite_models()
 {
    let mut federation = Federation::start(config_for(3, 2)).await;
    let mut mallory =
        RawParticipant::join_as(&federation.url, "mallory", "aggregate-safety-test").await;
    federation.start_honest();
    let num_params = federation.num_params();
    let attack = vec![ATTACK_VALUE; num_params];

    let first = mallory.next_announcement().await;
    let refused = mallory
        .submit(&first, ATTACK_NUM_SAMPLES, None, &attack)
        .await;
    assert_invalid_argument(
        "the update of the finding",
        refused,
        &[
            "num_samples is 1099511627776",
            &format!(
                "must be in 1..={}",
                UpdateWeighting::default().max_samples_per_update
            ),
        ],
    );
    let open_round = federation.engine().status().open_round.unwrap();
    assert_eq!(open_round.round_id.0, first.round_id);
    assert!(
        !names(&open_round.accepted).contains("mallory"),
        "the refused update changed the round"
    );
    mallory.decline(first.round_id).await;
    let round_one = federation.wait_for_version(1).await;
    assert_eq!(names(&round_one.contributors), honest_names());
    let version_one = federation.assert_downloaded_version_is_finite(1).await;
    assert_ne!(
        version_one,
        federation.download(0).await,
        "the honest updates moved the model"
    );

    // The next round trains on the published version and publishes too.
    let second = mallory.next_announcement().await;
    assert_eq!(second.base_model_version, 1);
    mallory.decline(second.round_id).await;
    let round_two = federation.wait_for_version(2).await;
    assert_eq!(names(&round_two.contributors), honest_names());
    federation.assert_downloaded_version_is_finite(2).await;
    assert_eq!(federation.engine().status().num_rounds_abandoned, 0);
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colluders_at_the_sample_bound_with_values_at_the_float32_limit_cannot_publish_a_non_finite_model()
 {
    let mut federation = Federation::start(config_for(4, 2)).await;
    let mut mallory =
        RawParticipant::join_as(&federation.url, "mallory", "aggregate-safety-test").await;
    let mut trudy =
        RawParticipant::join_as(&federation.url, "trudy", "aggregate-safety-test").await;
    federation.start_honest();
    let num_params = federation.num_params();
    let at_the_limit = vec![f32::MAX; num_params];
    let max_samples = UpdateWeighting::default().max_samples_per_update;

    // Both declare the most examples the protocol allows: the updates are
    // accepted, and the four-update round publishes.
    let first = mallory.next_announcement().await;
    mallory
        .submit(&first, max_samples, None, &at_the_limit)
        .await
        .expect("an update at the sample bound is accepted");
    let first_for_trudy = trudy.next_announcement().await;
    trudy
        .submit(&first_for_trudy, max_samples, None, &at_the_limit)
        .await
        .expect("an update at the sample bound is accepted");
    let round_one = federation.wait_for_version(1).await;
    assert_eq!(round_one.contributors.len(), 4);
    let version_one = federation.assert_downloaded_version_is_finite(1).await;

    // On a base already near the limit, the same update would carry the
    // parameters past it on its own: refused, naming the parameter.
    let second = mallory.next_announcement().await;
    assert_eq!(second.base_model_version, 1);
    let overflowing = mallory
        .submit(&second, max_samples, None, &at_the_limit)
        .await;
    assert_invalid_argument(
        "an update that overflows the base on its own",
        overflowing,
        &[
            "update would make parameter",
            "of the next model non-finite",
        ],
    );
    let open_round = federation.engine().status().open_round.unwrap();
    assert_eq!(open_round.round_id.0, second.round_id);
    assert!(!names(&open_round.accepted).contains("mallory"));
    assert!(
        version_one.iter().any(|value| *value > 1e38),
        "the colluders moved the model close to the limit"
    );
    // Whatever the round does now (the honest participants train on a
    // wrecked model), nothing non-finite is ever published.
    mallory.decline(second.round_id).await;
    let second_for_trudy = trudy.next_announcement().await;
    trudy.decline(second_for_trudy.round_id).await;
    let engine = federation.engine().clone();
    wait_until("round two to end", PATIENCE, || {
        let engine = engine.clone();
        async move {
            engine
                .status()
                .open_round
                .is_none_or(|round| round.round_id.0 != second.round_id)
        }
    })
    .await;
    let current = federation.engine().current_model().version.0;
    federation
        .assert_downloaded_version_is_finite(current)
        .await;
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_momentum_step_past_the_float32_limit_abandons_the_round_and_publishes_nothing() {
    let mut config = config_for(3, 1);
    config.round.server_momentum = 0.5;
    config.round.server_learning_rate = 10.0;
    let mut federation = Federation::start(config).await;
    let mut mallory =
        RawParticipant::join_as(&federation.url, "mallory", "aggregate-safety-test").await;
    federation.start_honest();
    let num_params = federation.num_params();
    let stored_before = std::fs::read_dir(federation.dir.path().join("coordinator/models"))
        .map(|entries| entries.count())
        .unwrap_or(0);

    // Weight 100,000 against the honest 3,000: the mean is ≈ 0.97e38, which
    // the server learning rate of 10 carries past the float32 limit.
    let first = mallory.next_announcement().await;
    mallory
        .submit(
            &first,
            UpdateWeighting::default().max_update_weight,
            None,
            &vec![1.0e38; num_params],
        )
        .await
        .expect("each value applied to the base is finite");
    let abandoned = federation.wait_for_abandoned_round().await;
    assert_eq!(abandoned.round_id.0, first.round_id);
    assert!(
        abandoned.reason.contains("aggregate not published")
            && abandoned.reason.contains("server momentum"),
        "reason: {}",
        abandoned.reason
    );
    assert_eq!(names(&abandoned.contributors).len(), 3);
    assert_eq!(federation.engine().current_model().version, ModelVersion(0));
    let stored_after = std::fs::read_dir(federation.dir.path().join("coordinator/models"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(stored_after, stored_before, "nothing was stored");

    // The retry without the attacker publishes a finite version 1.
    let retry = mallory.next_announcement().await;
    assert_eq!(retry.base_model_version, 0);
    mallory.decline(retry.round_id).await;
    let round_one = federation.wait_for_version(1).await;
    assert_eq!(names(&round_one.contributors), honest_names());
    federation.assert_downloaded_version_is_finite(1).await;
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dp_update_declaring_more_than_one_sample_is_refused() {
    let mut config = CoordinatorConfig::for_test(PathBuf::new(), test_spec());
    config.round.min_participants = 1;
    config.round.quorum = 1;
    config.round.max_rounds = Some(1);
    config.privacy = Some(fedshield_core::privacy::PrivacyTarget {
        epsilon: 2.0,
        delta: 1e-5,
        clip_norm: 1.0,
        min_records: 1000,
        org_level: None,
    });
    let federation = Federation::start(config).await;
    let mut mallory =
        RawParticipant::join_as(&federation.url, "mallory", "aggregate-safety-test").await;
    let announcement = mallory.next_announcement().await;
    let num_params = federation.num_params();
    let report = pb::PrivacyReport {
        epsilon: 1.0,
        delta: 1e-5,
        org_epsilon: None,
        num_rounds: 1,
    };
    let refused = mallory
        .submit(&announcement, 1500, Some(report), &vec![0.001; num_params])
        .await;
    assert_invalid_argument(
        "a DP update weighted by its data size",
        refused,
        &["num_samples is 1500", "must be exactly 1"],
    );
    let open_round = federation.engine().status().open_round.unwrap();
    assert!(open_round.accepted.is_empty());
    mallory
        .submit(&announcement, 1, Some(report), &vec![0.001; num_params])
        .await
        .expect("a DP update declaring 1 is accepted");
    let round_one = federation.wait_for_version(1).await;
    assert_eq!(
        names(&round_one.contributors),
        BTreeSet::from(["mallory".to_string()])
    );
    federation.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_lying_about_its_size_weighs_no_more_than_the_cap() {
    let mut config = config_for(2, 1);
    config.round.weighting.max_update_weight = 1000;
    let federation = Federation::start(config).await;
    let mut mallory =
        RawParticipant::join_as(&federation.url, "mallory", "aggregate-safety-test").await;
    let mut honest =
        RawParticipant::join_as(&federation.url, "acme-soc", "aggregate-safety-test").await;
    let num_params = federation.num_params();
    let base = federation.download(0).await;

    let first = mallory.next_announcement().await;
    mallory
        .submit(&first, 1_000_000, None, &vec![1.0; num_params])
        .await
        .expect("a count under the protocol bound is accepted");
    let first_for_honest = honest.next_announcement().await;
    honest
        .submit(&first_for_honest, 1000, None, &vec![0.0; num_params])
        .await
        .expect("the honest update is accepted");
    federation.wait_for_version(1).await;
    let version_one = federation.assert_downloaded_version_is_finite(1).await;
    // Both weigh 1000: the mean delta is 0.5, not the 0.999 a weight of
    // 1,000,000 would give.
    for (next, previous) in version_one.iter().zip(&base) {
        assert!(
            (next - previous - 0.5).abs() < 1e-3,
            "moved by {} instead of 0.5",
            next - previous
        );
    }
    federation.stop().await;
}
