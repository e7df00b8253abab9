//! `fedshield certs`: the TLS certificates of a federation.
//!
//! - `certs ca` writes a CA (`ca.pem`, `ca.key`) that signs everything else.
//! - `certs server` writes the coordinator's certificate (`server.pem`, leaf only,
//!   and `server.key`) for its DNS names and IP addresses.
//! - `certs participant` writes a participant's client certificate (`<ID>.pem`,
//!   `<ID>.key`), whose subject CN is the participant id the coordinator sees,
//!   and prints its SHA-256 fingerprint, which revocation lists name.
//!
//! Private keys are created with mode 0600 and certificates 0644; each file is
//! written to a temporary file created with its final mode, then renamed, so a
//! key is never readable by others, not even briefly. Existing files are kept
//! unless `--force` is given.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedshield_core::ParticipantId;
use fedshield_proto::tls::pki::{CertificateAuthority, IssuedCertificate};
use fedshield_proto::tls::{load_certificates_pem, sha256_fingerprint};

use crate::cli::{CertsArgs, CertsCaArgs, CertsCommand, CertsParticipantArgs, CertsServerArgs};

/// Mode of private key files: owner read/write only.
const KEY_FILE_MODE: u32 = 0o600;
/// Mode of certificate files: public.
const CERT_FILE_MODE: u32 = 0o644;

/// File names inside `--out-dir` (and, for the CA, `--ca-dir`).
const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";

/// What one `certs` subcommand wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub sha256_fingerprint: String,
}

/// Runs `fedshield certs ...` and prints what it wrote.
pub fn run(args: CertsArgs) -> Result<()> {
    match args.command {
        CertsCommand::Ca(ca_args) => {
            let written = write_ca(&ca_args)?;
            print_written(&written);
        }
        CertsCommand::Server(server_args) => {
            let written = write_server(&server_args)?;
            print_written(&written);
        }
        CertsCommand::Participant(participant_args) => {
            let written = write_participant(&participant_args)?;
            print_written(&written);
            println!(
                "participant {} sha256 fingerprint {}",
                participant_args.id, written.sha256_fingerprint
            );
        }
    }
    Ok(())
}

/// Writes a new CA to `<out-dir>/ca.pem` and `<out-dir>/ca.key`.
pub fn write_ca(args: &CertsCaArgs) -> Result<WrittenCertificate> {
    let cert_path = args.out_dir.join(CA_CERT_FILE);
    let key_path = args.out_dir.join(CA_KEY_FILE);
    refuse_to_overwrite(&[&cert_path, &key_path], args.force)?;
    let authority = CertificateAuthority::generate(&args.name)
        .with_context(|| format!("failed to generate the CA {:?}", args.name))?;
    let (cert_pem, key_pem) = authority.to_pem();
    let issued = IssuedCertificate {
        sha256_fingerprint: fingerprint_of_pem(&cert_pem)?,
        cert_pem,
        key_pem,
    };
    write_pair(&args.out_dir, &issued, cert_path, key_path)
}

/// Writes the coordinator's certificate, signed by the CA in `--ca-dir`, to
/// `<out-dir>/server.pem` (the leaf alone) and `<out-dir>/server.key`.
pub fn write_server(args: &CertsServerArgs) -> Result<WrittenCertificate> {
    let cert_path = args.out_dir.join(SERVER_CERT_FILE);
    let key_path = args.out_dir.join(SERVER_KEY_FILE);
    refuse_to_overwrite(&[&cert_path, &key_path], args.force)?;
    let authority = read_ca(&args.ca_dir)?;
    let issued = authority
        .issue_server(&args.dns, &args.ip, args.days)
        .context("failed to issue the server certificate")?;
    write_pair(&args.out_dir, &issued, cert_path, key_path)
}

/// Writes participant `--id`'s client certificate, signed by the CA in
/// `--ca-dir`, to `<out-dir>/<id>.pem` and `<out-dir>/<id>.key`.
pub fn write_participant(args: &CertsParticipantArgs) -> Result<WrittenCertificate> {
    let participant_id = ParticipantId::new(args.id.as_str())
        .map_err(anyhow::Error::msg)
        .context("invalid --id")?;
    let cert_path = args
        .out_dir
        .join(format!("{}.pem", participant_id.as_str()));
    let key_path = args
        .out_dir
        .join(format!("{}.key", participant_id.as_str()));
    refuse_to_overwrite(&[&cert_path, &key_path], args.force)?;
    let authority = read_ca(&args.ca_dir)?;
    let issued = authority
        .issue_client(participant_id.as_str(), args.days)
        .with_context(|| {
            format!(
                "failed to issue the certificate of participant {}",
                participant_id.as_str()
            )
        })?;
    write_pair(&args.out_dir, &issued, cert_path, key_path)
}

