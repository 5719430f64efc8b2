//! Running iptables: choosing the backend (nft or legacy), reading a family's tables, and
//! applying a nat transaction with `iptables-restore --noflush`, which commits all of it or none.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{rules::Family, saved};

/// The two implementations of the iptables commands; rules must go where the host's other
/// rules are, or the two sets would be evaluated side by side with no order between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `iptables-nft`: iptables rules kept in nf_tables.
    Nft,
    /// `iptables-legacy`: the original x_tables.
    Legacy,
}

impl Backend {
    /// Both, nft first.
    pub const ALL: [Backend; 2] = [Backend::Nft, Backend::Legacy];

    /// The program for `tool` ("save", "restore") of this backend and family, e.g. `ip6tables-nft-restore`.
    pub fn program(self, family: Family, tool: &str) -> String {
        let tables = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{tables}-{}-{tool}", self.word())
    }

    /// `iptables-nft` or `iptables-legacy`.
    pub fn name(self) -> String {
        format!("iptables-{}", self.word())
    }

    fn word(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

/// Why an iptables command could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program is not installed.
    #[error("{program} not found on PATH (install the iptables package)")]
    Missing { program: String },
    /// It ran and failed, or could not be run.
    #[error("{program} failed: {message}")]
    Failed { program: String, message: String },
    /// Neither backend can read its tables.
    #[error("no iptables backend works here: {nft}; {legacy}")]
    NoBackend { nft: Box<Error>, legacy: Box<Error> },
}

/// Everything `<x>tables-<backend>-save` prints for the family. All tables, not `-t nat`: asking
/// the legacy backend for one table would create it.
pub fn save(backend: Backend, family: Family) -> Result<String, Error> {
    run(&backend.program(family, "save"), &[], None)
}

/// Commits `payload` (a [`super::rules::transaction`]) in one step; on error nothing changed.
pub fn restore(backend: Backend, family: Family, payload: &str) -> Result<(), Error> {
    run(&backend.program(family, "restore"), &["--noflush", "--wait=10"], Some(payload)).map(drop)
}

/// The backend to install into, the way Istio and kube-proxy choose: the one that already holds
/// Ward's chains, else the one holding more rules (the host's firewall lives there), else nft
/// when it works, else legacy.
pub fn detect() -> Result<Backend, Error> {
    let mut usable = Vec::new();
    let mut errors = Vec::new();
    for backend in Backend::ALL {
        match save(backend, Family::V4) {
            Ok(v4) => {
                let v6 = save(backend, Family::V6).unwrap_or_default();
                let has_ward = !saved::installed(&v4).is_empty() || !saved::installed(&v6).is_empty();
                let rules = [&v4, &v6].iter().flat_map(|s| s.lines()).filter(|l| l.starts_with("-A ")).count();
                usable.push((backend, (has_ward, rules, backend == Backend::Nft)));
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some((backend, _)) = usable.into_iter().max_by_key(|(_, preference)| *preference) {
        return Ok(backend);
    }
    let legacy = errors.pop().expect("one error per backend");
    let nft = errors.pop().expect("one error per backend");
    Err(Error::NoBackend { nft: Box::new(nft), legacy: Box::new(legacy) })
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let failed = |message: String| Error::Failed { program: program.to_string(), message };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Missing { program: program.to_string() },
            _ => failed(e.to_string()),
        })?;
    // A program that fails early closes its input; its own error then says more than EPIPE.
    let written = input.map_or(Ok(()), |input| child.stdin.take().expect("piped stdin").write_all(input.as_bytes()));
    let output = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("Try `")).collect();
        return Err(failed(format!("{} ({})", message.join(" "), output.status)));
    }
    written.map_err(|e| failed(format!("writing the rules: {e}")))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_by_backend_and_family() {
        assert_eq!(Backend::Nft.program(Family::V4, "save"), "iptables-nft-save");
        assert_eq!(Backend::Legacy.program(Family::V6, "restore"), "ip6tables-legacy-restore");
        assert_eq!(Backend::Legacy.name(), "iptables-legacy");
    }

    #[test]
    fn a_missing_program_is_named() {
        let error = run("iptables-surely-not-installed-save", &[], None).unwrap_err();
        assert!(matches!(&error, Error::Missing { program } if program == "iptables-surely-not-installed-save"));
        assert_eq!(
            error.to_string(),
            "iptables-surely-not-installed-save not found on PATH (install the iptables package)"
        );
    }
}
