//! Helpers shared by the end-to-end tests: real coordinators and
//! participants on 127.0.0.1 with ephemeral ports.

#![allow(dead_code)]

pub mod federation;
pub mod raw;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedshield_coordinator::participants::ParticipantRegistry;
use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle, CoordinatorTls, HttpsSettings};
use fedshield_core::telemetry::{OrgProfile, num_flow_features, synthetic_dataset};
use fedshield_core::{ModelSpec, ParticipantId};
use fedshield_participant::{Participant, ParticipantConfig, ParticipantEvent};
use fedshield_proto::tls::pki::{CertificateAuthority, IssuedCertificate};
use fedshield_proto::tls::{client_tls_config, https_server_config_pem, server_config_pem};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A participant running in a task, as [`Participant::run`] ends.
pub type ParticipantTask =
    JoinHandle<fedshield_participant::error::Result<fedshield_participant::RunEnd>>;

/// The model used by end-to-end tests.
pub fn test_spec() -> ModelSpec {
    ModelSpec::mlp(num_flow_features() as u32, vec![16], 2)
}

/// Starts a coordinator on 127.0.0.1:0.
pub async fn start_coordinator(
    config: CoordinatorConfig,
    shutdown: CancellationToken,
) -> CoordinatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    fedshield_coordinator::start(config, listener, shutdown)
        .await
        .expect("coordinator starts")
}

/// Starts a participant of synthetic organization `org_index`.
pub fn start_participant(
    url: &str,
    name: &str,
    org_index: usize,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> (ParticipantTask, mpsc::UnboundedReceiver<ParticipantEvent>) {
    let config = ParticipantConfig::for_test(
        url.to_string(),
        ParticipantId::new(name).unwrap(),
        data_dir.join(name),
    );
    let data = synthetic_dataset(OrgProfile::for_org(org_index), 1500, 100 + org_index as u64);
    let (events_sender, events) = mpsc::unbounded_channel();
    let participant = Participant::new(config, data)
        .unwrap()
        .with_events(events_sender);
    (tokio::spawn(participant.run(shutdown)), events)
}

/// The real telemetry samples, read in place from `../shared`.
const TELEMETRY_SAMPLES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/telemetry-samples"
);

/// Returns the path of a telemetry sample, failing when the samples are absent.
pub fn telemetry_sample(relative_path: &str) -> PathBuf {
    let path = Path::new(TELEMETRY_SAMPLES_DIR).join(relative_path);
    assert!(
        path.is_file(),
        "the telemetry samples are required: {} is missing",
        path.display()
    );
    path
}

/// Polls `condition` every 20ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits until the open round of `engine` has accepted `num_accepted`
/// updates; `what` names them in the timeout's message.
pub async fn wait_for_accepted_updates(
    engine: &fedshield_coordinator::Engine,
    num_accepted: usize,
    what: &str,
    timeout: Duration,
) {
    wait_until(what, timeout, || {
        let engine = engine.clone();
        async move {
            engine
                .status()
                .open_round
                .is_some_and(|round| round.accepted.len() == num_accepted)
        }
    })
    .await;
}

/// What [`curl`] fetched.
pub struct Fetched {
    /// HTTP status; 0 if curl got no response.
    pub status: u16,
    /// Response headers, lower-cased.
    pub headers: String,
    pub body: Vec<u8>,
}

/// Runs curl against `url`, trusting the test CA `ca.pem` in `work`, with
/// `extra` arguments (headers, client certificates).
pub fn curl(url: &str, work: &Path, extra: &[&str]) -> Fetched {
    let body_path = work.join("curl-body");
    let headers_path = work.join("curl-headers");
    let _ = std::fs::remove_file(&body_path);
    let _ = std::fs::remove_file(&headers_path);
    let output = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "--cacert"])
        .arg(work.join("ca.pem"))
        .arg("-o")
        .arg(&body_path)
        .arg("-D")
        .arg(&headers_path)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    Fetched {
        status: String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers_path)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        body: std::fs::read(&body_path).unwrap_or_default(),
    }
}

/// Whether curl is installed.
pub fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
}

