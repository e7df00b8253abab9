//! The privacy lineage of a model: what a federation promised for all of its
//! rounds, and whether a coordinator restarted on a stored model with other
//! privacy settings still keeps that promise.
//!
//! A federation promises (ε, δ) over all `num_rounds` rounds to every
//! participant with at least `min_records` records ([`PrivacyPromise`]); its
//! coordinator calibrates one plan so that `num_rounds` rounds of it compose
//! to ε ([`crate::privacy::calibrate_plan`]). A coordinator restarted on the
//! stored model calibrates again from its own settings, for all of its
//! rounds, as if none had run: the rounds already in the model are
//! forgotten. [`weakenings`] puts them back: it composes, for every
//! participant on the latest card, the DP rounds already in the model with
//! the rounds the new plan would still run, at the promise's δ, and compares
//! the worst with the stored promise. Training without DP, a larger ε or δ,
//! dropping organization-level DP, and any change of plan, number of rounds
//! or minimum data size whose composition exceeds the promise each weaken
//! the lineage.
//!
//! The coordinator refuses to start on a weakening unless its operator
//! acknowledges it; an acknowledged weakening ([`PrivacyWeakening`]) goes
//! into every later model card, whose `guarantee` turns to `none` once a
//! round without DP is in the model ([`LineageRecord::next_model_privacy`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::plan::TrainingPlan;
use crate::privacy::{
    DpRoundPlan, Guarantee, ModelPrivacy, PrivacyReport, PrivacyTarget, plans_guarantee,
};

/// Relative slack when comparing a composed ε with a promise: composing the
/// same rounds in two parts may differ from composing them at once in the
/// last bits.
const COMPOSITION_RELATIVE_TOLERANCE: f64 = 1e-9;

/// What a federation promises each participant's records over its whole
/// lineage, as its coordinator's privacy settings state it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyPromise {
    /// Record-level ε over all rounds.
    pub epsilon: f64,
    /// δ of the record-level (and organization-level) guarantee.
    pub delta: f64,
    /// N_min: the promise holds for participants with at least this many records.
    pub min_records: u64,
    /// Organization-level ε over all rounds, with organization-level DP.
    #[serde(default)]
    pub org_epsilon: Option<f64>,
    /// The rounds the promise covers.
    pub num_rounds: u64,
}

impl PrivacyPromise {
    /// Returns the promise of `target` over `num_rounds` rounds.
    pub fn new(target: &PrivacyTarget, num_rounds: u64) -> PrivacyPromise {
        PrivacyPromise {
            epsilon: target.epsilon,
            delta: target.delta,
            min_records: target.min_records,
            org_epsilon: target.org_level.as_ref().map(|org| org.epsilon),
            num_rounds,
        }
    }
}

impl fmt::Display for PrivacyPromise {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "record-level (ε = {}, δ = {})-DP over {} rounds for participants with at least {} records",
            self.epsilon, self.delta, self.num_rounds, self.min_records
        )?;
        if let Some(org_epsilon) = self.org_epsilon {
            write!(formatter, ", organization-level ε = {org_epsilon}")?;
        }
        Ok(())
    }
}

/// A weakening of the privacy settings that an operator acknowledged when
/// restarting the coordinator, as model cards record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyWeakening {
    /// The stored version the first round under the weaker settings trained from.
    pub since_version: u64,
    /// The promise before; `None` on cards written before promises were recorded.
    pub previous: Option<PrivacyPromise>,
    /// The promise after; `None`: the rounds from then on train without DP.
    pub next: Option<PrivacyPromise>,
    /// What weakened the lineage, as the coordinator described it.
    pub reasons: Vec<String>,
}