fn read_ca(ca_dir: &Path) -> Result<CertificateAuthority> {
    let cert_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    let cert_pem = fs::read_to_string(&cert_path)
        .with_context(|| format!("failed to read the CA certificate {}", cert_path.display()))?;
    let key_pem = fs::read_to_string(&key_path)
        .with_context(|| format!("failed to read the CA private key {}", key_path.display()))?;
    CertificateAuthority::from_pem(&cert_pem, &key_pem).with_context(|| {
        format!(
            "failed to load the CA from {} and {}",
            cert_path.display(),
            key_path.display()
        )
    })
}

fn fingerprint_of_pem(cert_pem: &str) -> Result<String> {
    let certificates =
        load_certificates_pem(cert_pem).context("failed to parse a generated certificate")?;
    Ok(sha256_fingerprint(&certificates[0]))
}

fn refuse_to_overwrite(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if path.exists() {
            bail!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            );
        }
    }
    Ok(())
}

fn write_pair(
    out_dir: &Path,
    issued: &IssuedCertificate,
    cert_path: PathBuf,
    key_path: PathBuf,
) -> Result<WrittenCertificate> {
    fs::create_dir_all(out_dir)
        .with_context(|| format!("failed to create directory {}", out_dir.display()))?;
    // The key first: a certificate without its key is useless, the reverse is recoverable.
    write_file(&key_path, issued.key_pem.as_bytes(), KEY_FILE_MODE)?;
    write_file(&cert_path, issued.cert_pem.as_bytes(), CERT_FILE_MODE)?;
    Ok(WrittenCertificate {
        cert_path,
        key_path,
        sha256_fingerprint: issued.sha256_fingerprint.clone(),
    })
}

