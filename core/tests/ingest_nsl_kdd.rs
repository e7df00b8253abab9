//! Loads the real NSL-KDD files through `schemas/nsl-kdd.toml`.
//!
//! Skips (with a printed reason) when `../shared/data/nsl-kdd` is absent.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fedshield_core::data::Dataset;
use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::schema::Schema;

const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/nsl-kdd");
const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/nsl-kdd.toml");

/// Returns the data folder, or `None` (after printing why) when it is absent.
fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(DATA_DIR);
    if dir.join("KDDTrain+.txt").is_file() && dir.join("KDDTest+.txt").is_file() {
        Some(dir.to_path_buf())
    } else {
        println!("skipping: NSL-KDD files not found in {DATA_DIR}");
        None
    }
}

fn load(path: &Path, schema: &Schema) -> Dataset {
    let started = Instant::now();
    let (dataset, report) = load_dataset(path, schema, &IngestOptions::default())
        .unwrap_or_else(|error| panic!("failed to load {}: {error}", path.display()));
    println!("{report} in {:?}", started.elapsed());
    assert_eq!(report.num_malformed, 0, "{report}");
    assert_eq!(report.num_rows, dataset.len());
    dataset
}

fn count_class(dataset: &Dataset, class: u32) -> usize {
    dataset
        .classes()
        .iter()
        .filter(|&&row_class| row_class == class)
        .count()
}

fn assert_all_features_finite(dataset: &Dataset) {
    let num_non_finite = dataset
        .features()
        .iter()
        .filter(|feature| !feature.is_finite())
        .count();
    assert_eq!(num_non_finite, 0);
}

#[test]
fn nsl_kdd_train_and_test_load_completely() {
    let Some(dir) = data_dir() else {
        return;
    };
    let schema = Schema::load(Path::new(SCHEMA_PATH)).expect("the shipped schema is valid");
    let class_names = schema.class_names();
    let class_index = |name: &str| {
        class_names
            .iter()
            .position(|class_name| class_name == name)
            .unwrap_or_else(|| panic!("no class {name}")) as u32
    };

    let train = load(&dir.join("KDDTrain+.txt"), &schema);
    assert_eq!(train.len(), 125_973);
    assert_eq!(train.num_features(), schema.num_features());
    assert_eq!(count_class(&train, 0), 67_343);
    assert_eq!(
        train.labels().iter().filter(|&&label| label != 0).count(),
        58_630
    );
    assert_eq!(train.raw_label_names().len(), 23);
    // neptune 41214 + smurf 2646 + back 956 + teardrop 892 + pod 201 + land 18
    assert_eq!(count_class(&train, class_index("dos")), 45_927);
    // satan 3633 + ipsweep 3599 + portsweep 2931 + nmap 1493
    assert_eq!(count_class(&train, class_index("probe")), 11_656);
    // every attack in the train file is one of the four categories
    assert_eq!(count_class(&train, class_index("other_attack")), 0);
    assert_all_features_finite(&train);
    // Fixed transforms keep every feature of the public files within a small range.
    let largest_feature = train
        .features()
        .iter()
        .fold(0f32, |max, feature| max.max(feature.abs()));
    assert!(largest_feature <= 1.1, "largest feature {largest_feature}");

    let test = load(&dir.join("KDDTest+.txt"), &schema);
    assert_eq!(test.len(), 22_544);
    assert_eq!(count_class(&test, 0), 9_711);
    assert_eq!(test.raw_label_names().len(), 38);
    assert_eq!(count_class(&test, class_index("other_attack")), 0);
    assert_all_features_finite(&test);
}
