//! The privacy lineage of the stored model, checked at start: a coordinator
//! restarted on a data directory whose model was trained with DP refuses
//! privacy settings that weaken what its cards promise (no DP, a larger ε or
//! δ, no organization-level DP, or a plan that composes with the rounds
//! already run to more than the promise; see [`fedshield_core::privacy::lineage`]),
//! unless `accept_weaker_privacy` acknowledges it. An acknowledged weakening
//! is logged as a warning and recorded in every card published from then
//! on, which keep the DP rounds' accounting and state `guarantee: none`
//! once a round without DP is in the model.

use fedshield_core::card::ModelCard;
use fedshield_core::privacy::lineage::{
    Continuation, LineageRecord, PrivacyPromise, PrivacyWeakening, Weakening, weakenings,
};
use fedshield_core::privacy::{DpRoundPlan, ModelPrivacy};
use tracing::{info, warn};

use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};

/// The flag that acknowledges a weaker privacy configuration.
pub const ACCEPT_WEAKER_PRIVACY_FLAG: &str = "--accept-weaker-privacy";

/// Checks `config` (its plan already calibrated) against the privacy
/// lineage of `latest`, the latest stored version's card, after
/// `num_rounds_completed` completed rounds, and returns what the run's
/// cards record.
///
/// # Errors
/// [`CoordinatorError::PrivacyWeakened`], naming the stored guarantee and
/// each setting that weakens it, unless `config.accept_weaker_privacy`.
pub fn check_privacy_lineage(
    config: &CoordinatorConfig,
    latest: &ModelCard,
    num_rounds_completed: u64,
) -> Result<LineageRecord> {
    let max_rounds = config.round.max_rounds.unwrap_or(0);
    let promise = config
        .privacy
        .as_ref()
        .map(|target| PrivacyPromise::new(target, max_rounds));
    let fresh = LineageRecord {
        promise,
        weakening: None,
    };
    let Some(stored) = &latest.privacy else {
        return Ok(fresh);
    };
    if !stored.guarantee_holds() {
        info!(
            version = latest.version,
            "the stored model has no differential-privacy guarantee (a round without DP is in it); its cards keep saying so"
        );
        return Ok(fresh);
    }
    let plan = DpRoundPlan::of(&config.plan);
    let continuation = Continuation {
        promise: promise.as_ref(),
        plan: plan.as_ref(),
        num_rounds_left: max_rounds.saturating_sub(num_rounds_completed),
    };
    let found = weakenings(stored, &continuation)?;
    if found.is_empty() {
        return Ok(LineageRecord {
            // The stored promise stands, even under stronger settings.
            promise: stored.promise.or(promise),
            weakening: None,
        });
    }
    let reasons: Vec<String> = found
        .iter()
        .map(|weakening| describe(weakening, config))
        .collect();
    if !config.accept_weaker_privacy {
        return Err(CoordinatorError::PrivacyWeakened {
            version: latest.version,
            stored: stored_guarantee(stored),
            reasons: reasons.join("; "),
        });
    }
    for reason in &reasons {
        warn!(
            version = latest.version,
            stored = %stored_guarantee(stored),
            reason = %reason,
            "PRIVACY WEAKENED: {ACCEPT_WEAKER_PRIVACY_FLAG} acknowledges a weaker privacy configuration than the stored model's; every model card from now on records it"
        );
    }
    Ok(LineageRecord {
        promise,
        weakening: Some(PrivacyWeakening {
            since_version: latest.version,
            previous: stored.promise,
            next: promise,
            reasons,
        }),
    })
}

/// Returns the guarantee a stored card states, for messages.
fn stored_guarantee(stored: &ModelPrivacy) -> String {
    match &stored.promise {
        Some(promise) => format!("trained with differential privacy, promising {promise}"),
        None => format!(
            "trained with differential privacy, record-level (ε = {}, δ = {}) so far",
            stored.epsilon, stored.delta
        ),
    }
}

/// Returns what `weakening` is, naming the flags that set it.
fn describe(weakening: &Weakening, config: &CoordinatorConfig) -> String {
    let num_rounds = config.round.max_rounds.unwrap_or(0);
    match weakening {
        Weakening::NoDp => {
            "--dp-epsilon is not given: rounds would train without differential privacy".to_string()
        }
        Weakening::LargerEpsilon { promised, given } => {
            format!("--dp-epsilon {given} is larger than the stored ε = {promised}")
        }
        Weakening::LargerDelta { promised, given } => {
            format!("--dp-delta {given} is larger than the stored δ = {promised}")
        }
        Weakening::NoOrgDp { promised } => format!(
            "--org-dp-epsilon is not given: the stored organization-level ε = {promised} would no longer hold"
        ),
        Weakening::LargerOrgEpsilon { promised, given } => format!(
            "--org-dp-epsilon {given} is larger than the stored organization-level ε = {promised}"
        ),
        Weakening::ComposedEpsilonAbove {
            composed,
            promised,
            num_rounds_left,
        } => format!(
            "the DP rounds already in the model and the {num_rounds_left} rounds left of --rounds {num_rounds} under the plan these flags calibrate (--dp-epsilon, --rounds, --dp-min-records, --batch-size, --local-epochs, --max-local-steps) compose to ε = {composed:.4}, above the stored ε = {promised}"
        ),
        Weakening::ComposedOrgEpsilonAbove {
            composed,
            promised,
            num_rounds_left,
        } => format!(
            "the DP rounds already in the model and the {num_rounds_left} rounds left of --rounds {num_rounds} compose to organization-level ε = {composed:.4}, above the stored {promised}"
        ),
        Weakening::OtherPlanWithoutPromise => {
            "the stored cards record no promise, so only their own DP plan can be shown to continue them, and these flags calibrate another".to_string()
        }
    }
}
