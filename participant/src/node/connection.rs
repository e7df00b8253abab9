//! The connection to the coordinator: the channel (TLS, HTTP/2 windows,
//! message limits) and one join stream, from the welcome to the stream's
//! end, dispatching each announced round to [`super::round`].
//!
//! Any failure ends the session with an error, and [`Participant::run`]
//! reconnects with backoff; the coordinator re-announces an open round to
//! a participant that rejoins.

use std::time::Duration;

use fedshield_core::RoundId;
use fedshield_core::error::error_chain;
use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::{Participant, ParticipantEvent};
use crate::backoff::Backoff;
use crate::ending::{FederationEnd, join_refusal};
use crate::error::{ParticipantError, Result};

/// Largest gRPC message accepted from the coordinator.
const MAX_MESSAGE_BYTES: usize = fedshield_core::model::codec::MAX_CHUNK_BYTES + 64 * 1024;

/// How one connection to the coordinator ended without error.
pub(super) enum SessionEnd {
    /// The shutdown token was cancelled.
    Stopped,
    /// The coordinator announced that the federation is complete.
    FederationComplete(FederationEnd),
}

impl Participant {
    /// Declines `round_id` because the participant is stopping; waits at
    /// most two seconds for the coordinator.
    async fn decline_on_shutdown(
        &self,
        client: &mut FederationClient<Channel>,
        round_id: RoundId,
        session_token: String,
    ) {
        let decline = pb::DeclineRoundRequest {
            round_id: round_id.0,
            participant_id: self.config.participant_id.to_string(),
            session_token,
            reason: "participant shutting down".to_string(),
        };
        match tokio::time::timeout(Duration::from_secs(2), client.decline_round(decline)).await {
            Ok(Ok(_)) => info!(round = %round_id, "shutting down: round abandoned and declined"),
            _ => info!(round = %round_id, "shutting down: round abandoned"),
        }
    }

    /// Opens a channel to the coordinator, with TLS when configured.
    async fn connect(&self) -> Result<FederationClient<Channel>> {
        let connect_error = |reason: String| ParticipantError::Connect {
            url: self.config.coordinator_url.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(self.config.coordinator_url.clone())
            .map_err(|error| connect_error(error.to_string()))?;
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|error| connect_error(format!("tls configuration: {error}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .max_frame_size(Some(fedshield_proto::HTTP2_MAX_FRAME_BYTES))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024));
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| connect_error(error_chain(&error)))?;
        Ok(FederationClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// One connection: join, then handle events until the stream ends.
    /// Returns `Ok` only on shutdown or when the federation is complete.
    pub(super) async fn session(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd> {
        let mut client = self.connect().await?;
        let participant = self.config.participant_id.as_str();
        let mut stream = client
            .join(pb::JoinRequest {
                participant_id: participant.to_string(),
                client_version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await
            .map_err(|status| join_refusal(participant, status))?
            .into_inner();
        let mut session_token = None;
        let mut silence_limit = Duration::from_secs(30);
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return Ok(SessionEnd::Stopped),
                message = tokio::time::timeout(silence_limit, stream.message()) => message,
            };
            let event = match message {
                Err(_) => {
                    return Err(ParticipantError::Protocol(format!(
                        "no message from the coordinator for {}s",
                        silence_limit.as_secs_f32()
                    )));
                }
                Ok(Err(status)) => return Err(join_refusal(participant, status)),
                Ok(Ok(None)) => {
                    return Err(ParticipantError::Protocol(
                        "coordinator ended the join stream".into(),
                    ));
                }
                Ok(Ok(Some(event))) => event.event,
            };
            match event {
                Some(pb::coordinator_event::Event::Welcome(welcome)) => {
                    session_token = Some(welcome.session_token);
                    silence_limit =
                        Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(1)))
                            * self.config.missed_heartbeats;
                    backoff.reset();
                    info!(
                        participant = %self.config.participant_id,
                        current_version = welcome.current_model_version,
                        "joined coordinator"
                    );
                    self.report(ParticipantEvent::Joined);
                }
                Some(pb::coordinator_event::Event::Heartbeat(_)) => {}
                Some(pb::coordinator_event::Event::Complete(complete)) => {
                    if self.linger_after_completion {
                        shutdown.cancelled().await;
                    }
                    return Ok(SessionEnd::FederationComplete(complete.into()));
                }
                Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) => {
                    let Some(token) = session_token.clone() else {
                        return Err(ParticipantError::Protocol(
                            "announcement before welcome".into(),
                        ));
                    };
                    let round_id = RoundId(announcement.round_id);
                    // Training runs while the join stream is not read; the
                    // coordinator's heartbeats wait in the transport buffers.
                    let outcome = tokio::select! {
                        () = shutdown.cancelled() => {
                            // Abandon the round cleanly: the ledger entry is
                            // already durable, and the coordinator is told
                            // not to wait for this participant.
                            self.decline_on_shutdown(&mut client, round_id, token).await;
                            return Ok(SessionEnd::Stopped);
                        }
                        outcome = self.take_part(&mut client, announcement, token.clone(), shutdown) => outcome,
                    };
                    match outcome {
                        Ok(event) => {
                            self.metrics.round_trained();
                            self.report(event);
                        }
                        Err(error) => {
                            self.metrics.round_declined();
                            warn!(participant = %self.config.participant_id, round = %round_id, error = %error, "round failed");
                            // Tell the coordinator, so the round does not wait for us;
                            // if the update itself was refused there is nothing to add.
                            if !matches!(error, ParticipantError::Refused(_)) {
                                let decline = pb::DeclineRoundRequest {
                                    round_id: round_id.0,
                                    participant_id: self.config.participant_id.to_string(),
                                    session_token: token,
                                    reason: error.to_string(),
                                };
                                if let Err(status) = client.decline_round(decline).await {
                                    debug!(code = ?status.code(), "decline not recorded");
                                }
                            }
                            let reason = error.to_string();
                            self.report(match error {
                                ParticipantError::BudgetExhausted { .. }
                                | ParticipantError::OrgBudgetExhausted { .. } => {
                                    ParticipantEvent::BudgetExhausted { round_id, reason }
                                }
                                _ => ParticipantEvent::RoundFailed { round_id, reason },
                            });
                            // Declined and reported; the run ends with it.
                            if error.is_permanent() {
                                return Err(error);
                            }
                        }
                    }
                }
                None => {
                    return Err(ParticipantError::Protocol(
                        "empty event on the join stream".into(),
                    ));
                }
            }
        }
    }
}