/// Writes `contents` to `path` with `mode`: into a new temporary file created
/// with that mode (so it is never wider, even for an instant), then renamed
/// over `path`. Renaming also replaces a file of wider mode under `--force`,
/// where opening the old file would have kept its mode.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(".tmp");
    let temporary_path = path.with_file_name(temporary_name);
    match fs::remove_file(&temporary_path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error)
                .with_context(|| format!("failed to remove stale {}", temporary_path.display()));
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary_path)
        .with_context(|| format!("failed to create {}", temporary_path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", temporary_path.display()))?;
    drop(file);
    fs::rename(&temporary_path, path).with_context(|| {
        format!(
            "failed to move {} to {}",
            temporary_path.display(),
            path.display()
        )
    })
}

fn print_written(written: &WrittenCertificate) {
    println!("wrote {}", written.cert_path.display());
    println!(
        "wrote {} (private key, mode 0600)",
        written.key_path.display()
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use clap::Parser;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::cli::{Cli, Command};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn certificate_der(path: &Path) -> Vec<u8> {
        let pem = fs::read_to_string(path).unwrap();
        let mut certificates = load_certificates_pem(&pem).unwrap();
        assert_eq!(
            certificates.len(),
            1,
            "{} holds the leaf only",
            path.display()
        );
        certificates.remove(0).to_vec()
    }

    fn ca_args(out_dir: &Path) -> CertsCaArgs {
        CertsCaArgs {
            out_dir: out_dir.to_path_buf(),
            name: "fedshield CA".to_string(),
            force: false,
        }
    }

    fn assert_key_and_cert_modes(written: &WrittenCertificate) {
        assert_eq!(mode_of(&written.key_path), KEY_FILE_MODE);
        let cert_mode = mode_of(&written.cert_path);
        // The umask may narrow 0644, never widen it.
        assert_eq!(cert_mode & !CERT_FILE_MODE, 0, "{cert_mode:o}");
        assert_eq!(cert_mode & 0o600, 0o600, "{cert_mode:o}");
    }

    #[test]
    fn ca_files_are_written_with_key_mode_0600() {
        let directory = tempfile::tempdir().unwrap();
        let out_dir = directory.path().join("ca");
        let written = write_ca(&ca_args(&out_dir)).unwrap();
        assert_eq!(written.cert_path, out_dir.join("ca.pem"));
        assert_eq!(written.key_path, out_dir.join("ca.key"));
        assert_key_and_cert_modes(&written);
        let der = certificate_der(&written.cert_path);
        assert_eq!(written.sha256_fingerprint, sha256_fingerprint(&der));
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert!(certificate.is_ca());
        assert_eq!(certificate.subject().to_string(), "CN=fedshield CA");
    }

    #[test]
    fn server_certificate_has_the_requested_names() {
        let directory = tempfile::tempdir().unwrap();
        let ca_dir = directory.path().join("ca");
        write_ca(&ca_args(&ca_dir)).unwrap();
        let out_dir = directory.path().join("coordinator");
        let cli = Cli::try_parse_from([
            "fedshield",
            "certs",
            "server",
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
            "--dns",
            "coordinator.example",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ])
        .unwrap();
        let Command::Certs(CertsArgs {
            command: CertsCommand::Server(server_args),
        }) = cli.command
        else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(server_args.days, 825);
        let written = write_server(&server_args).unwrap();
        assert_eq!(written.cert_path, out_dir.join("server.pem"));
        assert_eq!(written.key_path, out_dir.join("server.key"));
        assert_key_and_cert_modes(&written);

        let der = certificate_der(&written.cert_path);
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(certificate.subject().to_string(), "CN=coordinator.example");
        assert_eq!(certificate.issuer().to_string(), "CN=fedshield CA");
        let names = certificate.subject_alternative_name().unwrap().unwrap();
        let names = &names.value.general_names;
        assert!(names.contains(&GeneralName::DNSName("coordinator.example")));
        assert!(names.contains(&GeneralName::DNSName("localhost")));
        assert!(names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    }

    #[test]
    fn server_certificate_needs_a_name() {
        let parsed = Cli::try_parse_from([
            "fedshield",
            "certs",
            "server",
            "--ca-dir",
            "ca",
            "--out-dir",
            "out",
        ]);
        assert!(parsed.is_err());
    }

    #[test]
    fn participant_certificate_names_the_participant() {
        let directory = tempfile::tempdir().unwrap();
        let ca_dir = directory.path().join("ca");
        write_ca(&ca_args(&ca_dir)).unwrap();
        let args = CertsParticipantArgs {
            ca_dir,
            out_dir: directory.path().join("acme"),
            id: "acme-soc".to_string(),
            days: 365,
            force: false,
        };
        let written = write_participant(&args).unwrap();
        assert_eq!(written.cert_path, args.out_dir.join("acme-soc.pem"));
        assert_eq!(written.key_path, args.out_dir.join("acme-soc.key"));
        assert_key_and_cert_modes(&written);
        let der = certificate_der(&written.cert_path);
        assert_eq!(written.sha256_fingerprint, sha256_fingerprint(&der));
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(certificate.subject().to_string(), "CN=acme-soc");
        let usages = certificate.extended_key_usage().unwrap().unwrap().value;
        assert!(usages.client_auth);
    }

    #[test]
    fn participant_id_must_follow_the_id_rule() {
        let directory = tempfile::tempdir().unwrap();
        let ca_dir = directory.path().join("ca");
        write_ca(&ca_args(&ca_dir)).unwrap();
        let args = CertsParticipantArgs {
            ca_dir,
            out_dir: directory.path().join("out"),
            id: "../evil".to_string(),
            days: 365,
            force: false,
        };
        let message = format!("{:#}", write_participant(&args).unwrap_err());
        assert!(message.contains("invalid --id"), "{message}");
        assert!(!args.out_dir.exists());
    }

    #[test]
    fn missing_ca_is_named_in_the_error() {
        let directory = tempfile::tempdir().unwrap();
        let args = CertsParticipantArgs {
            ca_dir: directory.path().join("nowhere"),
            out_dir: directory.path().join("out"),
            id: "acme-soc".to_string(),
            days: 365,
            force: false,
        };
        let message = format!("{:#}", write_participant(&args).unwrap_err());
        assert!(message.contains("nowhere/ca.pem"), "{message}");
    }

    #[test]
    fn existing_key_is_kept_without_force() {
        let directory = tempfile::tempdir().unwrap();
        let out_dir = directory.path().join("ca");
        let first = write_ca(&ca_args(&out_dir)).unwrap();
        let first_key = fs::read(&first.key_path).unwrap();

        let message = format!("{:#}", write_ca(&ca_args(&out_dir)).unwrap_err());
        assert!(message.contains("already exists"), "{message}");
        assert!(message.contains("--force"), "{message}");
        assert_eq!(fs::read(&first.key_path).unwrap(), first_key);

        // With --force the key is replaced, and a key file of wider mode comes
        // back as 0600.
        fs::set_permissions(&first.key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let forced = write_ca(&CertsCaArgs {
            force: true,
            ..ca_args(&out_dir)
        })
        .unwrap();
        assert_ne!(fs::read(&forced.key_path).unwrap(), first_key);
        assert_ne!(forced.sha256_fingerprint, first.sha256_fingerprint);
        assert_key_and_cert_modes(&forced);
        let leftovers: Vec<_> = fs::read_dir(&out_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
