//! Config files of the roles: the examples in deploy/config, errors that name the key,
//! precedence of flags, variables, file and defaults, and `--print-config`.
//! Every test runs the real binary with `--print-config`: nothing starts.

mod config_support;

use std::path::Path;

use config_support::{
    fedshield, print_config_in_sandbox, printed_value, repo_root, sandboxed, stdout_of_success,
};
use fedshield::config::{ROLES, role_settings};

fn example(role: &str) -> String {
    let path = repo_root()
        .join("deploy/config")
        .join(format!("{role}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn every_example_config_prints_back_the_settings_it_sets() {
    for role in ROLES {
        let sandbox = tempfile::tempdir().unwrap();
        let text = sandboxed(&example(role), sandbox.path());
        let path = sandbox.path().join("example.toml");
        std::fs::write(&path, &text).unwrap();
        let printed = stdout_of_success(
            &fedshield(
                sandbox.path(),
                &[role, "--config", path.to_str().unwrap(), "--print-config"],
                &[],
            ),
            &format!("{role} --print-config of the example"),
        );
        let example_table: toml::Table = text.parse().unwrap();
        let printed_table: toml::Table = printed
            .parse()
            .unwrap_or_else(|error| panic!("{role}: printed config is not TOML: {error}"));
        for (key, value) in &example_table {
            let printed_value = printed_table
                .get(key)
                .unwrap_or_else(|| panic!("{role}: `{key}` set in the example is not printed"));
            assert_eq!(
                printed_value.to_string(),
                value.to_string(),
                "{role}: `{key}`"
            );
        }

        let printed_path = sandbox.path().join("printed.toml");
        std::fs::write(&printed_path, &printed).unwrap();
        let printed_again = stdout_of_success(
            &fedshield(
                sandbox.path(),
                &[
                    role,
                    "--config",
                    printed_path.to_str().unwrap(),
                    "--print-config",
                ],
                &[],
            ),
            &format!("{role} --print-config of its own output"),
        );
        assert_eq!(
            printed_again, printed,
            "{role}: printed config fed back differs"
        );
    }
}

#[test]
fn every_example_config_documents_every_setting_of_its_role() {
    for role in ROLES {
        let text = example(role);
        for key in role_settings(role) {
            let documented = text.lines().any(|line| {
                let line = line.strip_prefix("# ").unwrap_or(line);
                line.starts_with(&format!("{key} = "))
            });
            assert!(
                documented,
                "deploy/config/{role}.toml does not document `{key}` (add `{key} = ...` or `# {key} = ...` under its help; `fedshield {role} --print-config` prints it)"
            );
        }
    }
}

/// Writes `lines` as a config file in `dir` and runs `role --config FILE --print-config`
/// with `args`; returns (success, stdout, stderr).
fn check(dir: &Path, role: &str, lines: &str, args: &[&str]) -> (bool, String, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, lines).unwrap();
    let mut all_args = vec![role, "--config", path.to_str().unwrap(), "--print-config"];
    all_args.extend_from_slice(args);
    let output = fedshield(dir, &all_args, &[]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn each_kind_of_bad_value_gives_an_error_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    let cases: &[(&str, &str, &[&str], &str, &str)] = &[
        (
            "coordinator",
            "qourum = 3",
            &["--insecure"],
            "`qourum`",
            "did you mean `quorum`?",
        ),
        (
            "coordinator",
            "listen = \"not-an-address\"",
            &["--insecure"],
            "`listen`",
            "invalid socket address",
        ),
        (
            "coordinator",
            "listen = 7070",
            &["--insecure"],
            "`listen`",
            "invalid socket address",
        ),
        (
            "coordinator",
            "min_participants = -1",
            &["--insecure"],
            "`min_participants`",
            "invalid value '-1'",
        ),
        (
            "coordinator",
            "quorum = \"two\"",
            &["--insecure"],
            "`quorum`",
            "invalid value 'two'",
        ),
        (
            "coordinator",
            "rounds = 10\ndp_epsilon = 0",
            &["--insecure"],
            "`dp_epsilon`",
            "must be finite and positive",
        ),
        (
            "coordinator",
            "rounds = 10\ndp_epsilon = -2.5",
            &["--insecure"],
            "`dp_epsilon`",
            "must be finite and positive",
        ),
        (
            "coordinator",
            "aggregation = \"krum:x\"",
            &["--insecure"],
            "`aggregation`",
            "aggregation rule",
        ),
        (
            "coordinator",
            "model_kind = \"cnn\"",
            &["--insecure"],
            "`model_kind`",
            "possible values",
        ),
        (
            "coordinator",
            "tls_cert = \"missing.pem\"",
            &[],
            "`tls_cert`",
            "missing.pem does not exist",
        ),
        (
            "coordinator",
            "insecure = \"yes\"",
            &[],
            "`insecure`",
            "expected true or false",
        ),
        (
            "coordinator",
            "listen = [\"127.0.0.1:1\"]",
            &["--insecure"],
            "`listen`",
            "expected one value",
        ),
        (
            "coordinator",
            "[tls]\ncert = \"server.pem\"",
            &["--insecure"],
            "`tls`",
            "no sections",
        ),
        (
            "coordinator",
            "hidden = [64, \"wide\"]",
            &["--insecure"],
            "`hidden`",
            "invalid value 'wide'",
        ),
        (
            "participant",
            "id = \"acme\"\nprivacy_epsilon = 0",
            &[],
            "`privacy_epsilon`",
            "must be finite and positive",
        ),
        (
            "participant",
            "id = \"acme\"\nprivacy_delta = 2",
            &[],
            "`privacy_delta`",
            "must be in (0, 0.01]",
        ),
        (
            "participant",
            "id = \"acme\"\nsynthetic_records = -5",
            &[],
            "`synthetic_records`",
            "invalid value '-5'",
        ),
        (
            "participant",
            "id = \"acme\"\ncoordinatr = \"https://x:1\"",
            &[],
            "`coordinatr`",
            "did you mean `coordinator`?",
        ),
        (
            "detect",
            "model = \"model.safetensors\"\npoll_secs = 0",
            &[],
            "`poll_secs`",
            "invalid value '0'",
        ),
        (
            "detect",
            "model = \"model.safetensors\"\nformat = \"xml\"",
            &[],
            "`format`",
            "possible values",
        ),
        (
            "detect",
            "model = \"model.safetensors\"\nschema = \"nope.toml\"",
            &[],
            "`schema`",
            "does not exist",
        ),
    ];
    for (role, lines, args, key, problem) in cases {
        let (success, stdout, stderr) = check(dir.path(), role, lines, args);
        assert!(!success, "{role} accepted {lines:?}: {stdout}");
        assert!(stdout.is_empty(), "{role} printed a config for {lines:?}");
        assert!(
            stderr.contains("bad.toml") && stderr.contains(key) && stderr.contains(problem),
            "{role} {lines:?}: expected the file, {key} and {problem:?} in: {stderr}"
        );
    }
}

#[test]
fn every_problem_of_a_config_file_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (success, _, stderr) = check(
        dir.path(),
        "coordinator",
        "quorum = -1\nlisten = \"nowhere\"\nmodel_kindd = \"classifier\"",
        &["--insecure"],
    );
    assert!(!success);
    for key in ["`quorum`", "`listen`", "`model_kindd`"] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
}

#[test]
fn invalid_toml_and_a_missing_config_file_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (success, _, stderr) = check(dir.path(), "coordinator", "quorum = = 2", &["--insecure"]);
    assert!(!success);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("not valid TOML"),
        "{stderr}"
    );

    let output = fedshield(
        dir.path(),
        &["participant", "--config", "absent.toml", "--print-config"],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absent.toml does not exist"), "{stderr}");
}

