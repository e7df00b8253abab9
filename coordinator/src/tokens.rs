//! The bearer tokens of the HTTPS endpoint: issuing, listing, revoking and
//! checking them.
//!
//! Tokens live in one TOML file (by default `<data-dir>/api-tokens.toml`),
//! written atomically by `fedshield coordinator tokens ...` and re-read by
//! the running coordinator on every check, so a revocation or an expiry
//! takes effect for the next request without a restart. Only the sha256 of
//! each secret is stored; the secret (`fst_` and 64 hex digits, 256 bits
//! from the OS-seeded CSPRNG) is shown once, when issued.
//!
//! Every token has a name (who holds it), when it was issued, and by
//! default an expiry ([`DEFAULT_TOKEN_LIFETIME_DAYS`] days after issue).
//! Entries written before expiries existed have neither time and never
//! expire; revoke and reissue them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the API tokens in the coordinator's data directory.
pub const API_TOKENS_FILE_NAME: &str = "api-tokens.toml";

/// How long a token is valid unless its issuer says otherwise, in days.
pub const DEFAULT_TOKEN_LIFETIME_DAYS: u64 = 90;

/// Longest accepted token name, in bytes.
const MAX_TOKEN_NAME_LEN: usize = 128;

/// An issued bearer token, as stored: its name, the sha256 of the secret,
/// and when it was issued, expires and was revoked (Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenEntry {
    /// Who holds the token, e.g. the detector's host.
    pub name: String,
    /// Lowercase hex sha256 of the secret.
    pub sha256: String,
    /// Set by `tokens revoke`; a revoked token is refused.
    #[serde(default)]
    pub revoked: bool,
    /// When the token was issued; absent in files written before expiries existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_unix_secs: Option<u64>,
    /// From this second on the token is refused; absent: it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_secs: Option<u64>,
    /// When the token was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix_secs: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenFile {
    #[serde(default)]
    token: Vec<ApiTokenEntry>,
}

/// How long a newly issued token is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLifetime {
    /// Until revoked.
    Unlimited,
    /// This long after issue (rounded up to whole seconds).
    Limited(Duration),
}

impl TokenLifetime {
    /// Returns the default lifetime: [`DEFAULT_TOKEN_LIFETIME_DAYS`] days.
    pub fn default_days() -> Self {
        TokenLifetime::Limited(Duration::from_secs(DEFAULT_TOKEN_LIFETIME_DAYS * 86_400))
    }
}

/// What went wrong with the token file or a token command.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the token file {path} is not valid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write the token file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "token name {name:?} must have 1 to {MAX_TOKEN_NAME_LEN} characters, none of them control characters"
    )]
    InvalidName { name: String },
    #[error("a token named {name:?} exists already in {path}")]
    NameTaken { name: String, path: PathBuf },
    #[error("no token named {name:?} in {path}")]
    UnknownName { name: String, path: PathBuf },
    #[error("a token lifetime of 0 seconds is already expired; give at least 1")]
    EmptyLifetime,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("unknown token")]
    Unknown,
    #[error("token {name:?} is revoked")]
    Revoked { name: String },
    #[error("token {name:?} expired")]
    Expired { name: String },
    #[error("the token file cannot be read")]
    Unreadable,
}

/// Returns the current time in Unix seconds.
pub fn unix_secs_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Returns the lowercase hex sha256 of a token secret, as stored.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Returns the entries of the token file at `path` (none if it does not exist).
///
/// # Errors
/// The file cannot be read or is not a token file.
pub fn read_tokens(path: &Path) -> Result<Vec<ApiTokenEntry>, TokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str::<ApiTokenFile>(&text)
            .map(|file| file.token)
            .map_err(|error| TokenError::Parse {
                path: path.to_path_buf(),
                reason: error.to_string(),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(TokenError::Read {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }),
    }
}

