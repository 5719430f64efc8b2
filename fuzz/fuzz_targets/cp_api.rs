//! Fuzz target: see `ward_fuzz::cp_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ward_fuzz::cp_api::run(data));
