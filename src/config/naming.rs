//! Naming settings in messages: a problem of a role's settings names each one the
//! way the user set it (`--flag`, its `FEDSHIELD_*` variable, or its config key).

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches};

use super::{ParsedArgs, command, is_setting, key_of};

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
