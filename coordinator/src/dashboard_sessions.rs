//! Dashboard sessions: what a browser holds after it signed in with a token.
//!
//! `POST /dashboard/login` checks a bearer token sent in the form body and
//! opens a session: a fresh 256-bit id from the operating system's CSPRNG,
//! sent to the browser once in an `HttpOnly; Secure; SameSite=Strict`
//! cookie. The cookie never holds the token, and the server keeps only the
//! sha256 of each session id (in memory: a restart signs every browser out).
//!
//! A session ends at the first of:
//! - its lifetime ([`DashboardSessionSettings::max_age`], 12 h by default)
//!   after sign-in;
//! - [`DashboardSessionSettings::idle_timeout`] (30 min by default) without
//!   a request;
//! - its token being revoked or expiring (checked against the token file on
//!   every request, see [`crate::tokens`]);
//! - sign-out (`POST /dashboard/logout`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::TryRng;
use sha2::{Digest, Sha256};

use crate::tokens::{TokenRefusal, ValidToken, check_token_sha256, unix_secs_now};

/// Name of the cookie that holds a dashboard session id.
pub const SESSION_COOKIE_NAME: &str = "fedshield_session";

/// Default of [`DashboardSessionSettings::max_age`]: 12 hours.
pub const DEFAULT_SESSION_MAX_AGE_SECS: u64 = 12 * 60 * 60;

/// Default of [`DashboardSessionSettings::idle_timeout`]: 30 minutes.
pub const DEFAULT_SESSION_IDLE_SECS: u64 = 30 * 60;

/// Most sessions open at once; signing in beyond it ends the oldest.
const MAX_OPEN_SESSIONS: usize = 4_096;

/// How long dashboard sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DashboardSessionSettings {
    /// A session ends this long after sign-in, however busy.
    pub max_age: Duration,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
}

impl Default for DashboardSessionSettings {
    fn default() -> Self {
        DashboardSessionSettings {
            max_age: Duration::from_secs(DEFAULT_SESSION_MAX_AGE_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_SESSION_IDLE_SECS),
        }
    }
}

/// Why a session cookie does not sign a request in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    #[error("unknown or ended dashboard session; sign in again")]
    Unknown,
    #[error("the dashboard session expired; sign in again")]
    Expired,
    #[error("the dashboard session's token is no longer valid ({0}); sign in again")]
    TokenRefused(TokenRefusal),
    #[error("no session id could be drawn from the operating system's random source")]
    NoRandomness,
}

/// One open session, keyed by the sha256 of its id.
#[derive(Debug)]
struct OpenSession {
    /// The sha256 of the token it signed in with, re-checked on every use.
    token_sha256: String,
    /// The token's name, for logs.
    token_name: String,
    signed_in: Instant,
    last_used: Instant,
}

/// The open dashboard sessions of one HTTPS endpoint.
#[derive(Debug)]
pub struct DashboardSessions {
    settings: DashboardSessionSettings,
    /// By sha256 of the session id; a short critical section per request.
    open: Mutex<HashMap<String, OpenSession>>,
}

fn session_id_sha256(session_id: &str) -> String {
    hex::encode(Sha256::digest(session_id.as_bytes()))
}

