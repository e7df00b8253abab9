//! A round's privacy spend: checked against the budget before anything is
//! downloaded, checked again and recorded in the ledger (fsynced) before
//! training; and the stored privatized update of an earlier attempt, re-sent
//! for a retried round on the same base version and plan without a new spend.

use fedshield_core::plan_fingerprint::PlanFingerprint;
use fedshield_core::privacy::PrivacyReport;
use fedshield_core::{ModelVersion, RoundId, TrainingPlan};
use tracing::{Span, debug, info, warn};

use super::Participant;
use crate::error::{ParticipantError, Result};
use crate::ledger::{DEFAULT_DELTA, LedgerEntry, PrivacyLedger, PrivacySpend};
use crate::pending::{StoredUpdate, StoredUpdateFile};

/// Environment variable that makes the process abort right after a ledger
/// entry is durable and before training: the crash tests use it to prove
/// the ledger never under-counts. Never set it in production.
pub const CRASH_AFTER_LEDGER_WRITE_ENV: &str = "FEDSHIELD_TEST_CRASH_AFTER_LEDGER_WRITE";

impl Participant {
    /// Returns the stored privatized update and the ledger's current report
    /// if the round is on the base version (number and sha256) and plan the
    /// update was computed for, with DP, and the ledger holds the entry that
    /// paid for it. A stored update that does not fit is removed: the base
    /// version has moved on or the plan changed, and it can never be asked
    /// for again.
    ///
    /// # Errors
    /// The accountant's error for the ledger's report.
    pub(super) async fn reusable_update(
        &self,
        base_version: ModelVersion,
        base_sha256: &str,
        plan_sha256: &PlanFingerprint,
        plan_has_dp: bool,
    ) -> Result<Option<(StoredUpdate, PrivacyReport)>> {
        let ledger = self.ledger.clone();
        let stored_update = self.stored_update.clone();
        let accounting_delta = self
            .config
            .privacy_budget
            .map_or(DEFAULT_DELTA, |budget| budget.delta);
        let base_sha256 = base_sha256.to_string();
        let plan_sha256 = plan_sha256.clone();
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            find_reusable_update(
                &ledger,
                &stored_update,
                accounting_delta,
                base_version,
                &base_sha256,
                &plan_sha256,
                plan_has_dp,
            )
        })
        .await
        .map_err(|error| {
            ParticipantError::Protocol(format!("stored update task failed: {error}"))
        })?
    }
    /// Returns the ledger entry this round would add, or `None` without DP.
    /// `num_training_records` is the N of the sampling rate q = B/N the
    /// entry accounts with.
    ///
    /// # Errors
    /// [`ParticipantError::PrivacyRequired`] for a round without DP when a
    /// budget is set; [`fedshield_core::CoreError::BelowMinimumRecords`] when
    /// N is below the plan's public minimum; the budget errors when the
    /// round would exceed it.
    pub(super) fn check_privacy(
        &self,
        round_id: RoundId,
        base_version: ModelVersion,
        origin: UpdateOrigin<'_>,
        plan: &TrainingPlan,
        num_training_records: u64,
    ) -> Result<Option<(LedgerEntry, PrivacySpend)>> {
        let ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.privacy_entry(
            &ledger,
            round_id,
            base_version,
            origin,
            plan,
            num_training_records,
        )
    }

    fn privacy_entry(
        &self,
        ledger: &PrivacyLedger,
        round_id: RoundId,
        base_version: ModelVersion,
        origin: UpdateOrigin<'_>,
        plan: &TrainingPlan,
        num_training_records: u64,
    ) -> Result<Option<(LedgerEntry, PrivacySpend)>> {
        let budget = self.config.privacy_budget;
        let Some(dp_sgd) = &plan.dp_sgd else {
            return match budget {
                Some(_) => Err(ParticipantError::PrivacyRequired),
                None => Ok(None),
            };
        };
        let delta = budget.map_or(DEFAULT_DELTA, |budget| budget.delta);
        // Below the plan's public minimum, decline: the reason names the
        // minimum only, not N.
        let sampling_rate = dp_sgd.sampling_rate_for(num_training_records)?;
        let entry = LedgerEntry::for_round(
            round_id,
            base_version,
            dp_sgd,
            sampling_rate,
            plan.org_level_equivalent().as_ref(),
        )
        .with_org_mechanism(plan)
        .with_origin(origin.base_sha256, origin.plan_sha256.clone());
        let after = ledger.spent_with(&entry, delta)?;
        if let Some(budget) = budget {
            let spent = ledger.spent(delta)?;
            if after.epsilon > budget.epsilon {
                return Err(ParticipantError::BudgetExhausted {
                    spent: spent.epsilon,
                    would_be: after.epsilon,
                    budget: budget.epsilon,
                });
            }
            if let (Some(org_budget), Some(org_after)) = (budget.org_epsilon, after.org_epsilon)
                && org_after > org_budget
            {
                return Err(ParticipantError::OrgBudgetExhausted {
                    spent: spent.org_epsilon.unwrap_or(0.0),
                    would_be: org_after,
                    budget: org_budget,
                });
            }
        }
        Ok(Some((entry, after)))
    }

    /// Checks the round against the budget again and records its spend
    /// durably; returns the recorded entry and the report to send with the
    /// update.
    pub(super) fn record_privacy(
        &self,
        round_id: RoundId,
        base_version: ModelVersion,
        origin: UpdateOrigin<'_>,
        plan: &TrainingPlan,
        num_training_records: u64,
    ) -> Result<Option<(LedgerEntry, PrivacyReport)>> {
        // One lock for the check and the write: nothing can spend in between.
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((entry, spend)) = self.privacy_entry(
            &ledger,
            round_id,
            base_version,
            origin,
            plan,
            num_training_records,
        )?
        else {
            return Ok(None);
        };
        ledger.record(entry.clone())?;
        drop(ledger);
        self.metrics.set_privacy_spent(spend.epsilon);
        // The report states the plans' worst case, not the spend at this
        // participant's own q, which would disclose its data size.
        let report = spend.report();
        info!(
            epsilon = spend.epsilon,
            reported_epsilon = report.epsilon,
            delta = report.delta,
            num_rounds = report.num_rounds,
            "privacy spend recorded"
        );
        if std::env::var_os(CRASH_AFTER_LEDGER_WRITE_ENV).is_some() {
            warn!("{CRASH_AFTER_LEDGER_WRITE_ENV} is set: aborting after the ledger write");
            std::process::abort();
        }
        Ok(Some((entry, report)))
    }
}