fn write_tokens(path: &Path, tokens: Vec<ApiTokenEntry>) -> Result<(), TokenError> {
    let write_error = |reason: String| TokenError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let text = toml::to_string(&ApiTokenFile { token: tokens })
        .map_err(|error| write_error(error.to_string()))?;
    fedshield_core::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|error| write_error(error.to_string()))
}

/// Issues a new bearer token named `name` valid for `lifetime`: appends its
/// sha256 to the token file at `path` (written atomically) and returns the
/// secret, which is shown once and stored nowhere.
///
/// # Errors
/// The file cannot be read or written, `name` is empty, too long, has
/// control characters or is taken, or `lifetime` is zero.
pub fn create_token(
    path: &Path,
    name: &str,
    lifetime: TokenLifetime,
) -> Result<String, TokenError> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(TokenError::InvalidName {
            name: fedshield_core::untrusted_text::escape_bounded(name, MAX_TOKEN_NAME_LEN),
        });
    }
    let created_unix_secs = unix_secs_now();
    let expires_unix_secs = match lifetime {
        TokenLifetime::Unlimited => None,
        TokenLifetime::Limited(duration) if duration.is_zero() => {
            return Err(TokenError::EmptyLifetime);
        }
        TokenLifetime::Limited(duration) => {
            let whole_secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
            Some(created_unix_secs.saturating_add(whole_secs))
        }
    };
    let mut tokens = read_tokens(path)?;
    if tokens.iter().any(|entry| entry.name == name) {
        return Err(TokenError::NameTaken {
            name: name.to_string(),
            path: path.to_path_buf(),
        });
    }
    let secret = {
        use rand::RngExt;
        let bytes: [u8; 32] = rand::rng().random();
        format!("fst_{}", hex::encode(bytes))
    };
    tokens.push(ApiTokenEntry {
        name: name.to_string(),
        sha256: token_sha256(&secret),
        revoked: false,
        created_unix_secs: Some(created_unix_secs),
        expires_unix_secs,
        revoked_unix_secs: None,
    });
    write_tokens(path, tokens)?;
    Ok(secret)
}

/// Issues a token with the default lifetime ([`DEFAULT_TOKEN_LIFETIME_DAYS`] days).
///
/// # Errors
/// As [`create_token`].
pub fn issue_token(path: &Path, name: &str) -> Result<String, TokenError> {
    create_token(path, name, TokenLifetime::default_days())
}

/// Revokes the token named `name`: from the next request on it is refused,
/// and the dashboard sessions opened with it end. Returns `false` when it
/// was revoked already (the file is then left as it is).
///
/// # Errors
/// No token has that name, or the file cannot be read or written.
pub fn revoke_token(path: &Path, name: &str) -> Result<bool, TokenError> {
    let mut tokens = read_tokens(path)?;
    let Some(entry) = tokens.iter_mut().find(|entry| entry.name == name) else {
        return Err(TokenError::UnknownName {
            name: fedshield_core::untrusted_text::escape_bounded(name, MAX_TOKEN_NAME_LEN),
            path: path.to_path_buf(),
        });
    };
    if entry.revoked {
        return Ok(false);
    }
    entry.revoked = true;
    entry.revoked_unix_secs = Some(unix_secs_now());
    write_tokens(path, tokens)?;
    Ok(true)
}

/// A token that passed [`check_token_sha256`]: its name and stored digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The token's name, for logs.
    pub name: String,
    /// The sha256 of its secret, which dashboard sessions remember.
    pub sha256: String,
}

