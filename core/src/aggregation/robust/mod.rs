//! Poisoning-robust aggregation rules.
//!
//! The coordinator is honest-but-curious and up to a minority of participants
//! may be malicious (DESIGN.md, "Trust model"): a single update scaled by 100
//! moves a plain mean wherever its sender wants. [`AggregationRule`] names how a
//! round's updates (deltas to the base model) are combined and
//! [`RobustAggregator`] applies it to one round.
//!
//! With K updates of P parameters:
//!
//! | rule (CLI form)    | streaming | memory | time per round                | bounds                                  |
//! |--------------------|-----------|--------|-------------------------------|-----------------------------------------|
//! | `fedavg`           | yes       | O(P)   | O(K·P)                        | nothing                                 |
//! | `norm-bound:C`     | yes       | O(P)   | O(K·P)                        | each update's L2 norm to C              |
//! | `trimmed-mean:β`   | no        | O(K·P) | O(K·log²K·P) (sorting network) | ⌊βK⌋ outliers per coordinate, each side |
//! | `median`           | no        | O(K·P) | O(K·log²K·P) (sorting network) | fewer than K/2 outliers per coordinate  |
//! | `multi-krum:f[:m]` | no        | O(K·P) | O(K²·P) (pairwise distances)  | f Byzantine updates, needs K ≥ 2f+3     |
//!
//! Streaming rules fold each update into one running sum as it arrives (the
//! coordinator's memory stays one model whatever the number of participants,
//! DESIGN.md "Scale"); the others keep every update of the round until
//! [`RobustAggregator::finish`]. Memory is float32 parameters: 4·P bytes per
//! update kept, plus the result.
//!
//! Coordinate-wise rules work on blocks of coordinates: each update's slice of
//! the block is copied into one row of a small scratch buffer, and a sorting
//! network (Batcher's odd–even merge sort) sorts every column at once with
//! element-wise min/max over rows, which the compiler vectorizes; for K ≤ 32
//! this is about four times faster than a per-coordinate `select_nth_unstable`.
//! The coordinate range is split over the machine's cores. Multi-Krum's
//! pairwise distances are accumulated in f64 over the same blocks and threads.
//! See `core/benches/robust_aggregation.rs` for measured costs.
//!
//! Server momentum ([`crate::aggregation::momentum::ServerMomentum`]) composes with every
//! rule: it takes `base + aggregate delta` from [`AggregateOutcome::params`].
//!
//! [`AggregationRule`] is the registry: its variants list the rules, and
//! its methods and [`RobustAggregator`] dispatch to one file per rule.
//!
//! - `norm_bound`: norm bounding (streaming).
//! - `trimmed_mean`: the coordinate-wise trimmed mean.
//! - `median`: the coordinate-wise median.
//! - `multi_krum`: Multi-Krum.

mod median;
mod multi_krum;
mod norm_bound;
#[cfg(test)]
mod tests;
mod trimmed_mean;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::aggregation::fedavg::{FedAvg, check_finite_aggregate};
use crate::aggregation::kernels::finite_squared_norm;
use crate::error::{CoreError, Result};

/// Accepted CLI forms, for error messages.
const EXPECTED_FORMS: &str = "fedavg, norm-bound:<max_norm>, trimmed-mean:<trim_fraction>, median, \
     multi-krum:<num_byzantine> or multi-krum:<num_byzantine>:<num_selected>";

