//! The processes a demo starts: each with its log file, all stopped (SIGTERM, then SIGKILL)
//! when the demo ends, however it ends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

/// Running children of the demo; stopped on drop.
pub struct Processes {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Processes {
    /// No process yet; logs go under `logs`.
    pub fn new(logs: &Path) -> Self {
        Processes { children: Vec::new(), logs: logs.to_path_buf() }
    }

    /// Starts `ward ARGS...` as `name`, its output in `<logs>/<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding the ward binary")?;
        let log = self.log_path(name);
        let child = Command::new(exe)
            .args(args)
            .env("WARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Where `name` logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Fails naming any child that has exited, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                anyhow::bail!(
                    "{name} exited ({status}):\n  {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
                );
            }
        }
        Ok(())
    }

    /// Stops every child: SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        for (_, child) in &self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}