/// Where an update comes from: the base model's parameters and the plan it
/// was trained under, which key a stored update for a retried round.
#[derive(Clone, Copy)]
pub(super) struct UpdateOrigin<'a> {
    /// The sha256 of the base model's parameters.
    pub(super) base_sha256: &'a str,
    /// The fingerprint of the round's training plan.
    pub(super) plan_sha256: &'a PlanFingerprint,
}

/// Returns the stored update and the ledger's current report at
/// `accounting_delta` if the stored update was computed from
/// `base_version` (parameters of sha256 `base_sha256`) under the plan
/// `plan_sha256`, with DP, and `ledger` holds the entry that paid for it.
/// A stored update that is unreadable, for another base or plan, or
/// without its ledger entry is removed (then the round trains and spends
/// normally, which is always safe). Blocking.
///
/// # Errors
/// The accountant's error for the ledger's report.
fn find_reusable_update(
    ledger: &std::sync::Mutex<PrivacyLedger>,
    stored_update: &StoredUpdateFile,
    accounting_delta: f64,
    base_version: ModelVersion,
    base_sha256: &str,
    plan_sha256: &PlanFingerprint,
    plan_has_dp: bool,
) -> Result<Option<(StoredUpdate, PrivacyReport)>> {
    let remove = |why: &str| {
        if let Err(error) = stored_update.remove() {
            warn!(error = %error, "stored update could not be removed");
        } else {
            info!(reason = why, "stored update removed");
        }
    };
    let header = match stored_update.header() {
        Ok(None) => return Ok(None),
        Ok(Some(header)) => header,
        Err(error) => {
            warn!(error = %error, "stored update unreadable");
            remove("unreadable");
            return Ok(None);
        }
    };
    if !plan_has_dp || !header.is_for(base_version.0, base_sha256, plan_sha256) {
        debug!(
            stored_base_version = header.base_model_version,
            base_version = %base_version,
            "the stored update is for another base version or plan"
        );
        remove("the base version moved on or the plan changed");
        return Ok(None);
    }
    let ledger = ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let paid_for = ledger
        .find(header.ledger_round_id, header.ledger_recorded_unix_ms)
        .is_some_and(|entry| {
            entry.base_model_version == base_version.0
                && entry.base_model_sha256.as_deref() == Some(base_sha256)
                && entry.plan_sha256.as_ref() == Some(plan_sha256)
        });
    if !paid_for {
        drop(ledger);
        warn!(
            ledger_round = header.ledger_round_id,
            "the stored update names no matching privacy ledger entry; training instead"
        );
        remove("no matching ledger entry");
        return Ok(None);
    }
    let report = ledger.spent(accounting_delta)?.report();
    drop(ledger);
    match stored_update.load() {
        Ok(stored) => Ok(stored.map(|stored| (stored, report))),
        Err(error) => {
            warn!(error = %error, "stored update unreadable");
            remove("unreadable");
            Ok(None)
        }
    }
}
