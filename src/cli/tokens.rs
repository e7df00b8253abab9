//! Flags of `fedshield coordinator tokens create|list|revoke` and `coordinator issue-token`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Issues a bearer token for the HTTPS model downloads and prints it (once); only its sha256 is stored (the same as `tokens create`).
    IssueToken(IssueTokenArgs),
    /// The HTTPS endpoint's bearer tokens: create, list, revoke.
    Tokens(TokensArgs),
}

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issues a bearer token named NAME and prints it (once); only its sha256 is stored.
    Create(TokenCreateArgs),
    /// Lists the tokens: name, when issued, when they expire, and whether they are active, expired or revoked (never the secrets).
    List(TokenFileArgs),
    /// Revokes the token named NAME: refused from the next request on, and its dashboard sessions end.
    Revoke(TokenRevokeArgs),
}

/// Where the token file is.
#[derive(Debug, Clone, Args)]
pub struct TokenFileArgs {
    /// The coordinator's data directory (the token file is <data-dir>/api-tokens.toml unless --api-tokens is given).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/coordinator"
    )]
    pub data_dir: PathBuf,
    /// The token file.
    #[arg(long, env = "FEDSHIELD_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
}

/// How long a new token is valid.
#[derive(Debug, Clone, Args)]
pub struct TokenLifetimeArgs {
    /// Days until the token expires.
    #[arg(long, default_value_t = fedshield_coordinator::tokens::DEFAULT_TOKEN_LIFETIME_DAYS, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub expires_in_days: u64,
    /// The token never expires (until revoked).
    #[arg(long, conflicts_with = "expires_in_days")]
    pub no_expiry: bool,
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name for the holder, e.g. the detector's host; shown in the coordinator's logs.
    pub name: String,
    #[command(flatten)]
    pub file: TokenFileArgs,
    #[command(flatten)]
    pub lifetime: TokenLifetimeArgs,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The name of the token to revoke.
    pub name: String,
    #[command(flatten)]
    pub file: TokenFileArgs,
}

#[derive(Debug, Args)]
pub struct IssueTokenArgs {
    /// The coordinator's data directory (the token file is <data-dir>/api-tokens.toml unless --api-tokens is given).
    #[arg(
        long,
        env = "FEDSHIELD_DATA_DIR",
        default_value = "fedshield-data/coordinator"
    )]
    pub data_dir: PathBuf,
    /// The token file.
    #[arg(long)]
    pub api_tokens: Option<PathBuf>,
    /// A name for the holder, e.g. the detector's host; shown in the coordinator's logs.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub lifetime: TokenLifetimeArgs,
}
