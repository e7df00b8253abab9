//! Loads the real NSL-KDD files through `schemas/nsl-kdd.toml`.
//!
//! Skips (with a printed reason) when `../shared/data/nsl-kdd` is absent.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fedshield_core::ingest::{IngestOptions, load_dataset};
use fedshield_core::model::data::Dataset;
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

fn shipped_schema() -> Schema {
    Schema::load(Path::new(SCHEMA_PATH)).expect("the shipped schema is valid")
}

fn load(path: &Path, schema: &Schema) -> Dataset {
    let started = Instant::now();
    let (dataset, report) = load_dataset(path, schema, &IngestOptions::default())
        .unwrap_or_else(|error| panic!("failed to load {}: {error}", path.display()));
    println!("{report} in {:?}", started.elapsed());
    assert_eq!(report.skipped.total(), 0, "{report}");
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
    let schema = shipped_schema();
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

/// Returns the first `num_lines` lines of `file` in the NSL-KDD folder.
fn first_lines(dir: &Path, file: &str, num_lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|error| panic!("failed to read {file}: {error}"));
    text.lines().take(num_lines).map(str::to_string).collect()
}

/// Writes `lines`, each ended by `line_ending`, to `name` in `dir`.
fn write_lines(dir: &Path, name: &str, lines: &[String], line_ending: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join(line_ending) + line_ending).unwrap();
    path
}

#[test]
fn kdd_cup_99_style_labels_are_refused_at_their_line_not_counted_as_attacks() {
    let Some(dir) = data_dir() else {
        return;
    };
    let schema = shipped_schema();
    // KDD Cup 99 writes `normal.`; the NSL-KDD schema lists `normal`. Before
    // labels had to be listed, such a file trained as if every row were an attack.
    let mut lines = first_lines(&dir, "KDDTest+.txt", 40);
    let normal_line = lines
        .iter()
        .position(|line| line.contains(",normal,"))
        .expect("the first KDDTest+ rows include a normal one");
    lines[normal_line] = lines[normal_line].replace(",normal,", ",normal.,");
    let scratch = tempfile::tempdir().unwrap();
    let path = write_lines(scratch.path(), "kdd99-style.txt", &lines, "\r\n");
    let error = load_dataset(&path, &schema, &IngestOptions::default())
        .expect_err("an unlisted label value must fail the load")
        .to_string();
    let expected_start = format!(
        "{}:{}: label value \"normal.\" in column \"label\"",
        path.display(),
        normal_line + 1
    );
    assert!(error.starts_with(&expected_start), "{error}");
}

#[test]
fn a_crlf_copy_reports_a_malformed_row_at_its_physical_line() {
    let Some(dir) = data_dir() else {
        return;
    };
    let schema = shipped_schema();
    let mut lines = first_lines(&dir, "KDDTrain+.txt", 100);
    // Line 61 loses its last field.
    let cut = lines[60].rfind(',').expect("rows are comma-separated");
    lines[60].truncate(cut);
    let scratch = tempfile::tempdir().unwrap();
    for (name, line_ending) in [("lf.txt", "\n"), ("crlf.txt", "\r\n")] {
        let path = write_lines(scratch.path(), name, &lines, line_ending);
        let (dataset, report) = load_dataset(&path, &schema, &IngestOptions::default())
            .unwrap_or_else(|error| panic!("failed to load {name}: {error}"));
        assert_eq!(dataset.len(), 99, "{name}");
        let shown = report.to_string();
        assert!(
            shown.ends_with(
                "(skipped 1: 1 malformed)\n  line 61: row has 42 fields, the schema expects 43 (one per column)"
            ),
            "{name}: {shown}"
        );
    }
}