/// One way new privacy settings weaken a stored lineage.
#[derive(Debug, Clone, PartialEq)]
pub enum Weakening {
    /// The new settings have no DP: rounds would train without it.
    NoDp,
    /// The new record-level ε is larger than the promised one.
    LargerEpsilon { promised: f64, given: f64 },
    /// The new δ is larger than the promised (or, on a card without a
    /// promise, the stated) one.
    LargerDelta { promised: f64, given: f64 },
    /// The promise has organization-level DP and the new settings do not.
    NoOrgDp { promised: f64 },
    /// The new organization-level ε is larger than the promised one.
    LargerOrgEpsilon { promised: f64, given: f64 },
    /// The DP rounds in the model and the rounds the new plan would still
    /// run compose, for the worst participant, to more than the promise.
    ComposedEpsilonAbove {
        composed: f64,
        promised: f64,
        num_rounds_left: u64,
    },
    /// The same, for organization-level DP.
    ComposedOrgEpsilonAbove {
        composed: f64,
        promised: f64,
        num_rounds_left: u64,
    },
    /// The card records no promise (it predates them), so only its own plan
    /// can be shown to continue it, and the new settings give another.
    OtherPlanWithoutPromise,
}

/// What new privacy settings would run on top of a stored model.
#[derive(Debug, Clone, Copy)]
pub struct Continuation<'a> {
    /// The promise the new settings make; `None` without DP.
    pub promise: Option<&'a PrivacyPromise>,
    /// Their calibrated plan's DP settings; `None` without DP.
    pub plan: Option<&'a DpRoundPlan>,
    /// The rounds they would still run.
    pub num_rounds_left: u64,
}

/// Returns every way `next` weakens the lineage whose latest model card
/// states `stored`; empty when it keeps the stored promise, or when the
/// model already has no DP guarantee.
///
/// # Errors
/// [`crate::CoreError::InvalidPrivacy`] if the accountant refuses a plan's
/// parameters.
pub fn weakenings(stored: &ModelPrivacy, next: &Continuation<'_>) -> Result<Vec<Weakening>> {
    if stored.guarantee == Guarantee::NoDp {
        return Ok(Vec::new());
    }
    let (Some(promise), Some(plan)) = (next.promise, next.plan) else {
        return Ok(vec![Weakening::NoDp]);
    };
    let Some(promised) = &stored.promise else {
        return Ok(weakenings_without_promise(stored, promise, plan));
    };
    let mut found = Vec::new();
    if promise.epsilon > promised.epsilon {
        found.push(Weakening::LargerEpsilon {
            promised: promised.epsilon,
            given: promise.epsilon,
        });
    }
    if promise.delta > promised.delta {
        found.push(Weakening::LargerDelta {
            promised: promised.delta,
            given: promise.delta,
        });
    }
    match (promised.org_epsilon, promise.org_epsilon) {
        (Some(promised_org), None) => found.push(Weakening::NoOrgDp {
            promised: promised_org,
        }),
        (Some(promised_org), Some(given)) if given > promised_org => {
            found.push(Weakening::LargerOrgEpsilon {
                promised: promised_org,
                given,
            });
        }
        _ => {}
    }
    let at_end = worst_at_end(stored, plan, next.num_rounds_left, promised.delta)?;
    if exceeds(at_end.epsilon, promised.epsilon) {
        found.push(Weakening::ComposedEpsilonAbove {
            composed: at_end.epsilon,
            promised: promised.epsilon,
            num_rounds_left: next.num_rounds_left,
        });
    }
    if let (Some(promised_org), Some(composed_org)) = (promised.org_epsilon, at_end.org_epsilon)
        && exceeds(composed_org, promised_org)
    {
        found.push(Weakening::ComposedOrgEpsilonAbove {
            composed: composed_org,
            promised: promised_org,
            num_rounds_left: next.num_rounds_left,
        });
    }
    Ok(found)
}

