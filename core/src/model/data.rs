//! In-memory labelled datasets of feature vectors.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{CoreError, Result};
use crate::schema::BENIGN_CLASS;

/// Label value of benign records.
pub const BENIGN: u32 = 0;
/// Label value of attack records.
pub const ATTACK: u32 = 1;

/// Feature vectors (row-major), each with a binary label (0 benign, 1 attack),
/// a class index (0 benign, 1.. attack classes, fixed by the schema so that
/// every participant numbers classes the same way) and the raw label value it
/// came from (for per-attack-type reports).
#[derive(Clone, Default)]
pub struct Dataset {
    num_features: usize,
    features: Vec<f32>,
    labels: Vec<u32>,
    classes: Vec<u32>,
    raw_labels: Vec<u32>,
    raw_label_names: Vec<String>,
}

impl std::fmt::Debug for Dataset {
    // Telemetry-derived: only shapes are printed.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Dataset")
            .field("num_rows", &self.len())
            .field("num_features", &self.num_features)
            .finish()
    }
}

impl Dataset {
    /// Returns an empty dataset of rows with `num_features` features.
    pub fn new(num_features: usize) -> Self {
        Dataset {
            num_features,
            ..Dataset::default()
        }
    }

    /// Appends one row with a binary label (class = label, raw label
    /// "benign" or "attack").
    ///
    /// # Errors
    /// [`CoreError::FeatureDimMismatch`] if the row has the wrong length.
    pub fn push(&mut self, row: &[f32], label: u32) -> Result<()> {
        let (class, raw_label) = if label == BENIGN {
            (0, BENIGN_CLASS)
        } else {
            (1, "attack")
        };
        self.push_labelled(row, class, raw_label)
    }

    /// Appends one row with its class index (0 = benign) and raw label value.
    ///
    /// # Errors
    /// [`CoreError::FeatureDimMismatch`] if the row has the wrong length.
    pub fn push_labelled(&mut self, row: &[f32], class: u32, raw_label: &str) -> Result<()> {
        if row.len() != self.num_features {
            return Err(CoreError::FeatureDimMismatch {
                expected: self.num_features,
                actual: row.len(),
            });
        }
        self.features.extend_from_slice(row);
        self.labels.push(if class == 0 { BENIGN } else { ATTACK });
        self.classes.push(class);
        let raw_index = self.intern_raw_label(raw_label);
        self.raw_labels.push(raw_index);
        Ok(())
    }

    fn intern_raw_label(&mut self, raw_label: &str) -> u32 {
        match self
            .raw_label_names
            .iter()
            .position(|name| name == raw_label)
        {
            Some(index) => index as u32,
            None => {
                self.raw_label_names.push(raw_label.to_string());
                (self.raw_label_names.len() - 1) as u32
            }
        }
    }

    /// Returns the class index of each row (0 = benign).
    pub fn classes(&self) -> &[u32] {
        &self.classes
    }

    /// Returns the raw label value of row `index`.
    pub fn raw_label(&self, index: usize) -> &str {
        &self.raw_label_names[self.raw_labels[index] as usize]
    }

    /// Returns the distinct raw label values, in order of first appearance.
    pub fn raw_label_names(&self) -> &[String] {
        &self.raw_label_names
    }

    /// Returns the raw label index of each row (into [`Self::raw_label_names`]).
    pub fn raw_label_indices(&self) -> &[u32] {
        &self.raw_labels
    }

    /// Returns the rows for which `keep(row_index)` is true.
    pub fn filter(&self, mut keep: impl FnMut(usize) -> bool) -> Dataset {
        let indices: Vec<usize> = (0..self.len()).filter(|&index| keep(index)).collect();
        self.select(&indices)
    }

    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns true if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Returns the number of features per row.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// Returns all features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// Returns the labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Returns row `index`.
    pub fn row(&self, index: usize) -> &[f32] {
        &self.features[index * self.num_features..(index + 1) * self.num_features]
    }

    /// Returns the fraction of rows labelled [`ATTACK`] or any non-benign class.
    pub fn attack_fraction(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let num_attacks = self.labels.iter().filter(|&&label| label != BENIGN).count();
        num_attacks as f64 / self.len() as f64
    }

    /// Returns the rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut selected = Dataset::new(self.num_features);
        selected.features.reserve(indices.len() * self.num_features);
        selected.raw_label_names = self.raw_label_names.clone();
        for &index in indices {
            selected.features.extend_from_slice(self.row(index));
            selected.labels.push(self.labels[index]);
            selected.classes.push(self.classes[index]);
            selected.raw_labels.push(self.raw_labels[index]);
        }
        selected
    }

    /// Splits into (train, test) after a seeded shuffle, `test_fraction` of the rows going to test.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let mut indices: Vec<usize> = (0..self.len()).collect();
        indices.shuffle(&mut StdRng::seed_from_u64(seed));
        let num_test = ((self.len() as f64) * test_fraction.clamp(0.0, 1.0)).round() as usize;
        let (test, train) = indices.split_at(num_test);
        (self.select(train), self.select(test))
    }

    /// Appends all rows of `other`.
    ///
    /// # Errors
    /// [`CoreError::FeatureDimMismatch`] if the feature counts differ.
    pub fn extend(&mut self, other: &Dataset) -> Result<()> {
        if other.num_features != self.num_features {
            return Err(CoreError::FeatureDimMismatch {
                expected: self.num_features,
                actual: other.num_features,
            });
        }
        self.features.extend_from_slice(&other.features);
        self.labels.extend_from_slice(&other.labels);
        self.classes.extend_from_slice(&other.classes);
        for &raw in &other.raw_labels {
            let index = self.intern_raw_label(&other.raw_label_names[raw as usize]);
            self.raw_labels.push(index);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_partitions_every_row_exactly_once() {
        let mut dataset = Dataset::new(2);
        for index in 0..100 {
            dataset.push(&[index as f32, 0.0], index % 2).unwrap();
        }
        let (train, test) = dataset.split(0.25, 3);
        assert_eq!((train.len(), test.len()), (75, 25));
        let mut seen: Vec<f32> = (0..train.len())
            .map(|i| train.row(i)[0])
            .chain((0..test.len()).map(|i| test.row(i)[0]))
            .collect();
        seen.sort_by(f32::total_cmp);
        assert_eq!(seen, (0..100).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn rows_of_the_wrong_width_are_refused() {
        let mut dataset = Dataset::new(3);
        assert!(dataset.push(&[1.0], 0).is_err());
        assert!(dataset.is_empty());
    }
}
