//! libFuzzer target: arbitrary feature schemas and telemetry rows through the
//! schema parser and the featurizer. See `fedshield_fuzz::schema_ingest`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    fedshield_fuzz::schema_ingest::check_schema_ingest(input);
});
