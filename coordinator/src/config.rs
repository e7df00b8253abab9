//! Coordinator configuration.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use fedshield_core::aggregation::robust::AggregationRule;
use fedshield_core::privacy::PrivacyTarget;
use fedshield_core::{ModelSpec, TrainingPlan};
use fedshield_proto::tls::ListenerLimits;

use crate::weighting::UpdateWeighting;

/// How many connected participants a round samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParticipantsPerRound {
    /// Exactly this many (or all connected, if fewer).
    Count(usize),
    /// This fraction of the connected participants, rounded up, at least one.
    Fraction(f64),
}

impl ParticipantsPerRound {
    /// Returns how many of `num_connected` participants to sample.
    pub fn resolve(self, num_connected: usize) -> usize {
        match self {
            ParticipantsPerRound::Count(count) => count.min(num_connected),
            ParticipantsPerRound::Fraction(fraction) => ((num_connected as f64 * fraction).ceil()
                as usize)
                .clamp(1.min(num_connected), num_connected),
        }
    }
}

impl FromStr for ParticipantsPerRound {
    type Err = String;

    /// Parses `8` as a count, and `0.5` or `50%` as a fraction.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let value: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a percentage"))?;
            return Self::fraction(value / 100.0, text);
        }
        if text.contains('.') {
            let value: f64 = text
                .parse()
                .map_err(|_| format!("{text:?} is not a fraction"))?;
            return Self::fraction(value, text);
        }
        let count: usize = text.parse().map_err(|_| {
            format!("{text:?} is neither a count (8), a fraction (0.5) nor a percentage (50%)")
        })?;
        if count == 0 {
            return Err("participants per round must be at least 1".to_string());
        }
        Ok(ParticipantsPerRound::Count(count))
    }
}

impl ParticipantsPerRound {
    fn fraction(value: f64, text: &str) -> Result<Self, String> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(format!("fraction {text:?} must be in (0, 1]"));
        }
        Ok(ParticipantsPerRound::Fraction(value))
    }
}

impl fmt::Display for ParticipantsPerRound {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParticipantsPerRound::Count(count) => write!(formatter, "{count}"),
            ParticipantsPerRound::Fraction(fraction) => write!(formatter, "{}%", fraction * 100.0),
        }
    }
}

/// Rules of the round engine.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConfig {
    /// Connected participants needed before a round opens.
    pub min_participants: usize,
    /// How many connected participants each round samples.
    pub participants_per_round: ParticipantsPerRound,
    /// Accepted updates needed to publish; a round that cannot reach it by the
    /// deadline is abandoned and retried.
    pub quorum: usize,
    /// Time from announcement to the last accepted update.
    pub round_deadline: Duration,
    /// Pause after an abandoned round before the retry.
    pub retry_delay: Duration,
    /// Stop opening rounds after this many completed rounds (None: run forever).
    pub max_rounds: Option<u64>,
    /// Server momentum β of FedAvgM (0 = plain FedAvg).
    pub server_momentum: f32,
    /// Server learning rate η of FedAvgM (1 = plain FedAvg).
    pub server_learning_rate: f32,
    /// How a round's updates are combined (FedAvg, or a poisoning-robust rule).
    pub aggregation: AggregationRule,
    /// The bound on an update's declared example count and the cap on its
    /// weight (see [`crate::weighting`]).
    pub weighting: UpdateWeighting,
    /// Secure aggregation (SecAgg+), if wanted: the coordinator then sees
    /// only the sum of each round's updates.
    pub secure_aggregation: Option<SecureAggregationConfig>,
}

/// Secure aggregation's settings besides the privacy target.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureAggregationConfig {
    /// The L2 norm each participant clips its update to when no
    /// organization-level DP sets it (`privacy.org_level.clip_norm` does).
    pub clip_norm: f64,
}