/// How the coordinator combines a round's updates (deltas to the base model).
///
/// In configuration files the rule is a table tagged by `rule`, e.g.
/// `{ rule = "trimmed-mean", trim_fraction = 0.2 }`; on the command line it is
/// the form [`fmt::Display`] prints and [`FromStr`] parses, e.g. `trimmed-mean:0.2`.
/// The tags and the CLI names are the same.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AggregationRule {
    /// Weighted mean (McMahan et al. 2017, arXiv:1602.05629). Streaming, O(model) memory.
    #[default]
    #[serde(rename = "fedavg")]
    FedAvg,
    /// Each update clipped to L2 norm `max_norm`, then the weighted mean (Sun et
    /// al. 2019, "Can You Really Backdoor Federated Learning?", arXiv:1911.07963).
    /// Streaming.
    #[serde(rename = "norm-bound")]
    NormBounded {
        /// The largest L2 norm an update keeps; larger ones are scaled down to it.
        max_norm: f64,
    },
    /// Coordinate-wise trimmed mean: per coordinate, drop the ⌊β·K⌋ largest and
    /// ⌊β·K⌋ smallest values and average the rest, unweighted (Yin et al. 2018,
    /// "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    /// Rates", arXiv:1803.01498). Buffers all K updates.
    TrimmedMean {
        /// β in [0, 0.5): the fraction of updates dropped at each end, per coordinate.
        trim_fraction: f64,
    },
    /// Coordinate-wise median, unweighted (Yin et al. 2018); with an even
    /// number of updates, the mean of the two middle values. Buffers all updates.
    Median,
    /// Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries:
    /// Byzantine Tolerant Gradient Descent", NeurIPS): each update is scored by
    /// the sum of squared L2 distances to its K−f−2 nearest other updates; the
    /// `num_selected` lowest-scoring (default K−f) are averaged, weighted.
    /// Buffers all updates; O(K²·P) time.
    MultiKrum {
        /// f: how many updates may be Byzantine.
        num_byzantine: usize,
        /// m: how many updates are averaged; K−f when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        num_selected: Option<usize>,
    },
}

impl AggregationRule {
    /// Returns true when the rule folds updates as they arrive (memory O(P)),
    /// false when it keeps all of them until the round closes (memory O(K·P)).
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            AggregationRule::FedAvg | AggregationRule::NormBounded { .. }
        )
    }

    /// Checks the rule's parameters.
    ///
    /// # Errors
    /// [`CoreError::InvalidAggregation`] naming the field and its value: a
    /// `max_norm` that is not positive and finite, a `trim_fraction` outside
    /// [0, 0.5), a `num_selected` of 0, or a `num_byzantine` so large that
    /// 2f+3 overflows.
    pub fn validate(&self) -> Result<()> {
        match *self {
            AggregationRule::FedAvg | AggregationRule::Median => Ok(()),
            AggregationRule::NormBounded { max_norm } => norm_bound::validate(max_norm),
            AggregationRule::TrimmedMean { trim_fraction } => trimmed_mean::validate(trim_fraction),
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected,
            } => multi_krum::validate(num_byzantine, num_selected),
        }
    }

    /// Returns the smallest number of updates for which the rule protects
    /// anything; [`RobustAggregator::finish`] refuses fewer, and the
    /// coordinator checks its quorum against it when it starts.
    ///
    /// - FedAvg, norm bounding: 1.
    /// - Trimmed mean: the smallest K with ⌊βK⌋ ≥ 1 (below it nothing is
    ///   trimmed and the rule is a plain mean); 1 when β = 0.
    /// - Median: 3 (with 1 or 2 updates there is no majority to outvote one poisoner).
    /// - Multi-Krum: 2f+3 (Blanchard et al.'s condition), and at least `num_selected`.
    ///
    /// Meant for validated rules; saturates at `usize::MAX` otherwise.
    pub fn min_updates(&self) -> usize {
        match *self {
            AggregationRule::FedAvg | AggregationRule::NormBounded { .. } => 1,
            AggregationRule::TrimmedMean { trim_fraction } => {
                trimmed_mean::min_updates(trim_fraction)
            }
            AggregationRule::Median => median::MIN_UPDATES,
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected,
            } => multi_krum::min_updates(num_byzantine, num_selected),
        }
    }
}

/// Returns an [`CoreError::InvalidAggregation`] with `message`.
fn invalid(message: String) -> CoreError {
    CoreError::InvalidAggregation(message)
}

