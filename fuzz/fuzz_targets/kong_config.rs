//! Fuzz target: see `ward_fuzz::kong`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ward_fuzz::kong::run(data));