impl RoundConfig {
    /// Checks the values against each other.
    ///
    /// # Errors
    /// Every problem found, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.min_participants == 0 {
            problems.push("round.min_participants must be at least 1".to_string());
        }
        if self.quorum == 0 {
            problems.push("round.quorum must be at least 1".to_string());
        }
        if self.quorum > self.min_participants {
            problems.push(format!(
                "round.quorum ({}) cannot exceed round.min_participants ({}): a round could open that can never publish",
                self.quorum, self.min_participants
            ));
        }
        if let ParticipantsPerRound::Count(count) = self.participants_per_round
            && count < self.quorum
        {
            problems.push(format!(
                "round.participants_per_round ({count}) is below round.quorum ({})",
                self.quorum
            ));
        }
        if !(0.0..1.0).contains(&self.server_momentum) {
            problems.push(format!(
                "round.server_momentum ({}) must be in [0, 1)",
                self.server_momentum
            ));
        }
        if !(self.server_learning_rate > 0.0 && self.server_learning_rate <= 10.0) {
            problems.push(format!(
                "round.server_learning_rate ({}) must be in (0, 10]",
                self.server_learning_rate
            ));
        }
        if self.round_deadline.is_zero() {
            problems.push("round.deadline_secs must be positive".to_string());
        }
        problems.extend(self.weighting.problems());
        if let Some(secure) = &self.secure_aggregation {
            if self.aggregation != AggregationRule::FedAvg {
                problems.push(format!(
                    "round.aggregation: {} must see single updates, and under round.secure_aggregation the coordinator sees only their sum; use fedavg (each participant bounds its own update's norm before masking)",
                    self.aggregation
                ));
            }
            if self.quorum < 2 {
                problems.push(
                    "round.quorum must be at least 2 under round.secure_aggregation: the sum of one update is that update"
                        .to_string(),
                );
            }
            if !(secure.clip_norm.is_finite() && secure.clip_norm > 0.0) {
                problems.push(format!(
                    "round.secure_aggregation_clip_norm is {}, must be finite and positive",
                    secure.clip_norm
                ));
            }
        }
        match self.aggregation.validate() {
            Err(error) => problems.push(format!("round.aggregation: {error}")),
            Ok(()) if self.quorum < self.aggregation.min_updates() => problems.push(format!(
                "round.quorum ({}) is below the {} updates round.aggregation {} needs to be robust",
                self.quorum,
                self.aggregation.min_updates(),
                self.aggregation
            )),
            Ok(()) => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Everything a coordinator needs to run.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub round: RoundConfig,
    /// Architecture of the model to train.
    pub model: ModelSpec,
    /// Seed of the initial model (version 0).
    pub init_seed: u64,
    /// Local training plan sent with each announcement.
    pub plan: TrainingPlan,
    /// The coordinator's state (open round, round history) and, unless
    /// `artifact_store` says otherwise, its published model versions.
    pub data_dir: PathBuf,
    /// Where model versions are stored: a directory, `file:///path`,
    /// `s3://bucket/prefix` or `memory://` (see [`crate::artifacts`]);
    /// `None` is `<data_dir>/models`.
    pub artifact_store: Option<String>,
    /// How often `Join` streams get a heartbeat.
    pub heartbeat_interval: Duration,
    /// Parameters per chunk of a model download.
    pub chunk_params: usize,
    /// Updates received at once; each holds one model's worth of memory until
    /// it is folded, so this bounds the coordinator's memory regardless of the
    /// number of participants.
    pub max_concurrent_uploads: usize,
    /// Longest pause between two chunks of an update before it is refused.
    pub chunk_idle_timeout: Duration,
    /// The feature schema (TOML) of the federation, recorded in model cards.
    pub feature_schema_toml: Option<String>,
    /// A labelled evaluation set the coordinator scores each new version on
    /// (public or operator-owned data, never a participant's).
    pub evaluation: Option<std::sync::Arc<fedshield_core::model::data::Dataset>>,
    /// Differential privacy the federation promises each participant's
    /// records over all `round.max_rounds` rounds; the plan's noise is
    /// calibrated from it at start. `None` trains without DP.
    pub privacy: Option<PrivacyTarget>,
    /// Starts even when `privacy` weakens the privacy lineage of the stored
    /// model (no DP, a larger ε or δ, …; see [`crate::lineage`]), which
    /// otherwise refuses to start. The weakening is logged as a warning and
    /// recorded in every model card from then on.
    pub accept_weaker_privacy: bool,
    /// Mutual TLS and the participant registry; `None` serves plaintext
    /// gRPC and trusts declared participant ids (`--insecure`, tests).
    pub tls: Option<CoordinatorTls>,
    /// The HTTPS model download endpoint, if wanted (needs `tls`).
    pub https: Option<HttpsSettings>,
    /// Handshake and connection caps and timeouts of the TLS listeners
    /// (gRPC and HTTPS share them); see `fedshield_proto::tls::ListenerLimits`.
    pub listener_limits: ListenerLimits,
}

