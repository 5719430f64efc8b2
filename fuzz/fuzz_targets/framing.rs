//! Fuzz target: see `ward_fuzz::framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ward_fuzz::framing::run(data));
