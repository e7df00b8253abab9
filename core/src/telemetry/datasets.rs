//! The synthetic flows schema, and labelled datasets of synthetic flows
//! featurized through it.

use super::{BenignProfile, FLOW_COLUMNS, FlowGenerator, OrgProfile};
use crate::model::data::Dataset;
use crate::schema::{LabelClass, RecordFields, Schema};

/// The schema of synthetic flows (`schemas/synthetic-flows.toml`).
pub const SYNTHETIC_FLOWS_SCHEMA_TOML: &str = include_str!("../../../schemas/synthetic-flows.toml");

/// Returns the parsed schema of synthetic flows.
pub fn synthetic_flows_schema() -> Schema {
    Schema::from_toml_str(SYNTHETIC_FLOWS_SCHEMA_TOML)
        .expect("the built-in synthetic flows schema is valid")
}

/// Returns the number of model inputs the synthetic flows schema produces.
pub fn num_flow_features() -> usize {
    synthetic_flows_schema().num_features()
}

/// Returns a labelled dataset of `count` synthetic flows featurized through
/// the synthetic flows schema (the same path files written by `fedshield
/// synth` take).
pub fn synthetic_dataset(profile: OrgProfile, count: usize, seed: u64) -> Dataset {
    let schema = synthetic_flows_schema();
    let mut generator = FlowGenerator::new(profile, seed);
    let mut dataset = Dataset::new(schema.num_features());
    let header = csv::StringRecord::from(FLOW_COLUMNS.to_vec());
    let positions = schema
        .header_positions(&header, true)
        .expect("flow columns match the synthetic flows schema");
    let mut features = Vec::with_capacity(schema.num_features());
    for _ in 0..count {
        let record = csv::StringRecord::from(generator.next_flow().fields().to_vec());
        let label = schema
            .featurize_into(
                &RecordFields::CsvWithHeader {
                    record: &record,
                    header: &positions,
                },
                &mut features,
            )
            .expect("generated flows fit their schema")
            .expect("generated flows are labelled");
        let LabelClass::Class(class) = label.class else {
            unreachable!("the synthetic flows schema lists every generated label");
        };
        dataset
            .push_labelled(&features, class, &label.raw_label)
            .expect("the schema's feature count");
    }
    dataset
}

/// Returns a held-out dataset mixing every benign profile and attack family.
pub fn held_out_dataset(count: usize, seed: u64) -> Dataset {
    let mut dataset = Dataset::new(num_flow_features());
    let profiles = [
        BenignProfile::Office,
        BenignProfile::DataCenter,
        BenignProfile::DevShop,
    ];
    for (index, benign) in profiles.into_iter().enumerate() {
        let profile = OrgProfile {
            benign,
            ..OrgProfile::balanced()
        };
        let part = synthetic_dataset(
            profile,
            count / 3 + usize::from(index < count % 3),
            seed.wrapping_add(index as u64),
        );
        dataset.extend(&part).expect("same feature count");
    }
    dataset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_finite_and_bounded() {
        let dataset = held_out_dataset(3000, 4);
        assert_eq!(dataset.len(), 3000);
        assert!(
            dataset
                .features()
                .iter()
                .all(|value| value.is_finite() && value.abs() <= 5.0)
        );
        let fraction = dataset.attack_fraction();
        assert!((0.2..0.4).contains(&fraction), "attack fraction {fraction}");
    }
}
