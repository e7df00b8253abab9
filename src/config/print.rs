//! `--print-config`: the effective settings of a role, written as a config file
//! that `--config` takes back.

use std::collections::BTreeSet;

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::file::{is_switch, takes_many};
use super::{ROLES, command, is_setting, key_of};

/// Returns the effective config of the role `matches` runs, as TOML, if `--print-config`
/// was given.
pub fn print_config_requested(matches: &ArgMatches) -> Option<String> {
    let (role, role_matches) = matches.subcommand()?;
    if !ROLES.contains(&role) || role_matches.subcommand().is_some() {
        return None;
    }
    if !role_matches
        .try_get_one::<bool>("print_config")
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
    {
        return None;
    }
    Some(effective_config(role, role_matches))
}

/// Returns the settings of `role` as a config file: one `key = value` line per setting
/// (unset optional settings are commented out), each under its help text.
pub fn effective_config(role: &str, role_matches: &ArgMatches) -> String {
    let mut command = command();
    command.build();
    let role_command = command
        .find_subcommand(role)
        .expect("every role is a subcommand of the CLI");
    let mut text = format!(
        "# Effective `fedshield {role}` settings (flags > FEDSHIELD_* variables > config file > defaults).\n\
         # Keys are the flags without their dashes: --tls-cert is tls_cert. Give back with --config.\n\
         # Settings at their built-in default, and unset ones, are commented out.\n"
    );
    let mut seen = BTreeSet::new();
    for arg in role_command.get_arguments().filter(|arg| is_setting(arg)) {
        let key = key_of(arg);
        if !seen.insert(key.clone()) {
            continue;
        }
        text.push('\n');
        if let Some(help) = arg.get_help() {
            for line in wrap(&format!("{}.", help.to_string().trim_end_matches('.')), 88) {
                text.push_str(&format!("# {line}\n"));
            }
        }
        let env_var = arg
            .get_env()
            .map(|name| format!(", variable {}", name.to_string_lossy()))
            .unwrap_or_default();
        text.push_str(&format!(
            "# (flag --{}{env_var})\n",
            arg.get_long().unwrap_or_default()
        ));
        let raw: Vec<String> = role_matches
            .get_raw(arg.get_id().as_str())
            .map(|values| {
                values
                    .map(|value| value.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let value = if is_switch(arg) {
            Some(toml::Value::Boolean(
                raw.iter().any(|value| value == "true"),
            ))
        } else if raw.is_empty() {
            None
        } else if takes_many(arg) {
            Some(toml::Value::Array(
                raw.iter().map(|value| typed(value)).collect(),
            ))
        } else {
            Some(typed(&raw[0]))
        };
        let is_default = matches!(
            role_matches.value_source(arg.get_id().as_str()),
            None | Some(ValueSource::DefaultValue)
        );
        match value {
            Some(value) if is_default => text.push_str(&format!("# {key} = {value}\n")),
            Some(value) => text.push_str(&format!("{key} = {value}\n")),
            None => text.push_str(&format!("# {key} = (not set)\n")),
        }
    }
    text
}

/// Returns `text` broken into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Returns a flag value as TOML: an integer or float when it reads back the same,
/// else a string. The file's values are read back through the flags' parsers, so the
/// type only makes the file easier to read.
pub(super) fn typed(raw: &str) -> toml::Value {
    if let Ok(integer) = raw.parse::<i64>()
        && integer.to_string() == raw
    {
        return toml::Value::Integer(integer);
    }
    let looks_numeric = raw
        .chars()
        .all(|character| character.is_ascii_digit() || ".eE+-".contains(character));
    if looks_numeric
        && raw.chars().any(|character| character.is_ascii_digit())
        && let Ok(float) = raw.parse::<f64>()
        && float.is_finite()
    {
        return toml::Value::Float(float);
    }
    toml::Value::String(raw.to_string())
}
