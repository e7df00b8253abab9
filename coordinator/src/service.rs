//! The `fedshield.v1.Federation` gRPC service: thin handlers that unpack
//! messages, call the round engine, and convert results and errors.

use std::pin::Pin;
use std::time::Duration;

use fedshield_core::clock::unix_ms_now;

use fedshield_core::model::codec::{MAX_CHUNK_BYTES, shared_chunks};
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::{ModelVersion, ParticipantId, RoundId};
use fedshield_proto::tls::peer_identity;
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_server::Federation;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::field::Empty;
use tracing::{Span, debug, instrument, warn};

mod secure_messages;

use crate::engine::{
    Engine, EngineStatus, ParamEncoding, SessionEvent, UpdateHeader, UpdatePart, UploadError,
    UploadReceiver, UploadTransportError, claimed_participant,
};
use crate::error::CoordinatorError;
use crate::participants::SharedRegistry;
use crate::registry::PublishedModel;
use crate::revocation::RevocationWatch;
use crate::roles::Operation;

/// Settings of the service that are not round rules.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub heartbeat_interval: Duration,
    pub chunk_params: usize,
    pub chunk_idle_timeout: Duration,
}

/// The gRPC service; one per server, cloned per connection by tonic.
#[derive(Clone)]
pub struct FederationService {
    engine: Engine,
    settings: ServiceSettings,
    /// Cancelled when the coordinator shuts down; ends every `Join` stream.
    shutdown: CancellationToken,
    /// With mutual TLS: who may call, by client-certificate subject. `None`
    /// only when the coordinator runs without TLS (`--insecure`), where
    /// participants' declared ids are taken at their word.
    access: Option<SharedRegistry>,
    /// Receives updates and holds the upload slots reserved with
    /// `ReserveUploadSlot`.
    uploads: UploadReceiver,
}

impl FederationService {
    /// Returns a service over `engine`; `access` is the participant registry
    /// every call is checked against (mutual TLS), or `None` without TLS.
    pub fn new(
        engine: Engine,
        settings: ServiceSettings,
        shutdown: CancellationToken,
        access: Option<SharedRegistry>,
    ) -> Self {
        FederationService {
            uploads: UploadReceiver::new(engine.clone(), settings.chunk_idle_timeout),
            engine,
            settings,
            shutdown,
            access,
        }
    }

    /// Counts a refused update by reason and returns its gRPC status.
    fn refuse(&self, error: CoordinatorError) -> Status {
        self.engine.metrics().update_rejected(&error);
        error.into()
    }

    /// Returns the gRPC status of an upload or slot reservation that did
    /// not succeed: a refusal is counted, a failure of the stream itself is
    /// passed on as it came.
    fn upload_status(&self, error: UploadError<Status>) -> Status {
        match error {
            UploadError::Refused(error) => self.refuse(error),
            UploadError::ShuttingDown => CoordinatorError::ShuttingDown.into(),
            UploadError::Transport(status) => status,
        }
    }

    /// Returns the participant the caller's client certificate identifies
    /// (`None` without TLS), refusing callers without a certificate, whom
    /// the registry does not allow, or whose role may not perform
    /// `operation` (the one place gRPC roles are enforced). Every refusal is
    /// logged with its reason.
    fn authenticate<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
    ) -> Result<Option<ParticipantId>, CoordinatorError> {
        let call = operation.name();
        let Some(access) = &self.access else {
            return Ok(None);
        };
        let peer = request.remote_addr();
        let Some(identity) = peer_identity(request) else {
            warn!(call, peer = ?peer, reason = "no client certificate", "call refused");
            return Err(CoordinatorError::NoClientCertificate);
        };
        access
            .get()
            .authorize_for(
                &identity.common_name,
                &identity.sha256_fingerprint,
                operation,
            )
            .map(|member| Some(member.id))
            .map_err(|denied| {
                warn!(
                    call,
                    peer = ?peer,
                    subject = %identity.common_name,
                    certificate_sha256 = %identity.sha256_fingerprint,
                    reason = %denied,
                    "call refused"
                );
                CoordinatorError::AccessDenied(denied)
            })
    }

    /// Authenticates a call a participant makes for itself under
    /// `operation` and returns its message with the participant it acts
    /// for: the one its certificate names, which the message's claimed id
    /// (taken out by `claimed`) must match; without TLS, the claimed one.
    /// A refusal is counted as a rejected update.
    fn participant_call<T>(
        &self,
        request: Request<T>,
        operation: Operation,
        call: &'static str,
        claimed: impl FnOnce(&mut T) -> String,
    ) -> Result<(ParticipantId, T), Status> {
        let authenticated = self
            .authenticate(&request, operation)
            .map_err(|error| self.refuse(error))?;
        let mut message = request.into_inner();
        let participant = claimed_participant(authenticated.as_ref(), claimed(&mut message), call)
            .map_err(|error| self.refuse(error))?;
        Ok((participant, message))
    }
}

