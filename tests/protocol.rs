//! The federation protocol over real gRPC, driven by a hand-written client:
//! every malformed or out-of-turn update gets a specific status and leaves
//! the round unchanged.

mod common;

use std::time::Duration;

use bytes::Bytes;
use fedshield_coordinator::CoordinatorConfig;
use fedshield_core::model::codec::params_as_le_bytes;
use fedshield_core::model::weights::params_sha256;
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use common::{start_coordinator, test_spec};

struct Joined {
    token: String,
    announcement: pb::RoundAnnouncement,
    _stream: tonic::Streaming<pb::CoordinatorEvent>,
}

async fn join(
    client: &mut FederationClient<Channel>,
    name: &str,
) -> tonic::Streaming<pb::CoordinatorEvent> {
    client
        .join(pb::JoinRequest {
            participant_id: name.to_string(),
            client_version: "test".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn welcome_and_announcement(mut stream: tonic::Streaming<pb::CoordinatorEvent>) -> Joined {
    let mut token = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("coordinator sends events")
            .unwrap()
            .expect("stream open")
            .event;
        match event {
            Some(pb::coordinator_event::Event::Welcome(welcome)) => {
                token = Some(welcome.session_token)
            }
            Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) => {
                return Joined {
                    token: token.expect("welcome comes first"),
                    announcement,
                    _stream: stream,
                };
            }
            _ => {}
        }
    }
}

fn header(name: &str, joined: &Joined, num_params: u64) -> pb::UpdateChunk {
    pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Header(pb::UpdateHeader {
            round_id: joined.announcement.round_id,
            base_model_version: joined.announcement.base_model_version,
            participant_id: name.to_string(),
            session_token: joined.token.clone(),
            num_samples: 100,
            encoding: pb::UpdateEncoding::F32Le as i32,
            num_params,
            privacy: None,
            upload_slot: String::new(),
        })),
    }
}

fn data(values: &[f32]) -> pb::UpdateChunk {
    pb::UpdateChunk {
        payload: Some(pb::update_chunk::Payload::Data(Bytes::copy_from_slice(
            params_as_le_bytes(values),
        ))),
    }
}