#[test]
fn rules_between_settings_hold_for_config_files_and_name_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), b"").unwrap();
    let (success, _, stderr) = check(
        dir.path(),
        "coordinator",
        "insecure = true\ntls_cert = \"server.pem\"",
        &[],
    );
    assert!(!success);
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("`insecure`")
            && stderr.contains("cannot be used with"),
        "{stderr}"
    );
}

/// Returns the printed value of `key` for `role` with `file_lines` (when given) as the
/// config, `env`, and `args`.
fn effective(
    role: &str,
    key: &str,
    file_lines: Option<&str>,
    env: &[(&str, &str)],
    args: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    let path = dir.path().join("role.toml");
    let mut all_args = vec![role, "--print-config"];
    if let Some(lines) = file_lines {
        std::fs::write(&path, lines).unwrap();
        all_args.extend(["--config", path.to_str().unwrap()]);
    }
    all_args.extend_from_slice(args);
    let printed = stdout_of_success(&fedshield(dir.path(), &all_args, env), role);
    printed_value(&printed, key).unwrap_or_else(|| panic!("{key} not printed: {printed}"))
}

/// One setting whose precedence is checked: its key, flag and variable, the settings
/// the role needs besides it (as flags), and whether its values are addresses.
struct PrecedenceCase {
    role: &'static str,
    key: &'static str,
    flag: &'static str,
    variable: &'static str,
    required: &'static [&'static str],
    is_address: bool,
}

