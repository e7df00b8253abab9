//! A participant driven by hand over raw gRPC, for tests that play a hostile
//! or misbehaving member: it joins, reads its welcome and announcements, and
//! sends whatever messages a test chooses (each test adds its own methods in
//! an `impl RawParticipant` block of its own).

use std::time::Duration;

use fedshield_proto::v1 as pb;
use fedshield_proto::v1::federation_client::FederationClient;
use tonic::transport::Channel;

/// How long a raw participant waits for its welcome or an announcement.
pub const RAW_PATIENCE: Duration = Duration::from_secs(60);

/// A participant driven by hand over raw gRPC.
pub struct RawParticipant {
    /// The participant id it joined as.
    pub name: String,
    /// The session token of its welcome.
    pub token: String,
    /// Its own connection to the coordinator.
    pub client: FederationClient<Channel>,
    /// The `Join` stream; dropping it disconnects the participant.
    pub events: tonic::Streaming<pb::CoordinatorEvent>,
}

impl RawParticipant {
    /// Joins as `name` on a connection of its own and reads the welcome;
    /// `client_version` names the test in the coordinator's logs.
    pub async fn join_as(url: &str, name: &str, client_version: &str) -> RawParticipant {
        let client = FederationClient::connect(url.to_string()).await.unwrap();
        RawParticipant::join_on(client, name, client_version).await
    }

    /// Joins as `name` on `client` (a connection the test made, e.g. with a
    /// client certificate) and reads the welcome.
    pub async fn join_on(
        mut client: FederationClient<Channel>,
        name: &str,
        client_version: &str,
    ) -> RawParticipant {
        let mut events = client
            .join(pb::JoinRequest {
                participant_id: name.to_string(),
                client_version: client_version.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(RAW_PATIENCE, events.message())
            .await
            .expect("the coordinator welcomes in time")
            .unwrap()
            .expect("the join stream is open")
            .event;
        let Some(pb::coordinator_event::Event::Welcome(welcome)) = first else {
            panic!("the first event is a welcome, got {first:?}");
        };
        RawParticipant {
            name: name.to_string(),
            token: welcome.session_token,
            client,
            events,
        }
    }

    /// Declines round `round_id` with `reason`, the text a participant chose.
    pub async fn decline_with_reason(
        &self,
        round_id: u64,
        reason: &str,
    ) -> Result<(), tonic::Status> {
        self.client
            .clone()
            .decline_round(pb::DeclineRoundRequest {
                round_id,
                participant_id: self.name.clone(),
                session_token: self.token.clone(),
                reason: reason.to_string(),
            })
            .await
            .map(|_| ())
    }

    /// Returns the next round announcement, skipping heartbeats.
    pub async fn next_announcement(&mut self) -> pb::RoundAnnouncement {
        loop {
            let event = tokio::time::timeout(RAW_PATIENCE, self.events.message())
                .await
                .expect("an announcement arrives in time")
                .unwrap()
                .expect("the join stream is open")
                .event;
            if let Some(pb::coordinator_event::Event::RoundAnnouncement(announcement)) = event {
                return announcement;
            }
        }
    }
}
