//! Fuzz target: see `ward_fuzz::gateway_admin`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ward_fuzz::gateway_admin::run(data));
