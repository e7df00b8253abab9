//! Running `fedshield <role> --print-config` on config files in a sandbox directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Returns the repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the real binary in `dir` with `args`, with no FEDSHIELD_* variable from the
/// test's environment and the given `env` ones.
pub fn fedshield(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedshield"));
    command.current_dir(dir).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("FEDSHIELD_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the fedshield binary runs")
}

/// Returns stdout, panicking with stderr when the command failed.
pub fn stdout_of_success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// Rewrites a config file for a sandbox: every absolute path (a string starting with
/// '/') moves under `dir`, and files (not `*_dir` settings) are created there empty,
/// so settings that need an existing file are satisfied. Returns the rewritten TOML.
pub fn sandboxed(config_text: &str, dir: &Path) -> String {
    let mut table: toml::Table = config_text.parse().expect("the config is TOML");
    for (key, value) in table.iter_mut() {
        let toml::Value::String(text) = value else {
            continue;
        };
        let Some(relative) = text.strip_prefix('/') else {
            continue;
        };
        let moved = dir.join(relative);
        if !key.ends_with("_dir") {
            std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
            std::fs::write(&moved, b"").unwrap();
        }
        *value = toml::Value::String(moved.to_string_lossy().into_owned());
    }
    toml::to_string(&table).unwrap()
}

/// Runs `fedshield <role> --config <file> --print-config` on `config_text` in a fresh
/// sandbox, returning the binary's output.
pub fn print_config_in_sandbox(role: &str, config_text: &str) -> Output {
    let sandbox = tempfile::tempdir().unwrap();
    let text = sandboxed(config_text, sandbox.path());
    let path = sandbox.path().join(format!("{role}.toml"));
    std::fs::write(&path, text).unwrap();
    fedshield(
        sandbox.path(),
        &[role, "--config", path.to_str().unwrap(), "--print-config"],
        &[],
    )
}

/// Returns the value of `key` in a printed config, whether set (`key = v`) or shown at
/// its default (`# key = v`), as written.
pub fn printed_value(printed: &str, key: &str) -> Option<String> {
    printed.lines().find_map(|line| {
        let line = line.strip_prefix("# ").unwrap_or(line);
        let (line_key, value) = line.split_once(" = ")?;
        (line_key == key).then(|| value.to_string())
    })
}