#[test]
fn flags_win_over_variables_which_win_over_the_file_which_wins_over_defaults() {
    let cases = [
        PrecedenceCase {
            role: "coordinator",
            key: "quorum",
            flag: "--quorum",
            variable: "FEDSHIELD_QUORUM",
            required: &["--insecure", "--min-participants=10"],
            is_address: false,
        },
        PrecedenceCase {
            role: "coordinator",
            key: "listen",
            flag: "--listen",
            variable: "FEDSHIELD_LISTEN",
            required: &["--insecure"],
            is_address: true,
        },
        PrecedenceCase {
            role: "participant",
            key: "synthetic_records",
            flag: "--synthetic-records",
            variable: "FEDSHIELD_SYNTHETIC_RECORDS",
            required: &[
                "--id",
                "acme",
                "--insecure",
                "--coordinator=http://127.0.0.1:7070",
            ],
            is_address: false,
        },
        PrecedenceCase {
            role: "detect",
            key: "poll_secs",
            flag: "--poll-secs",
            variable: "FEDSHIELD_POLL_SECS",
            required: &["--model", "model.safetensors"],
            is_address: false,
        },
    ];
    for case in &cases {
        let PrecedenceCase {
            role,
            key,
            flag,
            variable,
            required,
            is_address,
        } = case;
        let (file_value, env_value, flag_value, quoted) = if *is_address {
            ("127.0.0.1:5", "127.0.0.1:7", "127.0.0.1:9", true)
        } else {
            ("5", "7", "9", false)
        };
        let file_line = if quoted {
            format!("{key} = \"{file_value}\"")
        } else {
            format!("{key} = {file_value}")
        };
        let show = |value: &str| {
            if quoted {
                format!("\"{value}\"")
            } else {
                value.to_string()
            }
        };
        let flag_arg = format!("{flag}={flag_value}");
        let mut with_flag: Vec<&str> = required.to_vec();
        with_flag.push(&flag_arg);
        let env = [(*variable, env_value)];
        assert_eq!(
            effective(role, key, Some(&file_line), &env, &with_flag),
            show(flag_value),
            "{role} {key}: the flag wins"
        );
        assert_eq!(
            effective(role, key, Some(&file_line), &env, required),
            show(env_value),
            "{role} {key}: the variable wins over the file"
        );
        assert_eq!(
            effective(role, key, Some(&file_line), &[], required),
            show(file_value),
            "{role} {key}: the file wins over the default"
        );
        let default = effective(role, key, None, &[], required);
        assert_ne!(default, show(file_value), "{role} {key}: default");
        assert_eq!(
            effective(role, key, Some(""), &[], required),
            default,
            "{role} {key}: an empty file keeps the default"
        );
    }
}

