//! The files a `provided` CA backend may name: only a global admin may name one, it is read
//! only from the directory the operator gave (`--provided-ca-dir`), and every failure reads
//! the same to the caller, so that nobody learns which files exist on the host. The reason
//! is logged for the operator.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// Largest file read: a CA certificate or key is a few kilobytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The directory provided CA files are read from; the default, none, means no file is ever read.
#[derive(Debug, Clone, Default)]
pub struct ProvidedCaDir(Option<PathBuf>);

/// Why a named file was not read: all the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefused {
    /// The caller's token is limited to some meshes.
    #[error("only a global admin may name a file of the control plane's host; give the PEM as inline or inlineString")]
    NotGlobalAdmin,
    /// The control plane was started without `--provided-ca-dir`.
    #[error(
        "no file is read: the control plane runs without --provided-ca-dir; give the PEM as inline or inlineString"
    )]
    NoDirectory,
    /// Missing, outside the directory, not a regular file, too large or unreadable: the same to the caller.
    #[error("cannot read {0:?} from the provided CA directory")]
    Unreadable(String),
}

/// Who asks for a file to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// An admin whose token covers every mesh.
    GlobalAdmin,
    /// Anyone else.
    Other,
}

impl ProvidedCaDir {
    /// Files are read from `dir`, resolved now (so it must exist).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(ProvidedCaDir(Some(dir)))
    }

    /// Reads `path` (relative to the directory, or absolute inside it) for `requester`.
    pub fn read(&self, path: &str, requester: Requester) -> Result<String, FileRefused> {
        if requester != Requester::GlobalAdmin {
            return Err(FileRefused::NotGlobalAdmin);
        }
        let dir = self.0.as_ref().ok_or(FileRefused::NoDirectory)?;
        read_inside(dir, path).map_err(|reason| {
            tracing::warn!(file = %path, dir = %dir.display(), %reason, "a provided CA file was refused");
            FileRefused::Unreadable(path.to_string())
        })
    }
}

/// The text of the regular file `path` resolves to, when that lies inside `dir` (links followed).
fn read_inside(dir: &Path, path: &str) -> Result<String, String> {
    let resolved = dir.join(path).canonicalize().map_err(|e| e.to_string())?;
    if !resolved.starts_with(dir) {
        return Err(format!("{} is outside the directory", resolved.display()));
    }
    let file = std::fs::File::open(&resolved).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES).read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_regular_files_inside_the_directory_for_global_admins() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cas");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "PEM").unwrap();
        std::fs::write(root.path().join("outside.pem"), "SECRET").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.pem"), dir.join("link.pem")).unwrap();
        let files = ProvidedCaDir::new(&dir).unwrap();
        let inside = dir.join("ca.pem").display().to_string();
        for path in ["ca.pem", "./ca.pem", inside.as_str()] {
            assert_eq!(files.read(path, Requester::GlobalAdmin).as_deref(), Ok("PEM"), "{path}");
        }
        let outside = root.path().join("outside.pem").display().to_string();
        for path in ["../outside.pem", "link.pem", outside.as_str(), "missing.pem", ".", "/etc/passwd", ""] {
            assert_eq!(files.read(path, Requester::GlobalAdmin), Err(FileRefused::Unreadable(path.into())), "{path}");
        }
        assert_eq!(files.read("ca.pem", Requester::Other), Err(FileRefused::NotGlobalAdmin));
        let none = ProvidedCaDir::default();
        assert_eq!(none.read("ca.pem", Requester::GlobalAdmin), Err(FileRefused::NoDirectory));
        assert_eq!(none.read("ca.pem", Requester::Other), Err(FileRefused::NotGlobalAdmin));
    }
}
