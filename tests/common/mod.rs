//! Helpers shared by the end-to-end tests: real coordinators and
//! participants on 127.0.0.1 with ephemeral ports.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use fedshield_coordinator::{CoordinatorConfig, CoordinatorHandle};
use fedshield_core::telemetry::{OrgProfile, num_flow_features, synthetic_dataset};
use fedshield_core::{ModelSpec, ParticipantId};
use fedshield_participant::{Participant, ParticipantConfig, ParticipantEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
) -> (JoinHandle<()>, mpsc::UnboundedReceiver<ParticipantEvent>) {
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