/// The HTTPS model download endpoint.
#[derive(Debug, Clone)]
pub struct HttpsSettings {
    /// Where to listen, e.g. `0.0.0.0:8443` (`127.0.0.1:0` in tests).
    pub listen: std::net::SocketAddr,
    /// TLS with optional client certificates (fedshield_proto::tls::https_server_config).
    pub server_config: std::sync::Arc<fedshield_proto::tls::rustls::ServerConfig>,
    /// The issued bearer tokens (sha256 only), re-read on every request.
    pub tokens_path: PathBuf,
    /// How long dashboard sessions last (sign-in lifetime, idle timeout).
    pub dashboard_sessions: crate::dashboard_sessions::DashboardSessionSettings,
}

/// Mutual TLS of the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorTls {
    /// The server's certificate and key, and the CA client certificates
    /// must chain to (fedshield_proto::tls::server_config).
    pub server_config: std::sync::Arc<fedshield_proto::tls::rustls::ServerConfig>,
    /// Who may take part, by certificate subject; revocations.
    pub registry: crate::participants::ParticipantRegistry,
    /// The registry's file, re-read when it changes; `None` keeps `registry` fixed.
    pub registry_path: Option<PathBuf>,
}

impl CoordinatorConfig {
    /// Returns a small, fast configuration for tests.
    pub fn for_test(data_dir: PathBuf, model: ModelSpec) -> Self {
        CoordinatorConfig {
            round: RoundConfig {
                min_participants: 2,
                participants_per_round: ParticipantsPerRound::Fraction(1.0),
                quorum: 2,
                round_deadline: Duration::from_secs(20),
                retry_delay: Duration::from_millis(50),
                max_rounds: None,
                server_momentum: 0.0,
                server_learning_rate: 1.0,
                aggregation: AggregationRule::FedAvg,
                weighting: UpdateWeighting::default(),
                secure_aggregation: None,
            },
            model,
            init_seed: 1,
            plan: TrainingPlan::new(),
            data_dir,
            artifact_store: None,
            heartbeat_interval: Duration::from_millis(500),
            chunk_params: fedshield_core::model::codec::DEFAULT_CHUNK_PARAMS,
            max_concurrent_uploads: 2,
            chunk_idle_timeout: Duration::from_secs(10),
            feature_schema_toml: None,
            evaluation: None,
            privacy: None,
            accept_weaker_privacy: false,
            tls: None,
            https: None,
            listener_limits: ListenerLimits::default(),
        }
    }

    /// Returns the training plan rounds announce: `plan`, with its DP
    /// settings calibrated from `privacy` over `round.max_rounds` rounds when
    /// a privacy target is set.
    ///
    /// # Errors
    /// The calibration's error, naming the setting.
    pub fn training_plan(&self) -> fedshield_core::Result<TrainingPlan> {
        let calibrated = match &self.privacy {
            Some(target) => fedshield_core::privacy::calibrate_plan(
                &self.plan,
                target,
                self.round.max_rounds.unwrap_or(0),
            )?,
            None => self.plan.clone(),
        };
        let Some(secure) = &self.round.secure_aggregation else {
            return Ok(calibrated);
        };
        let max_participants = match self.round.participants_per_round {
            ParticipantsPerRound::Count(count) => {
                count.min(fedshield_core::plan::MAX_SECURE_AGGREGATION_PARTICIPANTS as usize)
            }
            ParticipantsPerRound::Fraction(_) => {
                fedshield_core::plan::MAX_SECURE_AGGREGATION_PARTICIPANTS as usize
            }
        };
        fedshield_core::privacy::secure_aggregation_plan(
            calibrated,
            fedshield_core::privacy::SecureAggregationRequest {
                clip_norm: secure.clip_norm,
                org_target: self.privacy.as_ref().and_then(|target| {
                    target
                        .org_level
                        .as_ref()
                        .map(|org| (org.epsilon, org.clip_norm, target.delta))
                }),
                num_rounds: self.round.max_rounds.unwrap_or(0),
                max_participants: max_participants.max(2) as u32,
                min_participants: self.round.quorum.max(2) as u32,
                num_params: self.model.num_params(),
            },
        )
    }

