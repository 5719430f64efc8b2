//! Kuma resources as `ward apply`, the REST API, the dataplane file and the discovery server
//! read them: YAML documents (and JSON, which is YAML too), then each document into a resource.

use ward_api::parse;

/// Parses `data` as YAML documents and as one JSON document. Invariant: a resource that
/// parses parses again, to the same resource, from the JSON it writes back
/// (`ward get -o yaml` output applies unchanged).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut docs = parse::documents(text).unwrap_or_default();
    docs.extend(serde_json::from_str(text).ok());
    for (i, doc) in docs.into_iter().enumerate() {
        let Ok(resource) = parse::resource(doc, &format!("document {}", i + 1)) else { continue };
        let written = resource.to_json();
        let again = parse::resource(written.clone(), "written back").unwrap_or_else(|e| {
            panic!("{} does not parse again from its own JSON {written}: {e}", resource.meta.key())
        });
        assert_eq!(again, resource, "{written}");
    }
}