/// The checks left for a card written before promises were recorded: a
/// larger δ, and any other plan than the card's latest.
fn weakenings_without_promise(
    stored: &ModelPrivacy,
    promise: &PrivacyPromise,
    plan: &DpRoundPlan,
) -> Vec<Weakening> {
    let mut found = Vec::new();
    if promise.delta > stored.delta {
        found.push(Weakening::LargerDelta {
            promised: stored.delta,
            given: promise.delta,
        });
    }
    let stored_plan = DpRoundPlan {
        dp_sgd: stored.dp_sgd.clone(),
        org_dp: stored.org_dp.clone(),
    };
    if *plan != stored_plan {
        found.push(Weakening::OtherPlanWithoutPromise);
    }
    found
}

fn exceeds(composed: f64, promised: f64) -> bool {
    composed > promised * (1.0 + COMPOSITION_RELATIVE_TOLERANCE)
}

/// The worst guarantee over participants at the end of the lineage.
struct WorstAtEnd {
    epsilon: f64,
    /// Over participants whose every round had organization-level DP.
    org_epsilon: Option<f64>,
}

/// Returns the worst guarantee, at `delta`, of any participant if it takes
/// part in all `num_rounds_left` rounds of `plan` on top of its rounds in
/// the model `stored` describes (a participant new to the lineage has none).
fn worst_at_end(
    stored: &ModelPrivacy,
    plan: &DpRoundPlan,
    num_rounds_left: u64,
    delta: f64,
) -> Result<WorstAtEnd> {
    let listed = stored.with_plans_listed();
    let mut plans = listed.plans;
    let plan_index = match plans.iter().position(|known| known == plan) {
        Some(index) => index,
        None => {
            plans.push(plan.clone());
            plans.len() - 1
        }
    };
    // Participants with the same rounds per plan have the same guarantee.
    let mut distinct: BTreeSet<Vec<u64>> = BTreeSet::new();
    for counts in listed
        .participants
        .values()
        .map(|line| line.rounds_by_plan.clone())
        .chain([Vec::new()])
    {
        let mut counts = counts;
        counts.resize(plans.len(), 0);
        counts[plan_index] += num_rounds_left;
        distinct.insert(counts);
    }
    let mut worst = WorstAtEnd {
        epsilon: 0.0,
        org_epsilon: None,
    };
    for counts in &distinct {
        let guarantee = plans_guarantee(&plans, counts, delta)?;
        worst.epsilon = worst.epsilon.max(guarantee.epsilon);
        if let Some(org_epsilon) = guarantee.org_epsilon {
            worst.org_epsilon = Some(worst.org_epsilon.unwrap_or(0.0).max(org_epsilon));
        }
    }
    Ok(worst)
}

/// What one coordinator run writes into the privacy section of the model
/// cards it publishes, besides each round's reports: the promise the
/// lineage stands on, and the weakening its operator acknowledged, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineageRecord {
    /// The promise cards state; `None` keeps the parent card's.
    pub promise: Option<PrivacyPromise>,
    /// The acknowledged weakening this run trains under; its `next` is the
    /// promise cards state.
    pub weakening: Option<PrivacyWeakening>,
}

