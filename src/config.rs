//! Config files of the long-running roles: `coordinator`, `participant` and `detect`.
//!
//! A config file is flat TOML: every key is the long flag of the role with its dashes
//! written as underscores (`--tls-cert` ↔ `tls_cert`, `--dp-epsilon` ↔ `dp_epsilon`).
//! There is one mechanism for all roles and all settings: the file's values are fed
//! through the same clap value parsers as the flags, and each setting the command line
//! or its `FEDSHIELD_*` environment variable did not give is appended to the command
//! line as `--flag=value` before the final, strict parse. So the precedence is
//! flags > environment variables > config file > built-in defaults, and every
//! cross-flag rule (`requires`, `conflicts_with`) holds for files too.
//!
//! Every role setting has an environment variable, `FEDSHIELD_` followed by the key in
//! upper case (`FEDSHIELD_TLS_CERT`), unless the flag names its own (`--id` reads
//! `FEDSHIELD_PARTICIPANT_ID`).
//!
//! `--print-config` prints the effective settings in the same layout, so the output can
//! be saved and given back with `--config`. Settings are paths and values; key material
//! is never read here, only the paths to it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory};

use crate::cli::Cli;

/// The subcommands that take `--config` and `--print-config`.
pub const ROLES: [&str; 3] = ["coordinator", "participant", "detect"];

/// Argument ids that are not settings: they never appear in a config file.
const NOT_SETTINGS: [&str; 2] = ["config", "print_config"];

/// Returns the whole command line interface, with an environment variable for every
/// role setting that does not name one itself.
pub fn command() -> Command {
    let mut command = Cli::command();
    for role in ROLES {
        command = command.mut_subcommand(role, |role_command| role_command.mut_args(with_env_var));
    }
    command
}

/// Gives a role setting its `FEDSHIELD_<KEY>` environment variable unless it has one.
fn with_env_var(arg: Arg) -> Arg {
    if !is_setting(&arg) || arg.get_env().is_some() {
        return arg;
    }
    let name = format!("FEDSHIELD_{}", arg.get_id().as_str().to_uppercase());
    arg.env(name)
}

/// Returns whether `arg` is a setting of its role (and so a config file key).
fn is_setting(arg: &Arg) -> bool {
    let id = arg.get_id().as_str();
    arg.get_long().is_some()
        && !NOT_SETTINGS.contains(&id)
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
}

/// Returns the config file key of a setting: its long flag with dashes as underscores.
fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().replace('-', "_")
}

/// Returns the settings (config file keys) of `role`, in the order of its `--help`.
pub fn role_settings(role: &str) -> Vec<String> {
    let mut command = command();
    command.build();
    let Some(role_command) = command.find_subcommand(role) else {
        return Vec::new();
    };
    role_command
        .get_arguments()
        .filter(|arg| is_setting(arg))
        .map(key_of)
        .collect()
}

/// What went wrong while reading the command line and the config file.
#[derive(Debug)]
pub enum ArgsError {
    /// A plain command-line problem, or `--help`/`--version`: clap prints and exits.
    Clap(clap::Error),
    /// Problems of the config file, each naming the file and the key.
    Config(ConfigProblems),
    /// A value from a `FEDSHIELD_*` variable that its setting's parser refuses; the
    /// message names the variable.
    Variable(String),
}