impl DashboardSessions {
    /// Returns an empty session store with `settings`.
    pub fn new(settings: DashboardSessionSettings) -> Self {
        DashboardSessions {
            settings,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the settings sessions are held to.
    pub fn settings(&self) -> DashboardSessionSettings {
        self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenSession>> {
        // A panic while holding this lock leaves the map consistent.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `token` (already checked) and returns its id,
    /// the cookie value: 64 hex digits of 256 bits from the OS's CSPRNG.
    ///
    /// # Errors
    /// [`SessionRefusal::NoRandomness`] if the OS has no randomness to give.
    pub fn open(&self, token: &ValidToken) -> Result<String, SessionRefusal> {
        let mut id_bytes = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut id_bytes)
            .map_err(|_| SessionRefusal::NoRandomness)?;
        let session_id = hex::encode(id_bytes);
        let now = Instant::now();
        let mut open = self.lock();
        self.forget_ended(&mut open, now);
        if open.len() >= MAX_OPEN_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, session)| session.signed_in)
                .map(|(key, _)| key.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            session_id_sha256(&session_id),
            OpenSession {
                token_sha256: token.sha256.clone(),
                token_name: token.name.clone(),
                signed_in: now,
                last_used: now,
            },
        );
        Ok(session_id)
    }

    /// Returns the name of the token session `session_id` signed in with,
    /// after checking the session is open and its token still valid in the
    /// token file at `tokens_path`; marks it used. A session that fails a
    /// check is ended.
    ///
    /// # Errors
    /// The [`SessionRefusal`] that applies.
    pub fn check(&self, session_id: &str, tokens_path: &Path) -> Result<String, SessionRefusal> {
        let key = session_id_sha256(session_id);
        let now = Instant::now();
        let token_sha256 = {
            let mut open = self.lock();
            let Some(session) = open.get(&key) else {
                return Err(SessionRefusal::Unknown);
            };
            if self.has_ended(session, now) {
                open.remove(&key);
                return Err(SessionRefusal::Expired);
            }
            session.token_sha256.clone()
        };
        // The token file is read outside the lock.
        match check_token_sha256(tokens_path, &token_sha256, unix_secs_now()) {
            Ok(token) => {
                if let Some(session) = self.lock().get_mut(&key) {
                    session.last_used = now;
                }
                Ok(token.name)
            }
            Err(TokenRefusal::Unreadable) => {
                Err(SessionRefusal::TokenRefused(TokenRefusal::Unreadable))
            }
            Err(refusal) => {
                self.lock().remove(&key);
                Err(SessionRefusal::TokenRefused(refusal))
            }
        }
    }

    /// Ends session `session_id`, if open; returns the name of its token.
    pub fn close(&self, session_id: &str) -> Option<String> {
        self.lock()
            .remove(&session_id_sha256(session_id))
            .map(|session| session.token_name)
    }

    /// Returns how many sessions are open (ended ones not yet forgotten included).
    pub fn num_open(&self) -> usize {
        self.lock().len()
    }

    fn has_ended(&self, session: &OpenSession, now: Instant) -> bool {
        now.duration_since(session.signed_in) >= self.settings.max_age
            || now.duration_since(session.last_used) >= self.settings.idle_timeout
    }

    fn forget_ended(&self, open: &mut HashMap<String, OpenSession>, now: Instant) {
        open.retain(|_, session| !self.has_ended(session, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{TokenLifetime, create_token, revoke_token};

    fn token_in(dir: &Path) -> (std::path::PathBuf, ValidToken) {
        let path = dir.join("api-tokens.toml");
        let secret = create_token(&path, "browser", TokenLifetime::Unlimited).unwrap();
        let token = crate::tokens::check_token(&path, &secret).unwrap();
        (path, token)
    }

    #[test]
    fn session_ids_are_fresh_256_bit_values_stored_only_as_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, token) = token_in(dir.path());
        let sessions = DashboardSessions::new(DashboardSessionSettings::default());
        let first = sessions.open(&token).unwrap();
        let second = sessions.open(&token).unwrap();
        assert_eq!(first.len(), 64);
        assert_ne!(first, second);
        assert!(!sessions.lock().contains_key(&first));
        assert_eq!(sessions.check(&first, &path).unwrap(), "browser");
        assert_eq!(sessions.close(&first).as_deref(), Some("browser"));
        assert_eq!(sessions.check(&first, &path), Err(SessionRefusal::Unknown));
        assert!(sessions.check(&second, &path).is_ok());
    }

    #[test]
    fn an_idle_session_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (path, token) = token_in(dir.path());
        let sessions = DashboardSessions::new(DashboardSessionSettings {
            max_age: Duration::from_secs(3_600),
            idle_timeout: Duration::from_millis(50),
        });
        let session = sessions.open(&token).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            sessions.check(&session, &path),
            Err(SessionRefusal::Expired)
        );
        assert_eq!(sessions.num_open(), 0);
    }

    #[test]
    fn revoking_the_token_ends_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let (path, token) = token_in(dir.path());
        let sessions = DashboardSessions::new(DashboardSessionSettings::default());
        let session = sessions.open(&token).unwrap();
        revoke_token(&path, "browser").unwrap();
        assert!(matches!(
            sessions.check(&session, &path),
            Err(SessionRefusal::TokenRefused(TokenRefusal::Revoked { .. }))
        ));
        assert_eq!(
            sessions.check(&session, &path),
            Err(SessionRefusal::Unknown)
        );
    }
}
