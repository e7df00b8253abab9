//! The privacy lineage of a stored model across coordinator restarts. The
//! real binary trains DP rounds with participants over gRPC until its
//! `--rounds` are complete, and is started again on the same data directory
//! with weaker privacy flags: without `--accept-weaker-privacy` it refuses
//! (exit status 6), naming the stored guarantee and the flag, and changes
//! nothing stored; with it, it starts, warns, and the card it publishes
//! keeps the DP rounds' accounting and states that the model no longer has a
//! DP guarantee (never `privacy: null`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fedshield_coordinator::registry::ModelRegistry;
use fedshield_core::ModelVersion;
use fedshield_core::privacy::Guarantee;
use tokio_util::sync::CancellationToken;

use common::{free_port, start_participant, wait_until};

const PARTICIPANTS: [&str; 2] = ["acme-soc", "globex-sec"];

/// The stored federation's privacy flags: ε = 4 over 2 rounds for
/// participants with at least 1,500 records (what the test participants hold).
const DP_FLAGS: [&str; 6] = [
    "--rounds",
    "2",
    "--dp-epsilon",
    "4",
    "--dp-min-records",
    "1500",
];

/// How the stored guarantee reads in the refusal.
const STORED_GUARANTEE: &str = "the stored model (version 2) was trained with differential privacy, \
     promising record-level (ε = 4, δ = 0.00001)-DP over 2 rounds for participants with at least 1500 records";

/// The exit status of a coordinator whose privacy settings would weaken
/// the stored model's.
const PRIVACY_WEAKENED_STATUS: i32 = 6;

