//! libFuzzer target: arbitrary update streams through `ChunkAssembler`.
//! See `fedshield_fuzz::update_decoder` for the input layout and the checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    fedshield_fuzz::update_decoder::check_update_decoder(input);
});