impl fmt::Display for AggregationRule {
    /// Writes the CLI form, which [`FromStr`] parses back to the same rule.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregationRule::FedAvg => write!(formatter, "fedavg"),
            AggregationRule::NormBounded { max_norm } => write!(formatter, "norm-bound:{max_norm}"),
            AggregationRule::TrimmedMean { trim_fraction } => {
                write!(formatter, "trimmed-mean:{trim_fraction}")
            }
            AggregationRule::Median => write!(formatter, "median"),
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected: None,
            } => write!(formatter, "multi-krum:{num_byzantine}"),
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected: Some(num_selected),
            } => write!(formatter, "multi-krum:{num_byzantine}:{num_selected}"),
        }
    }
}

impl FromStr for AggregationRule {
    type Err = CoreError;

    /// Parses `fedavg`, `norm-bound:5.0`, `trimmed-mean:0.2`, `median`,
    /// `multi-krum:1` or `multi-krum:1:3` (f, then m), and validates the result.
    fn from_str(text: &str) -> Result<Self> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default();
        let arguments: Vec<&str> = parts.collect();
        let rule = match (name, arguments.as_slice()) {
            ("fedavg", []) => AggregationRule::FedAvg,
            ("median", []) => AggregationRule::Median,
            ("norm-bound", [max_norm]) => AggregationRule::NormBounded {
                max_norm: parse_argument(text, max_norm, "max_norm")?,
            },
            ("trimmed-mean", [trim_fraction]) => AggregationRule::TrimmedMean {
                trim_fraction: parse_argument(text, trim_fraction, "trim_fraction")?,
            },
            ("multi-krum", [num_byzantine]) => AggregationRule::MultiKrum {
                num_byzantine: parse_argument(text, num_byzantine, "num_byzantine")?,
                num_selected: None,
            },
            ("multi-krum", [num_byzantine, num_selected]) => AggregationRule::MultiKrum {
                num_byzantine: parse_argument(text, num_byzantine, "num_byzantine")?,
                num_selected: Some(parse_argument(text, num_selected, "num_selected")?),
            },
            ("fedavg" | "median", _) => {
                return Err(invalid(format!(
                    "aggregation rule {text:?} takes no arguments, expected {name:?}"
                )));
            }
            ("norm-bound", _) => return Err(expected_form(text, "norm-bound:<max_norm>")),
            ("trimmed-mean", _) => {
                return Err(expected_form(text, "trimmed-mean:<trim_fraction>"));
            }
            ("multi-krum", _) => {
                return Err(expected_form(
                    text,
                    "multi-krum:<num_byzantine> or multi-krum:<num_byzantine>:<num_selected>",
                ));
            }
            _ => {
                return Err(invalid(format!(
                    "unknown aggregation rule {text:?}, expected one of {EXPECTED_FORMS}"
                )));
            }
        };
        rule.validate()?;
        Ok(rule)
    }
}

fn expected_form(text: &str, form: &str) -> CoreError {
    invalid(format!(
        "aggregation rule {text:?} must have the form {form}"
    ))
}

fn parse_argument<T: FromStr>(text: &str, argument: &str, field: &str) -> Result<T> {
    argument.parse().map_err(|_| {
        invalid(format!(
            "aggregation rule {text:?} has an unparsable {field} {argument:?}"
        ))
    })
}

/// The result of one round's aggregation.
///
/// It reports only counts and arrival indices, never values derived from an
/// individual update (norms, scores, distances), so it can be logged and put
/// on a model card.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateOutcome {
    /// The next global parameters: base + the rule's aggregate of the deltas.
    pub params: Vec<f32>,
    /// How many updates the round aggregated (K).
    pub num_updates: usize,
    /// How many updates norm bounding scaled down (0 for other rules).
    pub num_clipped: usize,
    /// Arrival indices (0-based, ascending) of the updates Multi-Krum left out
    /// of the average (empty for other rules).
    pub rejected: Vec<usize>,
}