async fn submit(
    client: &mut FederationClient<Channel>,
    messages: Vec<pb::UpdateChunk>,
) -> Result<pb::SubmitUpdateResponse, tonic::Status> {
    client
        .submit_update(futures::stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_out_of_turn_updates_get_specific_statuses_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(dir.path().to_path_buf(), test_spec());
    config.chunk_params = 100;
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let mut client = FederationClient::connect(url.clone()).await.unwrap();

    let bad_join = client
        .join(pb::JoinRequest {
            participant_id: "../etc".into(),
            client_version: String::new(),
        })
        .await;
    assert_eq!(bad_join.unwrap_err().code(), Code::InvalidArgument);

    let alice_stream = join(&mut client, "alice").await;
    let bob_stream = join(&mut client, "bob").await;
    let alice = welcome_and_announcement(alice_stream).await;
    let _bob = welcome_and_announcement(bob_stream).await;
    assert!(
        !alice.announcement.reserve_upload_slot,
        "2 selected, 2 slots: no upload waits, no reservation needed"
    );

    // Download the base model: header, chunks, matching sha256.
    let mut download = client
        .download_model(pb::DownloadModelRequest {
            model_version: alice.announcement.base_model_version,
            preferred_chunk_params: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut num_chunks = 0;
    let mut params = Vec::new();
    let mut declared = None;
    while let Some(chunk) = download.message().await.unwrap() {
        match chunk.payload.unwrap() {
            pb::model_chunk::Payload::Header(header) => declared = Some(header),
            pb::model_chunk::Payload::Data(bytes) => {
                num_chunks += 1;
                fedshield_core::model::codec::decode_f32_le_into(&bytes, &mut params).unwrap();
            }
        }
    }
    let declared = declared.unwrap();
    assert_eq!(declared.num_params as usize, params.len());
    assert_eq!(declared.sha256, params_sha256(&params));
    assert_eq!(declared.sha256, alice.announcement.base_model_sha256);
    assert_eq!(
        num_chunks,
        params.len().div_ceil(100),
        "model moves in chunks of 100 parameters"
    );
    let unknown = client
        .download_model(pb::DownloadModelRequest {
            model_version: 999,
            preferred_chunk_params: 0,
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let num_params = params.len();
    let delta = vec![0.001f32; num_params];
    let cases: Vec<(&str, Vec<pb::UpdateChunk>, Code)> = vec![
        (
            "data before header",
            vec![data(&delta)],
            Code::InvalidArgument,
        ),
        ("empty stream", vec![], Code::InvalidArgument),
        (
            "wrong base version",
            vec![
                {
                    let mut message = header("alice", &alice, num_params as u64);
                    if let Some(pb::update_chunk::Payload::Header(header)) = &mut message.payload {
                        header.base_model_version += 1;
                    }
                    message
                },
                data(&delta),
            ],
            Code::FailedPrecondition,
        ),
        (
            "wrong round",
            vec![
                {
                    let mut message = header("alice", &alice, num_params as u64);
                    if let Some(pb::update_chunk::Payload::Header(header)) = &mut message.payload {
                        header.round_id += 5;
                    }
                    message
                },
                data(&delta),
            ],
            Code::FailedPrecondition,
        ),
        (
            "forged session token",
            vec![
                {
                    let mut message = header("alice", &alice, num_params as u64);
                    if let Some(pb::update_chunk::Payload::Header(header)) = &mut message.payload {
                        header.session_token = "0".repeat(32);
                    }
                    message
                },
                data(&delta),
            ],
            Code::Unauthenticated,
        ),
        (
            "declared size differs from the model",
            vec![header("alice", &alice, num_params as u64 + 1), data(&delta)],
            Code::InvalidArgument,
        ),
        (
            "truncated stream",
            vec![
                header("alice", &alice, num_params as u64),
                data(&delta[..num_params / 2]),
            ],
            Code::InvalidArgument,
        ),
        (
            "too many parameters",
            vec![
                header("alice", &alice, num_params as u64),
                data(&delta),
                data(&[0.0]),
            ],
            Code::InvalidArgument,
        ),
        (
            "not a number",
            vec![
                header("alice", &alice, num_params as u64),
                data(&{
                    let mut poisoned = delta.clone();
                    poisoned[7] = f32::NAN;
                    poisoned
                }),
            ],
            Code::InvalidArgument,
        ),
        (
            "infinity",
            vec![
                header("alice", &alice, num_params as u64),
                data(&{
                    let mut poisoned = delta.clone();
                    poisoned[num_params - 1] = f32::NEG_INFINITY;
                    poisoned
                }),
            ],
            Code::InvalidArgument,
        ),
        (
            "misaligned chunk",
            vec![
                header("alice", &alice, num_params as u64),
                pb::UpdateChunk {
                    payload: Some(pb::update_chunk::Payload::Data(Bytes::from_static(&[
                        1, 2, 3,
                    ]))),
                },
            ],
            Code::InvalidArgument,
        ),
        (
            "second header",
            vec![
                header("alice", &alice, num_params as u64),
                header("alice", &alice, num_params as u64),
            ],
            Code::InvalidArgument,
        ),
        (
            "participant that was never joined",
            vec![header("mallory", &alice, num_params as u64), data(&delta)],
            Code::Unauthenticated,
        ),
    ];
    for (what, messages, expected) in cases {
        let status = submit(&mut client, messages).await.expect_err(what);
        assert_eq!(status.code(), expected, "{what}: {}", status.message());
        let round = coordinator
            .engine()
            .status()
            .open_round
            .expect("round stays open");
        assert!(
            round.accepted.is_empty(),
            "{what} must not count as an update"
        );
    }

    // A valid update is accepted once; the same again is a duplicate.
    let valid = || {
        vec![
            header("alice", &alice, num_params as u64),
            data(&delta[..50]),
            data(&delta[50..]),
        ]
    };
    let accepted = submit(&mut client, valid()).await.unwrap();
    assert_eq!(accepted.num_updates_accepted, 1);
    let duplicate = submit(&mut client, valid()).await.unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let round = coordinator.engine().status().open_round.unwrap();
    assert_eq!(round.accepted.len(), 1);

    shutdown.cancel();
    coordinator.wait().await.unwrap();
}

async fn reserve(
    client: &mut FederationClient<Channel>,
    name: &str,
    joined: &Joined,
) -> Result<pb::UploadSlot, tonic::Status> {
    client
        .reserve_upload_slot(pb::ReserveUploadSlotRequest {
            round_id: joined.announcement.round_id,
            participant_id: name.to_string(),
            session_token: joined.token.clone(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The coordinator's `fedshield_coordinator_uploads_waiting` gauge.
fn uploads_waiting(coordinator: &fedshield_coordinator::CoordinatorHandle) -> f64 {
    let exposition = common::parse_exposition(&coordinator.engine().metrics().render());
    common::value(&exposition, "fedshield_coordinator_uploads_waiting")
}

fn header_with_slot(name: &str, joined: &Joined, num_params: u64, slot: &str) -> pb::UpdateChunk {
    let mut message = header(name, joined, num_params);
    if let Some(pb::update_chunk::Payload::Header(header)) = &mut message.payload {
        header.upload_slot = slot.to_string();
    }
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_slots_are_checked_like_updates_bounded_and_expire_unused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::for_test(dir.path().to_path_buf(), test_spec());
    config.max_concurrent_uploads = 1;
    config.chunk_idle_timeout = Duration::from_millis(1500);
    let shutdown = CancellationToken::new();
    let coordinator = start_coordinator(config, shutdown.clone()).await;
    let url = format!("http://{}", coordinator.local_addr());
    let mut client = FederationClient::connect(url.clone()).await.unwrap();
    let alice_stream = join(&mut client, "alice").await;
    let bob_stream = join(&mut client, "bob").await;
    let alice = welcome_and_announcement(alice_stream).await;
    let bob = welcome_and_announcement(bob_stream).await;
    let num_params = coordinator.engine().current_model().weights.params.len();
    let delta = vec![0.001f32; num_params];
    assert!(
        alice.announcement.reserve_upload_slot,
        "2 selected, 1 slot: the announcement asks for reservations"
    );

    // Refused as the update would be.
    let stranger = reserve(&mut client, "mallory", &alice).await.unwrap_err();
    assert_eq!(stranger.code(), Code::Unauthenticated);
    let mut forged = Joined {
        token: "0".repeat(32),
        announcement: alice.announcement.clone(),
        _stream: join(&mut client, "carol").await,
    };
    let forged_status = reserve(&mut client, "alice", &forged).await.unwrap_err();
    assert_eq!(forged_status.code(), Code::Unauthenticated);
    forged.token = alice.token.clone();
    forged.announcement.round_id += 5;
    let wrong_round = reserve(&mut client, "alice", &forged).await.unwrap_err();
    assert_eq!(wrong_round.code(), Code::FailedPrecondition);

    // One slot: alice holds it, bob's reservation waits.
    let alice_slot = reserve(&mut client, "alice", &alice).await.unwrap();
    assert_eq!(alice_slot.valid_for_ms, 1500);
    assert_eq!(alice_slot.slot_token.len(), 32);
    let mut bob_client = FederationClient::connect(url.clone()).await.unwrap();
    let bob_waiting = tokio::spawn(async move {
        let slot = reserve(&mut bob_client, "bob", &bob).await;
        (slot, bob_client, bob)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!bob_waiting.is_finished(), "the only slot is alice's");
    assert_eq!(uploads_waiting(&coordinator), 1.0);

    // Alice does not upload: her slot expires and bob gets it.
    let (bob_slot, mut bob_client, bob) =
        tokio::time::timeout(Duration::from_secs(10), bob_waiting)
            .await
            .expect("an unused slot is released")
            .unwrap();
    let bob_slot = bob_slot.unwrap();
    assert_eq!(uploads_waiting(&coordinator), 0.0);

    // Alice's expired token: her upload waits for a slot like one without
    // any, and goes through once bob's upload is done.
    let mut alice_client = FederationClient::connect(url.clone()).await.unwrap();
    let alice_messages = vec![
        header_with_slot("alice", &alice, num_params as u64, &alice_slot.slot_token),
        data(&delta),
    ];
    let alice_upload = tokio::spawn(async move { submit(&mut alice_client, alice_messages).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!alice_upload.is_finished(), "bob holds the only slot");
    assert_eq!(
        uploads_waiting(&coordinator),
        1.0,
        "an upload without a valid slot waits for one too"
    );
    let bob_accepted = submit(
        &mut bob_client,
        vec![
            header_with_slot("bob", &bob, num_params as u64, &bob_slot.slot_token),
            data(&delta),
        ],
    )
    .await
    .unwrap();
    assert_eq!(bob_accepted.num_updates_accepted, 1);
    let alice_accepted = alice_upload.await.unwrap().unwrap();
    assert_eq!(alice_accepted.num_updates_accepted, 2);
    assert_eq!(uploads_waiting(&coordinator), 0.0);
    coordinator
        .engine()
        .subscribe_published()
        .wait_for(|model| model.version.0 == 1)
        .await
        .unwrap();

    shutdown.cancel();
    coordinator.wait().await.unwrap();
}
