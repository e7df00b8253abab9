//! How a federation's processes end, over real processes with mutual TLS
//! on 127.0.0.1: a federation started for `--rounds N` ends with every
//! process exiting 0; a coordinator that keeps serving tells late
//! participants the federation is complete; a graceful stop is bounded by
//! its grace period even with a peer that never answers, and a second
//! signal stops at once; a participant meets a permanent condition (its
//! certificate names another id, the coordinator refuses it, its privacy
//! budget pays for no round) by exiting with that condition's status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fedshield_coordinator::registry::ModelRegistry;
use fedshield_core::ModelVersion;
use fedshield_proto::tls::pki::CertificateAuthority;

use common::{free_port, localhost_certificate, send_signal, send_sigterm};

/// Exit statuses of `fedshield participant` (docs/DEPLOY.md).
const EXIT_DENIED: i32 = 3;
const EXIT_IDENTITY_MISMATCH: i32 = 4;
const EXIT_BUDGET_EXHAUSTED: i32 = 5;
const EXIT_FORCED: i32 = 130;

/// A federation's files: its CA, the coordinator's certificate, one
/// certificate per organization and the registry, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    authority: CertificateAuthority,
}

impl Pki {
    /// Makes the CA and server certificate, and registers `members`.
    fn new(members: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::generate("lifecycle test CA").unwrap();
        std::fs::write(dir.path().join("ca.pem"), authority.cert_pem()).unwrap();
        let server = localhost_certificate(&authority);
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        let registry: String = members
            .iter()
            .map(|id| format!("[[participant]]\nid = \"{id}\"\n"))
            .collect();
        std::fs::write(dir.path().join("participants.toml"), registry).unwrap();
        let pki = Pki { dir, authority };
        for member in members {
            pki.issue(member);
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a client certificate for `id` (registered or not).
    fn issue(&self, id: &str) {
        let certificate = self.authority.issue_client(id, 1).unwrap();
        std::fs::write(self.path(&format!("{id}.pem")), &certificate.cert_pem).unwrap();
        std::fs::write(self.path(&format!("{id}.key")), &certificate.key_pem).unwrap();
    }
}

/// A running `fedshield` process whose stdout and stderr go to files.
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    fn start(pki: &Pki, name: &str, args: &[String]) -> Process {
        let stdout = pki.path(&format!("{name}.stdout"));
        let stderr = pki.path(&format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_fedshield"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start fedshield");
        Process {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit.
    fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit, and returns its exit
    /// code; panics with its logs if it does not exit.
    fn exit_code_within(&mut self, what: &str, timeout: Duration) -> Option<i32> {
        match self.exit_within(timeout) {
            Some(status) => status.code(),
            None => panic!(
                "{what} did not exit within {timeout:?}; its log:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits until the process's log holds `text`.
    fn wait_for_log(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited with {status} before logging {text:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A stopped process must be continued to be killed cleanly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Starts a coordinator on a free port with mutual TLS, quorum and minimum
/// `quorum`, a small model and `extra` flags; returns it and its port.
fn start_coordinator(pki: &Pki, quorum: usize, extra: &[&str]) -> (Process, u16) {
    // A port free a moment ago may be taken before the coordinator binds it.
    for _ in 0..20 {
        let port = free_port();
        let mut args: Vec<String> = [
            "coordinator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &text(&pki.path("coordinator")),
            "--tls-cert",
            &text(&pki.path("server.pem")),
            "--tls-key",
            &text(&pki.path("server.key")),
            "--tls-client-ca",
            &text(&pki.path("ca.pem")),
            "--participants",
            &text(&pki.path("participants.toml")),
            "--min-participants",
            &quorum.to_string(),
            "--quorum",
            &quorum.to_string(),
            "--round-deadline-secs",
            "60",
            "--hidden",
            "16",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend(extra.iter().map(ToString::to_string));
        let mut coordinator = Process::start(pki, "coordinator", &args);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if coordinator.stderr().contains("coordinator listening") {
                return (coordinator, port);
            }
            if coordinator.child.try_wait().unwrap().is_some() {
                assert!(
                    coordinator.stderr().contains("failed to listen"),
                    "the coordinator did not start:\n{}",
                    coordinator.stderr()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the coordinator did not start:\n{}",
                coordinator.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no free port for the coordinator");
}

/// Starts participant `id` presenting the certificate issued for `cert_id`.
fn start_participant(pki: &Pki, port: u16, id: &str, cert_id: &str, extra: &[&str]) -> Process {
    let mut args: Vec<String> = [
        "participant",
        "--coordinator",
        &format!("https://127.0.0.1:{port}"),
        "--tls-server-name",
        "localhost",
        "--id",
        id,
        "--tls-ca",
        &text(&pki.path("ca.pem")),
        "--tls-cert",
        &text(&pki.path(&format!("{cert_id}.pem"))),
        "--tls-key",
        &text(&pki.path(&format!("{cert_id}.key"))),
        "--data-dir",
        &text(&pki.path(id)),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if !extra.contains(&"--synthetic-records") {
        args.extend(["--synthetic-records".to_string(), "1000".to_string()]);
    }
    args.extend(extra.iter().map(ToString::to_string));
    Process::start(pki, id, &args)
}

fn latest_version(pki: &Pki) -> Option<ModelVersion> {
    let registry = ModelRegistry::open_local(&pki.path("coordinator")).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(registry.latest_version())
        .unwrap()
}

#[test]
fn a_federation_of_three_rounds_ends_with_every_process_exiting_0() {
    let pki = Pki::new(&["org-a", "org-b"]);
    let (mut coordinator, port) = start_coordinator(&pki, 2, &["--rounds", "3"]);
    let mut participants = [
        start_participant(&pki, port, "org-a", "org-a", &["--synthetic-org", "0"]),
        start_participant(&pki, port, "org-b", "org-b", &["--synthetic-org", "1"]),
    ];
    for participant in &mut participants {
        let code = participant.exit_code_within("a participant", Duration::from_secs(180));
        assert_eq!(code, Some(0), "{}", participant.stderr());
        let stdout = participant.stdout();
        assert!(
            stdout.contains("federation complete: 3 rounds published; final model version 3"),
            "{stdout}"
        );
    }
    let code = coordinator.exit_code_within("the coordinator", Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", coordinator.stderr());
    assert!(coordinator.stderr().contains("federation complete"));
    assert_eq!(latest_version(&pki), Some(ModelVersion(3)));
}

#[test]
fn a_coordinator_that_keeps_serving_tells_a_late_participant_the_federation_is_complete() {
    let pki = Pki::new(&["org-a", "org-b"]);
    let (mut coordinator, port) = start_coordinator(&pki, 1, &["--rounds", "1", "--keep-serving"]);
    let mut early = start_participant(&pki, port, "org-a", "org-a", &[]);
    assert_eq!(
        early.exit_code_within("the first participant", Duration::from_secs(120)),
        Some(0),
        "{}",
        early.stderr()
    );
    // Completion does not stop a coordinator that keeps serving.
    let mut late = start_participant(&pki, port, "org-b", "org-b", &[]);
    assert_eq!(
        late.exit_code_within("the late participant", Duration::from_secs(60)),
        Some(0),
        "{}",
        late.stderr()
    );
    assert!(
        late.stdout()
            .contains("federation complete: 1 rounds published; final model version 1"),
        "{}",
        late.stdout()
    );
    assert!(
        coordinator.child.try_wait().unwrap().is_none(),
        "the coordinator keeps serving: {}",
        coordinator.stderr()
    );
    // It trained in no round: the federation had ended when it joined.
    assert!(!late.stderr().contains("privacy spend recorded"));
    assert_eq!(latest_version(&pki), Some(ModelVersion(1)));
    send_sigterm(&coordinator.child);
    assert_eq!(
        coordinator.exit_code_within("the coordinator", Duration::from_secs(30)),
        Some(0),
        "{}",
        coordinator.stderr()
    );
}

/// Starts a coordinator waiting for two participants and one participant
/// that joined and was then stopped (SIGSTOP): it holds its connection
/// open and answers nothing.
fn coordinator_with_a_frozen_participant(grace_secs: &str) -> (Pki, Process, Process) {
    let pki = Pki::new(&["org-a", "org-b"]);
    let (coordinator, port) = start_coordinator(&pki, 2, &["--shutdown-grace-secs", grace_secs]);
    let mut frozen = start_participant(&pki, port, "org-a", "org-a", &[]);
    frozen.wait_for_log("joined coordinator", Duration::from_secs(60));
    send_signal(&frozen.child, "-STOP");
    (pki, coordinator, frozen)
}

#[test]
fn a_frozen_participant_holds_a_stopping_coordinator_no_longer_than_its_grace_period() {
    let (_pki, mut coordinator, _frozen) = coordinator_with_a_frozen_participant("2");
    let stopping = Instant::now();
    send_sigterm(&coordinator.child);
    let code = coordinator.exit_code_within("the coordinator", Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", coordinator.stderr());
    println!("stopped {:?} after SIGTERM", stopping.elapsed());
}

#[test]
fn a_second_signal_stops_a_coordinator_at_once() {
    let (_pki, mut coordinator, _frozen) = coordinator_with_a_frozen_participant("600");
    send_sigterm(&coordinator.child);
    coordinator.wait_for_log("shutdown signal received", Duration::from_secs(10));
    // The frozen participant's connection holds the graceful stop, for up
    // to the grace period of ten minutes.
    assert!(
        coordinator
            .exit_within(Duration::from_millis(500))
            .is_none(),
        "the graceful stop waits for the frozen participant: {}",
        coordinator.stderr()
    );
    send_sigterm(&coordinator.child);
    let code = coordinator.exit_code_within("the coordinator", Duration::from_secs(10));
    assert_eq!(code, Some(EXIT_FORCED), "{}", coordinator.stderr());
}

#[test]
fn a_participant_whose_certificate_names_another_id_exits_at_start() {
    let pki = Pki::new(&["org-a", "org-b"]);
    // No coordinator is needed: the check is made before connecting.
    let port = free_port();
    let mut participant = start_participant(&pki, port, "org-b", "org-a", &[]);
    let code = participant.exit_code_within("the participant", Duration::from_secs(30));
    assert_eq!(
        code,
        Some(EXIT_IDENTITY_MISMATCH),
        "{}",
        participant.stderr()
    );
    let stderr = participant.stderr();
    assert!(
        stderr.contains("is issued to participant \"org-a\", but --id is \"org-b\""),
        "{stderr}"
    );
}

#[test]
fn a_participant_the_coordinator_refuses_exits_instead_of_retrying() {
    let pki = Pki::new(&["org-a"]);
    // Signed by the federation's CA, but not in its registry.
    pki.issue("stranger");
    let (_coordinator, port) = start_coordinator(&pki, 1, &[]);
    let mut participant = start_participant(&pki, port, "stranger", "stranger", &[]);
    let code = participant.exit_code_within("the participant", Duration::from_secs(60));
    assert_eq!(code, Some(EXIT_DENIED), "{}", participant.stderr());
    let stderr = participant.stderr();
    assert!(
        stderr.contains("the coordinator refuses participant stranger"),
        "{stderr}"
    );
    assert!(stderr.contains("registry"), "{stderr}");
}

#[test]
fn a_participant_whose_budget_pays_for_no_round_exits_with_its_status() {
    let pki = Pki::new(&["org-a"]);
    let (_coordinator, port) = start_coordinator(&pki, 1, &["--rounds", "5", "--dp-epsilon", "3"]);
    let mut participant = start_participant(
        &pki,
        port,
        "org-a",
        "org-a",
        &["--synthetic-records", "5000", "--privacy-epsilon", "0.01"],
    );
    let code = participant.exit_code_within("the participant", Duration::from_secs(120));
    assert_eq!(
        code,
        Some(EXIT_BUDGET_EXHAUSTED),
        "{}",
        participant.stderr()
    );
    let stderr = participant.stderr();
    assert!(stderr.contains("privacy budget exhausted"), "{stderr}");
    assert!(stderr.contains("--privacy-epsilon"), "{stderr}");
    // It declined once and stopped: one warning, not one per round.
    assert_eq!(stderr.matches("round failed").count(), 1, "{stderr}");
}
