//! Blaming parse errors on their source: the final, strict parse of the command
//! line names flags, but a value may have come from the config file or from a
//! `FEDSHIELD_*` variable, and the message should name that instead.

use std::ffi::OsString;
use std::path::Path;

use clap::Arg;

use super::{ArgsError, ConfigProblems, command};

/// Returns a clap error as one line, without its `error: ` prefix, its usage and its
/// `--help` hint, and without the flag's name (the caller names the key instead).
pub(super) fn clap_reason(error: &clap::Error) -> String {
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
pub(super) fn blame_file(
    error: clap::Error,
    path: &Path,
    flag_keys: &[(String, String)],
) -> ArgsError {
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
pub(super) fn blame_variable(
    error: clap::Error,
    argv: &[OsString],
    role: Option<&str>,
) -> ArgsError {
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