/// A claimed participant id as it may appear in logs before it is checked:
/// the id when valid, else a short escaped prefix and its length
/// ([`fedshield_core::untrusted_text::loggable_participant_id`]).
fn loggable_id(claimed: &str) -> String {
    fedshield_core::untrusted_text::loggable_participant_id(claimed)
}

/// Returns the engine's view of one message of an update stream.
fn update_part(chunk: pb::UpdateChunk) -> UpdatePart {
    match chunk.payload {
        Some(pb::update_chunk::Payload::Header(header)) => UpdatePart::Header(UpdateHeader {
            claimed_participant: header.participant_id,
            round_id: RoundId(header.round_id),
            base_version: ModelVersion(header.base_model_version),
            session_token: header.session_token,
            num_samples: header.num_samples,
            num_params: header.num_params,
            privacy: header.privacy.map(PrivacyReport::from),
            upload_slot: header.upload_slot,
            encoding: if header.encoding == pb::UpdateEncoding::F32Le as i32 {
                ParamEncoding::F32Le
            } else {
                ParamEncoding::Unsupported(header.encoding)
            },
        }),
        Some(pb::update_chunk::Payload::Data(data)) => UpdatePart::Data(data),
        None => UpdatePart::Empty,
    }
}

impl UploadTransportError for Status {
    /// tonic refuses a message over the gRPC limit as `OUT_OF_RANGE`.
    fn oversized_message(&self) -> Option<&str> {
        (self.code() == tonic::Code::OutOfRange).then(|| self.message())
    }