/// Returns whether `program` runs (with `version_flag`). When it does not, the calling
/// test fails, unless `FEDSHIELD_ALLOW_MISSING_TOOLS` names it (comma-separated, e.g.
/// `curl,ss`): then this prints that the test skips and returns false.
pub fn tool_or_allowed_skip(program: &str, version_flag: &str) -> bool {
    let runs = std::process::Command::new(program)
        .arg(version_flag)
        .output()
        .is_ok_and(|output| output.status.success());
    if runs {
        return true;
    }
    let allowed = std::env::var("FEDSHIELD_ALLOW_MISSING_TOOLS").unwrap_or_default();
    assert!(
        allowed.split(',').any(|name| name.trim() == program),
        "{program} is not installed: install it, or set FEDSHIELD_ALLOW_MISSING_TOOLS={program} to skip what needs it"
    );
    println!("SKIPPED: {program} is not installed (FEDSHIELD_ALLOW_MISSING_TOOLS)");
    false
}

/// Returns a port on 127.0.0.1 that was free a moment ago, for processes
/// that must be told their address before they bind it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM to `child`.
pub fn send_sigterm(child: &std::process::Child) {
    send_signal(child, "-TERM");
}

/// Sends `signal` (`-TERM`, `-STOP`, …) to `child`.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill sends a signal");
    assert!(status.success(), "kill {signal}");
}

/// Returns a server certificate from `authority` for `localhost` and
/// 127.0.0.1, valid for a day.
pub fn localhost_certificate(authority: &CertificateAuthority) -> IssuedCertificate {
    authority
        .issue_server(
            &["localhost".to_string()],
            &[std::net::IpAddr::from([127, 0, 0, 1])],
            1,
        )
        .unwrap()
}

/// Returns the client TLS settings of participant `name`: a fresh client
/// certificate from `authority`, valid for a day, and `authority` as the
/// coordinator's CA (its certificate names `localhost`).
pub fn participant_tls(
    authority: &CertificateAuthority,
    name: &str,
) -> tonic::transport::ClientTlsConfig {
    let certificate = authority.issue_client(name, 1).unwrap();
    client_tls_config(
        authority.cert_pem(),
        &certificate.cert_pem,
        &certificate.key_pem,
        "localhost",
    )
}

/// Returns the coordinator's mutual-TLS settings: `server` as its
/// certificate, clients verified against `authority`, `registry` deciding
/// who may connect (not reloaded from a file).
pub fn coordinator_tls(
    authority: &CertificateAuthority,
    server: &IssuedCertificate,
    registry: ParticipantRegistry,
) -> CoordinatorTls {
    CoordinatorTls {
        server_config: server_config_pem(&server.cert_pem, &server.key_pem, authority.cert_pem())
            .unwrap(),
        registry,
        registry_path: None,
    }
}

/// Returns the settings of the coordinator's HTTPS endpoint on
/// 127.0.0.1:0 with `server` as its certificate and the API tokens at
/// `tokens_path`.
pub fn https_settings(
    authority: &CertificateAuthority,
    server: &IssuedCertificate,
    tokens_path: std::path::PathBuf,
) -> HttpsSettings {
    HttpsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        server_config: https_server_config_pem(
            &server.cert_pem,
            &server.key_pem,
            authority.cert_pem(),
        )
        .unwrap(),
        tokens_path,
        dashboard_sessions: Default::default(),
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|character| character.is_ascii_alphanumeric() || "_:".contains(character))
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Parses the Prometheus / OpenMetrics text exposition format strictly
/// enough to catch malformed output: every line is a `# HELP`, `# TYPE`,
/// `# UNIT` or the final `# EOF`, or a sample `name{label="value",...}
/// number` whose name was declared by a `# TYPE` line. Returns each series
/// (name with labels) and its value.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "exposition must end with # EOF");
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let name = parts.next().unwrap_or_default();
            let rest = parts.next().unwrap_or_default();
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            match keyword {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&rest),
                        "bad type in {line:?}"
                    );
                    declared.insert(name.to_string(), rest.to_string());
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value = parse_value(value).unwrap_or_else(|| panic!("bad value in {line:?}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for label in labels.split(',') {
                    let (label_name, label_value) = label.split_once('=').unwrap();
                    assert!(is_metric_name(label_name), "bad label in {line:?}");
                    assert!(
                        label_value.len() >= 2
                            && label_value.starts_with('"')
                            && label_value.ends_with('"'),
                        "bad label value in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(is_metric_name(name), "bad sample name in {line:?}");
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|family| declared.contains_key(*family))
            })
            .unwrap_or(name);
        assert!(
            declared.contains_key(family),
            "sample {name} has no # TYPE line"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

/// Returns the value of `series` in parsed `samples`.
pub fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:?}", samples.keys()))
}
