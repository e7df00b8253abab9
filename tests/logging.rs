//! The binary's logs: plain text, without ANSI colour codes, when stderr is not a
//! terminal (a file, a pipe, a log collector).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Starts a coordinator with stderr to a pipe, with `env`, and returns its log up to
/// and including the line that says it is listening; then stops it.
fn coordinator_log_until_listening(env: &[(&str, &str)]) -> String {
    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
    command
        .current_dir(work.path())
        .args(["coordinator", "--insecure", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("FEDSHIELD_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut coordinator = command.spawn().expect("the fedshield binary runs");
    let stderr = coordinator.stderr.take().expect("stderr is piped");
    let mut log = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("the log is UTF-8");
        log.push_str(&line);
        log.push('\n');
        if line.contains("coordinator listening") {
            break;
        }
    }
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    assert!(
        log.contains("coordinator listening"),
        "the coordinator stopped before listening:\n{log}"
    );
    log
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let log = coordinator_log_until_listening(&[]);
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in logs written to a pipe:\n{log:?}"
    );
}