    fn code_for_log(&self) -> String {
        format!("{:?}", self.code())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorEvent, Status>> + Send>>;
type ModelStream = Pin<Box<dyn Stream<Item = Result<pb::ModelChunk, Status>> + Send>>;

fn event(event: pb::coordinator_event::Event) -> pb::CoordinatorEvent {
    pb::CoordinatorEvent { event: Some(event) }
}

#[tonic::async_trait]
impl Federation for FederationService {
    type JoinStream = EventStream;
    type DownloadModelStream = ModelStream;

    #[instrument(skip_all, fields(participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let authenticated = self.authenticate(&request, Operation::Join)?;
        // The stream ends as soon as the registry stops allowing the
        // certificate that opened it.
        let mut revocation = RevocationWatch::new(
            self.access.as_ref(),
            peer_identity(&request),
            Operation::Join,
        );
        let join = request.into_inner();
        let participant = claimed_participant(authenticated.as_ref(), join.participant_id, "join")?;
        let mut session = self.engine.join(participant.clone());
        let (sender, receiver) = mpsc::channel::<Result<pb::CoordinatorEvent, Status>>(16);
        let welcome = event(pb::coordinator_event::Event::Welcome(pb::Welcome {
            session_token: session.token.clone(),
            heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u32,
            current_model_version: self.engine.current_model().version.0,
        }));
        // Cannot fail: the channel is new and has room.
        let _ = sender.try_send(Ok(welcome));
        let engine = self.engine.clone();
        let shutdown = self.shutdown.clone();
        let heartbeat_interval = self.settings.heartbeat_interval;
        // Forwards engine events and heartbeats to the stream until the
        // participant goes away, a newer session replaces this one, the
        // registry stops allowing the certificate (also while a send waits
        // on a client that does not read), or the coordinator shuts down;
        // then unregisters the session.
        tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(heartbeat_interval);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut revoked = None;
            let mut complete = false;
            while !complete {
                let outgoing = tokio::select! {
                    // A revocation first; then engine events: the completion,
                    // sent just before the coordinator stops, must win over
                    // the shutdown.
                    biased;
                    denied = revocation.denied() => {
                        revoked = Some(denied);
                        break;
                    }
                    received = session.events.recv() => match received {
                        Some(SessionEvent::Announcement(announcement)) => {
                            event(pb::coordinator_event::Event::RoundAnnouncement(pb::RoundAnnouncement {
                                round_id: announcement.round_id.0,
                                base_model_version: announcement.base_version.0,
                                base_model_sha256: announcement.base_sha256,
                                plan: Some((&announcement.plan).into()),
                                deadline_unix_ms: announcement.deadline_unix_ms,
                                feature_schema_sha256: announcement.feature_schema_sha256.unwrap_or_default(),
                                reserve_upload_slot: announcement.reserve_upload_slot,
                                secure_aggregation: announcement.secure_aggregation.map(|setup| pb::SecureAggregationRound {
                                    degree: setup.degree as u32,
                                    threshold: setup.threshold as u32,
                                    vector_len: setup.vector_len as u64,
                                    rotation_seed: setup.rotation_seed.to_vec(),
                                }),
                            }))
                        }
                        Some(SessionEvent::Heartbeat { current_version }) => heartbeat_event(current_version),
                        Some(SessionEvent::Complete(completion)) => {
                            // The last event: the stream ends once it is sent.
                            complete = true;
                            event(pb::coordinator_event::Event::Complete(pb::FederationComplete {
                                final_model_version: completion.final_version.0,
                                final_model_sha256: completion.final_sha256,
                                num_rounds_completed: completion.num_rounds_completed,
                            }))
                        }
                        // A newer session of the same participant replaced this one.
                        None => break,
                    },
                    () = shutdown.cancelled() => {
                        let _ = sender.send(Err(CoordinatorError::ShuttingDown.into())).await;
                        break;
                    }
                    () = sender.closed() => break,
                    _ = heartbeat.tick() => heartbeat_event(engine.current_model().version),
                };
                tokio::select! {
                    sent = sender.send(Ok(outgoing)) => if sent.is_err() {
                        break;
                    },
                    denied = revocation.denied() => {
                        revoked = Some(denied);
                        break;
                    }
                }
            }
            if let Some(denied) = revoked {
                let error = CoordinatorError::AccessDenied(denied);
                warn!(
                    participant = %session.participant,
                    session_id = session.session_id,
                    subject = revocation.subject().unwrap_or("-"),
                    certificate_sha256 = revocation.fingerprint().unwrap_or("-"),
                    reason = %error,
                    "join stream ended: access revoked"
                );
                engine.revoke(&session.participant, session.session_id, &error.to_string());
                // Bounded: a client that reads nothing gets no status, only the end.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), sender.send(Err(error.into())))
                        .await;
            }
            engine.leave(&session.participant, session.session_id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    #[instrument(skip_all, fields(version = request.get_ref().model_version, participant = Empty))]
    async fn download_model(
        &self,
        request: Request<pb::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        if let Some(participant) = self.authenticate(&request, Operation::DownloadModel)? {
            Span::current().record("participant", participant.as_str());
        }
        let download = request.into_inner();
        let model = self
            .engine
            .model(ModelVersion(download.model_version))
            .await?;
        let chunk_params = match download.preferred_chunk_params as usize {
            0 => self.settings.chunk_params,
            preferred => preferred.min(MAX_CHUNK_BYTES / 4),
        };
        self.engine.metrics().model_downloaded("grpc");
        debug!(version = %model.version, num_params = model.weights.params.len(), "model download started");
        Ok(Response::new(Box::pin(model_stream(model, chunk_params))))
    }

    #[instrument(skip_all, fields(participant = Empty, round = Empty, version = Empty))]
    async fn submit_update(
        &self,
        request: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::SubmitUpdateResponse>, Status> {
        let authenticated = self
            .authenticate(&request, Operation::SubmitUpdate)
            .map_err(|error| self.refuse(error))?;
        let parts = request.into_inner().map(|chunk| chunk.map(update_part));
        let received = self
            .uploads
            .receive(authenticated.as_ref(), parts)
            .await
            .map_err(|error| self.upload_status(error))?;
        Ok(Response::new(pb::SubmitUpdateResponse {
            round_id: received.round_id.0,
            num_updates_accepted: received.num_accepted as u32,
        }))
    }

    #[instrument(skip_all, fields(round = request.get_ref().round_id, participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn reserve_upload_slot(
        &self,
        request: Request<pb::ReserveUploadSlotRequest>,
    ) -> Result<Response<pb::UploadSlot>, Status> {
        let (participant, reserve) = self.participant_call(
            request,
            Operation::ReserveUploadSlot,
            "reserve_upload_slot",
            |message| std::mem::take(&mut message.participant_id),
        )?;
        let slot = self
            .uploads
            .reserve_slot(
                participant,
                &reserve.session_token,
                RoundId(reserve.round_id),
                &self.shutdown,
            )
            .await
            .map_err(|error| self.upload_status(error))?;
        Ok(Response::new(pb::UploadSlot {
            slot_token: slot.token,
            valid_for_ms: u32::try_from(slot.valid_for.as_millis()).unwrap_or(u32::MAX),
        }))
    }

    #[instrument(skip_all, fields(round = request.get_ref().round_id, participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn decline_round(
        &self,
        request: Request<pb::DeclineRoundRequest>,
    ) -> Result<Response<pb::DeclineRoundResponse>, Status> {
        let authenticated = self.authenticate(&request, Operation::DeclineRound)?;
        let decline = request.into_inner();
        let participant = claimed_participant(
            authenticated.as_ref(),
            decline.participant_id,
            "decline_round",
        )?;
        self.engine.decline(
            &participant,
            &decline.session_token,
            RoundId(decline.round_id),
            &decline.reason,
        )?;
        self.engine.metrics().round_declined(&decline.reason);
        Ok(Response::new(pb::DeclineRoundResponse {}))
    }

    #[instrument(skip_all, fields(round = request.get_ref().round_id, participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn advertise_keys(
        &self,
        request: Request<pb::AdvertiseKeysRequest>,
    ) -> Result<Response<pb::SecureAggregationRoster>, Status> {
        let (participant, advertised) = self.participant_call(
            request,
            Operation::SubmitUpdate,
            "advertise_keys",
            |message| std::mem::take(&mut message.participant_id),
        )?;
        let keys = secure_messages::public_keys(
            &advertised.cipher_public_key,
            &advertised.mask_public_key,
        )
        .map_err(|error| self.refuse(error))?;
        let round_id = RoundId(advertised.round_id);
        let roster = tokio::select! {
            roster = self.engine.advertise_keys(&participant, &advertised.session_token, round_id, keys) => {
                roster.map_err(|error| self.refuse(error))?
            }
            () = self.shutdown.cancelled() => return Err(CoordinatorError::ShuttingDown.into()),
        };
        Ok(Response::new(secure_messages::roster_message(
            round_id, &roster,
        )))
    }

    #[instrument(skip_all, fields(round = request.get_ref().round_id, participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn share_keys(
        &self,
        request: Request<pb::ShareKeysRequest>,
    ) -> Result<Response<pb::SharesForParticipant>, Status> {
        let (participant, sharing) =
            self.participant_call(request, Operation::SubmitUpdate, "share_keys", |message| {
                std::mem::take(&mut message.participant_id)
            })?;
        let shares = secure_messages::encrypted_shares(sharing.shares)
            .map_err(|error| self.refuse(error))?;
        let round_id = RoundId(sharing.round_id);
        let for_participant = tokio::select! {
            shares = self.engine.share_keys(&participant, &sharing.session_token, round_id, shares) => {
                shares.map_err(|error| self.refuse(error))?
            }
            () = self.shutdown.cancelled() => return Err(CoordinatorError::ShuttingDown.into()),
        };
        Ok(Response::new(pb::SharesForParticipant {
            round_id: round_id.0,
            shares: for_participant
                .into_iter()
                .map(secure_messages::encrypted_share_message)
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(participant = Empty, round = Empty))]
    async fn submit_masked_update(
        &self,
        request: Request<Streaming<pb::MaskedUpdateChunk>>,
    ) -> Result<Response<pb::SubmitUpdateResponse>, Status> {
        let authenticated = self
            .authenticate(&request, Operation::SubmitUpdate)
            .map_err(|error| self.refuse(error))?;
        let parts = request
            .into_inner()
            .map(|chunk| chunk.map(secure_messages::masked_part));
        let received = self
            .uploads
            .receive_masked(authenticated.as_ref(), parts)
            .await
            .map_err(|error| self.upload_status(error))?;
        Ok(Response::new(pb::SubmitUpdateResponse {
            round_id: received.round_id.0,
            num_updates_accepted: received.num_accepted as u32,
        }))
    }

    #[instrument(skip_all, fields(round = request.get_ref().round_id, participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn await_unmask(
        &self,
        request: Request<pb::AwaitUnmaskRequest>,
    ) -> Result<Response<pb::UnmaskRequest>, Status> {
        let (participant, waiting) = self.participant_call(
            request,
            Operation::SubmitUpdate,
            "await_unmask",
            |message| std::mem::take(&mut message.participant_id),
        )?;
        let round_id = RoundId(waiting.round_id);
        let deadline_left = self.engine.round_deadline_left(round_id);
        let unmask = tokio::select! {
            unmask = self.engine.await_unmask(&participant, &waiting.session_token, round_id, deadline_left) => {
                unmask.map_err(|error| self.refuse(error))?
            }
            () = self.shutdown.cancelled() => return Err(CoordinatorError::ShuttingDown.into()),
        };
        Ok(Response::new(pb::UnmaskRequest {
            round_id: round_id.0,
            survivors: unmask.survivors.iter().map(ToString::to_string).collect(),
            dropped: unmask.dropped.iter().map(ToString::to_string).collect(),
        }))
    }

    #[instrument(skip_all, fields(round = request.get_ref().round_id, participant = %loggable_id(&request.get_ref().participant_id)))]
    async fn reveal_shares(
        &self,
        request: Request<pb::RevealSharesRequest>,
    ) -> Result<Response<pb::RevealSharesResponse>, Status> {
        let (participant, revealing) = self.participant_call(
            request,
            Operation::SubmitUpdate,
            "reveal_shares",
            |message| std::mem::take(&mut message.participant_id),
        )?;
        let shares = secure_messages::revealed_shares(revealing.shares)
            .map_err(|error| self.refuse(error))?;
        self.engine
            .reveal_shares(
                &participant,
                &revealing.session_token,
                RoundId(revealing.round_id),
                shares,
            )
            .map_err(|error| self.refuse(error))?;
        Ok(Response::new(pb::RevealSharesResponse {}))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::CoordinatorStatus>, Status> {
        self.authenticate(&request, Operation::GetStatus)?;
        Ok(Response::new(status_message(&self.engine.status())))
    }
}

fn heartbeat_event(current_version: ModelVersion) -> pb::CoordinatorEvent {
    event(pb::coordinator_event::Event::Heartbeat(pb::Heartbeat {
        unix_time_ms: unix_ms_now(),
        current_model_version: current_version.0,
    }))
}

/// Returns the download stream of a model: the header, then the parameters
/// in chunks that share the model's memory, made only when tonic asks for them.
fn model_stream(
    model: std::sync::Arc<PublishedModel>,
    chunk_params: usize,
) -> impl Stream<Item = Result<pb::ModelChunk, Status>> + Send {
    let header = pb::ModelChunk {
        payload: Some(pb::model_chunk::Payload::Header(pb::ModelHeader {
            model_version: model.version.0,
            sha256: model.card.sha256.clone(),
            num_params: model.weights.params.len() as u64,
            spec: Some((&model.weights.spec).into()),
            tensors: model
                .weights
                .spec
                .tensor_specs()
                .into_iter()
                .map(|tensor| pb::TensorSpec {
                    name: tensor.name,
                    shape: tensor.shape.into_iter().map(|size| size as u64).collect(),
                })
                .collect(),
            card_json: serde_json::to_string(&model.card).expect("a model card serializes to json"),
        })),
    };
    // Zero-copy: each chunk is a view into the shared model, which lives
    // until the last chunk has been encoded.
    let chunks = futures::stream::iter(
        shared_chunks(model, |model| &model.weights.params, chunk_params).map(|data| {
            Ok(pb::ModelChunk {
                payload: Some(pb::model_chunk::Payload::Data(data)),
            })
        }),
    );
    futures::StreamExt::chain(futures::stream::once(async move { Ok(header) }), chunks)
}

/// Converts an engine status snapshot to its protocol message.
pub fn status_message(status: &EngineStatus) -> pb::CoordinatorStatus {
    pb::CoordinatorStatus {
        current_model_version: status.current.version.0,
        current_model_sha256: status.current.card.sha256.clone(),
        connected_participants: status.connected.iter().map(ToString::to_string).collect(),
        current_round: status.open_round.as_ref().map(|round| pb::RoundStatus {
            round_id: round.round_id.0,
            base_model_version: round.base_version.0,
            selected_participants: round.selected.iter().map(ToString::to_string).collect(),
            submitted_participants: round.accepted.iter().map(ToString::to_string).collect(),
            quorum: round.quorum as u32,
            deadline_unix_ms: round.deadline_unix_ms,
            attempt: round.attempt,
        }),
        num_rounds_completed: status.num_rounds_completed,
        num_rounds_abandoned: status.num_rounds_abandoned,
        revoked_participants: status
            .revoked
            .iter()
            .map(|member| member.participant.to_string())
            .collect(),
        recent_rounds: status
            .recent_rounds
            .iter()
            .map(|summary| pb::RoundSummary {
                round_id: summary.round_id.0,
                base_model_version: summary.base_version.0,
                outcome: summary.outcome.name().to_string(),
                published_model_version: summary.published().map_or(0, |version| version.0),
                contributors: summary.contributor_names(),
                duration_ms: summary.duration_ms(),
                reason: summary.reason.clone(),
            })
            .collect(),
    }
}
