//! Fuzz target: see `ward_fuzz::discovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ward_fuzz::discovery::run(data));
