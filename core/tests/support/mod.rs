//! Paths of the real telemetry samples the integration tests read. The
//! samples are required: a missing one fails the test that needs it.

use std::path::{Path, PathBuf};

/// Where the samples are, relative to this crate.
pub const SAMPLES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/telemetry-samples"
);

/// Returns the path of a sample file, failing the test when it is absent.
pub fn sample(relative_path: &str) -> PathBuf {
    let path = Path::new(SAMPLES_DIR).join(relative_path);
    assert!(
        path.is_file(),
        "sample {} is required by this test and was not found",
        path.display()
    );
    path
}
