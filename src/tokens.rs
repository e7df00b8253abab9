//! `fedshield coordinator tokens create|list|revoke`: the HTTPS endpoint's
//! bearer tokens, kept in the token file ([`fedshield_coordinator::tokens`]).
//! A running coordinator re-reads the file on every request, so changes
//! take effect without a restart.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use fedshield_coordinator::tokens::{
    ApiTokenEntry, TokenLifetime, create_token, read_tokens, revoke_token, unix_secs_now,
};

use crate::cli::{TokenFileArgs, TokenLifetimeArgs, TokensArgs, TokensCommand};

/// Runs one `fedshield coordinator tokens` command.
///
/// # Errors
/// The token file cannot be read or written, or the command's name is bad.
pub fn run(args: &TokensArgs) -> Result<()> {
    match &args.command {
        TokensCommand::Create(create_args) => {
            create(&create_args.file, &create_args.name, &create_args.lifetime)
        }
        TokensCommand::List(file) => list(file),
        TokensCommand::Revoke(revoke_args) => revoke(&revoke_args.file, &revoke_args.name),
    }
}

/// Returns the token file the arguments name.
fn tokens_path(file: &TokenFileArgs) -> PathBuf {
    file.api_tokens.clone().unwrap_or_else(|| {
        file.data_dir
            .join(fedshield_coordinator::tokens::API_TOKENS_FILE_NAME)
    })
}

/// Issues a token named `name` and prints its secret on stdout (once).
///
/// # Errors
/// As [`create_token`].
pub fn create(file: &TokenFileArgs, name: &str, lifetime: &TokenLifetimeArgs) -> Result<()> {
    let path = tokens_path(file);
    let token_lifetime = if lifetime.no_expiry {
        TokenLifetime::Unlimited
    } else {
        TokenLifetime::Limited(Duration::from_secs(lifetime.expires_in_days * 86_400))
    };
    let token = create_token(&path, name, token_lifetime).context("failed to issue a token")?;
    let expiry = if lifetime.no_expiry {
        "it never expires".to_string()
    } else {
        format!("it expires in {} days", lifetime.expires_in_days)
    };
    eprintln!(
        "issued token {name:?} (its sha256 is in {}; {expiry}); it is shown only now:",
        path.display()
    );
    println!("{token}");
    Ok(())
}

/// Returns a token's state at `now_unix_secs`: active, expired or revoked.
fn state_of(entry: &ApiTokenEntry, now_unix_secs: u64) -> &'static str {
    if entry.revoked {
        "revoked"
    } else if entry
        .expires_unix_secs
        .is_some_and(|expires| now_unix_secs >= expires)
    {
        "expired"
    } else {
        "active"
    }
}

/// Returns `unix_secs` as `YYYY-MM-DDTHH:MM:SSZ` (UTC), or `-` when absent.
fn utc_time(unix_secs: Option<u64>) -> String {
    let Some(unix_secs) = unix_secs else {
        return "-".to_string();
    };
    // Days since 1970-01-01 to a civil date: Howard Hinnant's algorithm
    // (https://howardhinnant.github.io/date_algorithms.html#civil_from_days).
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3_600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Prints the tokens: name, issued, expires, state. Never the secrets
/// (the file holds only their sha256 anyway).
///
/// # Errors
/// The token file cannot be read.
fn list(file: &TokenFileArgs) -> Result<()> {
    let path = tokens_path(file);
    let tokens = read_tokens(&path).context("failed to list the tokens")?;
    let now_unix_secs = unix_secs_now();
    println!("{:<32} {:<20} {:<20} STATE", "NAME", "CREATED", "EXPIRES");
    for entry in &tokens {
        println!(
            "{:<32} {:<20} {:<20} {}",
            entry.name,
            utc_time(entry.created_unix_secs),
            utc_time(entry.expires_unix_secs),
            state_of(entry, now_unix_secs)
        );
    }
    if tokens.is_empty() {
        eprintln!("no tokens in {}", path.display());
    }
    Ok(())
}

/// Revokes the token named `name`.
///
/// # Errors
/// No token has that name, or the file cannot be read or written.
fn revoke(file: &TokenFileArgs, name: &str) -> Result<()> {
    let path = tokens_path(file);
    let newly_revoked = revoke_token(&path, name).context("failed to revoke the token")?;
    if newly_revoked {
        eprintln!(
            "revoked token {name:?} in {}: it is refused from the next request on, and its dashboard sessions end",
            path.display()
        );
    } else {
        eprintln!("token {name:?} was revoked already");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_are_printed_as_utc_dates() {
        assert_eq!(utc_time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(Some(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(Some(1_798_761_599)), "2026-12-31T23:59:59Z");
        assert_eq!(utc_time(None), "-");
    }
}
