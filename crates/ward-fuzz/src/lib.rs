//! What each of Ward's fuzz targets (`fuzz/`, run with `cargo +nightly fuzz`) does with one
//! input. The targets are one-line wrappers around these functions, and `tests/corpus.rs`
//! replays the committed corpora through the same functions on the stable toolchain, so a
//! target that stops compiling or a seed that starts failing shows up in `cargo test`.
//!
//! Each function returns normally for any input; it panics only when the code under test
//! panics or breaks one of the invariants it states.

pub mod cp_api;
pub mod discovery;
pub mod framing;
pub mod gateway_admin;
pub mod kong;
pub mod kuma;

/// A target's name (the directory of its corpus under `fuzz/corpus/`) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 6] = [
    ("framing", framing::run),
    ("kuma_yaml", kuma::run),
    ("kong_config", kong::run),
    ("cp_api", cp_api::run),
    ("gateway_admin", gateway_admin::run),
    ("discovery", discovery::run),
];