/// Checks the token whose secret has sha256 `digest` against the file at
/// `path` at `now_unix_secs`: known, not revoked, not expired.
///
/// # Errors
/// The [`TokenRefusal`] that applies.
pub fn check_token_sha256(
    path: &Path,
    digest: &str,
    now_unix_secs: u64,
) -> Result<ValidToken, TokenRefusal> {
    let tokens = read_tokens(path).map_err(|error| {
        tracing::error!(reason = %error, "token file unreadable");
        TokenRefusal::Unreadable
    })?;
    let Some(entry) = tokens.iter().find(|entry| entry.sha256 == digest) else {
        return Err(TokenRefusal::Unknown);
    };
    if entry.revoked {
        return Err(TokenRefusal::Revoked {
            name: entry.name.clone(),
        });
    }
    if entry
        .expires_unix_secs
        .is_some_and(|expires| now_unix_secs >= expires)
    {
        return Err(TokenRefusal::Expired {
            name: entry.name.clone(),
        });
    }
    Ok(ValidToken {
        name: entry.name.clone(),
        sha256: entry.sha256.clone(),
    })
}

/// Checks the secret `token` as [`check_token_sha256`] does, now.
///
/// # Errors
/// The [`TokenRefusal`] that applies.
pub fn check_token(path: &Path, token: &str) -> Result<ValidToken, TokenRefusal> {
    check_token_sha256(path, &token_sha256(token), unix_secs_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_is_stored_only_as_its_sha256_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_TOKENS_FILE_NAME);
        let token = issue_token(&path, "detector-1").unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&token));
        let entry = &read_tokens(&path).unwrap()[0];
        let lifetime = entry.expires_unix_secs.unwrap() - entry.created_unix_secs.unwrap();
        assert_eq!(lifetime, DEFAULT_TOKEN_LIFETIME_DAYS * 86_400);
        assert_eq!(check_token(&path, &token).unwrap().name, "detector-1");
        assert_eq!(
            check_token(&path, "fst_not-a-token"),
            Err(TokenRefusal::Unknown)
        );
    }

    #[test]
    fn a_token_is_refused_from_its_expiry_second_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_TOKENS_FILE_NAME);
        let token = create_token(
            &path,
            "short",
            TokenLifetime::Limited(Duration::from_secs(60)),
        )
        .unwrap();
        let entry = read_tokens(&path).unwrap().remove(0);
        let expires = entry.expires_unix_secs.unwrap();
        let digest = token_sha256(&token);
        assert!(check_token_sha256(&path, &digest, expires - 1).is_ok());
        assert_eq!(
            check_token_sha256(&path, &digest, expires),
            Err(TokenRefusal::Expired {
                name: "short".to_string()
            })
        );
    }

    #[test]
    fn a_revoked_token_is_refused_and_revoking_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_TOKENS_FILE_NAME);
        let token = create_token(&path, "old", TokenLifetime::Unlimited).unwrap();
        assert!(revoke_token(&path, "old").unwrap());
        assert!(!revoke_token(&path, "old").unwrap());
        assert_eq!(
            check_token(&path, &token),
            Err(TokenRefusal::Revoked {
                name: "old".to_string()
            })
        );
        let error = revoke_token(&path, "nobody").unwrap_err().to_string();
        assert!(error.contains("no token named \"nobody\""), "{error}");
    }

    #[test]
    fn token_files_written_before_expiries_existed_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_TOKENS_FILE_NAME);
        std::fs::write(
            &path,
            "[[token]]\nname = \"legacy\"\nsha256 = \"00\"\nrevoked = false\n",
        )
        .unwrap();
        let entry = read_tokens(&path).unwrap().remove(0);
        assert_eq!(entry.expires_unix_secs, None);
        assert!(check_token_sha256(&path, "00", u64::MAX).is_ok());
    }

    #[test]
    fn bad_names_and_empty_lifetimes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_TOKENS_FILE_NAME);
        assert!(matches!(
            create_token(&path, "", TokenLifetime::Unlimited),
            Err(TokenError::InvalidName { .. })
        ));
        assert!(matches!(
            create_token(&path, "a\nb", TokenLifetime::Unlimited),
            Err(TokenError::InvalidName { .. })
        ));
        assert!(matches!(
            create_token(&path, "zero", TokenLifetime::Limited(Duration::ZERO)),
            Err(TokenError::EmptyLifetime)
        ));
        assert!(!path.exists(), "refused requests wrote nothing");
    }
}