/// Aggregates one round's updates under an [`AggregationRule`].
///
/// Every update is checked (length, positive finite weight, finite values)
/// before it changes anything, so a refused update leaves the aggregator as it
/// was.
pub struct RobustAggregator {
    rule: AggregationRule,
    num_params: usize,
    state: State,
}

/// What the aggregator holds between `add`s.
enum State {
    /// FedAvg and norm bounding: one running weighted sum, O(P) memory.
    Streaming {
        sum: FedAvg,
        /// Norm bounding's C; None for FedAvg.
        max_norm: Option<f64>,
        num_clipped: usize,
    },
    /// Trimmed mean, median, Multi-Krum: every delta and its weight, in arrival order.
    Buffered {
        rule: BufferedRule,
        deltas: Vec<Vec<f32>>,
        weights: Vec<f64>,
    },
}

/// The rules that need all updates at once, with their parameters.
#[derive(Clone, Copy)]
enum BufferedRule {
    TrimmedMean {
        trim_fraction: f64,
    },
    Median,
    MultiKrum {
        num_byzantine: usize,
        num_selected: Option<usize>,
    },
}

impl RobustAggregator {
    /// Returns an empty aggregator for models of `num_params` parameters.
    ///
    /// # Errors
    /// [`CoreError::InvalidAggregation`] if the rule's parameters are invalid.
    pub fn new(rule: &AggregationRule, num_params: usize) -> Result<Self> {
        Self::with_buffer(rule, num_params, Vec::new())
    }

    /// Returns whether the rule folds updates into one running sum (and so
    /// uses the buffer given to [`Self::with_buffer`]).
    pub fn is_streaming(rule: &AggregationRule) -> bool {
        rule.is_streaming()
    }