/// Every problem found in one config file.
#[derive(Debug)]
pub struct ConfigProblems {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match self.problems.as_slice() {
            [problem] => write!(formatter, "invalid config file {file}: {problem}"),
            problems => {
                write!(formatter, "invalid config file {file}:")?;
                for problem in problems {
                    write!(formatter, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigProblems {}

/// A parsed command line, and the settings its role took from a config file.
#[derive(Debug)]
pub struct ParsedArgs {
    pub matches: ArgMatches,
    /// The role's `--config` file, if one was given, and the keys taken from it.
    pub config_file: Option<ConfigFileSettings>,
}

/// The settings a role took from its config file: those neither a flag nor a
/// variable gave.
#[derive(Debug, Clone)]
pub struct ConfigFileSettings {
    pub path: PathBuf,
    pub keys: BTreeSet<String>,
}

impl ParsedArgs {
    /// Returns `message` (a problem of the role's settings) with every setting it
    /// names written the way the user set it: `--flag` when given on the command line
    /// or left at its default, its `FEDSHIELD_*` variable when set from the
    /// environment, or `` `key` `` when it came from the config file, which a last
    /// line then names.
    ///
    /// A setting is recognized by its `--flag`, by its config key when that holds an
    /// underscore (`batch_size`), or by one of `aliases`: (name in the message, config
    /// key) pairs for the names libraries give settings (`round.quorum`).
    pub fn name_settings(&self, message: &str, aliases: &[(&str, &str)]) -> String {
        let Some((role, role_matches)) = self.matches.subcommand() else {
            return message.to_string();
        };
        let mut command = command();
        command.build();
        let Some(role_command) = command.find_subcommand(role) else {
            return message.to_string();
        };
        let settings: Vec<&Arg> = role_command
            .get_arguments()
            .filter(|arg| is_setting(arg))
            .collect();
        let find_setting = |name: &str| -> Option<&Arg> {
            if let Some(long) = name.strip_prefix("--") {
                return settings
                    .iter()
                    .find(|arg| arg.get_long() == Some(long))
                    .copied();
            }
            let key = aliases
                .iter()
                .find(|(alias, _)| *alias == name)
                .map(|(_, key)| *key)
                .or_else(|| name.contains('_').then_some(name))?;
            settings.iter().find(|arg| key_of(arg) == key).copied()
        };
        let mut named = String::with_capacity(message.len());
        let mut keys_from_file: Vec<String> = Vec::new();
        let mut rest = message;
        while let Some(start) = rest.find(is_setting_name_char) {
            named.push_str(&rest[..start]);
            let from_start = &rest[start..];
            let length = from_start
                .find(|character| !is_setting_name_char(character))
                .unwrap_or(from_start.len());
            let word = &from_start[..length];
            // A name ends a sentence or a clause: "... set --rounds."
            let name = word.trim_end_matches(['.', '-']);
            match find_setting(name) {
                Some(arg) => {
                    let key = key_of(arg);
                    let from_file = self
                        .config_file
                        .as_ref()
                        .is_some_and(|file| file.keys.contains(&key));
                    if from_file {
                        named.push_str(&format!("`{key}`"));
                        if !keys_from_file.contains(&key) {
                            keys_from_file.push(key);
                        }
                    } else {
                        named.push_str(&flag_or_variable(arg, role_matches));
                    }
                }
                None => named.push_str(name),
            }
            named.push_str(&word[name.len()..]);
            rest = &from_start[length..];
        }
        named.push_str(rest);
        if let (Some(file), false) = (&self.config_file, keys_from_file.is_empty()) {
            let keys: Vec<String> = keys_from_file
                .iter()
                .map(|key| format!("`{key}`"))
                .collect();
            named.push_str(&format!(
                "\n({} from config file {})",
                keys.join(", "),
                file.path.display()
            ));
        }
        named
    }
}

/// Returns whether `character` can be part of a setting's name in a message:
/// `--flag`, `config_key` or `library.key`.
fn is_setting_name_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-')
}

/// Returns how a setting not from the config file was given: its variable when the
/// environment set it, else its flag.
fn flag_or_variable(arg: &Arg, role_matches: &ArgMatches) -> String {
    let from_environment = matches!(
        role_matches.value_source(arg.get_id().as_str()),
        Some(ValueSource::EnvVariable)
    );
    match arg.get_env() {
        Some(variable) if from_environment => variable.to_string_lossy().into_owned(),
        _ => format!("--{}", arg.get_long().unwrap_or_default()),
    }
}

/// Parses the process's command line, applying a role's `--config` file; prints the
/// error and exits (status 2, as clap does) when the arguments or the file are invalid.
pub fn parse_or_exit() -> ParsedArgs {
    match parse_from(std::env::args_os()) {
        Ok(matches) => matches,
        Err(ArgsError::Clap(error)) => error.exit(),
        Err(ArgsError::Config(problems)) => {
            eprintln!("error: {problems}");
            std::process::exit(2);
        }
        Err(ArgsError::Variable(message)) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
}

/// Parses `argv` (program name first), applying a role's `--config` file under the
/// flags and environment variables.
pub fn parse_from<I, T>(argv: I) -> Result<ParsedArgs, ArgsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // A lenient first pass finds --config and which settings the flags and the
    // environment already give; required settings may still come from the file.
    let lenient = command()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
        .map_err(ArgsError::Clap)?;
    let strict = || {
        command()
            .try_get_matches_from(&argv)
            .map(|matches| ParsedArgs {
                matches,
                config_file: None,
            })
            .map_err(|error| blame_variable(error, &argv, lenient.subcommand_name()))
    };
    let Some((role, role_matches)) = lenient.subcommand() else {
        return strict();
    };
    if !ROLES.contains(&role) || role_matches.subcommand().is_some() {
        return strict();
    }
    let Ok(Some(config_path)) = role_matches.try_get_one::<PathBuf>("config") else {
        return strict();
    };
    let from_file = settings_from_file(role, config_path, role_matches)?;
    let mut full_argv = argv.clone();
    full_argv.extend(from_file.args.iter().map(OsString::from));
    let matches = command()
        .try_get_matches_from(&full_argv)
        .map_err(
            |error| match blame_file(error, config_path, &from_file.flag_keys) {
                ArgsError::Clap(error) => blame_variable(error, &argv, Some(role)),
                blamed => blamed,
            },
        )?;
    Ok(ParsedArgs {
        matches,
        config_file: Some(ConfigFileSettings {
            path: config_path.clone(),
            keys: from_file
                .flag_keys
                .into_iter()
                .map(|(_, key)| key)
                .collect(),
        }),
    })
}

/// The settings a config file adds to the command line.
struct FileSettings {
    /// `--flag=value` arguments to append.
    args: Vec<String>,
    /// (long flag, key) of each setting the file gave.
    flag_keys: Vec<(String, String)>,
}

/// Reads and checks `path`, returning the arguments it adds for the settings that
/// neither the flags nor the environment gave. Every key must be known and of the
/// right shape; values are parsed for the settings the file gives.
fn settings_from_file(
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
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// Returns whether `arg` takes several values (a TOML array).
fn takes_many(arg: &Arg) -> bool {
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

/// Returns a clap error as one line, without its `error: ` prefix, its usage and its
/// `--help` hint, and without the flag's name (the caller names the key instead).
fn clap_reason(error: &clap::Error) -> String {
    let message = clap_message(error);
    // "invalid value 'x' for '--flag <FLAG>': reason" → "invalid value 'x': reason"
    if let Some(for_start) = message.find(" for '--") {
        let flag_start = for_start + " for '".len();
        if let Some(flag_length) = message[flag_start..].find('\'') {
            let rest = &message[flag_start + flag_length + 1..];
            return format!("{}{rest}", &message[..for_start]);
        }
    }
    message
}

/// Returns the lines of a clap error that say what is wrong, joined into one line.
fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect();
    let message = lines.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_string()
}

/// Maps a strict-parse error back to the config file when it names a flag the file set.
fn blame_file(error: clap::Error, path: &Path, flag_keys: &[(String, String)]) -> ArgsError {
    let message = clap_message(&error);
    let blamed: Vec<String> = flag_keys
        .iter()
        .filter(|(long, _)| {
            let flag = format!("--{long}");
            message.match_indices(&flag).any(|(index, _)| {
                let next = message[index + flag.len()..].chars().next();
                !matches!(next, Some(character) if character.is_alphanumeric() || character == '-')
            })
        })
        .map(|(_, key)| format!("`{key}`"))
        .collect();
    if blamed.is_empty() {
        return ArgsError::Clap(error);
    }
    ArgsError::Config(ConfigProblems {
        file: path.to_path_buf(),
        problems: vec![format!(
            "key {}: {message} (flags and FEDSHIELD_* variables override the file)",
            blamed.join(", ")
        )],
    })
}

/// Maps a strict-parse error about a value to the `FEDSHIELD_*` variable that gave it
/// (clap names the flag, which `argv` may not hold). `role` is the subcommand run.
fn blame_variable(error: clap::Error, argv: &[OsString], role: Option<&str>) -> ArgsError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return ArgsError::Clap(error);
    }
    // clap writes the argument as "--quorum <QUORUM>".
    let Some(ContextValue::String(invalid_arg)) = error.get(ContextKind::InvalidArg) else {
        return ArgsError::Clap(error);
    };
    let Some(long) = invalid_arg
        .strip_prefix("--")
        .and_then(|rest| rest.split([' ', '=']).next())
    else {
        return ArgsError::Clap(error);
    };
    let flag = format!("--{long}");
    let on_command_line = argv.iter().any(|arg| {
        let arg = arg.to_string_lossy();
        arg == flag || arg.starts_with(&format!("{flag}="))
    });
    if on_command_line {
        return ArgsError::Clap(error);
    }
    let mut command = command();
    command.build();
    let scope = match role {
        Some(role) => command.find_subcommand(role).unwrap_or(&command),
        None => &command,
    };
    let variable = scope
        .get_arguments()
        .chain(command.get_arguments())
        .find(|arg| arg.get_long() == Some(long))
        .and_then(Arg::get_env)
        .filter(|variable| std::env::var_os(variable).is_some());
    let Some(variable) = variable else {
        return ArgsError::Clap(error);
    };
    let message = clap_message(&error).replace(
        &format!("'{invalid_arg}'"),
        &format!("{} (--{long})", variable.to_string_lossy()),
    );
    ArgsError::Variable(message)
}

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
fn typed(raw: &str) -> toml::Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("quorum", "quorum"), 0);
        assert_eq!(edit_distance("qourum", "quorum"), 2);
        assert_eq!(edit_distance("tls_cer", "tls_cert"), 1);
    }

    #[test]
    fn every_role_has_settings_and_each_an_env_var() {
        let mut command = command();
        command.build();
        for role in ROLES {
            let role_command = command.find_subcommand(role).unwrap();
            let settings: Vec<&Arg> = role_command
                .get_arguments()
                .filter(|arg| is_setting(arg))
                .collect();
            assert!(!settings.is_empty(), "{role} has no settings");
            for arg in settings {
                assert!(
                    arg.get_env().is_some(),
                    "{role} --{} has no environment variable",
                    arg.get_long().unwrap()
                );
            }
        }
    }
}
