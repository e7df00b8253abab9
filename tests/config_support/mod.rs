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
    print_invocation_in_sandbox(role, config_text, &[], &[])
}

/// Moves an absolute path under `dir`, creating it as an empty file unless `is_dir`.
fn sandbox_path(dir: &Path, value: &str, is_dir: bool) -> String {
    let Some(relative) = value.strip_prefix('/') else {
        return value.to_string();
    };
    let moved = dir.join(relative);
    if !is_dir {
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        std::fs::write(&moved, b"").unwrap();
    }
    moved.to_string_lossy().into_owned()
}

/// Runs `fedshield <role> --config <file> <args> --print-config` with `env`, as a
/// deployment would start it, in a fresh sandbox: absolute paths in the file, the
/// arguments and the variables move under the sandbox. Returns the binary's output.
pub fn print_invocation_in_sandbox(
    role: &str,
    config_text: &str,
    args: &[String],
    env: &[(String, String)],
) -> Output {
    let sandbox = tempfile::tempdir().unwrap();
    let text = sandboxed(config_text, sandbox.path());
    let path = sandbox.path().join(format!("{role}.toml"));
    std::fs::write(&path, text).unwrap();
    let mut all_args = vec![
        role.to_string(),
        "--config".to_string(),
        path.to_string_lossy().into_owned(),
        "--print-config".to_string(),
    ];
    all_args.extend(
        args.iter()
            .map(|arg| sandbox_path(sandbox.path(), arg, false)),
    );
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(name, value)| {
            let is_dir = name.ends_with("_DIR");
            (name.clone(), sandbox_path(sandbox.path(), value, is_dir))
        })
        .collect();
    let arg_refs: Vec<&str> = all_args.iter().map(String::as_str).collect();
    let env_refs: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    fedshield(sandbox.path(), &arg_refs, &env_refs)
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
