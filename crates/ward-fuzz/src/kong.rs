//! Kong's declarative configuration (kong.yml) as `ward gateway check` and every (re)load
//! read it: the config loader, then the compiler of routes, plugins, consumers and upstreams.

/// Validates `data` as a gateway configuration; as a mesh member too when it names a mesh
/// service, since only then do `.mesh` hosts resolve.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ward_gateway::validate(text, false);
    if text.contains(".mesh") {
        let _ = ward_gateway::validate(text, true);
    }
}
