//! Crash safety of the coordinator: the real binary is killed with SIGKILL in
//! the middle of a round and started again on the same data directory. No
//! published version is lost or corrupted, the interrupted round is re-opened
//! under its id and completes, and the participant processes (never
//! restarted by hand) reconnect by themselves and carry on.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedshield_coordinator::artifacts::ArtifactStore;
use fedshield_coordinator::registry::{ModelRegistry, weights_name};
use fedshield_core::ModelVersion;

use common::{free_port, send_sigterm};

const NUM_ROUNDS: u64 = 4;

fn fedshield() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Runs a future to completion on a runtime of its own (the registry's
/// artifact store is asynchronous; these tests drive processes with threads).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn start_coordinator(port: u16, data_dir: &Path) -> Child {
    start_coordinator_with(port, data_dir, NUM_ROUNDS, &[], &[])
}

fn start_coordinator_with(
    port: u16,
    data_dir: &Path,
    rounds: u64,
    args: &[&str],
    env: &[(&str, String)],
) -> Child {
    // The port of the killed process may take a moment to be free again.
    for _ in 0..50 {
        let mut child = fedshield()
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .args(["coordinator", "--insecure", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--min-participants",
                "2",
                "--quorum",
                "2",
                "--rounds",
                &rounds.to_string(),
                "--round-deadline-secs",
                "60",
                "--hidden",
                "16",
            ])
            .args(args)
            .spawn()
            .expect("start the coordinator");
        std::thread::sleep(Duration::from_millis(300));
        match child.try_wait().unwrap() {
            None => return child,
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    panic!("the coordinator did not start on port {port}");
}

fn start_participant(port: u16, name: &str, org: usize, data_dir: &Path) -> Child {
    fedshield()
        .args(["participant", "--insecure", "--coordinator"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--id", name, "--synthetic-org", &org.to_string()])
        .args(["--synthetic-records", "4000"])
        .arg("--data-dir")
        .arg(data_dir.join(name))
        .spawn()
        .expect("start a participant")
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn a_coordinator_killed_mid_round_resumes_and_loses_no_published_version() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("coordinator");
    let port = free_port();
    let mut coordinator = start_coordinator(port, &data_dir);
    let mut participants = vec![
        start_participant(port, "org-a", 0, work.path()),
        start_participant(port, "org-b", 1, work.path()),
    ];
    let registry = ModelRegistry::open_local(&data_dir).unwrap();

    // Kill it while the round on version 1 is open.
    wait_for(
        "round 2 to open on version 1",
        Duration::from_secs(120),
        || {
            registry
                .open_round_record()
                .ok()
                .flatten()
                .is_some_and(|record| record.base_version == 1)
        },
    );
    let interrupted = registry.open_round_record().unwrap().unwrap();
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let survived = block_on(registry.latest_version()).unwrap().unwrap();
    assert!(survived >= ModelVersion(1));

    let mut restarted = start_coordinator(port, &data_dir);
    wait_for(
        "every round after the restart",
        Duration::from_secs(180),
        || block_on(registry.latest_version()).ok().flatten() == Some(ModelVersion(NUM_ROUNDS)),
    );
    // `--rounds` counts over the federation's whole history, restart
    // included: after the last round every process ends by itself, the
    // participants (never restarted by hand) told so by the restarted
    // coordinator. Its graceful stop writes the last round's history
    // record, appended after its version is announced, before it exits.
    assert!(
        exits_cleanly_within(&mut restarted, Duration::from_secs(30)),
        "the coordinator exits with status 0 once the federation is complete"
    );
    for participant in &mut participants {
        assert!(
            exits_cleanly_within(participant, Duration::from_secs(30)),
            "a participant exits with status 0 once the federation is complete"
        );
    }

    // Every version is there and intact (weights match their card's sha256).
    for version in 0..=NUM_ROUNDS {
        let model = block_on(registry.load(ModelVersion(version)))
            .unwrap_or_else(|error| panic!("version {version}: {error}"));
        assert_eq!(model.card.version, version);
        if version > 0 {
            assert_eq!(model.card.parent, Some(version - 1));
        }
    }
    // The round history survived the kill (a record the kill cut off was
    // rebuilt from its model card at the restart): every published version
    // once, in order.
    let (records, num_completed, _) = registry.round_history(100).unwrap();
    assert_eq!(num_completed, NUM_ROUNDS);
    let published: Vec<u64> = records
        .iter()
        .filter_map(|record| record.published)
        .collect();
    assert_eq!(published, (1..=NUM_ROUNDS).collect::<Vec<u64>>());
    // The interrupted round was re-opened under its id and published the
    // next version (unless it had published just before the kill).
    println!(
        "killed with round {} open on version 1; version {survived} had been published",
        interrupted.round_id
    );
    if survived == ModelVersion(1) {
        let next = block_on(registry.load(ModelVersion(2))).unwrap();
        assert_eq!(next.card.round_id, Some(interrupted.round_id));
    }
}

#[test]
fn a_corrupted_stored_version_is_refused_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let registry = ModelRegistry::open_local(work.path()).unwrap();
    let spec = fedshield_core::ModelSpec::mlp(4, vec![3], 2);
    let weights = fedshield_core::ModelWeights::init(spec.clone(), 1).unwrap();
    let card = fedshield_core::card::ModelCard {
        version: 0,
        parent: None,
        sha256: weights.sha256(),
        num_params: weights.params.len() as u64,
        spec,
        round_id: None,
        contributors: Vec::new(),
        num_examples: 0,
        plan: fedshield_core::TrainingPlan::new(),
        created_unix_ms: 0,
        feature_schema: None,
        feature_schema_sha256: None,
        metrics: None,
        privacy: None,
        aggregation: None,
        calibration: None,
    };
    block_on(
        registry.store(&fedshield_coordinator::registry::PublishedModel {
            version: ModelVersion(0),
            weights,
            card,
        }),
    )
    .unwrap();
    block_on(registry.load(ModelVersion(0))).unwrap();
    // Flip one byte of the last parameter.
    let path = work
        .path()
        .join("models")
        .join(weights_name(ModelVersion(0)));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let error = block_on(registry.load(ModelVersion(0)))
        .unwrap_err()
        .to_string();
    assert!(error.contains("sha256"), "{error}");
    assert!(error.contains("model-v00000000.safetensors"), "{error}");
    // A card whose weights are gone is refused too, naming the missing object.
    std::fs::remove_file(&path).unwrap();
    let error = block_on(registry.load(ModelVersion(0)))
        .unwrap_err()
        .to_string();
    assert!(error.contains("missing"), "{error}");
    assert!(error.contains("model-v00000000.safetensors"), "{error}");
}

#[test]
fn the_round_history_keeps_complete_records_and_drops_a_torn_last_one() {
    use fedshield_coordinator::registry::RoundRecord;
    let work = tempfile::tempdir().unwrap();
    let registry = ModelRegistry::open_local(work.path()).unwrap();
    let record = |round_id: u64, published: Option<u64>| RoundRecord {
        round_id,
        base_version: round_id - 1,
        published,
        contributors: vec!["org-a".to_string()],
        duration_ms: 12,
        reason: "test".to_string(),
        finished_unix_ms: 1,
    };
    registry.append_round(&record(1, Some(1))).unwrap();
    registry.append_round(&record(2, None)).unwrap();
    registry.append_round(&record(3, Some(2))).unwrap();
    // A crash in the middle of the next append.
    let path = work.path().join("state").join("rounds.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"round_id\":4,\"base_");
    std::fs::write(&path, text).unwrap();
    let (records, num_completed, num_abandoned) = registry.round_history(2).unwrap();
    assert_eq!((num_completed, num_abandoned), (2, 1));
    assert_eq!(records, vec![record(2, None), record(3, Some(2))]);
    // The next append cuts the torn line off and starts cleanly.
    registry.append_round(&record(4, Some(3))).unwrap();
    let (records, num_completed, _) = registry.round_history(10).unwrap();
    assert_eq!(num_completed, 3);
    assert_eq!(records.len(), 4);
    assert_eq!(records[3], record(4, Some(3)));
}

/// A real S3-compatible server (moto's) on 127.0.0.1. `moto_server` is
/// looked up in `FEDSHIELD_MOTO_SERVER`, then on PATH; without it the S3
/// test is skipped, unless `FEDSHIELD_REQUIRE_S3=1` (set by `.ci/run`,
/// which installs it) makes that a failure.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3_server() -> Option<S3Server> {
    let program =
        std::env::var("FEDSHIELD_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string());
    let port = free_port();
    let child = match Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var("FEDSHIELD_REQUIRE_S3").as_deref() != Ok("1"),
                "FEDSHIELD_REQUIRE_S3=1 but {program} cannot be started: {error}"
            );
            eprintln!("SKIPPED: no S3-compatible test server ({program}: {error})");
            return None;
        }
    };
    let server = S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    wait_for("the S3 server to listen", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(server)
}

#[test]
fn model_versions_in_s3_compatible_storage_survive_a_coordinator_kill() {
    let Some(s3) = start_s3_server() else {
        return;
    };
    let bucket = "fedshield-models";
    let created = Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT"])
        .arg(format!("{}/{bucket}", s3.endpoint))
        .output()
        .expect("curl creates the bucket");
    assert!(created.status.success(), "{created:?}");
    let url = format!("s3://{bucket}/production/models");
    // The coordinator reads its S3 settings from the environment, the test
    // passes the same ones as options.
    let options = [
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
    ];
    let env: Vec<(&str, String)> = options
        .iter()
        .map(|(key, value)| {
            (
                match *key {
                    "aws_endpoint" => "AWS_ENDPOINT",
                    "aws_allow_http" => "AWS_ALLOW_HTTP",
                    "aws_region" => "AWS_REGION",
                    "aws_access_key_id" => "AWS_ACCESS_KEY_ID",
                    _ => "AWS_SECRET_ACCESS_KEY",
                },
                value.to_string(),
            )
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("coordinator");
    let registry = ModelRegistry::open(
        &data_dir,
        ArtifactStore::from_url_with(&url, &options).unwrap(),
    )
    .unwrap();
    let port = free_port();
    let args = ["--artifact-store", url.as_str()];
    let mut coordinator = start_coordinator_with(port, &data_dir, NUM_ROUNDS, &args, &env);
    let mut participants = [
        start_participant(port, "org-a", 0, work.path()),
        start_participant(port, "org-b", 1, work.path()),
    ];
    wait_for(
        "version 1 in the bucket and round 2 open",
        Duration::from_secs(120),
        || {
            registry
                .open_round_record()
                .ok()
                .flatten()
                .is_some_and(|record| record.base_version == 1)
        },
    );
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();

    let mut restarted = start_coordinator_with(port, &data_dir, NUM_ROUNDS, &args, &env);
    wait_for(
        "every round after the restart",
        Duration::from_secs(180),
        || block_on(registry.latest_version()).ok().flatten() == Some(ModelVersion(NUM_ROUNDS)),
    );
    // After the last round every process ends by itself.
    for child in participants.iter_mut().chain([&mut restarted]) {
        assert!(
            exits_cleanly_within(child, Duration::from_secs(30)),
            "every process exits with status 0 once the federation is complete"
        );
    }
    // Every version is in the bucket, intact, in one chain.
    for version in 0..=NUM_ROUNDS {
        let model = block_on(registry.load(ModelVersion(version)))
            .unwrap_or_else(|error| panic!("version {version}: {error}"));
        if version > 0 {
            assert_eq!(model.card.parent, Some(version - 1));
        }
    }
    // Nothing went to the local disk but the coordinator's state.
    assert!(!data_dir.join("models").exists());
    // A corrupted object in the bucket is refused with the reason.
    let store = registry.artifacts();
    block_on(store.put(
        &weights_name(ModelVersion(1)),
        bytes::Bytes::from_static(b"not a model"),
    ))
    .unwrap();
    let error = block_on(registry.load(ModelVersion(1)))
        .unwrap_err()
        .to_string();
    assert!(error.contains("model-v00000001.safetensors"), "{error}");
    assert!(error.contains("not a valid model file"), "{error}");
}

/// Waits for `child` to exit by itself and returns whether it exited 0.
fn exits_cleanly_within(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("still running after {timeout:?}");
}

#[test]
fn sigterm_stops_participants_and_the_coordinator_cleanly_and_keeps_their_state() {
    // More rounds than the test lets run: SIGTERM, not completion, stops them.
    const MANY_ROUNDS: u64 = 1_000_000;
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("coordinator");
    let port = free_port();
    let mut coordinator = start_coordinator_with(port, &data_dir, MANY_ROUNDS, &[], &[]);
    let mut participants = vec![
        start_participant(port, "org-a", 0, work.path()),
        start_participant(port, "org-b", 1, work.path()),
    ];
    let registry = ModelRegistry::open_local(&data_dir).unwrap();
    wait_for("version 1", Duration::from_secs(120), || {
        block_on(registry.latest_version())
            .ok()
            .flatten()
            .is_some_and(|version| version >= ModelVersion(1))
    });
    for participant in &mut participants {
        send_sigterm(participant);
        assert!(
            exits_cleanly_within(participant, Duration::from_secs(15)),
            "a participant exits with status 0 on SIGTERM"
        );
    }
    send_sigterm(&coordinator);
    assert!(
        exits_cleanly_within(&mut coordinator, Duration::from_secs(15)),
        "the coordinator exits with status 0 on SIGTERM"
    );
    // Everything published is intact, and the participants' privacy ledgers
    // and model caches are still readable by a restarted participant.
    let latest = block_on(registry.latest_version()).unwrap().unwrap();
    for version in 0..=latest.0 {
        block_on(registry.load(ModelVersion(version)))
            .unwrap_or_else(|error| panic!("version {version}: {error}"));
    }
    let mut restarted = start_coordinator_with(port, &data_dir, MANY_ROUNDS, &[], &[]);
    let mut participant = start_participant(port, "org-a", 0, work.path());
    let mut other = start_participant(port, "org-b", 1, work.path());
    wait_for(
        "a round after the restart",
        Duration::from_secs(120),
        || {
            block_on(registry.latest_version())
                .ok()
                .flatten()
                .is_some_and(|version| version > latest)
        },
    );
    for child in [&mut participant, &mut other, &mut restarted] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
