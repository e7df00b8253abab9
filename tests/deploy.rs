//! The deployment artifacts under deploy/, checked without a container engine: every
//! `fedshield` command line in the compose file, the Kubernetes manifests and the
//! systemd units uses real flags of its subcommand, every FEDSHIELD_* variable is a
//! real variable of its role, every embedded or mounted config file is valid
//! (`--print-config`), every referenced Secret, ConfigMap, volume and claim exists, and
//! the detector reads its events from a read-only mount and is probed on its metrics port.

mod config_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use config_support::{print_invocation_in_sandbox, repo_root};
use serde::Deserialize;
use serde_norway::Value;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Returns the string of a YAML scalar (numbers too: `"0"` may be written `0`).
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(on) => on.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// Returns a YAML list of scalars (or one string, split at whitespace).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items.iter().map(text).collect(),
        Some(Value::String(line)) => line.split_whitespace().map(str::to_string).collect(),
        Some(other) => panic!("expected a list, found {other:?}"),
    }
}

/// Checks a `fedshield` command line (without the program name): each subcommand and
/// each `--flag` must exist; returns the role it runs, if any.
fn check_invocation(where_: &str, args: &[String]) -> Option<String> {
    let mut command = fedshield::config::command();
    command.build();
    let mut current = &command;
    let mut path = Vec::new();
    for arg in args {
        if let Some(flag) = arg.strip_prefix("--") {
            let name = flag.split('=').next().unwrap();
            let known = name == "help"
                || current
                    .get_arguments()
                    .any(|candidate| candidate.get_long() == Some(name));
            assert!(
                known,
                "{where_}: `fedshield {}` has no flag --{name}",
                path.join(" ")
            );
        } else if let Some(subcommand) = current.find_subcommand(arg) {
            path.push(arg.clone());
            current = subcommand;
        }
    }
    assert!(
        !path.is_empty(),
        "{where_}: no fedshield subcommand in {args:?}"
    );
    let role = path.join(" ");
    fedshield::config::ROLES
        .contains(&role.as_str())
        .then_some(role)
}

/// Returns the value given to `--name` in `args` (`--name value` or `--name=value`).
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    args.iter().enumerate().find_map(|(index, arg)| {
        if *arg == long {
            args.get(index + 1).cloned()
        } else {
            arg.strip_prefix(&format!("{long}=")).map(str::to_string)
        }
    })
}

/// Checks that each FEDSHIELD_* variable is one `role` reads.
fn check_env_vars(where_: &str, role: &str, names: &[String]) {
    let mut command = fedshield::config::command();
    command.build();
    let role_command = command.find_subcommand(role).unwrap();
    let known: BTreeSet<String> = role_command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for name in names.iter().filter(|name| name.starts_with("FEDSHIELD_")) {
        assert!(
            known.contains(name),
            "{where_}: `fedshield {role}` reads no variable {name}"
        );
    }
}