impl LineageRecord {
    /// Returns the privacy section of a version aggregated, under `plan`,
    /// from a model whose section is `parent`, with `contributors`' updates
    /// and the privacy `reports` among them; plan-implied guarantees are
    /// computed at `delta` (the parent's when `None`). A round without DP
    /// on a model with a privacy section keeps its DP accounting and states
    /// `guarantee: none`; `None` only for a model with no DP round at all.
    ///
    /// # Errors
    /// [`crate::CoreError::InvalidPrivacy`] if the accountant refuses the
    /// plan's parameters.
    pub fn next_model_privacy(
        &self,
        parent: Option<&ModelPrivacy>,
        plan: &TrainingPlan,
        delta: Option<f64>,
        contributors: &[String],
        reports: &[(String, PrivacyReport)],
    ) -> Result<Option<ModelPrivacy>> {
        let mut next = if plan.dp_sgd.is_some() {
            let Some(delta) = delta.or(parent.map(|parent| parent.delta)) else {
                return Ok(None);
            };
            ModelPrivacy::next(parent, plan, delta, reports)?
        } else {
            let Some(parent) = parent else {
                return Ok(None);
            };
            parent.after_round_without_dp(contributors)
        };
        match (&self.weakening, &self.promise) {
            (Some(weakening), _) => {
                next.promise = weakening.next;
                if !next.weakenings.contains(weakening) {
                    next.weakenings.push(weakening.clone());
                }
            }
            (None, Some(promise)) => next.promise = Some(*promise),
            (None, None) => {}
        }
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::target::tests::target;
    use crate::privacy::{
        ParticipantPrivacy, calibrate_plan, composed_epsilon, record_level_mechanism,
    };

    /// The δ of [`target`].
    const DELTA: f64 = 1e-5;

    fn report(num_rounds: u64) -> PrivacyReport {
        PrivacyReport {
            epsilon: 0.01,
            delta: DELTA,
            org_epsilon: None,
            num_rounds,
        }
    }

    /// Returns the calibrated plan of `target` over `num_rounds` rounds,
    /// its DP settings and its promise.
    fn federation(
        target: &PrivacyTarget,
        num_rounds: u64,
    ) -> (TrainingPlan, DpRoundPlan, PrivacyPromise) {
        let plan = calibrate_plan(&TrainingPlan::new(), target, num_rounds).unwrap();
        let dp_plan = DpRoundPlan::of(&plan).unwrap();
        (plan, dp_plan, PrivacyPromise::new(target, num_rounds))
    }

    /// Returns the privacy section after `num_rounds` DP rounds of `plan`
    /// with participants a and b.
    fn after_dp_rounds(
        parent: Option<ModelPrivacy>,
        plan: &TrainingPlan,
        promise: PrivacyPromise,
        num_rounds: u64,
    ) -> ModelPrivacy {
        let record = LineageRecord {
            promise: Some(promise),
            weakening: None,
        };
        let contributors = ["a".to_string(), "b".to_string()];
        let mut privacy = parent;
        for round in 1..=num_rounds {
            let reports = [
                ("a".to_string(), report(round)),
                ("b".to_string(), report(round)),
            ];
            privacy = record
                .next_model_privacy(privacy.as_ref(), plan, Some(DELTA), &contributors, &reports)
                .unwrap();
        }
        privacy.unwrap()
    }

    fn continuation<'a>(
        promise: Option<&'a PrivacyPromise>,
        plan: Option<&'a DpRoundPlan>,
        num_rounds_left: u64,
    ) -> Continuation<'a> {
        Continuation {
            promise,
            plan,
            num_rounds_left,
        }
    }

    #[test]
    fn the_same_settings_continue_the_lineage_and_other_ones_weaken_it_by_name() {
        let (plan, dp_plan, promise) = federation(&target(3.0), 6);
        let stored = after_dp_rounds(None, &plan, promise, 2);
        assert_eq!(stored.promise, Some(promise));
        let same = continuation(Some(&promise), Some(&dp_plan), 4);
        assert_eq!(weakenings(&stored, &same).unwrap(), Vec::new());

        assert_eq!(
            weakenings(&stored, &continuation(None, None, 4)).unwrap(),
            vec![Weakening::NoDp]
        );

        // A larger ε recalibrates σ for all 6 rounds: the promise is broken
        // both as stated and as composed with the 2 rounds already run.
        let (_, looser_dp, looser) = federation(&target(6.0), 6);
        let found = weakenings(&stored, &continuation(Some(&looser), Some(&looser_dp), 4)).unwrap();
        assert_eq!(
            found[0],
            Weakening::LargerEpsilon {
                promised: 3.0,
                given: 6.0
            }
        );
        assert!(
            matches!(found[1], Weakening::ComposedEpsilonAbove { composed, promised, num_rounds_left: 4 } if composed > 3.0 && promised == 3.0),
            "{found:?}"
        );

        let mut larger_delta = target(3.0);
        larger_delta.delta = 1e-4;
        let (_, delta_dp, delta_promise) = federation(&larger_delta, 6);
        let found = weakenings(
            &stored,
            &continuation(Some(&delta_promise), Some(&delta_dp), 4),
        )
        .unwrap();
        assert!(
            found.contains(&Weakening::LargerDelta {
                promised: 1e-5,
                given: 1e-4
            }),
            "{found:?}"
        );
    }

    #[test]
    fn more_rounds_at_the_same_epsilon_compose_above_the_promise() {
        // Recalibrated for 12 rounds, σ is smaller than the 2 rounds
        // already run had: those and 10 more exceed ε = 3.
        let (plan, _, promise) = federation(&target(3.0), 6);
        let stored = after_dp_rounds(None, &plan, promise, 2);
        let (longer_plan, longer_dp, longer) = federation(&target(3.0), 12);
        let found =
            weakenings(&stored, &continuation(Some(&longer), Some(&longer_dp), 10)).unwrap();
        let [Weakening::ComposedEpsilonAbove { composed, .. }] = found.as_slice() else {
            panic!("{found:?}");
        };
        let expected = composed_epsilon(
            &[
                record_level_mechanism(plan.dp_sgd.as_ref().unwrap(), 2),
                record_level_mechanism(longer_plan.dp_sgd.as_ref().unwrap(), 10),
            ],
            DELTA,
        )
        .unwrap();
        assert!((composed - expected).abs() < 1e-12, "{composed} {expected}");
        // A stronger ε for the rounds left keeps the promise.
        let (_, stronger_dp, stronger) = federation(&target(1.5), 6);
        assert_eq!(
            weakenings(
                &stored,
                &continuation(Some(&stronger), Some(&stronger_dp), 4)
            )
            .unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn dropping_organization_level_dp_weakens_the_lineage() {
        let mut with_org = target(3.0);
        with_org.org_level = Some(crate::privacy::OrgPrivacyTarget {
            epsilon: 5.0,
            clip_norm: 1.0,
        });
        let (plan, _, promise) = federation(&with_org, 6);
        let stored = after_dp_rounds(None, &plan, promise, 2);
        let (_, record_only_dp, record_only) = federation(&target(3.0), 6);
        let found = weakenings(
            &stored,
            &continuation(Some(&record_only), Some(&record_only_dp), 4),
        )
        .unwrap();
        assert!(
            found.contains(&Weakening::NoOrgDp { promised: 5.0 }),
            "{found:?}"
        );
    }

    #[test]
    fn a_model_without_a_guarantee_has_nothing_left_to_weaken() {
        let (plan, _, promise) = federation(&target(3.0), 6);
        let stored = after_dp_rounds(None, &plan, promise, 1).after_round_without_dp(&[]);
        assert_eq!(
            weakenings(&stored, &continuation(None, None, 5)).unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn an_acknowledged_restart_without_dp_keeps_the_dp_accounting_and_states_no_guarantee() {
        let (plan, _, promise) = federation(&target(3.0), 6);
        let stored = after_dp_rounds(None, &plan, promise, 2);
        let weakening = PrivacyWeakening {
            since_version: 2,
            previous: Some(promise),
            next: None,
            reasons: vec!["no dp".to_string()],
        };
        let record = LineageRecord {
            promise: None,
            weakening: Some(weakening.clone()),
        };
        let contributors = ["a".to_string(), "c".to_string()];
        let without_dp = TrainingPlan::new();
        let third = record
            .next_model_privacy(Some(&stored), &without_dp, None, &contributors, &[])
            .unwrap()
            .expect("a DP lineage keeps its privacy section");
        assert_eq!(third.guarantee, Guarantee::NoDp);
        assert!(!third.guarantee_holds());
        assert_eq!(third.num_rounds_without_dp, 1);
        assert_eq!(third.contributors_without_dp["c"], 1);
        // The DP rounds' accounting is kept as it was.
        assert_eq!(third.epsilon, stored.epsilon);
        assert_eq!(third.participants, stored.participants);
        assert_eq!(third.weakenings, vec![weakening.clone()]);
        assert_eq!(third.promise, None);
        let fourth = record
            .next_model_privacy(Some(&third), &without_dp, None, &contributors, &[])
            .unwrap()
            .unwrap();
        assert_eq!(fourth.num_rounds_without_dp, 2);
        assert_eq!(fourth.contributors_without_dp["a"], 2);
        assert_eq!(fourth.weakenings.len(), 1, "recorded once");
        // A later DP round does not bring the guarantee back.
        let fifth = LineageRecord::default()
            .next_model_privacy(
                Some(&fourth),
                &plan,
                Some(DELTA),
                &contributors,
                &[("a".to_string(), report(3))],
            )
            .unwrap()
            .unwrap();
        assert_eq!(fifth.guarantee, Guarantee::NoDp);
        assert_eq!(fifth.participants["a"].num_rounds_contributed, 3);
        // A federation that never had DP has no privacy section.
        assert_eq!(
            record
                .next_model_privacy(None, &without_dp, None, &contributors, &[])
                .unwrap(),
            None
        );
    }

    #[test]
    fn rounds_under_two_plans_compose_both_on_the_card() {
        let (plan, _, promise) = federation(&target(3.0), 6);
        let stored = after_dp_rounds(None, &plan, promise, 2);
        let (stronger_plan, _, _) = federation(&target(1.5), 6);
        let next = after_dp_rounds(Some(stored), &stronger_plan, promise, 1);
        assert_eq!(next.plans.len(), 2);
        let line: &ParticipantPrivacy = &next.participants["a"];
        assert_eq!(line.rounds_by_plan, vec![2, 1]);
        assert_eq!(line.num_rounds_contributed, 3);
        let expected = composed_epsilon(
            &[
                record_level_mechanism(plan.dp_sgd.as_ref().unwrap(), 2),
                record_level_mechanism(stronger_plan.dp_sgd.as_ref().unwrap(), 1),
            ],
            DELTA,
        )
        .unwrap();
        assert!((line.plan_epsilon - expected).abs() < 1e-12);
        assert_eq!(next.epsilon, line.plan_epsilon);
        // The stored promise stays: the stronger settings are not a new one.
        assert_eq!(next.promise, Some(promise));
    }

    #[test]
    fn a_card_written_before_plans_and_promises_reads_as_one_plan() {
        let (plan, dp_plan, promise) = federation(&target(3.0), 6);
        let current = after_dp_rounds(None, &plan, promise, 2);
        // The card as written before the lineage fields existed.
        let mut json = serde_json::to_value(&current).unwrap();
        let section = json.as_object_mut().unwrap();
        for field in [
            "guarantee",
            "promise",
            "plans",
            "num_rounds_without_dp",
            "contributors_without_dp",
            "weakenings",
        ] {
            assert!(section.remove(field).is_some(), "{field}");
        }
        for line in section["participants"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            line.as_object_mut().unwrap().remove("rounds_by_plan");
        }
        let legacy: ModelPrivacy = serde_json::from_value(json).unwrap();
        assert_eq!(legacy.guarantee, Guarantee::Dp);
        assert!(legacy.plans.is_empty() && legacy.promise.is_none());
        assert_eq!(
            weakenings(&legacy, &continuation(Some(&promise), Some(&dp_plan), 4)).unwrap(),
            Vec::new()
        );
        let (_, other_dp, other) = federation(&target(2.0), 6);
        assert_eq!(
            weakenings(&legacy, &continuation(Some(&other), Some(&other_dp), 4)).unwrap(),
            vec![Weakening::OtherPlanWithoutPromise]
        );
        let next = after_dp_rounds(Some(legacy), &plan, promise, 1);
        assert_eq!(next.participants["b"].rounds_by_plan, vec![3]);
        assert_eq!(next.plans, vec![dp_plan]);
        assert_eq!(next.promise, Some(promise));
    }
}
