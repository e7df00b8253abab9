//! Ending live `Join` streams whose certificate is no longer allowed.
//!
//! A call is checked against the participant registry when it starts; a
//! `Join` stream, though, lives as long as the participant stays connected.
//! Each stream therefore keeps the identity of the certificate that opened it
//! (subject and sha256 fingerprint: the check is per connection, so revoking
//! one stolen certificate ends only the streams that certificate opened) and
//! re-checks it every time the registry in force is replaced
//! ([`crate::participants::SharedRegistry::subscribe`]). When the check
//! fails (participant revoked, certificate revoked, entry removed, role no
//! longer participant) the stream ends with `PERMISSION_DENIED` and the
//! engine drops the session ([`crate::engine::Engine::revoke`]): the member
//! leaves the connected set and the open round's selection, and the round
//! stops waiting for it.

use std::sync::Arc;

use fedshield_proto::tls::PeerIdentity;
use tokio::sync::watch;

use crate::participants::{AccessDenied, ParticipantRegistry, SharedRegistry};
use crate::roles::Operation;

/// Watches the registry on behalf of one live stream.
pub struct RevocationWatch {
    /// The registry's replacements and the identity of the certificate that
    /// opened the stream; `None` without TLS (nothing to revoke) or when
    /// the stream has no certificate identity.
    watched: Option<(watch::Receiver<Arc<ParticipantRegistry>>, PeerIdentity)>,
    /// What the stream is for; re-checked with the role table too.
    operation: Operation,
}

impl RevocationWatch {
    /// Returns a watch of the certificate `identity` for `operation`
    /// against `access`; one that never fires when either is `None`.
    pub fn new(
        access: Option<&SharedRegistry>,
        identity: Option<PeerIdentity>,
        operation: Operation,
    ) -> Self {
        let watched = match (access, identity) {
            (Some(access), Some(identity)) => Some((access.subscribe(), identity)),
            _ => None,
        };
        RevocationWatch { watched, operation }
    }

    /// Returns the subject of the watched certificate, if any.
    pub fn subject(&self) -> Option<&str> {
        self.watched
            .as_ref()
            .map(|(_, identity)| identity.common_name.as_str())
    }

    /// Returns the watched certificate's sha256 fingerprint, if any.
    pub fn fingerprint(&self) -> Option<&str> {
        self.watched
            .as_ref()
            .map(|(_, identity)| identity.sha256_fingerprint.as_str())
    }

    /// Returns once the registry in force no longer allows the watched
    /// certificate to perform the operation, with the reason; never returns
    /// when nothing is watched or the registry can no longer change.
    /// Cancel-safe: dropping the future loses no replacement, since the
    /// registry in force is checked first on every call.
    pub async fn denied(&mut self) -> AccessDenied {
        let Some((registry, identity)) = &mut self.watched else {
            return std::future::pending().await;
        };
        loop {
            let verdict = registry.borrow_and_update().authorize_for(
                &identity.common_name,
                &identity.sha256_fingerprint,
                self.operation,
            );
            if let Err(denied) = verdict {
                return denied;
            }
            if registry.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}