/// Checks a config file of `role` as a deployment starts it: `fedshield <role> --config
/// FILE <args> --print-config` with `env`.
fn check_config(
    where_: &str,
    role: &str,
    config_text: &str,
    args: &[String],
    env: &[(String, String)],
) {
    let output = print_invocation_in_sandbox(role, config_text, args, env);
    assert!(
        output.status.success(),
        "{where_}: invalid {role} config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns the arguments after the role, without `--config FILE`.
fn args_besides_config(args: &[String]) -> Vec<String> {
    let mut rest = Vec::new();
    let mut skip_next = false;
    for arg in args.iter().skip(1) {
        if skip_next {
            skip_next = false;
        } else if arg == "--config" {
            skip_next = true;
        } else if !arg.starts_with("--config=") && arg != "--print-config" {
            rest.push(arg.clone());
        }
    }
    rest
}

/// Returns the `fedshield` invocations in a shell script: each command after a newline,
/// `;`, `&&`, `||` or `do` that starts with `fedshield`.
fn fedshield_commands_in_script(script: &str) -> Vec<Vec<String>> {
    script
        .split(['\n', ';'])
        .flat_map(|part| part.split("&&"))
        .flat_map(|part| part.split("||"))
        .filter_map(|part| {
            let words = shell_words(part);
            let start = words
                .iter()
                .position(|word| word != "do" && word != "then")?;
            (words[start] == "fedshield").then(|| words[start + 1..].to_vec())
        })
        .collect()
}

/// Splits a shell command into words, honouring double quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for character in line.chars() {
        match character {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            character if character.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            character => {
                word.push(character);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn compose_file_runs_real_flags_with_valid_configs_and_declared_volumes() {
    let compose_dir = repo_root().join("deploy/compose");
    let mut compose: Value =
        serde_norway::from_str(&read(&compose_dir.join("compose.yaml"))).unwrap();
    compose.apply_merge().unwrap();
    let declared_volumes: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(text)
        .collect();
    let services = compose["services"].as_mapping().unwrap();
    let service_names: BTreeSet<String> = services.keys().map(text).collect();
    let mut roles_run = BTreeSet::new();
    let mut certificates_made = 0;
    for (name, service) in services {
        let name = text(name);
        assert_eq!(
            service["image"].as_str(),
            Some("fedshield:latest"),
            "{name}: image"
        );
        let entrypoint = strings(service.get("entrypoint"));
        let command = match service.get("command") {
            Some(Value::String(line)) if !entrypoint.is_empty() => vec![line.clone()],
            other => strings(other),
        };
        let invocations = if entrypoint
            .first()
            .is_some_and(|program| program.ends_with("sh"))
        {
            assert_eq!(entrypoint.get(1).map(String::as_str), Some("-c"), "{name}");
            fedshield_commands_in_script(&command.join("\n"))
        } else {
            assert!(
                entrypoint.is_empty(),
                "{name}: the image's entrypoint is fedshield"
            );
            vec![command]
        };
        assert!(!invocations.is_empty(), "{name}: runs no fedshield command");

        let mounts: BTreeMap<String, String> = strings(service.get("volumes"))
            .iter()
            .map(|mount| {
                let mut parts = mount.split(':');
                let source = parts.next().unwrap().to_string();
                let target = parts
                    .next()
                    .unwrap_or_else(|| panic!("{name}: {mount}"))
                    .to_string();
                (target, source)
            })
            .collect();
        for source in mounts.values() {
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    compose_dir.join(source).exists(),
                    "{name}: {source} does not exist"
                );
            } else {
                assert!(
                    declared_volumes.contains(source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        if let Some(Value::Mapping(depends_on)) = service.get("depends_on") {
            for dependency in depends_on.keys().map(text) {
                assert!(
                    service_names.contains(&dependency),
                    "{name}: depends on {dependency}"
                );
            }
        }
        let env: Vec<(String, String)> = match service.get("environment") {
            Some(Value::Mapping(environment)) => environment
                .iter()
                .map(|(variable, value)| (text(variable), text(value)))
                .collect(),
            _ => Vec::new(),
        };
        let env_names: Vec<String> = env.iter().map(|(variable, _)| variable.clone()).collect();
        for args in invocations {
            let where_ = format!("compose service {name}");
            if args.first().map(String::as_str) == Some("certs") {
                certificates_made += 1;
            }
            let Some(role) = check_invocation(&where_, &args) else {
                continue;
            };
            check_env_vars(&where_, &role, &env_names);
            let config_path = flag_value(&args, "config")
                .unwrap_or_else(|| panic!("{where_}: {role} runs without --config"));
            let source = mounts
                .get(&config_path)
                .unwrap_or_else(|| panic!("{where_}: nothing is mounted at {config_path}"));
            check_config(
                &where_,
                &role,
                &read(&compose_dir.join(source)),
                &args_besides_config(&args),
                &env,
            );
            if role == "detect" {
                check_events_mount_is_read_only(
                    &where_,
                    &read(&compose_dir.join(source)),
                    &env,
                    &strings(service.get("volumes")),
                );
            }
            roles_run.insert((role, name.clone()));
        }
    }
    assert!(
        certificates_made >= 3,
        "the certs service makes the CA, server and participant certificates"
    );
    let participants = roles_run
        .iter()
        .filter(|(role, _)| role == "participant")
        .count();
    assert!(roles_run.iter().any(|(role, _)| role == "coordinator"));
    assert_eq!(participants, 3, "three participants");
    let detectors = roles_run
        .iter()
        .filter(|(role, _)| role == "detect")
        .count();
    assert_eq!(detectors, 1, "one detector");
}

/// Checks that a compose detector's events file (FEDSHIELD_EVENTS, else the config's
/// `events`) lies in a directory mounted read-only (`SOURCE:TARGET:ro`).
fn check_events_mount_is_read_only(
    where_: &str,
    config_text: &str,
    env: &[(String, String)],
    mounts: &[String],
) {
    let config_table: toml::Table = config_text.parse().unwrap();
    let events = env
        .iter()
        .find(|(variable, _)| variable == "FEDSHIELD_EVENTS")
        .map(|(_, value)| value.clone())
        .or_else(|| {
            config_table
                .get("events")
                .and_then(|value| value.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| panic!("{where_}: the detector reads no events file"));
    let directory = Path::new(&events).parent().unwrap();
    let mount = mounts
        .iter()
        .find(|mount| mount.split(':').nth(1).map(Path::new) == Some(directory))
        .unwrap_or_else(|| panic!("{where_}: nothing is mounted at {}", directory.display()));
    assert!(
        mount.ends_with(":ro"),
        "{where_}: the events directory is writable: {mount}"
    );
}

/// Returns every document of the Kubernetes resources the kustomization lists.
fn kubernetes_objects(dir: &Path) -> (Value, Vec<Value>) {
    let kustomization: Value =
        serde_norway::from_str(&read(&dir.join("kustomization.yaml"))).unwrap();
    let mut objects = Vec::new();
    for resource in strings(kustomization.get("resources")) {
        let resource_text = read(&dir.join(&resource));
        for document in serde_norway::Deserializer::from_str(&resource_text) {
            let object = Value::deserialize(document).unwrap();
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    (kustomization, objects)
}

fn named(objects: &[Value], kind: &str) -> BTreeMap<String, Value> {
    objects
        .iter()
        .filter(|object| object["kind"].as_str() == Some(kind))
        .map(|object| (text(&object["metadata"]["name"]), object.clone()))
        .collect()
}

#[test]
fn kubernetes_manifests_run_real_flags_with_valid_configs_and_existing_references() {
    let dir = repo_root().join("deploy/kubernetes");
    let (kustomization, objects) = kubernetes_objects(&dir);
    let config_maps = named(&objects, "ConfigMap");
    let claims = named(&objects, "PersistentVolumeClaim");
    // Secret name → its file names.
    let mut secrets: BTreeMap<String, BTreeSet<String>> = named(&objects, "Secret")
        .into_iter()
        .map(|(name, secret)| {
            let keys = ["data", "stringData"]
                .iter()
                .filter_map(|field| secret.get(*field).and_then(Value::as_mapping))
                .flat_map(|mapping| mapping.keys().map(text))
                .collect();
            (name, keys)
        })
        .collect();
    for generator in kustomization["secretGenerator"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let files = strings(generator.get("files"))
            .iter()
            .map(|file| file.split('=').next().unwrap().to_string())
            .collect();
        secrets.insert(text(&generator["name"]), files);
    }
    let deployments = named(&objects, "Deployment");
    let mut roles_run = Vec::new();
    for (name, deployment) in &deployments {
        let pod = &deployment["spec"]["template"]["spec"];
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            &deployment["spec"]["selector"]["matchLabels"], pod_labels,
            "{name}: selector"
        );
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().is_some(),
            "{name}: grace period"
        );
        let volumes: BTreeMap<String, Value> = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|volume| (text(&volume["name"]), volume.clone()))
            .collect();
        for (volume_name, volume) in &volumes {
            if let Some(config_map) = volume.get("configMap") {
                let config_map_name = text(&config_map["name"]);
                assert!(
                    config_maps.contains_key(&config_map_name),
                    "{name}: no ConfigMap {config_map_name}"
                );
            }
            if let Some(secret) = volume.get("secret") {
                let secret_name = text(&secret["secretName"]);
                assert!(
                    secrets.contains_key(&secret_name),
                    "{name}: no Secret {secret_name}"
                );
            }
            if let Some(claim) = volume.get("persistentVolumeClaim") {
                let claim_name = text(&claim["claimName"]);
                assert!(
                    claims.contains_key(&claim_name),
                    "{name}: volume {volume_name}: no claim {claim_name}"
                );
            }
        }
        for container in pod["containers"].as_sequence().unwrap() {
            let where_ = format!("Deployment {name}");
            let command = strings(container.get("command"));
            if let Some(program) = command.first() {
                assert!(program.ends_with("fedshield"), "{where_}: runs {program}");
            }
            let mut args: Vec<String> = command.iter().skip(1).cloned().collect();
            args.extend(strings(container.get("args")));
            let role = check_invocation(&where_, &args)
                .unwrap_or_else(|| panic!("{where_}: runs no role"));
            let env: Vec<(String, String)> = container["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|variable| (text(&variable["name"]), text(&variable["value"])))
                .collect();
            let env_names: Vec<String> = env.iter().map(|(variable, _)| variable.clone()).collect();
            check_env_vars(&where_, &role, &env_names);

            // Mount path → (file in the source or None for a directory, volume name, volume).
            let mut mounted_files: BTreeMap<PathBuf, (Option<String>, String, Value)> =
                BTreeMap::new();
            let mut read_only_mounts: BTreeSet<PathBuf> = BTreeSet::new();
            for mount in container["volumeMounts"].as_sequence().unwrap() {
                let volume_name = text(&mount["name"]);
                let volume = volumes
                    .get(&volume_name)
                    .unwrap_or_else(|| panic!("{where_}: mounts unknown volume {volume_name}"));
                let sub_path = mount.get("subPath").map(text);
                if mount.get("readOnly").and_then(Value::as_bool) == Some(true) {
                    read_only_mounts.insert(PathBuf::from(text(&mount["mountPath"])));
                }
                mounted_files.insert(
                    PathBuf::from(text(&mount["mountPath"])),
                    (sub_path, volume_name, volume.clone()),
                );
            }
            let config_path = PathBuf::from(
                flag_value(&args, "config").unwrap_or_else(|| panic!("{where_}: no --config")),
            );
            let (sub_path, _, volume) = mounted_files.get(&config_path).unwrap_or_else(|| {
                panic!("{where_}: nothing mounted at {}", config_path.display())
            });
            let config_map_name = text(&volume["configMap"]["name"]);
            let key = sub_path
                .clone()
                .expect("the config is mounted with subPath");
            let config_text = config_maps[&config_map_name]["data"][key.as_str()]
                .as_str()
                .unwrap_or_else(|| panic!("{where_}: ConfigMap {config_map_name} has no {key}"))
                .to_string();
            check_config(
                &where_,
                &role,
                &config_text,
                &args_besides_config(&args),
                &env,
            );

            // Every file the config names under a mounted directory is in its source.
            let config_table: toml::Table = config_text.parse().unwrap();
            for (setting, value) in &config_table {
                let Some(file) = value.as_str().filter(|file| file.starts_with('/')) else {
                    continue;
                };
                if setting.ends_with("_dir") {
                    continue;
                }
                let file = Path::new(file);
                let directory_mount =
                    mounted_files.iter().find(|(mount_path, (sub_path, _, _))| {
                        sub_path.is_none() && file.parent() == Some(mount_path.as_path())
                    });
                let (mount_path, (_, volume_name, volume)) = directory_mount.unwrap_or_else(|| {
                    panic!(
                        "{where_}: `{setting}` = {} is on no mounted volume",
                        file.display()
                    )
                });
                if setting == "events" {
                    // Written by the sensor, not shipped with the manifests: a data
                    // volume, which the detector must not be able to write.
                    assert!(
                        volume.get("persistentVolumeClaim").is_some()
                            || volume.get("hostPath").is_some(),
                        "{where_}: the events volume {volume_name} is no data volume"
                    );
                    assert!(
                        read_only_mounts.contains(mount_path),
                        "{where_}: the events volume {volume_name} is mounted writable"
                    );
                    continue;
                }
                let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
                let provided = if let Some(secret) = volume.get("secret") {
                    secrets[&text(&secret["secretName"])].contains(&file_name)
                } else if let Some(config_map) = volume.get("configMap") {
                    config_maps[&text(&config_map["name"])]["data"]
                        .get(file_name.as_str())
                        .is_some()
                } else {
                    false
                };
                assert!(
                    provided,
                    "{where_}: `{setting}`: volume {volume_name} has no {file_name}"
                );
            }
            if role == "detect" {
                check_detector_probes(&where_, container, &deployment["spec"]["template"]);
            }
            roles_run.push(role);
        }
    }
    assert_eq!(
        roles_run
            .iter()
            .filter(|role| *role == "coordinator")
            .count(),
        1
    );
    assert_eq!(
        roles_run
            .iter()
            .filter(|role| *role == "participant")
            .count(),
        3
    );
    assert_eq!(roles_run.iter().filter(|role| *role == "detect").count(), 1);

    for (name, service) in named(&objects, "Service") {
        let selector = &service["spec"]["selector"];
        let selects_a_pod = deployments.values().any(|deployment| {
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            selector
                .as_mapping()
                .unwrap()
                .iter()
                .all(|(label, value)| labels.get(label) == Some(value))
        });
        assert!(selects_a_pod, "Service {name} selects no Deployment's pods");
    }
}

/// Checks that the detector's probes ask `/healthz` on its `metrics` port, and that the
/// pod's Prometheus annotations name that port and `/metrics`.
fn check_detector_probes(where_: &str, container: &Value, pod_template: &Value) {
    let metrics_port = container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|port| port["name"].as_str() == Some("metrics"))
        .unwrap_or_else(|| panic!("{where_}: no container port named metrics"));
    let port_number = text(&metrics_port["containerPort"]);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let http_get = &container[probe]["httpGet"];
        assert_eq!(
            http_get["path"].as_str(),
            Some("/healthz"),
            "{where_}: {probe}"
        );
        let port = text(&http_get["port"]);
        assert!(
            port == "metrics" || port == port_number,
            "{where_}: {probe} probes port {port}"
        );
    }
    let annotations = &pod_template["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/scrape"].as_str(),
        Some("true"),
        "{where_}"
    );
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port_number.as_str()),
        "{where_}: the scrape annotation names another port"
    );
    assert_eq!(
        annotations["prometheus.io/path"].as_str(),
        Some("/metrics"),
        "{where_}"
    );
}

#[test]
fn systemd_units_run_real_flags_with_the_example_configs() {
    let dir = repo_root().join("deploy/systemd");
    // (role, unit, the config key of the StateDirectory).
    for (role, unit_name, state_key) in [
        ("coordinator", "fedshield-coordinator", "data_dir"),
        ("participant", "fedshield-participant", "data_dir"),
        ("detect", "fedshield-detector", "cache_dir"),
    ] {
        let unit_path = dir.join(format!("{unit_name}.service"));
        let unit = read(&unit_path);
        let where_ = unit_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut exec_lines = 0;
        for line in unit.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if !key.starts_with("ExecStart") {
                continue;
            }
            let words = shell_words(value);
            assert!(words[0].ends_with("/fedshield"), "{where_}: {line}");
            let ran = check_invocation(&where_, &words[1..]);
            assert_eq!(ran.as_deref(), Some(role), "{where_}: {line}");
            let config_path = flag_value(&words[1..], "config").expect("--config");
            let example_name = Path::new(&config_path).file_name().unwrap();
            let example = read(&repo_root().join("deploy/config").join(example_name));
            check_config(
                &where_,
                role,
                &example,
                &args_besides_config(&words[1..]),
                &[],
            );
            let example_table: toml::Table = example.parse().unwrap();
            let state_directory = unit
                .lines()
                .find_map(|line| line.strip_prefix("StateDirectory="))
                .expect("StateDirectory");
            assert_eq!(
                example_table[state_key].as_str(),
                Some(format!("/var/lib/{state_directory}").as_str()),
                "{where_}: StateDirectory is not the config's {state_key}"
            );
            exec_lines += 1;
        }
        assert!(exec_lines > 0, "{where_}: no ExecStart");
        for hardening in [
            "KillSignal=SIGTERM",
            "TimeoutStopSec=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "User=",
        ] {
            assert!(unit.contains(hardening), "{where_}: no {hardening}");
        }
    }
}

#[test]
fn container_image_runs_the_binary_as_a_non_root_user_with_a_data_volume() {
    let dockerfile = read(&repo_root().join("deploy/Dockerfile"));
    let stages = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    assert!(dockerfile.contains("cargo build --release"));
    for line in [
        "USER 10001:10001",
        "VOLUME [\"/var/lib/fedshield\"]",
        "ENTRYPOINT [\"fedshield\"]",
        "STOPSIGNAL SIGTERM",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile: no {line}");
    }
}
