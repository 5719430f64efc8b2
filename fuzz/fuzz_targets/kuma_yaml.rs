//! Fuzz target: see `ward_fuzz::kuma`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ward_fuzz::kuma::run(data));
