use std::collections::BTreeMap;

use super::*;

fn text(t: &str) -> Piece {
    Piece::Text(t.into())
}
fn field(f: &str) -> Piece {
    Piece::Field(f.into())
}
fn label(k: &str) -> Piece {
    Piece::Label(k.into())
}

#[test]
fn parses_text_fields_and_labels_with_any_spaces() {
    let cases: &[(&str, Vec<Piece>)] = &[
        ("", vec![]),
        ("plain.text", vec![text("plain.text")]),
        ("{{ .Mesh }}.{{ .Zone }}.mesh.local", vec![field("Mesh"), text("."), field("Zone"), text(".mesh.local")]),
        ("{{.Mesh}}", vec![field("Mesh")]),
        ("{{    .Workload\t}}", vec![field("Workload")]),
        ("/a/{{ label \"kuma.io/workload\" }}", vec![text("/a/"), label("kuma.io/workload")]),
        ("{{label   \"team\"}}x", vec![label("team"), text("x")]),
        ("a }} b", vec![text("a }} b")]),
    ];
    for (input, want) in cases {
        assert_eq!(Template::parse(input), Ok(Template { pieces: want.clone() }), "{input}");
    }
}

#[test]
fn refuses_go_syntax_outside_the_subset_as_unsupported() {
    for input in [
        "{{- .Mesh }}",
        "{{ .Mesh -}}",
        "{{/* comment */}}",
        "{{ if .Mesh }}x{{ end }}",
        "{{ .Mesh | printf \"%s\" }}",
        "{{ printf \"%s\" .Mesh }}",
        "{{ $x := 1 }}",
        "{{ label .Mesh }}",
        "{{ label \"a\" \"b\" }}",
        "{{ .Mesh.Name }}",
        "{{ (.Mesh) }}",
    ] {
        match Template::parse(input) {
            Err(TemplateError::Unsupported(m)) => assert!(m.contains("action {{"), "{input}: {m}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn refuses_what_go_cannot_parse_as_invalid() {
    for (input, says) in [
        ("{{ .Mesh", "couldn't parse template"),
        ("a {{ .Mesh }} {{", "couldn't parse template"),
        ("{{}}", "missing value"),
        ("{{ .Mesh|1 }}", "non executable command in pipeline stage 2"),
        ("{{ .Namespace|invalid }}", "function \"invalid\" not defined"),
        ("{{ nope }}", "function \"nope\" not defined"),
    ] {
        match Template::parse(input) {
            Err(TemplateError::Invalid(m)) => assert!(m.contains(says), "{input}: {m}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn renders_fields_and_labels() {
    let labels = BTreeMap::from([("team".to_string(), "pay".to_string())]);
    let fields = [("Mesh", "default"), ("Zone", "east")];
    let render = |t: &str| Template::parse(t).unwrap().render_with(&fields, &labels);
    assert_eq!(render("{{ .Mesh }}.{{ .Zone }}.mesh.local"), Ok("default.east.mesh.local".into()));
    assert_eq!(render("{{ label \"team\" }}.{{.Mesh}}"), Ok("pay.default".into()));
    assert_eq!(render("static"), Ok("static".into()));
    assert!(render("{{ label \"missing\" }}").unwrap_err().contains("not found"));
    assert!(render("{{ .Workload }}").unwrap_err().contains("no field .Workload"));
}
