//! `--dataplane-file` with `--dataplane-var name=value`: Kuma's `{{ name }}` templates,
//! filled in, then read and validated as a Dataplane resource.

use std::collections::BTreeMap;

use ward_api::{Resource, Spec, parse};

/// Why the dataplane file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataplaneFileError {
    /// A `--dataplane-var` is not `name=value`.
    #[error("--dataplane-var {0:?}: must be name=value")]
    BadVar(String),
    /// The file uses a variable nobody gave.
    #[error("dataplane file: line {line}: variable {{{{ {name} }}}} is not given; pass --dataplane-var {name}=VALUE")]
    MissingVar {
        /// The variable.
        name: String,
        /// 1-based line.
        line: usize,
    },
    /// A `{{` without a matching `}}`.
    #[error("dataplane file: line {0}: '{{{{' without a closing '}}}}'")]
    Unclosed(usize),
    /// The file does not hold exactly one valid Dataplane.
    #[error("dataplane file: {0}")]
    Invalid(String),
}

/// Parses `name=value` pairs.
pub fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>, DataplaneFileError> {
    vars.iter()
        .map(|v| match v.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.to_string())),
            _ => Err(DataplaneFileError::BadVar(v.clone())),
        })
        .collect()
}

/// Replaces every `{{ name }}` of `text` with its value.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, DataplaneFileError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let line = text.len() - rest.len() + start;
        let line = text[..line].matches('\n').count() + 1;
        let end = rest[start..].find("}}").ok_or(DataplaneFileError::Unclosed(line))?;
        let name = rest[start + 2..start + end].trim();
        let value = vars.get(name).ok_or_else(|| DataplaneFileError::MissingVar { name: name.to_string(), line })?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads the file's text (after substitution) as one valid Dataplane.
pub fn read(text: &str, vars: &BTreeMap<String, String>) -> Result<Resource, DataplaneFileError> {
    let text = substitute(text, vars)?;
    let invalid = |m: String| DataplaneFileError::Invalid(m);
    let mut docs = parse::documents(&text).map_err(|e| invalid(e.to_string()))?;
    if docs.len() != 1 {
        return Err(invalid(format!("must hold exactly one Dataplane document, found {}", docs.len())));
    }
    let resource = parse::resource(docs.remove(0), "dataplane file").map_err(|e| invalid(e.to_string()))?;
    match resource.spec {
        Spec::Dataplane(_) => Ok(resource),
        _ => Err(invalid(format!("{}: must be a Dataplane", resource.meta.key()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "type: Dataplane\nmesh: m\nname: {{ name }}\nnetworking:\n  address: {{address}}\n  inbound:\n  - port: 8080\n    tags: {kuma.io/service: web}\n";

    #[test]
    fn fills_variables_and_validates() {
        let vars = parse_vars(&["name=web-1".into(), "address=10.0.0.7".into()]).unwrap();
        let dp = read(FILE, &vars).unwrap();
        assert_eq!(dp.meta.name, "web-1");
        let Spec::Dataplane(spec) = dp.spec else { panic!() };
        assert_eq!(spec.networking.address, "10.0.0.7");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let name_only = parse_vars(&["name=web-1".into()]).unwrap();
        let cases: Vec<(&str, BTreeMap<String, String>, &str)> = vec![
            (
                FILE,
                name_only.clone(),
                "line 5: variable {{ address }} is not given; pass --dataplane-var address=VALUE",
            ),
            ("name: {{ name", name_only.clone(), "line 1: '{{' without a closing '}}'"),
            ("type: Mesh\nname: m\n", name_only.clone(), "meshes/m: must be a Dataplane"),
            (
                "type: Dataplane\nmesh: m\nname: x\nnetworking:\n  address: 1.2.3.4\n  inbound: []\n",
                name_only,
                "neither an inbound nor a gateway",
            ),
        ];
        for (text, vars, want) in cases {
            let err = read(text, &vars).unwrap_err().to_string();
            assert!(err.contains(want), "{err} does not contain {want}");
        }
        assert_eq!(parse_vars(&["novalue".into()]), Err(DataplaneFileError::BadVar("novalue".into())));
    }
}
