//! Flags of `fedshield certs ca|server|participant|detector`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Writes a new CA to OUT_DIR/ca.pem and OUT_DIR/ca.key.
    Ca(CertsCaArgs),
    /// Writes the coordinator's certificate, signed by the CA, to OUT_DIR/server.pem and OUT_DIR/server.key.
    Server(CertsServerArgs),
    /// Writes a participant's client certificate (CN = its id) to OUT_DIR/<ID>.pem and OUT_DIR/<ID>.key and prints its SHA-256 fingerprint. Detectors get the same kind of certificate (`certs detector`); the registry entry's `role` decides what it may do.
    #[command(visible_alias = "detector")]
    Participant(CertsParticipantArgs),
}

#[derive(Debug, Args)]
pub struct CertsCaArgs {
    /// Directory to write ca.pem and ca.key to (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Subject common name of the CA.
    #[arg(long, default_value = "fedshield CA")]
    pub name: String,
    /// Overwrite existing files (the old CA can then no longer issue certificates).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("server_names").required(true).multiple(true).args(["dns", "ip"])))]
pub struct CertsServerArgs {
    /// Directory holding the CA's ca.pem and ca.key.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Directory to write server.pem and server.key to (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// DNS name participants use to reach the coordinator (repeatable); the first is the subject CN.
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP address participants use to reach the coordinator (repeatable).
    #[arg(long)]
    pub ip: Vec<std::net::IpAddr>,
    /// Days the certificate stays valid.
    #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertsParticipantArgs {
    /// Directory holding the CA's ca.pem and ca.key.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Directory to write <ID>.pem and <ID>.key to (created if absent).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// The participant's identity (letters, digits, '.', '_', '-'): the certificate's subject CN.
    #[arg(long)]
    pub id: String,
    /// Days the certificate stays valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}