    /// Checks the whole configuration.
    ///
    /// # Errors
    /// Every problem found, each naming its settings by their keys
    /// (`round.quorum`, `privacy.epsilon`, `batch_size`), which the binary
    /// turns into the flag, variable or config file key the value came from.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = self.round.validate().err().unwrap_or_default();
        if let Err(error) = self.model.validate() {
            problems.push(format!("model: {error}"));
        }
        if let Err(error) = self.plan.validate() {
            problems.push(format!("plan: {error}"));
        }
        if self.heartbeat_interval.is_zero() {
            problems.push("heartbeat_interval_ms must be positive".to_string());
        }
        if self.chunk_params == 0
            || self.chunk_params * 4 > fedshield_core::model::codec::MAX_CHUNK_BYTES
        {
            problems.push(format!(
                "chunk_params ({}) must be in 1..={}",
                self.chunk_params,
                fedshield_core::model::codec::MAX_CHUNK_BYTES / 4
            ));
        }
        if let Some(evaluation) = &self.evaluation
            && evaluation.num_features() != self.model.input_dim as usize
        {
            problems.push(format!(
                "evaluation data has {} features, the model expects {}",
                evaluation.num_features(),
                self.model.input_dim
            ));
        }
        if let Some(target) = &self.privacy {
            if let Err(error) = target.validate() {
                problems.push(error.to_string());
            } else if self.round.max_rounds.is_none() {
                problems.push(
                    "privacy.epsilon needs round.max_rounds: the noise is calibrated for a known number of rounds"
                        .to_string(),
                );
            } else if let Err(error) = self.training_plan() {
                problems.push(error.to_string());
            }
        }
        if self.https.is_some() && self.tls.is_none() {
            problems.push(
                "https needs tls: the download endpoint checks client certificates against the participant registry"
                    .to_string(),
            );
        }
        if let Err(listener_problems) = self.listener_limits.validate() {
            problems.extend(listener_problems);
        }
        if self.max_concurrent_uploads == 0 {
            problems.push("max_concurrent_uploads must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_per_round_parses_counts_fractions_and_percentages() {
        assert_eq!(
            "8".parse::<ParticipantsPerRound>().unwrap(),
            ParticipantsPerRound::Count(8)
        );
        assert_eq!(
            "0.5".parse::<ParticipantsPerRound>().unwrap(),
            ParticipantsPerRound::Fraction(0.5)
        );
        assert_eq!(
            "25%".parse::<ParticipantsPerRound>().unwrap(),
            ParticipantsPerRound::Fraction(0.25)
        );
        assert!("0".parse::<ParticipantsPerRound>().is_err());
        assert!("1.5".parse::<ParticipantsPerRound>().is_err());
        assert!("many".parse::<ParticipantsPerRound>().is_err());
        assert_eq!(ParticipantsPerRound::Fraction(0.5).resolve(5), 3);
        assert_eq!(ParticipantsPerRound::Count(4).resolve(3), 3);
    }

    #[test]
    fn quorum_above_min_participants_is_reported_with_its_key() {
        let mut config =
            CoordinatorConfig::for_test(PathBuf::from("data"), ModelSpec::mlp(4, vec![4], 2));
        config.round.quorum = 5;
        let problems = config.validate().unwrap_err();
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("round.quorum"))
        );
    }
}
