//! A process started inside a host.

use std::{
    path::PathBuf,
    process::{Child, ExitStatus},
};

/// A running process whose output goes to a log file; killed (SIGKILL) and reaped on drop.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    pub(crate) fn new(child: Child, log: PathBuf) -> Process {
        Process { child, log }
    }

    /// The process id (of the program itself: `ip netns exec` and `setpriv` exec into it).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it exits by itself, and returns how.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for child")
    }

    /// Kills it and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
