//! `fedshield bench rounds`: round overhead of a federation at scale.
//!
//! Starts the coordinator and K participants as separate processes of this
//! binary (`bench coordinator-node`, `bench participant-node`), so that each
//! one's peak resident memory is its own, on 127.0.0.1, optionally with
//! mutual TLS from a CA made for the run. The model is a flat vector of P
//! float32 parameters and each participant's local step is a no-op (it adds
//! a small constant), so a round is: announce, K downloads, K uploads,
//! FedAvg, store and publish the next version. One warm-up round, then R
//! timed rounds.
//!
//! Bytes moved are what crossed the coordinator's TCP connections in both
//! directions, as the kernel counts them (`ss`, so TLS and HTTP/2 framing
//! included), divided by the number of rounds (warm-up included; handshakes
//! and heartbeats are a few KiB).

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fedshield_proto::tls::pki::CertificateAuthority;
use serde::Serialize;
use serde_json::Value;

use super::loopback::{LoopbackTls, time_exchange};
use super::nodes::{SERVER_NAME, participant_ids};
use super::process::server_socket_bytes;
use crate::cli::BenchRoundsArgs;

/// Rounds run before the timed ones.
pub const NUM_WARMUP_ROUNDS: u64 = 1;

/// Memory allowed on top of the model-proportional part of the targets.
const MEMORY_ALLOWANCE_BYTES: u64 = 64 * 1024 * 1024;

/// What `bench rounds --json` prints.
#[derive(Debug, Serialize)]
pub struct RoundsReport {
    pub participants: usize,
    pub params: u64,
    pub tls: bool,
    pub secure_aggregation: bool,
    pub warmup_rounds: u64,
    pub rounds: u64,
    /// Timed rounds that completed (the warm-up excluded).
    pub rounds_completed: u64,
    pub rounds_abandoned: u64,
    /// Seconds of each timed round, announcement to publication.
    pub round_seconds: Vec<f64>,
    pub median_round_seconds: f64,
    pub max_round_seconds: f64,
    /// Bytes sent plus received on the coordinator's TCP connections, all
    /// rounds (0 where `ss` is unavailable).
    pub bytes_moved_total: u64,
    /// `bytes_moved_total` per round (warm-up included).
    pub bytes_moved_per_round: u64,
    /// The payload alone: K × P × 4 bytes down and as many up.
    pub min_bytes_per_round: u64,
    pub coordinator_peak_rss_bytes: u64,
    /// Peak of the first participant.
    pub participant_peak_rss_bytes: u64,
    /// Largest peak over all participants.
    pub max_participant_peak_rss_bytes: u64,
    /// 4 × P × 4 bytes + 64 MiB.
    pub coordinator_memory_target_bytes: u64,
    /// 3 × P × 4 bytes + 64 MiB.
    pub participant_memory_target_bytes: u64,
    pub baseline: Option<BaselineReport>,
}

/// The loopback baseline: a round's bytes (K × P × 4 down, as many up)
/// over one connection per core with nothing else to do.
#[derive(Debug, Serialize)]
pub struct BaselineReport {
    pub tcp_seconds: f64,
    pub tls_seconds: f64,
    /// Median round time over the baseline of the same transport (TLS with `--tls`).
    pub round_over_baseline: f64,
}

