//! The documentation's examples are applied to a real control plane, or served by a real
//! gateway and asked what the page shows, so none can rot.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{ControlPlane, GatewayProcess, TestPki, Upstream};

/// The ```yaml blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_resource_page_example_applies() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/resources");
    let root = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(root.path());
    let mut pages = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let blocks = yaml_blocks(&text);
        assert!(!blocks.is_empty(), "{} has no YAML example", path.display());
        // Templates are filled the way `ward dp run --dataplane-var` fills them.
        let yaml = blocks.join("---\n").replace("{{ name }}", "from-template").replace("{{ port }}", "9999");
        let run = cp.ward_stdin(&["apply", "-f", "-"], &yaml);
        assert!(run.0.status.success(), "{}: {}", path.display(), run.stderr());
        pages += 1;
    }
    assert_eq!(pages, 19, "a page per resource type (Secret and GlobalSecret share one)");
}

/// The fenced blocks of a Markdown file whose info string is exactly `lang`.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(bool, String)> = None;
    for line in markdown.lines() {
        let fence = line.trim_end();
        match &mut current {
            None if fence.starts_with("```") => current = Some((fence == format!("```{lang}"), String::new())),
            None => {}
            Some((wanted, block)) if fence == "```" => {
                if *wanted {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// One request of a ```console block and the answer it shows.
#[derive(Debug)]
struct Shown {
    /// The command as written, for messages.
    command: String,
    args: Vec<String>,
    status: u16,
    /// Headers the answer must have (name, value).
    headers: Vec<(String, String)>,
    /// The whole body, when the page shows it.
    body: Option<String>,
}

/// Splits a command line as a POSIX shell would (quotes and backslashes; no expansions).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref().take_while(|c| *c != '\'') {
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The requests of a ```console block: `$ curl ...`, then `HTTP/1.1 NNN`, then optional
/// `Name: value` lines the answer must have, then, after a blank line, an optional body the
/// answer must be exactly (leading and trailing blanks aside).
fn console_requests(block: &str, page: &Path) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    // 0: after a command, 1: in the headers, 2: in the body.
    let mut state = 2;
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            let args = shell_words(command);
            assert_eq!(args.first().map(String::as_str), Some("curl"), "{}: only curl is run: {line}", page.display());
            shown.push(Shown {
                command: command.to_string(),
                args: args[1..].to_vec(),
                status: 0,
                headers: vec![],
                body: None,
            });
            state = 0;
            continue;
        }
        let Some(last) = shown.last_mut() else {
            assert!(line.trim().is_empty(), "{}: text before the first command: {line}", page.display());
            continue;
        };
        match state {
            0 => {
                let status = line.strip_prefix("HTTP/1.1 ").and_then(|s| s.trim().parse().ok());
                let Some(status) = status else {
                    panic!("{}: `{}` must be followed by `HTTP/1.1 NNN`, not {line:?}", page.display(), last.command)
                };
                last.status = status;
                state = 1;
            }
            1 if line.trim().is_empty() => state = 2,
            1 => {
                let Some((name, value)) = line.split_once(": ") else {
                    panic!("{}: {line:?} is not a `Name: value` header line", page.display())
                };
                last.headers.push((name.to_string(), value.to_string()));
            }
            _ => {
                let body = last.body.get_or_insert_with(String::new);
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    for s in &mut shown {
        assert!(s.status != 0, "{}: `{}` shows no status", page.display(), s.command);
        s.body = s.body.take().map(|b| b.trim().to_string()).filter(|b| !b.is_empty());
    }
    shown
}

/// Replaces a line holding only `{{ name }}` with `text`, each line at that line's indentation.
fn fill_block(yaml: &str, name: &str, text: &str) -> String {
    let placeholder = format!("{{{{ {name} }}}}");
    let mut out = String::new();
    for line in yaml.lines() {
        if line.trim() == placeholder {
            let indent = &line[..line.len() - line.trim_start().len()];
            for l in text.lines() {
                out.push_str(indent);
                out.push_str(l);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Sends one request the way curl would, to the gateway instead of localhost.
async fn send(gw: &GatewayProcess, pki: &TestPki, shown: &Shown) -> reqwest::Response {
    let mut builder = reqwest::Client::builder().no_proxy();
    let (mut method, mut url, mut body) = (None, None, None);
    let mut headers: Vec<(String, String)> = Vec::new();
    let (mut cert, mut key) = (None, None);
    let mut args = shown.args.iter();
    let value = |option: &str, args: &mut std::slice::Iter<'_, String>| -> String {
        args.next().unwrap_or_else(|| panic!("`{}`: {option} needs a value", shown.command)).clone()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-i" | "-s" | "--include" | "--silent" => {}
            "-k" | "--insecure" => builder = builder.danger_accept_invalid_certs(true),
            "--http1.1" => builder = builder.http1_only(),
            "-X" | "--request" => method = Some(value(arg, &mut args)),
            "-H" | "--header" => {
                let h = value(arg, &mut args);
                let (name, v) = h.split_once(':').unwrap_or_else(|| panic!("`{}`: bad header {h:?}", shown.command));
                headers.push((name.trim().to_string(), v.trim().to_string()));
            }
            "-d" | "--data" => body = Some(value(arg, &mut args)),
            "-u" | "--user" => {
                use base64::Engine;
                let credentials = base64::engine::general_purpose::STANDARD.encode(value(arg, &mut args));
                headers.push(("Authorization".into(), format!("Basic {credentials}")));
            }
            "--cert" => cert = Some(value(arg, &mut args)),
            "--key" => key = Some(value(arg, &mut args)),
            a if a.starts_with('-') => panic!("`{}`: the test does not know curl's {a}", shown.command),
            a => url = Some(a.to_string()),
        }
    }
    if let Some(cert) = cert {
        // `--cert NAME.crt --key NAME.key`: a client certificate for common name NAME from the page's CA.
        let name = cert.strip_suffix(".crt").unwrap_or_else(|| panic!("`{}`: --cert NAME.crt", shown.command));
        assert_eq!(key.as_deref(), Some(format!("{name}.key").as_str()), "`{}`: --key NAME.key", shown.command);
        let leaf = pki.client(name, &[]);
        builder =
            builder.identity(reqwest::Identity::from_pem(format!("{}{}", leaf.cert, leaf.key).as_bytes()).unwrap());
    }
    let url = url.unwrap_or_else(|| panic!("`{}` has no URL", shown.command));
    let url = [
        ("http://localhost:8000", format!("http://{}", gw.proxy)),
        ("https://localhost:8443", format!("https://{}", gw.proxy_ssl)),
        ("http://localhost:8001", format!("http://{}", gw.admin)),
    ]
    .iter()
    .find_map(|(shown_as, real)| url.strip_prefix(shown_as).map(|rest| format!("{real}{rest}")))
    .unwrap_or_else(|| {
        panic!("`{}`: URLs start with http://localhost:8000, :8001 or https://localhost:8443", shown.command)
    });
    let has = |headers: &[(String, String)], name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has(&headers, "user-agent") {
        headers.push(("User-Agent".into(), "curl/8.5.0".into()));
    }
    if body.is_some() && !has(&headers, "content-type") {
        headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
    }
    let method = method.unwrap_or_else(|| if body.is_some() { "POST".into() } else { "GET".into() });
    let client = builder.build().unwrap();
    let mut request = client.request(method.parse().unwrap(), url);
    for (name, v) in headers {
        request = request.header(name, v);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.unwrap_or_else(|e| panic!("`{}`: {e:?}", shown.command))
}

/// The plugins `ward gateway check` names when it refuses one it does not have.
fn supported_plugins() -> BTreeSet<String> {
    let config = "_format_version: \"3.0\"\nplugins:\n- name: no-such-plugin\n";
    let run = common::ward_with_config(config, &["gateway", "check", "--config", "{config}"]);
    let stderr = run.fails();
    let list = stderr
        .split("plugin 'no-such-plugin' is not supported (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no list of plugins in:\n{stderr}"));
    list.split(", ").map(str::to_string).collect()
}

#[tokio::test]
async fn every_gateway_page_example_serves_what_it_shows() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gateway");
    let mut pages = vec![docs.join("README.md")];
    let mut documented = BTreeSet::new();
    for entry in std::fs::read_dir(docs.join("plugins")).unwrap() {
        let path = entry.unwrap().path();
        documented.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
        pages.push(path);
    }
    assert_eq!(documented, supported_plugins(), "one page per plugin the gateway has, named after it");
    let overview = std::fs::read_to_string(docs.join("README.md")).unwrap();
    for name in &documented {
        assert!(overview.contains(&format!("(plugins/{name}.md)")), "docs/gateway/README.md does not link {name}");
    }
    pages.sort();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let consoles = fenced_blocks(&text, "console");
        let yamls = fenced_blocks(&text, "yaml");
        if !page.ends_with("README.md") || !consoles.is_empty() {
            assert_eq!(yamls.len(), 1, "{}: one complete ```yaml example", page.display());
            assert!(!consoles.is_empty(), "{}: no ```console example", page.display());
        }
        let Some(yaml) = yamls.first() else { continue };
        let upstream = Upstream::start("docs").await;
        let pki = TestPki::new("Docs CA");
        let yaml = yaml.replace("{{ upstream_port }}", &upstream.addr.port().to_string());
        let yaml = fill_block(&yaml, "ca_certificate", &pki.ca_pem);
        let gw = GatewayProcess::start(&yaml);
        // Examples count requests per minute: keep them within one.
        common::avoid_minute_boundary().await;
        for shown in consoles.iter().flat_map(|c| console_requests(c, page)) {
            let response = send(&gw, &pki, &shown).await;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap();
            let at = format!("{}: `{}`", page.display(), shown.command);
            assert_eq!(status, shown.status, "{at}: answered {status} {headers:?} {body}\n{}", gw.log());
            for (name, value) in &shown.headers {
                let got: Vec<_> = headers.get_all(name.as_str()).iter().collect();
                assert!(
                    got.iter().any(|v| v.as_bytes() == value.as_bytes()),
                    "{at}: {name}: {value} wanted, got {got:?}"
                );
            }
            if let Some(want) = &shown.body {
                assert_eq!(body.trim(), want, "{at}: body");
            }
        }
    }
}
