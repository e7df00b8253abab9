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
//! Server momentum ([`crate::aggregate::ServerMomentum`]) composes with every
//! rule: it takes `base + aggregate delta` from [`AggregateOutcome::params`].

use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::aggregate::{FedAvg, check_finite_aggregate};
use crate::error::{CoreError, Result};

/// Coordinates processed together: one block of the K updates (K·4 KiB) stays
/// in the core's L2 cache while it is sorted or compared.
const BLOCK_COORDS: usize = 1024;

/// Below this many coordinates per thread, spawning threads costs more than it saves.
const MIN_COORDS_PER_THREAD: usize = 1 << 16;

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
            AggregationRule::NormBounded { max_norm } => {
                if max_norm.is_finite() && max_norm > 0.0 {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "norm-bound max_norm must be positive and finite, got {max_norm}"
                    )))
                }
            }
            AggregationRule::TrimmedMean { trim_fraction } => {
                if (0.0..0.5).contains(&trim_fraction) {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "trimmed-mean trim_fraction must be in [0, 0.5), got {trim_fraction}"
                    )))
                }
            }
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected,
            } => {
                if krum_min_updates(num_byzantine).is_none() {
                    return Err(invalid(format!(
                        "multi-krum num_byzantine is too large, got {num_byzantine}"
                    )));
                }
                if num_selected == Some(0) {
                    return Err(invalid(
                        "multi-krum num_selected must be at least 1, got 0".to_string(),
                    ));
                }
                Ok(())
            }
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
                trimmed_mean_min_updates(trim_fraction)
            }
            AggregationRule::Median => 3,
            AggregationRule::MultiKrum {
                num_byzantine,
                num_selected,
            } => krum_min_updates(num_byzantine)
                .unwrap_or(usize::MAX)
                .max(num_selected.unwrap_or(0)),
        }
    }
}

/// Returns 2f+3, or None when it overflows.
fn krum_min_updates(num_byzantine: usize) -> Option<usize> {
    num_byzantine.checked_mul(2)?.checked_add(3)
}

/// Returns how many values the trimmed mean drops at each end of a coordinate
/// with `num_updates` values: ⌊β·K⌋, never so many that nothing is left.
fn trim_count(trim_fraction: f64, num_updates: usize) -> usize {
    let num_trimmed = (trim_fraction * num_updates as f64).floor() as usize;
    num_trimmed.min(num_updates.saturating_sub(1) / 2)
}