/// A started node process and its report lines.
struct Node {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    fn start(executable: &Path, arguments: &[String], stdin: Stdio) -> Result<Self> {
        let mut command = Command::new(executable);
        command
            .arg("bench")
            .args(arguments)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Nodes log errors only (a benchmark participant warns that it is
        // one, K times); RUST_LOG overrides.
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "error");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start {}", executable.display()))?;
        let stdout = child.stdout.take().context("child has no stdout")?;
        Ok(Node {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Returns the next report line, or an error if the process ended.
    fn next_report(&mut self) -> Result<Value> {
        loop {
            let line = self
                .lines
                .next()
                .context("the process ended without its report")?
                .context("failed to read a report line")?;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return Ok(value);
            }
        }
    }

    /// Reads report lines until the one whose event is `done`; returns the
    /// lines before it and that one.
    fn reports_until_done(&mut self) -> Result<(Vec<Value>, Value)> {
        let mut earlier = Vec::new();
        loop {
            let report = self.next_report()?;
            if report["event"] == "done" {
                return Ok((earlier, report));
            }
            earlier.push(report);
        }
    }
}

/// Stops every started process still running (on the error path).
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            if matches!(node.child.try_wait(), Ok(None)) {
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
    }
}

/// Runs `bench rounds` and prints its report.
///
/// # Errors
/// Bad arguments, a node that failed, or a round that did not complete.
pub async fn run(args: BenchRoundsArgs) -> Result<()> {
    if args.participants == 0 || args.params == 0 || args.rounds == 0 {
        bail!("--participants, --params and --rounds must be at least 1");
    }
    let (work_dir, remove_work_dir) = match &args.work_dir {
        Some(directory) => (directory.clone(), false),
        None => (
            std::env::temp_dir().join(format!("fedshield-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("failed to create {}", work_dir.display()))?;
    let orchestrated = {
        let args = args.clone();
        let work_dir = work_dir.clone();
        tokio::task::spawn_blocking(move || run_nodes(&args, &work_dir)).await?
    };
    if remove_work_dir {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let mut report = orchestrated?;
    if args.baseline {
        // The round's bytes each way, over one connection per core.
        let total_bytes_each_way = args.participants as u64 * u64::from(args.params) * 4;
        let num_connections = std::thread::available_parallelism()
            .map_or(2, usize::from)
            .min(args.participants);
        let bytes_each_way = total_bytes_each_way.div_ceil(num_connections as u64);
        let tls = LoopbackTls::generate()?;
        let tcp = median_of_three(|| time_exchange(num_connections, bytes_each_way, None)).await?;
        let tls_time =
            median_of_three(|| time_exchange(num_connections, bytes_each_way, Some(&tls))).await?;
        let same_transport = if args.tls { tls_time } else { tcp };
        report.baseline = Some(BaselineReport {
            tcp_seconds: tcp.as_secs_f64(),
            tls_seconds: tls_time.as_secs_f64(),
            round_over_baseline: report.median_round_seconds / same_transport.as_secs_f64(),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    if report.rounds_completed < args.rounds {
        bail!(
            "only {} of {} timed rounds completed",
            report.rounds_completed,
            args.rounds
        );
    }
    Ok(())
}

async fn median_of_three<F, Fut>(mut measure: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    let mut times = Vec::with_capacity(3);
    for _ in 0..3 {
        times.push(measure().await?);
    }
    times.sort();
    Ok(times[1])
}

/// Writes the run's certificates under `pki`: CA, server (localhost,
/// 127.0.0.1) and one client certificate per participant.
fn write_pki(pki: &Path, ids: &[String]) -> Result<()> {
    std::fs::create_dir_all(pki).with_context(|| format!("failed to create {}", pki.display()))?;
    let authority = CertificateAuthority::generate("fedshield bench CA")?;
    let write = |name: String, contents: &str| -> Result<()> {
        let path = pki.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("failed to write {}", path.display()))
    };
    write("ca.pem".to_string(), authority.cert_pem())?;
    let server = authority.issue_server(
        &[SERVER_NAME.to_string()],
        &[std::net::IpAddr::from([127, 0, 0, 1])],
        1,
    )?;
    write("server.pem".to_string(), &server.cert_pem)?;
    write("server.key".to_string(), &server.key_pem)?;
    for id in ids {
        let client = authority.issue_client(id, 1)?;
        write(format!("{id}.pem"), &client.cert_pem)?;
        write(format!("{id}.key"), &client.key_pem)?;
    }
    Ok(())
}

/// Starts the coordinator and the participants, waits for the rounds, stops
/// everything and returns the report (without the baseline).
fn run_nodes(args: &BenchRoundsArgs, work_dir: &Path) -> Result<RoundsReport> {
    let executable: PathBuf =
        std::env::current_exe().context("failed to find the fedshield executable")?;
    let ids = participant_ids(args.participants);
    if args.tls {
        write_pki(&work_dir.join("pki"), &ids)?;
    }
    let total_rounds = args.rounds + NUM_WARMUP_ROUNDS;
    let work_dir_text = work_dir.display().to_string();
    let mut coordinator_arguments = vec![
        "coordinator-node".to_string(),
        "--work-dir".to_string(),
        work_dir_text.clone(),
        "--participants".to_string(),
        args.participants.to_string(),
        "--params".to_string(),
        args.params.to_string(),
        "--rounds".to_string(),
        total_rounds.to_string(),
        "--max-concurrent-uploads".to_string(),
        args.max_concurrent_uploads.to_string(),
    ];
    if args.tls {
        coordinator_arguments.push("--tls".to_string());
    }
    if args.secure_aggregation {
        coordinator_arguments.push("--secure-aggregation".to_string());
    }
    let mut nodes = Nodes(Vec::with_capacity(args.participants + 1));
    nodes.0.push(Node::start(
        &executable,
        &coordinator_arguments,
        Stdio::piped(),
    )?);
    let listening = nodes.0[0].next_report()?;
    let address = listening["address"]
        .as_str()
        .context("the coordinator did not say where it listens")?
        .to_string();
    let port: u16 = address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("the coordinator's address {address} has no port"))?;
    let url = if args.tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    };
    for id in &ids {
        let mut arguments = vec![
            "participant-node".to_string(),
            "--work-dir".to_string(),
            work_dir_text.clone(),
            "--coordinator".to_string(),
            url.clone(),
            "--id".to_string(),
            id.clone(),
        ];
        if args.tls {
            arguments.push("--tls".to_string());
        }
        nodes
            .0
            .push(Node::start(&executable, &arguments, Stdio::piped())?);
    }
    let (round_lines, coordinator_done) = nodes.0[0].reports_until_done()?;
    // Read while every connection is still open; closing a node's stdin stops it.
    let bytes_moved_total = server_socket_bytes(port).unwrap_or(0);
    // Participants first, so none of them sees the coordinator go away.
    for node in &mut nodes.0[1..] {
        drop(node.child.stdin.take());
    }
    let mut participant_reports = Vec::with_capacity(args.participants);
    for node in &mut nodes.0[1..] {
        let (_, done) = node.reports_until_done()?;
        let _ = node.child.wait();
        participant_reports.push(done);
    }
    drop(nodes.0[0].child.stdin.take());
    let _ = nodes.0[0].child.wait();
    let mut all_round_seconds: Vec<(u64, f64)> = round_lines
        .iter()
        .filter(|line| line["event"] == "round")
        .filter_map(|line| Some((line["round"].as_u64()?, line["seconds"].as_f64()?)))
        .collect();
    all_round_seconds.sort_by_key(|(round, _)| *round);
    let round_seconds: Vec<f64> = all_round_seconds
        .iter()
        .skip(NUM_WARMUP_ROUNDS as usize)
        .map(|(_, seconds)| *seconds)
        .collect();
    let mut sorted = round_seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median_round_seconds = match sorted.len() {
        0 => f64::NAN,
        length if length % 2 == 1 => sorted[length / 2],
        length => (sorted[length / 2 - 1] + sorted[length / 2]) / 2.0,
    };
    let num_rounds_completed = coordinator_done["num_rounds_completed"]
        .as_u64()
        .unwrap_or(0);
    let peaks: Vec<u64> = participant_reports
        .iter()
        .map(|report| report["peak_rss_bytes"].as_u64().unwrap_or(0))
        .collect();
    let model_bytes = u64::from(args.params) * 4;
    Ok(RoundsReport {
        participants: args.participants,
        params: u64::from(args.params),
        tls: args.tls,
        secure_aggregation: args.secure_aggregation,
        warmup_rounds: NUM_WARMUP_ROUNDS,
        rounds: args.rounds,
        rounds_completed: round_seconds.len() as u64,
        rounds_abandoned: coordinator_done["num_rounds_abandoned"]
            .as_u64()
            .unwrap_or(0),
        median_round_seconds,
        max_round_seconds: sorted.last().copied().unwrap_or(f64::NAN),
        round_seconds,
        bytes_moved_total,
        bytes_moved_per_round: bytes_moved_total / num_rounds_completed.max(1),
        min_bytes_per_round: 2 * args.participants as u64 * model_bytes,
        coordinator_peak_rss_bytes: coordinator_done["peak_rss_bytes"].as_u64().unwrap_or(0),
        participant_peak_rss_bytes: peaks.first().copied().unwrap_or(0),
        max_participant_peak_rss_bytes: peaks.iter().copied().max().unwrap_or(0),
        coordinator_memory_target_bytes: 4 * model_bytes + MEMORY_ALLOWANCE_BYTES,
        participant_memory_target_bytes: 3 * model_bytes + MEMORY_ALLOWANCE_BYTES,
        baseline: None,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_table(report: &RoundsReport) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "fedshield bench rounds: {} participants x {} parameters ({:.1} MiB model), {}, {} warm-up + {} timed rounds",
        report.participants,
        report.params,
        mib(report.params * 4),
        match (report.tls, report.secure_aggregation) {
            (true, true) => "mutual TLS, secure aggregation",
            (true, false) => "mutual TLS",
            (false, true) => "plaintext, secure aggregation",
            (false, false) => "plaintext",
        },
        report.warmup_rounds,
        report.rounds
    );
    let _ = writeln!(
        out,
        "round time      median {:.3} s, max {:.3} s ({} rounds completed, {} abandoned)",
        report.median_round_seconds,
        report.max_round_seconds,
        report.rounds_completed,
        report.rounds_abandoned
    );
    let _ = writeln!(
        out,
        "bytes moved     {:.1} MiB per round on the coordinator's sockets ({:.1} MiB payload), {:.1} MiB in all",
        mib(report.bytes_moved_per_round),
        mib(report.min_bytes_per_round),
        mib(report.bytes_moved_total)
    );
    let _ = writeln!(
        out,
        "peak memory     coordinator {:.1} MiB (target < {:.1}), participant {:.1} MiB (largest {:.1}, target < {:.1})",
        mib(report.coordinator_peak_rss_bytes),
        mib(report.coordinator_memory_target_bytes),
        mib(report.participant_peak_rss_bytes),
        mib(report.max_participant_peak_rss_bytes),
        mib(report.participant_memory_target_bytes)
    );
    if let Some(baseline) = &report.baseline {
        let _ = writeln!(
            out,
            "loopback        same bytes over sockets: TCP {:.3} s, TLS {:.3} s; median round / baseline = {:.2}",
            baseline.tcp_seconds, baseline.tls_seconds, baseline.round_over_baseline
        );
    }
}