#[test]
fn required_settings_may_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "id = \"acme-soc\"\n").unwrap();
    let printed = stdout_of_success(
        &fedshield(
            dir.path(),
            &[
                "participant",
                "--config",
                "p.toml",
                "--insecure",
                "--coordinator=http://127.0.0.1:7070",
                "--print-config",
            ],
            &[],
        ),
        "participant with its id in the file",
    );
    assert!(printed.contains("\nid = \"acme-soc\"\n"), "{printed}");
}

#[test]
fn print_config_leaves_no_files_behind() {
    for (role, lines) in [
        (
            "coordinator",
            "insecure = true\ndata_dir = \"data/coordinator\"\napi_tokens = \"tokens.toml\"",
        ),
        (
            "participant",
            "id = \"acme\"\ndata_dir = \"data/participant\"\ninsecure = true\ncoordinator = \"http://127.0.0.1:7070\"",
        ),
        (
            "detect",
            "coordinator = \"http://127.0.0.1:1\"\ninsecure = true\nschema = \"schema.toml\"\ncache_dir = \"cache\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("role.toml"), lines).unwrap();
        std::fs::write(dir.path().join("schema.toml"), b"").unwrap();
        stdout_of_success(
            &fedshield(
                dir.path(),
                &[role, "--config", "role.toml", "--print-config"],
                &[],
            ),
            role,
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["role.toml", "schema.toml"],
            "{role} left files behind"
        );
    }
}

#[test]
fn printed_config_shows_paths_to_keys_and_never_their_contents() {
    let dir = tempfile::tempdir().unwrap();
    let key_text = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";
    for name in ["ca.pem", "acme.pem", "acme.key"] {
        std::fs::write(dir.path().join(name), key_text).unwrap();
    }
    let printed = stdout_of_success(
        &fedshield(
            dir.path(),
            &[
                "participant",
                "--id",
                "acme",
                "--tls-ca",
                "ca.pem",
                "--tls-cert",
                "acme.pem",
                "--tls-key",
                "acme.key",
                "--print-config",
            ],
            &[],
        ),
        "participant with TLS files",
    );
    assert!(printed.contains("tls_key = \"acme.key\""), "{printed}");
    assert!(!printed.contains("PRIVATE KEY") && !printed.contains("secret"));
}

#[test]
fn subcommands_of_the_roles_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let budget = fedshield(
        dir.path(),
        &["participant", "budget", "--data-dir", "ledger", "--json"],
        &[],
    );
    stdout_of_success(&budget, "participant budget");
    let token = fedshield(
        dir.path(),
        &[
            "coordinator",
            "issue-token",
            "--data-dir",
            "data",
            "--name",
            "detector-1",
        ],
        &[],
    );
    stdout_of_success(&token, "coordinator issue-token");
    let example = print_config_in_sandbox("coordinator", &example("coordinator"));
    stdout_of_success(&example, "coordinator example");
}

#[test]
fn a_file_value_overridden_by_a_variable_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ca.pem", "acme.pem", "acme.key"] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    std::fs::write(
        dir.path().join("p.toml"),
        "id = \"acme\"\ntls_cert = \"/nonexistent/participant.pem\"\ntls_ca = \"ca.pem\"\ntls_key = \"acme.key\"\n",
    )
    .unwrap();
    let printed = stdout_of_success(
        &fedshield(
            dir.path(),
            &["participant", "--config", "p.toml", "--print-config"],
            &[("FEDSHIELD_TLS_CERT", "acme.pem")],
        ),
        "participant with its certificate from the environment",
    );
    assert_eq!(
        printed_value(&printed, "tls_cert").as_deref(),
        Some("\"acme.pem\"")
    );
}

