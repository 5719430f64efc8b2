//! The body of the gateway admin API's `POST /config`: the handler finds the declarative text
//! in it (raw, form or multipart), then compiles that text whole before it replaces the one in
//! force. The handler itself takes hyper's `Incoming` body, which only a real connection makes,
//! so this drives the two functions it calls on the body.

/// The first line of `data` is the Content-Type (`-` for none), the rest is the body.
pub fn run(data: &[u8]) {
    let (first, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(content_type) = std::str::from_utf8(first) else { return };
    let content_type = (content_type != "-").then_some(content_type);
    if let Some(text) = ward_gateway::admin_config_text(content_type, body) {
        let _ = ward_gateway::validate(&text, false);
    }
}