    /// As [`Self::new`]; a streaming rule keeps its running sum in `buffer`'s
    /// memory (its contents are dropped), a buffering rule drops it.
    ///
    /// # Errors
    /// [`CoreError::InvalidAggregation`] if the rule's parameters are invalid.
    pub fn with_buffer(
        rule: &AggregationRule,
        num_params: usize,
        buffer: Vec<f32>,
    ) -> Result<Self> {
        rule.validate()?;
        let streaming = |max_norm| State::Streaming {
            sum: FedAvg::with_buffer(buffer, num_params),
            max_norm,
            num_clipped: 0,
        };
        let buffered = |rule| State::Buffered {
            rule,
            deltas: Vec::new(),
            weights: Vec::new(),
        };
        let state = match *rule {
            AggregationRule::FedAvg => streaming(None),
            AggregationRule::NormBounded { max_norm } => streaming(Some(max_norm)),
            AggregationRule::TrimmedMean { trim_fraction } => {
                buffered(BufferedRule::TrimmedMean { trim_fraction })
            }
            AggregationRule::Median => buffered(BufferedRule::Median),
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected,
            } => buffered(BufferedRule::MultiKrum {
                num_byzantine,
                num_selected,
            }),
        };
        Ok(RobustAggregator {
            rule: rule.clone(),
            num_params,
            state,
        })
    }

    /// Returns the rule this aggregator applies.
    pub fn rule(&self) -> &AggregationRule {
        &self.rule
    }

    /// Adds one update (a delta to the base model) with weight `weight` (its
    /// number of training examples; the trimmed mean and the median ignore it).
    ///
    /// Takes the buffer by value: buffering rules keep it (no copy) and return
    /// `None`; streaming rules fold it in (norm bounding first scales it in
    /// place to norm `max_norm` if its norm, computed in f64, is larger) and
    /// return it as `Some(buffer)` so the caller can reuse its memory.
    ///
    /// # Errors
    /// [`CoreError::ParamCountMismatch`], [`CoreError::InvalidWeight`] or
    /// [`CoreError::NonFiniteParam`] (naming the first non-finite value); the
    /// aggregator is unchanged and the buffer is dropped.
    pub fn add(&mut self, mut delta: Vec<f32>, weight: f64) -> Result<Option<Vec<f32>>> {
        if delta.len() != self.num_params {
            return Err(CoreError::ParamCountMismatch {
                expected: self.num_params as u64,
                actual: delta.len() as u64,
            });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(CoreError::InvalidWeight(weight));
        }
        let squared_norm = finite_squared_norm(&delta)?;
        match &mut self.state {
            State::Streaming {
                sum,
                max_norm,
                num_clipped,
            } => {
                let clipped = match *max_norm {
                    Some(max_norm) => norm_bound::clip(&mut delta, squared_norm, max_norm),
                    None => false,
                };
                sum.add(&delta, weight)?;
                if clipped {
                    *num_clipped += 1;
                }
                Ok(Some(delta))
            }
            State::Buffered {
                deltas, weights, ..
            } => {
                deltas.push(delta);
                weights.push(weight);
                Ok(None)
            }
        }
    }

    /// Returns the number of updates added so far.
    pub fn num_updates(&self) -> usize {
        match &self.state {
            State::Streaming { sum, .. } => sum.num_updates(),
            State::Buffered { deltas, .. } => deltas.len(),
        }
    }

    /// Returns the next global parameters, `base + the rule's aggregate of the
    /// deltas`, and what the rule did.
    ///
    /// # Errors
    /// - [`CoreError::EmptyAggregate`] if nothing was added;
    /// - [`CoreError::ParamCountMismatch`] if `base` has the wrong size;
    /// - [`CoreError::NonFiniteAggregate`] if a parameter of the result is
    ///   not finite (only possible when an update skipped
    ///   [`crate::aggregation::fedavg::check_applies_finitely`]);
    /// - [`CoreError::TooFewUpdates`] if fewer updates than
    ///   [`AggregationRule::min_updates`] arrived (or Multi-Krum's
    ///   `num_selected` exceeds them): the coordinator should abandon the
    ///   round rather than publish an aggregate the rule cannot protect.
    pub fn finish(self, base: &[f32]) -> Result<AggregateOutcome> {
        let num_updates = self.num_updates();
        if num_updates == 0 {
            return Err(CoreError::EmptyAggregate);
        }
        if base.len() != self.num_params {
            return Err(CoreError::ParamCountMismatch {
                expected: self.num_params as u64,
                actual: base.len() as u64,
            });
        }
        let required = self.rule.min_updates();
        if num_updates < required {
            return Err(CoreError::TooFewUpdates {
                rule: self.rule.to_string(),
                required,
                actual: num_updates,
            });
        }
        match self.state {
            State::Streaming {
                sum, num_clipped, ..
            } => Ok(AggregateOutcome {
                params: sum.finish(base)?,
                num_updates,
                num_clipped,
                rejected: Vec::new(),
            }),
            State::Buffered {
                rule,
                deltas,
                weights,
            } => {
                let (params, rejected) = match rule {
                    BufferedRule::TrimmedMean { trim_fraction } => (
                        trimmed_mean::aggregate(base, &deltas, trim_fraction),
                        Vec::new(),
                    ),
                    BufferedRule::Median => (median::aggregate(base, &deltas), Vec::new()),
                    BufferedRule::MultiKrum {
                        num_byzantine,
                        num_selected,
                    } => {
                        multi_krum::aggregate(base, &deltas, &weights, num_byzantine, num_selected)
                    }
                };
                // Each coordinate lies between the smallest and the largest
                // delta, so only `base +` can leave the float32 range.
                check_finite_aggregate(&params, "robust aggregate")?;
                Ok(AggregateOutcome {
                    params,
                    num_updates,
                    num_clipped: 0,
                    rejected,
                })
            }
        }
    }
}