/// Runs `role` with `args` and `env` in `dir`, once with `--print-config` and once to
/// start, and returns the error both give; panics unless both fail with that error
/// and `--print-config` prints no config.
fn refused_by_start_and_print_config(
    dir: &Path,
    role: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let mut start_args = vec![role];
    start_args.extend_from_slice(args);
    let mut print_args = start_args.clone();
    print_args.push("--print-config");
    let printed = fedshield(dir, &print_args, env);
    let started = fedshield(dir, &start_args, env);
    let printed_error = String::from_utf8_lossy(&printed.stderr).into_owned();
    let started_error = String::from_utf8_lossy(&started.stderr).into_owned();
    assert!(
        !started.status.success(),
        "{role} {args:?} started: {started_error}"
    );
    assert!(
        !printed.status.success(),
        "{role} {args:?} --print-config accepted what start refuses ({started_error}), printing:\n{}",
        String::from_utf8_lossy(&printed.stdout)
    );
    assert!(
        printed.stdout.is_empty(),
        "{role} {args:?} printed a config"
    );
    assert_eq!(
        printed_error, started_error,
        "{role} {args:?}: --print-config and start give different errors"
    );
    printed_error
}

#[test]
fn print_config_refuses_every_configuration_start_refuses_with_the_same_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "coordinator",
            &[
                "--insecure",
                "--min-participants=3",
                "--quorum=3",
                "--participants-per-round=2",
            ],
            &["--participants-per-round (2) is below --quorum (3)"],
        ),
        (
            "coordinator",
            &["--insecure", "--dp-epsilon=8"],
            &["--dp-epsilon needs --rounds"],
        ),
        (
            "coordinator",
            &[
                "--insecure",
                "--rounds=10",
                "--dp-epsilon=8",
                "--dp-min-records=10",
            ],
            &["--dp-min-records is 10", "--batch-size"],
        ),
        (
            "coordinator",
            &["--insecure", "--aggregation=median", "--quorum=2"],
            &["--quorum (2) is below the 3 updates --aggregation median needs"],
        ),
        (
            "coordinator",
            &[
                "--insecure",
                "--max-handshakes-per-ip=9",
                "--max-handshakes=4",
            ],
            &["--max-handshakes-per-ip (9) cannot exceed --max-handshakes (4)"],
        ),
        (
            "participant",
            &["--id=acme", "--insecure"],
            &["--insecure connects in plaintext: give an http:// --coordinator URL"],
        ),
        (
            "participant",
            &["--id=acme"],
            &["TLS is required: pass --tls-ca, --tls-cert and --tls-key"],
        ),
        (
            "participant",
            &[
                "--id=a cme",
                "--insecure",
                "--coordinator=http://127.0.0.1:1",
            ],
            &["--id: "],
        ),
        (
            "participant",
            &["--id=acme", "--insecure", "--coordinator=ftp://127.0.0.1:1"],
            &["--coordinator \"ftp://127.0.0.1:1\" must start with http:// or https://"],
        ),
        (
            "detect",
            &["--coordinator=https://127.0.0.1:1", "--cache-dir=cache"],
            &["TLS is required"],
        ),
        (
            "detect",
            &["--model=model.safetensors", "--threshold=NaN"],
            &["--threshold must be a finite number"],
        ),
    ];
    for (role, args, expected) in cases {
        let error = refused_by_start_and_print_config(dir.path(), role, args, &[]);
        for part in *expected {
            assert!(
                error.contains(part),
                "{role} {args:?}: expected {part:?} in: {error}"
            );
        }
        assert!(
            !error.contains("round.") && !error.contains("privacy."),
            "{role} {args:?}: a library's key in: {error}"
        );
    }
}