/// Returns the real coordinator on `port` over `data_dir` with `flags`
/// besides the round rules, its logs (plain text) written to `log`. It
/// stops by itself once its `--rounds` are complete.
fn coordinator(data_dir: &Path, port: u16, log: &Path, flags: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
    command
        .args(["coordinator", "--insecure", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--min-participants", "2", "--quorum", "2"])
        .args(["--round-deadline-secs", "60", "--hidden", "16"])
        .args(flags)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("FEDSHIELD_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

/// Waits for `child` to exit and returns its status; kills it and fails
/// after `timeout`.
async fn exit_status_within(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what}: still running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns every file under `directory` with its contents.
fn snapshot(directory: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs the test participants against the coordinator on `port` until
/// `version` is stored (which completes the federation: the participants
/// stop by themselves), then stops them.
async fn train_until(port: u16, work: &Path, registry: &ModelRegistry, version: u64) {
    let shutdown = CancellationToken::new();
    let url = format!("http://127.0.0.1:{port}");
    let tasks: Vec<_> = PARTICIPANTS
        .iter()
        .enumerate()
        .map(|(index, name)| start_participant(&url, name, index, work, shutdown.clone()).0)
        .collect();
    wait_until(
        &format!("model version {version}"),
        Duration::from_secs(180),
        || {
            let registry = registry.clone();
            async move { registry.latest_version().await.ok().flatten() >= Some(ModelVersion(version)) }
        },
    )
    .await;
    shutdown.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("participant stops")
            .expect("participant task does not panic")
            .expect("the participant meets no permanent refusal");
    }
}

/// Waits for the coordinator logging to `log` to end by itself, its
/// federation complete, after it started (its checks passed).
async fn ends_complete(child: &mut Child, log: &Path, what: &str) {
    let status = exit_status_within(child, Duration::from_secs(60), what).await;
    let text = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "{what}: exits 0\n{text}");
    assert!(
        text.contains("coordinator listening"),
        "{what}: started\n{text}"
    );
    assert!(
        text.contains("federation complete"),
        "{what}: complete\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_weakens_the_dp_lineage_is_refused_unless_acknowledged_and_cards_stay_honest()
 {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("coordinator");
    let registry = ModelRegistry::open_local(&data_dir).unwrap();

    // Two DP rounds, then a graceful stop.
    let port = free_port();
    let first_log = work.path().join("first.log");
    let mut first = coordinator(&data_dir, port, &first_log, &DP_FLAGS)
        .spawn()
        .unwrap();
    train_until(port, work.path(), &registry, 2).await;
    ends_complete(&mut first, &first_log, "the first run").await;
    let dp_card = registry.load_card(ModelVersion(2)).await.unwrap();
    let dp_privacy = dp_card.privacy.expect("DP rounds state their guarantee");
    assert_eq!(dp_privacy.guarantee, Guarantee::Dp);
    let promise = dp_privacy.promise.expect("the card records the promise");
    assert_eq!((promise.epsilon, promise.num_rounds), (4.0, 2));
    let stored = snapshot(&data_dir);

    // Weaker flags are refused, each named, and nothing stored changes.
    let refusals: [(&str, &[&str], &str); 3] = [
        (
            "without --dp-epsilon",
            &["--rounds", "3"],
            "--dp-epsilon is not given: rounds would train without differential privacy",
        ),
        (
            "with a larger ε",
            &[
                "--rounds",
                "2",
                "--dp-epsilon",
                "8",
                "--dp-min-records",
                "1500",
            ],
            "--dp-epsilon 8 is larger than the stored ε = 4",
        ),
        (
            "with more rounds at the same ε",
            &[
                "--rounds",
                "4",
                "--dp-epsilon",
                "4",
                "--dp-min-records",
                "1500",
            ],
            "the 2 rounds left of --rounds 4",
        ),
    ];
    for (index, (case, flags, reason)) in refusals.into_iter().enumerate() {
        let log = work.path().join(format!("refused-{index}.log"));
        let mut refused = coordinator(&data_dir, free_port(), &log, flags)
            .spawn()
            .unwrap();
        let status = exit_status_within(&mut refused, Duration::from_secs(60), case).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            status.code(),
            Some(PRIVACY_WEAKENED_STATUS),
            "{case}: refused\n{text}"
        );
        assert!(text.contains(STORED_GUARANTEE), "{case}:\n{text}");
        assert!(text.contains(reason), "{case}:\n{text}");
        assert!(text.contains("--accept-weaker-privacy"), "{case}:\n{text}");
        assert!(
            !text.contains("coordinator listening"),
            "{case}: never served\n{text}"
        );
        assert!(
            snapshot(&data_dir) == stored,
            "{case}: a refused start changed the stored state"
        );
    }
    // The stored flags themselves start (and find the federation complete).
    let same_log = work.path().join("same.log");
    let mut same = coordinator(&data_dir, free_port(), &same_log, &DP_FLAGS)
        .spawn()
        .unwrap();
    ends_complete(&mut same, &same_log, "a restart with the stored flags").await;

    // Acknowledged: it starts, warns, and trains a round without DP.
    let port = free_port();
    let acknowledged_log = work.path().join("acknowledged.log");
    let mut acknowledged = coordinator(
        &data_dir,
        port,
        &acknowledged_log,
        &["--rounds", "3", "--accept-weaker-privacy"],
    )
    .spawn()
    .unwrap();
    train_until(port, work.path(), &registry, 3).await;
    ends_complete(&mut acknowledged, &acknowledged_log, "the acknowledged run").await;
    let text = std::fs::read_to_string(&acknowledged_log).unwrap();
    let warning = text
        .lines()
        .find(|line| line.contains("PRIVACY WEAKENED"))
        .unwrap_or_else(|| panic!("no warning:\n{text}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("--dp-epsilon is not given"), "{warning}");

    let card = registry.load_card(ModelVersion(3)).await.unwrap();
    assert!(card.plan.dp_sgd.is_none(), "version 3 trained without DP");
    let privacy = card
        .privacy
        .expect("a version trained after DP rounds never says privacy: null");
    assert_eq!(privacy.guarantee, Guarantee::NoDp);
    assert_eq!(privacy.num_rounds_without_dp, 1);
    let without_dp: Vec<&str> = privacy
        .contributors_without_dp
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(without_dp, PARTICIPANTS);
    // The DP rounds' accounting is kept, not dropped.
    assert_eq!(privacy.participants, dp_privacy.participants);
    assert_eq!(privacy.epsilon, dp_privacy.epsilon);
    let [weakening] = privacy.weakenings.as_slice() else {
        panic!("one weakening recorded: {:?}", privacy.weakenings);
    };
    assert_eq!(weakening.since_version, 2);
    assert_eq!(weakening.previous, Some(promise));
    assert_eq!(weakening.next, None);
    assert!(weakening.reasons[0].contains("--dp-epsilon is not given"));

    // A model without a guarantee has nothing left to weaken.
    let after_log = work.path().join("after.log");
    let mut after = coordinator(&data_dir, free_port(), &after_log, &["--rounds", "3"])
        .spawn()
        .unwrap();
    ends_complete(&mut after, &after_log, "a restart on a model without DP").await;
}
