//! The programs and `ip` commands the testbed is built from, and the sweep of what killed test
//! runs left behind.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use nix::{sys::signal, unistd::Pid};

/// Start of every namespace name the testbed creates: `wardtb-<pid>-...`, so that a later run
/// can tell from the name whether the process that owned it is still alive.
pub(crate) const PREFIX: &str = "wardtb-";

/// Where `ip netns` keeps one file per named namespace.
const RUN_DIR: &str = "/run/netns";

/// Where `ip netns exec` finds the files it mounts over `/etc` (resolv.conf) for a namespace.
pub(crate) const ETC_DIR: &str = "/etc/netns";

/// The programs the testbed runs, found once with absolute paths, so that a command whose PATH a
/// test changes still runs inside its namespace.
pub(crate) struct Programs {
    pub ip: PathBuf,
    pub setpriv: PathBuf,
}

/// The testbed's programs; fails the test loudly when it cannot run: not root, or a program missing.
pub(crate) fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "ward-testbed: this test builds hosts out of network namespaces and must run as root \
             (uid {} here); it refuses to pass without having run",
            nix::unistd::geteuid()
        );
        let need = |name: &str, package: &str| {
            find_program(name).unwrap_or_else(|| {
                panic!("ward-testbed: `{name}` is missing; install the {package} package (apt-get install {package})")
            })
        };
        need("iptables", "iptables");
        Programs { ip: need("ip", "iproute2"), setpriv: need("setpriv", "util-linux") }
    })
}

/// The absolute path of the program `name` on PATH, or in the sbin directories a non-login
/// root shell may miss.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `ip ARGS` and returns its output; panics with `ip`'s error when it fails.
pub(crate) fn ip(args: &[&str]) -> String {
    let output = Command::new(&programs().ip).args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ward-testbed: `ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates the named network namespace with its loopback up.
pub(crate) fn add(name: &str) {
    // Parallel `ip netns add` may race on setting up /run/netns the first time; one at a time.
    static ADD: Mutex<()> = Mutex::new(());
    let _one = ADD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    ip(&["netns", "add", name]);
    drop(_one);
    ip(&["-n", name, "link", "set", "lo", "up"]);
}

/// Kills every process in the namespace, deletes it (its veth ends go with it) and its
/// `/etc/netns` files. Reports problems instead of panicking: it runs in `Drop`.
pub(crate) fn delete(name: &str) {
    kill_processes(name);
    let output = Command::new(&programs().ip).args(["netns", "delete", name]).output();
    match output {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!("ward-testbed: deleting namespace {name}: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => eprintln!("ward-testbed: deleting namespace {name}: {e}"),
    }
    let etc = Path::new(ETC_DIR).join(name);
    if etc.exists()
        && let Err(e) = fs::remove_dir_all(&etc)
    {
        eprintln!("ward-testbed: removing {}: {e}", etc.display());
    }
}

/// SIGKILLs every process inside the namespace, again while new ones appear (a parent may fork
/// between the listing and its death).
fn kill_processes(name: &str) {
    let me = std::process::id();
    for _ in 0..10 {
        let Ok(output) = Command::new(&programs().ip).args(["netns", "pids", name]).output() else { return };
        let pids: Vec<i32> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .filter(|&pid| pid != me as i32)
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL);
        }
    }
}

/// The pid that owns a testbed name (`wardtb-<pid>-...`).
fn owner(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn alive(pid: i32) -> bool {
    !matches!(signal::kill(Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

/// Deletes the namespaces and `/etc/netns` entries of testbeds whose process is gone (a test
/// run that was killed before its `Drop` could clean up).
pub(crate) fn sweep_stale() {
    for dir in [RUN_DIR, ETC_DIR] {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner(&name).is_some_and(|pid| !alive(pid)) {
                if dir == RUN_DIR {
                    delete(&name);
                } else {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_pid_after_the_prefix() {
        assert_eq!(owner("wardtb-4242-3-some_test"), Some(4242));
        assert_eq!(owner("wardtb-4242-3-some_test-items"), Some(4242));
        assert_eq!(owner("wardtb-x-3"), None);
        assert_eq!(owner("someone-else"), None);
    }
}
