//! The real telemetry samples in `../shared/data/telemetry-samples`, which
//! these tests require: a test fails, naming the file, when one is absent.

use std::path::{Path, PathBuf};

/// The samples folder, next to the workspace.
pub const SAMPLES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/telemetry-samples"
);

/// Returns the path of the sample file at `relative` (to the samples
/// folder), failing the test when it is absent.
pub fn sample(relative: &str) -> PathBuf {
    let path = Path::new(SAMPLES_DIR).join(relative);
    assert!(
        path.is_file(),
        "the telemetry samples are required: {} is missing",
        path.display()
    );
    path
}