/// Returns the smallest K with ⌊βK⌋ ≥ 1, computed with the same arithmetic as
/// [`trim_count`] so the two agree.
fn trimmed_mean_min_updates(trim_fraction: f64) -> usize {
    if !(trim_fraction > 0.0 && trim_fraction < 0.5) {
        return 1;
    }
    let estimate = (1.0 / trim_fraction).ceil();
    if estimate >= 1e15 {
        return usize::MAX;
    }
    let mut num_updates = (estimate as usize).max(1);
    while num_updates > 1 && trim_count(trim_fraction, num_updates - 1) >= 1 {
        num_updates -= 1;
    }
    while trim_count(trim_fraction, num_updates) < 1 {
        num_updates += 1;
    }
    num_updates
}

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
        matches!(
            rule,
            AggregationRule::FedAvg | AggregationRule::NormBounded { .. }
        )
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
                let norm = squared_norm.sqrt();
                let mut clipped = false;
                if let Some(max_norm) = *max_norm
                    && norm > max_norm
                {
                    clipped = true;
                    let scale = (max_norm / norm) as f32;
                    for value in &mut delta {
                        *value *= scale;
                    }
                }
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
    ///   [`crate::aggregate::check_applies_finitely`]);
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
                    BufferedRule::TrimmedMean { trim_fraction } => {
                        let num_trimmed = trim_count(trim_fraction, num_updates);
                        (coordinate_wise(base, &deltas, num_trimmed), Vec::new())
                    }
                    // The median is the trimmed mean that keeps only the middle
                    // value (odd K) or the two middle values (even K).
                    BufferedRule::Median => {
                        let num_trimmed = (num_updates - 1) / 2;
                        (coordinate_wise(base, &deltas, num_trimmed), Vec::new())
                    }
                    BufferedRule::MultiKrum {
                        num_byzantine,
                        num_selected,
                    } => {
                        let num_averaged = num_selected.unwrap_or(num_updates - num_byzantine);
                        multi_krum(base, &deltas, &weights, num_byzantine, num_averaged)
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

/// Returns Σ vᵢ² in f64, or the first non-finite value as an error.
///
/// A float32 squared is at most ~1.2e77, so the f64 sum of any realistic
/// number of them is finite exactly when every value is.
fn finite_squared_norm(values: &[f32]) -> Result<f64> {
    const LANES: usize = 8;
    let mut accumulators = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let remainder = chunks.remainder();
    for chunk in chunks {
        for (accumulator, value) in accumulators.iter_mut().zip(chunk) {
            let wide_value = f64::from(*value);
            *accumulator += wide_value * wide_value;
        }
    }
    let mut squared_norm: f64 = accumulators.iter().sum();
    for value in remainder {
        squared_norm += f64::from(*value) * f64::from(*value);
    }
    if squared_norm.is_finite() {
        return Ok(squared_norm);
    }
    let (index, value) = values
        .iter()
        .enumerate()
        .find(|(_, value)| !value.is_finite())
        .expect("a non-finite sum of squares has a non-finite term");
    Err(CoreError::NonFiniteParam {
        index: index as u64,
        value: *value,
    })
}

/// Returns Σ (aᵢ − bᵢ)² in f64.
fn squared_distance(left: &[f32], right: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut accumulators = [0.0f64; LANES];
    let left_chunks = left.chunks_exact(LANES);
    let right_chunks = right.chunks_exact(LANES);
    let tail = left_chunks.remainder().iter().zip(right_chunks.remainder());
    for (left_chunk, right_chunk) in left_chunks.zip(right_chunks) {
        for lane in 0..LANES {
            let difference = f64::from(left_chunk[lane]) - f64::from(right_chunk[lane]);
            accumulators[lane] += difference * difference;
        }
    }
    let mut total: f64 = accumulators.iter().sum();
    for (left_value, right_value) in tail {
        let difference = f64::from(*left_value) - f64::from(*right_value);
        total += difference * difference;
    }
    total
}

/// Returns the comparators `(lower, upper)` of Batcher's odd–even merge sort
/// network for `num_values` inputs (Batcher 1968, "Sorting networks and their
/// applications"; Knuth, TAOCP vol. 3, §5.3.4): applying "put the smaller at
/// `lower`, the larger at `upper`" in this order sorts any input. For a number
/// of inputs that is not a power of two it is the next power's network without
/// the comparators that touch the (virtual, +∞) padding. About K·log²K/4
/// comparators: 19 for K = 8, 191 for K = 32.
fn sorting_network(num_values: usize) -> Vec<(usize, usize)> {
    let mut comparators = Vec::new();
    let mut merge_size = 1;
    while merge_size < num_values {
        let mut distance = merge_size;
        while distance > 0 {
            let mut offset = distance % merge_size;
            while offset + distance < num_values {
                for index in offset..(offset + distance).min(num_values - distance) {
                    // Only compare within one pair of merged runs.
                    if index / (2 * merge_size) == (index + distance) / (2 * merge_size) {
                        comparators.push((index, index + distance));
                    }
                }
                offset += 2 * distance;
            }
            distance /= 2;
        }
        merge_size *= 2;
    }
    comparators
}

/// Puts the element-wise minimum of two rows in `lower` and the maximum in
/// `upper`. Values are finite (checked on `add`), so a plain comparison is a
/// total order here, and it compiles to vector min/max.
fn compare_exchange(lower: &mut [f32], upper: &mut [f32]) {
    for (low, high) in lower.iter_mut().zip(upper.iter_mut()) {
        let (smaller, larger) = if *high < *low {
            (*high, *low)
        } else {
            (*low, *high)
        };
        *low = smaller;
        *high = larger;
    }
}

/// Returns `base + the coordinate-wise trimmed mean of the deltas`: per
/// coordinate, the unweighted mean of the K values left after dropping the
/// `num_trimmed` smallest and `num_trimmed` largest (2·`num_trimmed` < K).
///
/// Works block by block: the block's slice of each delta is copied into one
/// row of a per-thread scratch buffer, the sorting network sorts every column
/// (coordinate) at once, and the kept middle rows are summed in f64. Nothing is
/// allocated per coordinate.
fn coordinate_wise(base: &[f32], deltas: &[Vec<f32>], num_trimmed: usize) -> Vec<f32> {
    let num_updates = deltas.len();
    let kept_rows = num_trimmed..num_updates - num_trimmed;
    let inverse_num_kept = 1.0 / kept_rows.len() as f64;
    let comparators = sorting_network(num_updates);
    let mut params = vec![0.0f32; base.len()];
    fill_in_parallel(&mut params, |range_start, range_params| {
        // Row k holds delta k's values in the block: [K × BLOCK_COORDS].
        let mut scratch = vec![0.0f32; num_updates * BLOCK_COORDS];
        let mut sums = vec![0.0f64; BLOCK_COORDS];
        for (block_index, block_params) in range_params.chunks_mut(BLOCK_COORDS).enumerate() {
            let block_start = range_start + block_index * BLOCK_COORDS;
            let block_len = block_params.len();
            let block = block_start..block_start + block_len;
            for (row, delta) in scratch.chunks_exact_mut(BLOCK_COORDS).zip(deltas) {
                row[..block_len].copy_from_slice(&delta[block.clone()]);
            }
            for (lower, upper) in &comparators {
                let (before_upper, from_upper) = scratch.split_at_mut(upper * BLOCK_COORDS);
                let lower_row = &mut before_upper[lower * BLOCK_COORDS..][..block_len];
                compare_exchange(lower_row, &mut from_upper[..block_len]);
            }
            // Each column is now sorted: rows [t, K − t) are the kept values.
            let block_sums = &mut sums[..block_len];
            block_sums.fill(0.0);
            for row in scratch
                .chunks_exact(BLOCK_COORDS)
                .take(kept_rows.end)
                .skip(kept_rows.start)
            {
                for (sum, value) in block_sums.iter_mut().zip(&row[..block_len]) {
                    *sum += f64::from(*value);
                }
            }
            for ((param, base_value), sum) in block_params
                .iter_mut()
                .zip(&base[block])
                .zip(block_sums.iter())
            {
                *param = base_value + (sum * inverse_num_kept) as f32;
            }
        }
    });
    params
}

/// Returns Multi-Krum's parameters and the arrival indices it rejected.
///
/// The caller has checked K ≥ 2f+3 and m ≤ K.
fn multi_krum(
    base: &[f32],
    deltas: &[Vec<f32>],
    weights: &[f64],
    num_byzantine: usize,
    num_selected: usize,
) -> (Vec<f32>, Vec<usize>) {
    let num_updates = deltas.len();
    let distances = pairwise_squared_distances(deltas, base.len());
    // Score: sum of squared distances to the K−f−2 nearest other updates.
    let num_neighbours = num_updates - num_byzantine - 2;
    let mut others = Vec::with_capacity(num_updates - 1);
    let scores: Vec<f64> = (0..num_updates)
        .map(|update_index| {
            others.clear();
            others.extend(
                (0..num_updates)
                    .filter(|other| *other != update_index)
                    .map(|other| distances[update_index * num_updates + other]),
            );
            others.select_nth_unstable_by(num_neighbours - 1, f64::total_cmp);
            others[..num_neighbours].iter().sum()
        })
        .collect();
    // Lowest scores first; ties go to the earlier arrival, so the outcome is deterministic.
    let mut ranking: Vec<usize> = (0..num_updates).collect();
    ranking.sort_by(|left, right| {
        scores[*left]
            .total_cmp(&scores[*right])
            .then(left.cmp(right))
    });
    let (selected, rejected) = ranking.split_at(num_selected);
    let mut selected = selected.to_vec();
    selected.sort_unstable();
    let mut rejected = rejected.to_vec();
    rejected.sort_unstable();
    let params = weighted_mean(base, deltas, weights, &selected);
    (params, rejected)
}

/// Returns the K×K (row-major, symmetric) matrix of squared L2 distances
/// between the deltas, accumulated in f64 block by block so each block of the
/// K deltas is read from cache K−1 times rather than from memory.
fn pairwise_squared_distances(deltas: &[Vec<f32>], num_params: usize) -> Vec<f64> {
    let num_updates = deltas.len();
    let partial_matrices = map_ranges_in_parallel(num_params, |range| {
        let mut distances = vec![0.0f64; num_updates * num_updates];
        let mut block_start = range.start;
        while block_start < range.end {
            let block = block_start..(block_start + BLOCK_COORDS).min(range.end);
            for left in 0..num_updates {
                for right in left + 1..num_updates {
                    distances[left * num_updates + right] += squared_distance(
                        &deltas[left][block.clone()],
                        &deltas[right][block.clone()],
                    );
                }
            }
            block_start = block.end;
        }
        distances
    });
    let mut distances = vec![0.0f64; num_updates * num_updates];
    for partial in partial_matrices {
        for (total, value) in distances.iter_mut().zip(partial) {
            *total += value;
        }
    }
    for left in 0..num_updates {
        for right in left + 1..num_updates {
            distances[right * num_updates + left] = distances[left * num_updates + right];
        }
    }
    distances
}

/// Returns `base + Σ wᵢ·Δᵢ / Σ wᵢ` over the `selected` deltas, accumulated in f64.
fn weighted_mean(
    base: &[f32],
    deltas: &[Vec<f32>],
    weights: &[f64],
    selected: &[usize],
) -> Vec<f32> {
    let total_weight: f64 = selected.iter().map(|index| weights[*index]).sum();
    let terms: Vec<(&[f32], f64)> = selected
        .iter()
        .map(|index| (deltas[*index].as_slice(), weights[*index] / total_weight))
        .collect();
    let mut params = vec![0.0f32; base.len()];
    fill_in_parallel(&mut params, |range_start, range_params| {
        let mut block_sums = vec![0.0f64; BLOCK_COORDS];
        for (block_index, block_params) in range_params.chunks_mut(BLOCK_COORDS).enumerate() {
            let block_start = range_start + block_index * BLOCK_COORDS;
            let block = block_start..block_start + block_params.len();
            let sums = &mut block_sums[..block_params.len()];
            sums.fill(0.0);
            for (delta, coefficient) in &terms {
                for (sum, value) in sums.iter_mut().zip(&delta[block.clone()]) {
                    *sum += coefficient * f64::from(*value);
                }
            }
            for ((param, base_value), sum) in
                block_params.iter_mut().zip(&base[block]).zip(sums.iter())
            {
                *param = base_value + *sum as f32;
            }
        }
    });
    params
}

/// Returns how many threads to split `num_params` coordinates over.
fn num_threads_for(num_params: usize) -> usize {
    let num_cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    num_cores.min(num_params / MIN_COORDS_PER_THREAD).max(1)
}

/// Returns how many coordinates each thread takes: a whole number of blocks.
fn coords_per_thread(num_params: usize, num_threads: usize) -> usize {
    num_params
        .div_ceil(num_threads)
        .next_multiple_of(BLOCK_COORDS)
        .max(1)
}

/// Calls `fill(start, part)` on consecutive parts of `out` (`start` is the
/// part's first coordinate), on scoped threads when `out` is large. The calling
/// thread takes the first part; a panic in any part propagates.
fn fill_in_parallel(out: &mut [f32], fill: impl Fn(usize, &mut [f32]) + Sync) {
    let num_threads = num_threads_for(out.len());
    if num_threads == 1 {
        fill(0, out);
        return;
    }
    let part_len = coords_per_thread(out.len(), num_threads);
    std::thread::scope(|scope| {
        let mut parts = out.chunks_mut(part_len).enumerate();
        let first = parts.next();
        for (part_index, part) in parts {
            let fill = &fill;
            scope.spawn(move || fill(part_index * part_len, part));
        }
        if let Some((_, part)) = first {
            fill(0, part);
        }
    });
}

/// Returns `map(range)` for consecutive ranges covering `0..num_params`, on
/// scoped threads when there are many coordinates; a panic propagates.
fn map_ranges_in_parallel<T: Send>(
    num_params: usize,
    map: impl Fn(Range<usize>) -> T + Sync,
) -> Vec<T> {
    let num_threads = num_threads_for(num_params);
    if num_threads == 1 {
        return vec![map(0..num_params)];
    }
    let part_len = coords_per_thread(num_params, num_threads);
    let ranges: Vec<Range<usize>> = (0..num_params)
        .step_by(part_len)
        .map(|start| start..(start + part_len).min(num_params))
        .collect();
    std::thread::scope(|scope| {
        let map = &map;
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|range| {
                let range = range.clone();
                scope.spawn(move || map(range))
            })
            .collect();
        let mut results = vec![map(ranges[0].clone())];
        for handle in handles {
            match handle.join() {
                Ok(result) => results.push(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn aggregate(
        rule: &AggregationRule,
        base: &[f32],
        updates: &[(&[f32], f64)],
    ) -> AggregateOutcome {
        let mut aggregator = RobustAggregator::new(rule, base.len()).unwrap();
        for (delta, weight) in updates {
            aggregator.add(delta.to_vec(), *weight).unwrap();
        }
        aggregator.finish(base).unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
        assert_eq!(actual.len(), expected.len());
        for (index, (actual_value, expected_value)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (actual_value - expected_value).abs() <= tolerance,
                "coordinate {index}: {actual_value} vs {expected_value} (actual {actual:?}, expected {expected:?})"
            );
        }
    }

    /// Five updates of three parameters; per coordinate the extremes are
    /// 1 and 100, −100 and 40, −3 and 5.
    const FIVE_UPDATES: [[f32; 3]; 5] = [
        [1.0, 10.0, -3.0],
        [2.0, 20.0, 0.0],
        [3.0, -100.0, 1.0],
        [4.0, 30.0, 2.0],
        [100.0, 40.0, 5.0],
    ];

    fn five_updates() -> Vec<(&'static [f32], f64)> {
        // Very different weights: the coordinate-wise rules must ignore them.
        FIVE_UPDATES
            .iter()
            .zip([1.0, 1000.0, 3.0, 0.5, 7.0])
            .map(|(delta, weight)| (delta.as_slice(), weight))
            .collect()
    }

    #[test]
    fn trimmed_mean_drops_the_largest_and_smallest_value_of_each_coordinate() {
        let rule = AggregationRule::TrimmedMean { trim_fraction: 0.2 };
        let outcome = aggregate(&rule, &[1.0, 1.0, 1.0], &five_updates());
        // ⌊0.2·5⌋ = 1 per side: mean(2,3,4) = 3, mean(10,20,30) = 20, mean(0,1,2) = 1.
        assert_eq!(outcome.params, vec![4.0, 21.0, 2.0]);
        assert_eq!(outcome.num_updates, 5);
        assert_eq!(outcome.num_clipped, 0);
        assert!(outcome.rejected.is_empty());
    }

    #[test]
    fn sorting_networks_sort_every_input_of_zeros_and_ones() {
        // The 0-1 principle (Knuth, TAOCP vol. 3, §5.3.4): a comparator network
        // sorts every input if it sorts every input of zeros and ones.
        for num_values in 1..=16 {
            let comparators = sorting_network(num_values);
            for pattern in 0u32..(1 << num_values) {
                let mut values: Vec<u32> =
                    (0..num_values).map(|bit| (pattern >> bit) & 1).collect();
                for (lower, upper) in &comparators {
                    if values[*upper] < values[*lower] {
                        values.swap(*lower, *upper);
                    }
                }
                assert!(
                    values.is_sorted(),
                    "{num_values} inputs, pattern {pattern:b}"
                );
            }
        }
        assert_eq!(sorting_network(8).len(), 19);
        assert_eq!(sorting_network(32).len(), 191);
    }

    #[test]
    fn trimmed_mean_with_zero_fraction_is_the_unweighted_mean() {
        let rule = AggregationRule::TrimmedMean { trim_fraction: 0.0 };
        let outcome = aggregate(&rule, &[0.0, 0.0, 0.0], &five_updates());
        assert_close(&outcome.params, &[22.0, 0.0, 1.0], 1e-5);
    }

    #[test]
    fn median_of_an_odd_number_of_updates_is_the_middle_value() {
        let outcome = aggregate(&AggregationRule::Median, &[0.0, -1.0, 0.5], &five_updates());
        assert_eq!(outcome.params, vec![3.0, 19.0, 1.5]);
    }

    #[test]
    fn median_of_an_even_number_of_updates_is_the_mean_of_the_two_middle_values() {
        let updates: [(&[f32], f64); 4] = [
            (&[1.0, 5.0], 1.0),
            (&[2.0, -1.0], 2.0),
            (&[10.0, 3.0], 3.0),
            (&[4.0, 0.0], 4.0),
        ];
        let outcome = aggregate(&AggregationRule::Median, &[0.0, 0.0], &updates);
        // Sorted: 1 2 | 4 10 → 3; −1 0 | 3 5 → 1.5.
        assert_eq!(outcome.params, vec![3.0, 1.5]);
    }

    #[test]
    fn norm_bounding_scales_large_updates_down_and_leaves_small_ones_untouched() {
        let rule = AggregationRule::NormBounded { max_norm: 5.0 };
        let mut aggregator = RobustAggregator::new(&rule, 2).unwrap();
        // Norm 10 → scaled to norm 5; the buffer comes back clipped, for reuse.
        let clipped = aggregator.add(vec![6.0, 8.0], 1.0).unwrap();
        assert_close(&clipped.unwrap(), &[3.0, 4.0], 1e-6);
        // Norm 0.5 → unchanged.
        let untouched = aggregator.add(vec![0.3, 0.4], 3.0).unwrap();
        assert_eq!(untouched, Some(vec![0.3, 0.4]));
        let outcome = aggregator.finish(&[1.0, 1.0]).unwrap();
        // (1·[3, 4] + 3·[0.3, 0.4]) / 4 = [0.975, 1.3]
        assert_close(&outcome.params, &[1.975, 2.3], 1e-6);
        assert_eq!(outcome.num_updates, 2);
        assert_eq!(outcome.num_clipped, 1);
        assert!(outcome.rejected.is_empty());
    }

    #[test]
    fn multi_krum_rejects_a_far_outlier_and_averages_the_others() {
        let updates: [(&[f32], f64); 5] = [
            (&[1.0, 1.0, 1.0], 1.0),
            (&[1.1, 0.9, 1.0], 1.0),
            (&[100.0, -100.0, 100.0], 1.0),
            (&[0.9, 1.1, 1.0], 1.0),
            (&[1.0, 1.0, 1.2], 1.0),
        ];
        let rule = AggregationRule::MultiKrum {
            num_byzantine: 1,
            num_selected: None,
        };
        let outcome = aggregate(&rule, &[0.0, 0.0, 0.0], &updates);
        assert_eq!(outcome.rejected, vec![2]);
        assert_eq!(outcome.num_updates, 5);
        assert_close(&outcome.params, &[1.0, 1.0, 1.05], 1e-6);
    }

    #[test]
    fn multi_krum_weights_the_selected_updates_and_honours_num_selected() {
        let updates: [(&[f32], f64); 5] = [
            (&[0.0], 1.0),
            (&[0.1], 3.0),
            (&[50.0], 1.0),
            (&[-0.1], 1.0),
            (&[-40.0], 1.0),
        ];
        // f = 1: scores use the K−f−2 = 2 nearest others. Selecting 2: the
        // lowest scores are 0 (0.01 + 0.01) and 0.1 (0.01 + 0.04), tied with −0.1;
        // the earlier arrival wins the tie.
        let rule = AggregationRule::MultiKrum {
            num_byzantine: 1,
            num_selected: Some(2),
        };
        let outcome = aggregate(&rule, &[1.0], &updates);
        assert_eq!(outcome.rejected, vec![2, 3, 4]);
        // (1·0 + 3·0.1) / 4 = 0.075
        assert_close(&outcome.params, &[1.075], 1e-6);
    }

    #[test]
    fn fedavg_through_the_robust_aggregator_equals_the_streaming_fedavg_bit_for_bit() {
        let num_params = 1000;
        let updates: Vec<(Vec<f32>, f64)> = (0..6)
            .map(|seed| {
                let delta = (0..num_params)
                    .map(|index| (((index * 37 + seed * 101) % 997) as f32 - 498.0) * 1e-3)
                    .collect();
                (delta, 1.0 + seed as f64 * 13.0)
            })
            .collect();
        let base: Vec<f32> = (0..num_params).map(|index| index as f32 * 1e-2).collect();
        let mut reference = FedAvg::new(num_params);
        let mut robust = RobustAggregator::new(&AggregationRule::FedAvg, num_params).unwrap();
        for (delta, weight) in &updates {
            reference.add(delta, *weight).unwrap();
            let returned = robust.add(delta.clone(), *weight).unwrap();
            assert_eq!(returned.as_ref(), Some(delta));
        }
        let outcome = robust.finish(&base).unwrap();
        assert_eq!(outcome.params, reference.finish(&base).unwrap());
        assert_eq!(outcome.num_updates, 6);
        assert_eq!(outcome.num_clipped, 0);
    }

    #[test]
    fn norm_bounding_with_a_bound_no_update_reaches_equals_fedavg() {
        let updates = five_updates();
        let bounded = aggregate(
            &AggregationRule::NormBounded { max_norm: 1e6 },
            &[0.0; 3],
            &updates,
        );
        let plain = aggregate(&AggregationRule::FedAvg, &[0.0; 3], &updates);
        assert_eq!(bounded.params, plain.params);
        assert_eq!(bounded.num_clipped, 0);
    }

    /// Returns the rule's result by sorting each coordinate's values, the slow
    /// obvious way.
    fn naive_coordinate_wise(
        base: &[f32],
        deltas: &[Vec<f32>],
        num_trimmed: Option<usize>,
    ) -> Vec<f32> {
        let num_updates = deltas.len();
        (0..base.len())
            .map(|coordinate| {
                let mut values: Vec<f64> = deltas
                    .iter()
                    .map(|delta| f64::from(delta[coordinate]))
                    .collect();
                values.sort_by(f64::total_cmp);
                let statistic = match num_trimmed {
                    Some(num_trimmed) => {
                        let kept = &values[num_trimmed..num_updates - num_trimmed];
                        kept.iter().sum::<f64>() / kept.len() as f64
                    }
                    None if num_updates % 2 == 1 => values[num_updates / 2],
                    None => (values[num_updates / 2 - 1] + values[num_updates / 2]) / 2.0,
                };
                base[coordinate] + statistic as f32
            })
            .collect()
    }

    #[test]
    fn coordinate_wise_rules_match_a_naive_reference_for_every_update_count_up_to_40() {
        let num_params = BLOCK_COORDS + 37;
        let base: Vec<f32> = (0..num_params).map(|index| (index % 5) as f32).collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next_value = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Few distinct values, so ties (and ±0) are common.
            ((state >> 33) % 41) as f32 * 0.25 - 5.0
        };
        for num_updates in 1..=40 {
            let deltas: Vec<Vec<f32>> = (0..num_updates)
                .map(|_| (0..num_params).map(|_| next_value()).collect())
                .collect();
            let trim_counts = [
                0,
                trim_count(0.2, num_updates),
                trim_count(0.45, num_updates),
            ];
            for num_trimmed in trim_counts {
                assert_close(
                    &coordinate_wise(&base, &deltas, num_trimmed),
                    &naive_coordinate_wise(&base, &deltas, Some(num_trimmed)),
                    1e-5,
                );
            }
            assert_close(
                &coordinate_wise(&base, &deltas, (num_updates - 1) / 2),
                &naive_coordinate_wise(&base, &deltas, None),
                1e-5,
            );
        }
    }

    #[test]
    fn large_models_match_a_naive_reference_across_blocks_and_threads() {
        // Enough coordinates for several threads and a partial last block.
        let num_params = 2 * MIN_COORDS_PER_THREAD + 3 * BLOCK_COORDS + 17;
        let num_updates = 6;
        let deltas: Vec<Vec<f32>> = (0..num_updates)
            .map(|seed| {
                (0..num_params)
                    .map(|index| (((index * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 1e-3)
                    .collect()
            })
            .collect();
        let base: Vec<f32> = (0..num_params).map(|index| (index % 13) as f32).collect();
        let run = |rule: &AggregationRule| {
            let mut aggregator = RobustAggregator::new(rule, num_params).unwrap();
            for delta in &deltas {
                aggregator.add(delta.clone(), 2.0).unwrap();
            }
            aggregator.finish(&base).unwrap()
        };

        let trimmed = run(&AggregationRule::TrimmedMean {
            trim_fraction: 0.34,
        });
        assert_close(
            &trimmed.params,
            &naive_coordinate_wise(&base, &deltas, Some(2)),
            1e-5,
        );
        let median = run(&AggregationRule::Median);
        assert_close(
            &median.params,
            &naive_coordinate_wise(&base, &deltas, None),
            1e-5,
        );

        // f = 1, m = K − f = 5: one update rejected, the result is the mean of the rest.
        let krum = run(&AggregationRule::MultiKrum {
            num_byzantine: 1,
            num_selected: None,
        });
        assert_eq!(krum.rejected.len(), 1);
        let selected: Vec<Vec<f32>> = (0..num_updates)
            .filter(|index| !krum.rejected.contains(index))
            .map(|index| deltas[index].clone())
            .collect();
        let mut reference = FedAvg::new(num_params);
        for delta in &selected {
            reference.add(delta, 1.0).unwrap();
        }
        assert_close(&krum.params, &reference.finish(&base).unwrap(), 1e-5);
        // The rejected update is the one with the largest score, computed naively.
        let distance = |left: &[f32], right: &[f32]| -> f64 {
            left.iter()
                .zip(right)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum()
        };
        let scores: Vec<f64> = (0..num_updates)
            .map(|index| {
                let mut others: Vec<f64> = (0..num_updates)
                    .filter(|other| *other != index)
                    .map(|other| distance(&deltas[index], &deltas[other]))
                    .collect();
                others.sort_by(f64::total_cmp);
                others[..num_updates - 3].iter().sum()
            })
            .collect();
        let worst = (0..num_updates)
            .max_by(|left, right| scores[*left].total_cmp(&scores[*right]))
            .unwrap();
        assert_eq!(krum.rejected, vec![worst]);
    }

    fn all_rules() -> Vec<AggregationRule> {
        vec![
            AggregationRule::FedAvg,
            AggregationRule::NormBounded { max_norm: 5.0 },
            AggregationRule::NormBounded { max_norm: 0.125 },
            AggregationRule::TrimmedMean { trim_fraction: 0.2 },
            AggregationRule::TrimmedMean { trim_fraction: 0.0 },
            AggregationRule::Median,
            AggregationRule::MultiKrum {
                num_byzantine: 1,
                num_selected: None,
            },
            AggregationRule::MultiKrum {
                num_byzantine: 1,
                num_selected: Some(3),
            },
        ]
    }

    /// Five updates of three parameters: three colluders at the float32
    /// limits with enormous weights, two honest ones.
    fn updates_at_the_float32_limits() -> Vec<(Vec<f32>, f64)> {
        vec![
            (vec![0.01, -0.02, 0.03], 1500.0),
            (vec![f32::MAX, -f32::MAX, f32::MAX], 1e12),
            (vec![f32::MAX, -f32::MAX, -f32::MAX], 1e12),
            (vec![-0.01, 0.02, 0.01], 1200.0),
            (vec![f32::MAX, -f32::MAX, f32::MAX], 1e12),
        ]
    }

    #[test]
    fn no_rule_overflows_on_colluding_updates_at_the_float32_limits_with_huge_weights() {
        for rule in all_rules() {
            let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
            for (delta, weight) in updates_at_the_float32_limits() {
                aggregator.add(delta, weight).unwrap();
            }
            let outcome = aggregator.finish(&[0.5, -0.5, 0.0]).unwrap();
            assert!(
                outcome.params.iter().all(|value| value.is_finite()),
                "{rule}: {:?}",
                outcome.params
            );
        }
    }

    #[test]
    fn every_rule_refuses_to_return_an_aggregate_that_overflows_the_base() {
        let base = [0.0f32, 3.0e38, 0.0];
        for rule in all_rules() {
            let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
            for _ in 0..5 {
                aggregator.add(vec![0.0, 3.0e38, 0.0], 1.0).unwrap();
            }
            match (aggregator.finish(&base), &rule) {
                // A small enough norm bound clips the deltas back into range.
                (Ok(outcome), AggregationRule::NormBounded { .. }) => {
                    assert!(outcome.params.iter().all(|value| value.is_finite()));
                }
                (Err(CoreError::NonFiniteAggregate { index, .. }), _) => assert_eq!(index, 1),
                (other, _) => panic!("{rule}: expected a non-finite aggregate, got {other:?}"),
            }
        }
    }

    #[test]
    fn cli_forms_parse_to_rules_and_display_round_trips() {
        let parsed: Vec<AggregationRule> = [
            "fedavg",
            "norm-bound:5.0",
            "norm-bound:0.125",
            "trimmed-mean:0.2",
            "trimmed-mean:0",
            "median",
            "multi-krum:1",
            "multi-krum:1:3",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        assert_eq!(parsed, all_rules());
        for rule in all_rules() {
            let text = rule.to_string();
            assert_eq!(text.parse::<AggregationRule>().unwrap(), rule, "{text}");
        }
        assert_eq!(AggregationRule::default(), AggregationRule::FedAvg);
        assert_eq!(
            AggregationRule::NormBounded { max_norm: 5.0 }.to_string(),
            "norm-bound:5"
        );
    }

    #[test]
    fn malformed_cli_forms_are_refused_with_the_expected_form() {
        let cases = [
            ("krum:1", "expected one of fedavg"),
            ("", "unknown aggregation rule"),
            ("FedAvg", "unknown aggregation rule"),
            ("fedavg:1", "takes no arguments"),
            ("median:0.5", "takes no arguments"),
            ("norm-bound", "norm-bound:<max_norm>"),
            ("norm-bound:1:2", "norm-bound:<max_norm>"),
            ("norm-bound:abc", "unparsable max_norm \"abc\""),
            (
                "norm-bound:0",
                "max_norm must be positive and finite, got 0",
            ),
            (
                "norm-bound:NaN",
                "max_norm must be positive and finite, got NaN",
            ),
            ("trimmed-mean", "trimmed-mean:<trim_fraction>"),
            (
                "trimmed-mean:0.5",
                "trim_fraction must be in [0, 0.5), got 0.5",
            ),
            ("multi-krum", "multi-krum:<num_byzantine>"),
            ("multi-krum:-1", "unparsable num_byzantine \"-1\""),
            (
                "multi-krum:1:2:3",
                "multi-krum:<num_byzantine>:<num_selected>",
            ),
            ("multi-krum:1:0", "num_selected must be at least 1, got 0"),
        ];
        for (text, expected) in cases {
            let error = text.parse::<AggregationRule>().unwrap_err();
            assert!(
                matches!(error, CoreError::InvalidAggregation(_)),
                "{text}: {error}"
            );
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn validate_rejects_out_of_range_parameters() {
        let invalid_rules = [
            AggregationRule::NormBounded { max_norm: 0.0 },
            AggregationRule::NormBounded { max_norm: -1.0 },
            AggregationRule::NormBounded { max_norm: f64::NAN },
            AggregationRule::NormBounded {
                max_norm: f64::INFINITY,
            },
            AggregationRule::TrimmedMean { trim_fraction: 0.5 },
            AggregationRule::TrimmedMean { trim_fraction: 0.7 },
            AggregationRule::TrimmedMean {
                trim_fraction: -0.1,
            },
            AggregationRule::TrimmedMean {
                trim_fraction: f64::NAN,
            },
            AggregationRule::MultiKrum {
                num_byzantine: 1,
                num_selected: Some(0),
            },
            AggregationRule::MultiKrum {
                num_byzantine: usize::MAX / 2,
                num_selected: None,
            },
        ];
        for rule in invalid_rules {
            let error = rule.validate().unwrap_err();
            assert!(
                matches!(error, CoreError::InvalidAggregation(_)),
                "{rule:?}"
            );
            assert!(RobustAggregator::new(&rule, 3).is_err(), "{rule:?}");
        }
        for rule in all_rules() {
            rule.validate().unwrap();
        }
    }

    #[test]
    fn min_updates_follows_each_rules_breakdown_condition() {
        let cases = [
            (AggregationRule::FedAvg, 1),
            (AggregationRule::NormBounded { max_norm: 1.0 }, 1),
            (AggregationRule::TrimmedMean { trim_fraction: 0.0 }, 1),
            (AggregationRule::TrimmedMean { trim_fraction: 0.1 }, 10),
            (AggregationRule::TrimmedMean { trim_fraction: 0.2 }, 5),
            (AggregationRule::TrimmedMean { trim_fraction: 0.3 }, 4),
            (
                AggregationRule::TrimmedMean {
                    trim_fraction: 0.49,
                },
                3,
            ),
            (AggregationRule::Median, 3),
            (
                AggregationRule::MultiKrum {
                    num_byzantine: 1,
                    num_selected: None,
                },
                5,
            ),
            (
                AggregationRule::MultiKrum {
                    num_byzantine: 2,
                    num_selected: Some(9),
                },
                9,
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(rule.min_updates(), expected, "{rule}");
            assert_eq!(
                rule.is_streaming(),
                matches!(
                    rule,
                    AggregationRule::FedAvg | AggregationRule::NormBounded { .. }
                )
            );
        }
    }

    #[test]
    fn finishing_with_fewer_updates_than_the_rule_needs_is_refused() {
        let four_updates = &five_updates()[..4];
        let cases = [
            (AggregationRule::TrimmedMean { trim_fraction: 0.2 }, 5),
            (
                AggregationRule::MultiKrum {
                    num_byzantine: 1,
                    num_selected: None,
                },
                5,
            ),
            (
                AggregationRule::MultiKrum {
                    num_byzantine: 0,
                    num_selected: Some(6),
                },
                6,
            ),
        ];
        for (rule, expected_required) in cases {
            let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
            for (delta, weight) in four_updates {
                aggregator.add(delta.to_vec(), *weight).unwrap();
            }
            match aggregator.finish(&[0.0; 3]) {
                Err(CoreError::TooFewUpdates {
                    rule: rule_text,
                    required,
                    actual,
                }) => {
                    assert_eq!(rule_text, rule.to_string());
                    assert_eq!((required, actual), (expected_required, 4));
                }
                other => panic!("{rule}: expected too few updates, got {other:?}"),
            }
        }
        let mut median = RobustAggregator::new(&AggregationRule::Median, 1).unwrap();
        median.add(vec![1.0], 1.0).unwrap();
        median.add(vec![2.0], 1.0).unwrap();
        let error = median.finish(&[0.0]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "aggregation rule median needs at least 3 updates, got 2"
        );
    }

    #[test]
    fn wrong_length_and_non_finite_updates_are_refused_and_leave_the_aggregator_unchanged() {
        for rule in all_rules() {
            let empty = RobustAggregator::new(&rule, 3).unwrap();
            assert!(matches!(
                empty.finish(&[0.0; 3]),
                Err(CoreError::EmptyAggregate)
            ));
            let mut aggregator = RobustAggregator::new(&rule, 3).unwrap();
            for (delta, weight) in five_updates() {
                aggregator.add(delta.to_vec(), weight).unwrap();
                let refused = [
                    (vec![1.0, 2.0], 1.0),
                    (vec![1.0, 2.0, 3.0, 4.0], 1.0),
                    (vec![1e30, f32::NAN, 1.0], 1.0),
                    (vec![1.0, 2.0, f32::INFINITY], 1.0),
                    (vec![f32::NEG_INFINITY, 0.0, 0.0], 1.0),
                    (vec![1.0, 2.0, 3.0], 0.0),
                    (vec![1.0, 2.0, 3.0], -1.0),
                    (vec![1.0, 2.0, 3.0], f64::NAN),
                    (vec![1.0, 2.0, 3.0], f64::INFINITY),
                ];
                let num_before = aggregator.num_updates();
                for (bad_delta, bad_weight) in refused {
                    let error = aggregator.add(bad_delta.clone(), bad_weight).unwrap_err();
                    assert!(
                        matches!(
                            error,
                            CoreError::ParamCountMismatch { .. }
                                | CoreError::NonFiniteParam { .. }
                                | CoreError::InvalidWeight(_)
                        ),
                        "{rule}: {bad_delta:?} {bad_weight}: {error}"
                    );
                }
                assert_eq!(aggregator.num_updates(), num_before, "{rule}");
            }
            let with_refusals = aggregator.finish(&[0.0; 3]).unwrap();
            assert_eq!(
                with_refusals,
                aggregate(&rule, &[0.0; 3], &five_updates()),
                "{rule}"
            );
        }
    }

    #[test]
    fn non_finite_values_are_reported_with_their_index() {
        let mut aggregator = RobustAggregator::new(&AggregationRule::Median, 20).unwrap();
        let mut delta = vec![0.5f32; 20];
        delta[13] = f32::NAN;
        delta[17] = f32::INFINITY;
        match aggregator.add(delta, 1.0) {
            Err(CoreError::NonFiniteParam { index, value }) => {
                assert_eq!(index, 13);
                assert!(value.is_nan());
            }
            other => panic!("expected a non-finite parameter, got {other:?}"),
        }
        let base_error = {
            let mut aggregator = RobustAggregator::new(&AggregationRule::FedAvg, 2).unwrap();
            aggregator.add(vec![1.0, 1.0], 1.0).unwrap();
            aggregator.finish(&[0.0]).unwrap_err()
        };
        assert!(matches!(
            base_error,
            CoreError::ParamCountMismatch {
                expected: 2,
                actual: 1
            }
        ));
    }

    #[test]
    fn rules_deserialize_from_tagged_tables_and_refuse_unknown_fields() {
        for rule in all_rules() {
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(
                serde_json::from_str::<AggregationRule>(&json).unwrap(),
                rule,
                "{json}"
            );
        }
        let krum: AggregationRule =
            serde_json::from_str(r#"{"rule": "multi-krum", "num_byzantine": 2}"#).unwrap();
        assert_eq!(
            krum,
            AggregationRule::MultiKrum {
                num_byzantine: 2,
                num_selected: None
            }
        );
        let norm_bound: AggregationRule =
            serde_json::from_str(r#"{"rule": "norm-bound", "max_norm": 5.0}"#).unwrap();
        assert_eq!(norm_bound, AggregationRule::NormBounded { max_norm: 5.0 });
        assert_eq!(
            serde_json::to_string(&AggregationRule::FedAvg).unwrap(),
            r#"{"rule":"fedavg"}"#
        );
        assert!(
            serde_json::from_str::<AggregationRule>(
                r#"{"rule": "trimmed-mean", "trim_fraction": 0.2, "beta": 0.1}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<AggregationRule>(r#"{"rule": "krum"}"#).is_err());
    }

    /// How the adversaries in the robustness property build their updates.
    #[derive(Debug, Clone, Copy)]
    enum Attack {
        /// An honest update scaled by 100 (model replacement).
        Scaled,
        /// An honest update negated and scaled by 10.
        SignFlipped,
        /// Noise of magnitude 100 to 1000 per coordinate.
        HugeNoise,
    }

    const NUM_ROBUSTNESS_PARAMS: usize = 12;
    const NUM_HONEST: usize = 7;

    fn honest_round() -> impl Strategy<Value = (Vec<f32>, Vec<Vec<f32>>, Vec<f64>)> {
        (
            // A common direction of magnitude 0.5 to 1 per coordinate.
            proptest::collection::vec(
                (any::<bool>(), 0.5f32..1.0).prop_map(|(negative, magnitude)| {
                    if negative { -magnitude } else { magnitude }
                }),
                NUM_ROBUSTNESS_PARAMS,
            ),
            proptest::collection::vec(
                proptest::collection::vec(-0.05f32..0.05, NUM_ROBUSTNESS_PARAMS),
                NUM_HONEST,
            ),
            proptest::collection::vec(1.0f64..10.0, NUM_HONEST),
        )
            .prop_map(|(center, noises, weights)| {
                let honest = noises
                    .iter()
                    .map(|noise| center.iter().zip(noise).map(|(c, n)| c + n).collect())
                    .collect();
                (center, honest, weights)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn robust_rules_stay_near_the_honest_mean_while_fedavg_is_pulled_away(
            (_center, honest, honest_weights) in honest_round(),
            attack in prop_oneof![Just(Attack::Scaled), Just(Attack::SignFlipped), Just(Attack::HugeNoise)],
            num_adversaries in 1usize..=2,
            noise in proptest::collection::vec(
                proptest::collection::vec((any::<bool>(), 100.0f32..1000.0), NUM_ROBUSTNESS_PARAMS),
                2,
            ),
            insert_at in 0usize..=NUM_HONEST,
        ) {
            let adversarial: Vec<Vec<f32>> = (0..num_adversaries)
                .map(|adversary| match attack {
                    Attack::Scaled => honest[adversary].iter().map(|value| value * 100.0).collect(),
                    Attack::SignFlipped => honest[adversary].iter().map(|value| value * -10.0).collect(),
                    Attack::HugeNoise => noise[adversary]
                        .iter()
                        .map(|(negative, magnitude)| if *negative { -magnitude } else { *magnitude })
                        .collect(),
                })
                .collect();
            // Adversaries claim the largest weight; they arrive somewhere in the middle.
            let mut updates: Vec<(Vec<f32>, f64)> =
                honest.iter().cloned().zip(honest_weights.iter().copied()).collect();
            for delta in adversarial {
                updates.insert(insert_at.min(updates.len()), (delta, 10.0));
            }
            let honest_mean: Vec<f32> = (0..NUM_ROBUSTNESS_PARAMS)
                .map(|coordinate| honest.iter().map(|delta| delta[coordinate]).sum::<f32>() / NUM_HONEST as f32)
                .collect();
            let base = vec![0.0f32; NUM_ROBUSTNESS_PARAMS];
            let distance_to_honest_mean = |rule: &AggregationRule| -> (f32, f32, AggregateOutcome) {
                let mut aggregator = RobustAggregator::new(rule, NUM_ROBUSTNESS_PARAMS).unwrap();
                for (delta, weight) in &updates {
                    aggregator.add(delta.clone(), *weight).unwrap();
                }
                let outcome = aggregator.finish(&base).unwrap();
                let differences = outcome.params.iter().zip(&honest_mean).map(|(a, b)| (a - b).abs());
                let max_abs = differences.clone().fold(0.0f32, f32::max);
                let l2 = differences.map(|difference| difference * difference).sum::<f32>().sqrt();
                (max_abs, l2, outcome)
            };
            // Every honest value lies within 0.05 of the center, so a result
            // inside the honest values' range is within 0.1 of their mean.
            let robust_rules = [
                AggregationRule::TrimmedMean { trim_fraction: 0.3 },
                AggregationRule::Median,
                AggregationRule::MultiKrum { num_byzantine: 2, num_selected: None },
            ];
            for rule in &robust_rules {
                let (max_abs, _, outcome) = distance_to_honest_mean(rule);
                prop_assert!(max_abs <= 0.1 + 1e-5, "{rule}: {max_abs} from the honest mean");
                if let AggregationRule::MultiKrum { .. } = rule {
                    let adversary_indices: Vec<usize> =
                        (insert_at.min(NUM_HONEST)..insert_at.min(NUM_HONEST) + num_adversaries).collect();
                    prop_assert!(
                        adversary_indices.iter().all(|index| outcome.rejected.contains(index)),
                        "{rule}: rejected {:?}, adversaries {adversary_indices:?}", outcome.rejected
                    );
                }
            }
            let (_, fedavg_l2, _) = distance_to_honest_mean(&AggregationRule::FedAvg);
            let honest_spread_l2 = 0.1 * (NUM_ROBUSTNESS_PARAMS as f32).sqrt();
            prop_assert!(
                fedavg_l2 > 3.0 * honest_spread_l2,
                "fedavg is only {fedavg_l2} from the honest mean"
            );
        }
    }
}
