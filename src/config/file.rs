//! Reading a role's config file: every key must be a setting of the role and its
//! value of the right shape; each value is parsed by the setting's own parser, and
//! the settings neither a flag nor a variable gave become `--flag=value` arguments.

use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::blame::clap_reason;
use super::print::typed;
use super::{ArgsError, ConfigProblems, command, is_setting, key_of};

/// The settings a config file adds to the command line.
pub(super) struct FileSettings {
    /// `--flag=value` arguments to append.
    pub(super) args: Vec<String>,
    /// (long flag, key) of each setting the file gave.
    pub(super) flag_keys: Vec<(String, String)>,
}

/// Reads and checks `path`, returning the arguments it adds for the settings that
/// neither the flags nor the environment gave. Every key must be known and of the
/// right shape; values are parsed for the settings the file gives.
pub(super) fn settings_from_file(
    role: &str,
    path: &Path,
    role_matches: &ArgMatches,
) -> Result<FileSettings, ArgsError> {
    let fail = |problems: Vec<String>| {
        ArgsError::Config(ConfigProblems {
            file: path.to_path_buf(),
            problems,
        })
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| fail(vec![format!("cannot read it: {error}")]))?;
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| fail(vec![format!("not valid TOML: {error}")]))?;
    let mut command = command();
    command.build();
    let role_command = command
        .find_subcommand(role)
        .expect("every role is a subcommand of the CLI");
    let settings: Vec<&Arg> = role_command
        .get_arguments()
        .filter(|arg| is_setting(arg))
        .collect();
    let mut problems = Vec::new();
    let mut file_settings = FileSettings {
        args: Vec::new(),
        flag_keys: Vec::new(),
    };
    for (key, value) in &table {
        let Some(arg) = settings.iter().find(|arg| key_of(arg) == *key) else {
            let known: Vec<String> = settings.iter().map(|arg| key_of(arg)).collect();
            problems.push(unknown_key_problem(role, key, value, &known));
            continue;
        };
        let long = arg.get_long().unwrap_or_default();
        let raw_values = match raw_values(arg, value) {
            Ok(raw_values) => raw_values,
            Err(problem) => {
                problems.push(format!("key `{key}`: {problem}{}", list_form(arg)));
                continue;
            }
        };
        // A setting a flag or variable gives is not read from the file, so its value
        // is not parsed (the file may name a certificate only other hosts have).
        let given_elsewhere = matches!(
            role_matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given_elsewhere {
            continue;
        }
        let mut valid = true;
        for raw in &raw_values {
            if let Err(error) = parse_one_value(arg, raw) {
                problems.push(format!(
                    "key `{key}`: {}{}",
                    clap_reason(&error),
                    list_form(arg)
                ));
                valid = false;
            }
        }
        if !valid {
            continue;
        }
        file_settings
            .flag_keys
            .push((long.to_string(), key.to_string()));
        if is_switch(arg) {
            if raw_values.iter().any(|raw| raw == "true") {
                file_settings.args.push(format!("--{long}"));
            }
        } else if let Some(delimiter) = arg.get_value_delimiter() {
            let joined = raw_values.join(&delimiter.to_string());
            file_settings.args.push(format!("--{long}={joined}"));
        } else {
            for raw in raw_values {
                file_settings.args.push(format!("--{long}={raw}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(file_settings)
    } else {
        Err(fail(problems))
    }
}

/// Parses one value with the value parser of `arg`, alone: its `requires` and
/// `conflicts_with` rules are checked later, by the parse of the whole command line.
fn parse_one_value(arg: &Arg, raw: &str) -> Result<ArgMatches, clap::Error> {
    let long = arg.get_long().unwrap_or_default().to_string();
    let alone = Arg::new(arg.get_id().clone())
        .long(long.clone())
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set);
    Command::new("config")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([format!("--{long}={raw}")])
}

/// Returns whether `arg` is an on/off switch (`--insecure`), written `true`/`false`.
pub(super) fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// Returns whether `arg` takes several values (a TOML array).
pub(super) fn takes_many(arg: &Arg) -> bool {
    arg.get_value_delimiter().is_some()
        || matches!(arg.get_action(), ArgAction::Append)
        || arg
            .get_num_args()
            .is_some_and(|range| range.max_values() > 1)
}

/// Returns, for a setting that takes a list, the forms a config file may write it in
/// (after a problem with its value), with the default as the example; else "".
fn list_form(arg: &Arg) -> String {
    if !takes_many(arg) {
        return String::new();
    }
    let key = key_of(arg);
    let example: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    let Some(delimiter) = arg.get_value_delimiter() else {
        return format!(" (`{key}` takes an array of values)");
    };
    let example = if example.is_empty() {
        vec!["a".to_string(), "b".to_string()]
    } else {
        example
            .iter()
            .flat_map(|value| value.split(delimiter))
            .map(str::to_string)
            .collect()
    };
    let as_array: Vec<String> = example
        .iter()
        .map(|value| typed(value).to_string())
        .collect();
    let as_string = example.join(&delimiter.to_string());
    format!(
        " (`{key}` takes a list: an array, `{key} = [{}]`, or one string of values separated by '{delimiter}', `{key} = \"{as_string}\"`)",
        as_array.join(", ")
    )
}

/// Returns the command-line spelling of a TOML value, or the type problem. A string
/// for a setting whose flag takes values separated by a delimiter (`--hidden 64,32`) is
/// split the same way.
fn raw_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    if is_switch(arg) {
        return match value {
            toml::Value::Boolean(on) => Ok(vec![on.to_string()]),
            other => Err(format!(
                "wrong type: expected true or false, found {}",
                other.type_str()
            )),
        };
    }
    match value {
        toml::Value::Array(items) if takes_many(arg) => items
            .iter()
            .map(|item| {
                scalar(item).ok_or_else(|| {
                    format!(
                        "wrong type: expected an array of values, found an array holding {}",
                        item.type_str()
                    )
                })
            })
            .collect(),
        toml::Value::Array(_) => Err("wrong type: expected one value, found an array".into()),
        toml::Value::String(text) if arg.get_value_delimiter().is_some() => {
            let delimiter = arg
                .get_value_delimiter()
                .expect("the guard checked the delimiter");
            Ok(text.split(delimiter).map(str::to_string).collect())
        }
        other => scalar(other).map(|raw| vec![raw]).ok_or_else(|| {
            format!(
                "wrong type: expected a value, found a {} (keys are flat: `key = value`, no sections)",
                other.type_str()
            )
        }),
    }
}

/// Returns a scalar TOML value as the flag would spell it.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(on) => Some(on.to_string()),
        toml::Value::Datetime(datetime) => Some(datetime.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Describes an unknown key, suggesting the closest known one.
fn unknown_key_problem(role: &str, key: &str, value: &toml::Value, known: &[String]) -> String {
    let mut problem = format!("unknown key `{key}` for the {role} config");
    if value.is_table() {
        problem.push_str(" (config keys are flat: `key = value`, no sections)");
    }
    let closest = known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .min_by_key(|(distance, _)| *distance);
    match closest {
        Some((distance, candidate)) if distance <= key.len().max(3) / 2 + 1 => {
            problem.push_str(&format!("; did you mean `{candidate}`?"));
        }
        _ => problem.push_str(&format!(
            "; see `fedshield {role} --print-config` for the keys"
        )),
    }
    problem
}

/// Returns the Levenshtein distance between `left` and `right`.
fn edit_distance(left: &str, right: &str) -> usize {
    let right_chars: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right_chars.len()).collect();
    for (left_index, left_char) in left.chars().enumerate() {
        let mut current = vec![left_index + 1];
        for (right_index, right_char) in right_chars.iter().enumerate() {
            let substitution = previous[right_index] + usize::from(left_char != *right_char);
            let deletion = previous[right_index + 1] + 1;
            let insertion = current[right_index] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[right_chars.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("quorum", "quorum"), 0);
        assert_eq!(edit_distance("qourum", "quorum"), 2);
        assert_eq!(edit_distance("tls_cer", "tls_cert"), 1);
    }
}
