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
//!
//! - `file`: reading a config file into the arguments it adds, every problem named.
//! - `blame`: pointing a parse error at the config key or variable that caused it.
//! - `naming`: naming settings in messages the way the user set them.
//! - `print`: `--print-config`, the effective settings as a config file.

mod blame;
mod file;
mod naming;
mod print;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory};

use crate::cli::Cli;
use blame::{blame_file, blame_variable};
use file::settings_from_file;

pub use print::{effective_config, print_config_requested};

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

#[cfg(test)]
mod tests {
    use super::*;

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