#[test]
fn problems_name_the_flag_variable_or_config_file_key_each_value_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("coordinator.toml");
    let config = config_path.to_str().unwrap();

    let from_flags = refused_by_start_and_print_config(
        dir.path(),
        "coordinator",
        &["--insecure", "--quorum=3", "--min-participants=2"],
        &[],
    );
    assert!(
        from_flags.contains("--quorum (3) cannot exceed --min-participants (2)"),
        "{from_flags}"
    );

    let from_variables = refused_by_start_and_print_config(
        dir.path(),
        "coordinator",
        &["--insecure"],
        &[
            ("FEDSHIELD_QUORUM", "3"),
            ("FEDSHIELD_MIN_PARTICIPANTS", "2"),
        ],
    );
    assert!(
        from_variables
            .contains("FEDSHIELD_QUORUM (3) cannot exceed FEDSHIELD_MIN_PARTICIPANTS (2)"),
        "{from_variables}"
    );

    let unparsable_variable = refused_by_start_and_print_config(
        dir.path(),
        "coordinator",
        &["--insecure"],
        &[("FEDSHIELD_QUORUM", "two")],
    );
    assert!(
        unparsable_variable.contains("invalid value 'two' for FEDSHIELD_QUORUM (--quorum)"),
        "{unparsable_variable}"
    );

    std::fs::write(&config_path, "quorum = 3\nrounds = 5\n").unwrap();
    let mixed = refused_by_start_and_print_config(
        dir.path(),
        "coordinator",
        &["--config", config, "--insecure", "--dp-epsilon=4"],
        &[("FEDSHIELD_MIN_PARTICIPANTS", "2")],
    );
    assert!(
        mixed.contains("`quorum` (3) cannot exceed FEDSHIELD_MIN_PARTICIPANTS (2)"),
        "{mixed}"
    );
    assert!(
        mixed.contains(&format!("(`quorum` from config file {config})")),
        "the file is named: {mixed}"
    );
    assert!(
        !mixed.contains("--dp-epsilon needs"),
        "`rounds` from the file counts: {mixed}"
    );

    std::fs::write(&config_path, "insecure = true\ndp_epsilon = 4\n").unwrap();
    let from_file =
        refused_by_start_and_print_config(dir.path(), "coordinator", &["--config", config], &[]);
    assert!(
        from_file.contains("`dp_epsilon` needs --rounds")
            && from_file.contains(&format!("(`dp_epsilon` from config file {config})")),
        "{from_file}"
    );
    for error in [&from_flags, &from_variables, &mixed, &from_file] {
        assert!(!error.contains("round."), "a library's key in: {error}");
    }
}

#[test]
fn hidden_in_a_config_file_takes_an_array_or_the_flags_comma_separated_string() {
    let dir = tempfile::tempdir().unwrap();
    let from_flag = stdout_of_success(
        &fedshield(
            dir.path(),
            &[
                "coordinator",
                "--insecure",
                "--hidden=128,16",
                "--print-config",
            ],
            &[],
        ),
        "--hidden 128,16",
    );
    assert_eq!(
        printed_value(&from_flag, "hidden").as_deref(),
        Some("[128, 16]")
    );
    for (lines, printed) in [
        ("hidden = \"128,16\"", "[128, 16]"),
        ("hidden = [128, 16]", "[128, 16]"),
        ("hidden = \"8\"", "[8]"),
        ("hidden = 8", "[8]"),
    ] {
        let (success, stdout, stderr) = check(dir.path(), "coordinator", lines, &["--insecure"]);
        assert!(success, "{lines}: {stderr}");
        assert_eq!(
            printed_value(&stdout, "hidden").as_deref(),
            Some(printed),
            "{lines}"
        );
        assert!(
            stdout.contains(&format!("\nhidden = {printed}\n")),
            "{lines}: {stdout}"
        );
    }
    for lines in ["hidden = \"128;16\"", "hidden = 1.5", "hidden = [[128]]"] {
        let (success, _, stderr) = check(dir.path(), "coordinator", lines, &["--insecure"]);
        assert!(!success, "{lines} accepted");
        assert!(
            stderr.contains("bad.toml")
                && stderr.contains("key `hidden`")
                && stderr.contains("`hidden` takes a list: an array, `hidden = [64, 32]`, or one string of values separated by ',', `hidden = \"64,32\"`"),
            "{lines}: {stderr}"
        );
    }
}
