//! Checks of a long-running role's settings against each other: `quorum` against
//! `min_participants`, `dp_epsilon` against `rounds`, TLS files against the
//! coordinator's URL, and all the rest a start checks before it binds a socket.
//!
//! The binary runs them before a start and for `--print-config`, with the same
//! code, so a configuration that `--print-config` prints is one the role starts with,
//! and one it refuses fails both with the same error. They read the feature schema
//! (it fixes the model's inputs) but no key material and no telemetry.
//!
//! Libraries name settings by their own keys (`round.quorum`); the error names each
//! setting the way the user set it: `--quorum`, `FEDSHIELD_QUORUM`, or `quorum` in the
//! config file (see [`ParsedArgs::name_settings`]).

use anyhow::{Result, anyhow};
use tonic::transport::ClientTlsConfig;

use crate::cli::{Command, CoordinatorArgs, ParticipantArgs};
use crate::commands::{
    coordinator_settings, invalid_configuration, participant_config, participant_tls_files,
};
use crate::config::ParsedArgs;

/// The names `fedshield_coordinator` and `fedshield_core` give the coordinator's
/// settings in their problems, with the config key of each. Keys with an underscore
/// (`batch_size`, `max_handshakes`) are recognized without an entry.
const COORDINATOR_SETTING_NAMES: &[(&str, &str)] = &[
    ("round.min_participants", "min_participants"),
    ("round.participants_per_round", "participants_per_round"),
    ("round.quorum", "quorum"),
    ("round.deadline_secs", "round_deadline_secs"),
    ("round.max_rounds", "rounds"),
    ("round.server_momentum", "server_momentum"),
    ("round.server_learning_rate", "server_learning_rate"),
    ("round.aggregation", "aggregation"),
    ("round.secure_aggregation", "secure_aggregation"),
    (
        "round.secure_aggregation_clip_norm",
        "secure_aggregation_clip_norm",
    ),
    ("round.max_samples_per_update", "max_samples_per_update"),
    ("round.max_update_weight", "max_update_weight"),
    ("privacy.epsilon", "dp_epsilon"),
    ("privacy.delta", "dp_delta"),
    ("privacy.clip_norm", "dp_clip_norm"),
    ("privacy.min_records", "dp_min_records"),
    ("privacy.org_level.epsilon", "org_dp_epsilon"),
    ("privacy.org_level.clip_norm", "org_dp_clip_norm"),
];

/// The names `fedshield_participant` gives the participant's settings in its problems.
const PARTICIPANT_SETTING_NAMES: &[(&str, &str)] = &[("coordinator_url", "coordinator")];

/// Checks the settings of the role `command` runs (nothing for other commands).
///
/// # Errors
/// The role's problems, naming each setting as `parsed` says the user set it.
pub fn check(command: &Command, parsed: &ParsedArgs) -> Result<()> {
    let (outcome, setting_names) = match command {
        Command::Coordinator(args) if args.command.is_none() => {
            (check_coordinator(args), COORDINATOR_SETTING_NAMES)
        }
        Command::Participant(args) if args.command.is_none() => {
            (check_participant(args), PARTICIPANT_SETTING_NAMES)
        }
        Command::Detect(args) => (crate::detect::check_settings(args), &[][..]),
        _ => return Ok(()),
    };
    outcome.map_err(|error| anyhow!(parsed.name_settings(&format!("{error:#}"), setting_names)))
}

/// Checks the coordinator's settings as [`crate::commands::coordinator`] does.
fn check_coordinator(args: &CoordinatorArgs) -> Result<()> {
    let (config, _) = coordinator_settings(args)?;
    config
        .validate()
        .map_err(|problems| invalid_configuration("coordinator", &problems))
}

/// Checks the participant's settings as [`crate::commands::participant`] does.
fn check_participant(args: &ParticipantArgs) -> Result<()> {
    // The configuration's checks need to know whether TLS is on, not its contents.
    let unread_tls = participant_tls_files(args)?.map(|_| ClientTlsConfig::new());
    participant_config(args, unread_tls)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ROLES, role_settings};

    #[test]
    fn every_setting_name_stands_for_a_setting_of_its_role() {
        for (role, setting_names) in [
            ("coordinator", COORDINATOR_SETTING_NAMES),
            ("participant", PARTICIPANT_SETTING_NAMES),
        ] {
            assert!(ROLES.contains(&role));
            let keys = role_settings(role);
            for (name, key) in setting_names {
                assert!(
                    keys.iter().any(|known| known == key),
                    "{role}: `{name}` stands for `{key}`, which is no setting"
                );
            }
        }
    }
}
