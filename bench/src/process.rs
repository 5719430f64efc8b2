//! Processes under test: started pinned to a set of cores (through `taskset`), killed on drop,
//! with their resident memory and CPU time read from /proc (children included).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;

/// The cores of the load generator (with the test server) and of the processes under test.
///
/// Taken from `BENCH_LOAD_CPUS` and `BENCH_SUT_CPUS` (taskset lists such as `0` or `2-3`);
/// when unset, nothing is pinned.
#[derive(Debug, Clone)]
pub struct Cpus {
    /// Where the load generator and the test server run.
    pub load: Option<String>,
    /// Where proxies, gateways and the control plane run.
    pub sut: Option<String>,
}

impl Cpus {
    /// The layout the environment asks for.
    pub fn from_env() -> Self {
        let get = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Cpus { load: get("BENCH_LOAD_CPUS"), sut: get("BENCH_SUT_CPUS") }
    }
}

/// A process under test; killed on drop.
pub struct Proc {
    /// The child process.
    pub child: Child,
}

impl Proc {
    /// Starts `program args...` with output sent to `log`.
    pub fn spawn(program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        Self::spawn_on(None, program, args, &[], log)
    }

    /// Starts `program args...` on the cores `cpus` (a taskset list; `None`: anywhere), with
    /// extra environment variables and standard error sent to `log`.
    pub fn spawn_on(
        cpus: Option<&str>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let mut command = pinned(cpus, program);
        command.args(args).envs(env.iter().copied());
        Self::spawn_command(command, log)
    }

    /// Starts `command` with standard error sent to `log`; it runs in the calling thread's
    /// network namespace.
    pub fn spawn_command(mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Proc { child })
    }

    /// Fails, with the end of `log`, if the process has exited.
    pub fn check_alive(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = text.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
            anyhow::bail!("process exited with {status}:\n{tail}");
        }
        Ok(())
    }

    fn tree(&self) -> Vec<u32> {
        tree_of(self.child.id())
    }

    /// Resident set size now and at its peak, in KiB, summed over the process tree.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let (mut rss, mut peak) = (0, 0);
        for pid in self.tree() {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
            let field = |name: &str| -> anyhow::Result<u64> {
                let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{name} missing"))?;
                Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
            };
            rss += field("VmRSS:")?;
            peak += field("VmHWM:")?;
        }
        Ok((rss, peak))
    }

    /// Resident set size now, MiB (0 when it cannot be read).
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib().map_or(0.0, |(rss, _)| rss as f64 / 1024.0)
    }

    /// CPU seconds (user + system) the process tree has used, from /proc.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for pid in self.tree() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let after_name = &stat[stat.rfind(')').context("stat format")? + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
            total += ticks as f64 / clock_ticks();
        }
        Ok(total)
    }
}

/// `program` to be run on the cores `cpus` (a taskset list; `None`: anywhere).
pub fn pinned(cpus: Option<&str>, program: &Path) -> Command {
    match cpus {
        // taskset execs the program, so the child's PID is the program's.
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so that nginx and HAProxy masters take their workers down with them.
        let pid = self.child.id() as i32;
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).stderr(Stdio::null()).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of the processes while `during` runs, sampled every 100 ms, MiB.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<f64>>>,
}

impl RssSampler {
    /// Starts sampling the given process IDs' trees.
    pub fn start(procs: Vec<u32>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peaks = vec![0.0f64; procs.len()];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&procs) {
                    *peak = peak.max(rss_of_tree(*pid));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peaks
        });
        RssSampler { stop, handle: Some(handle) }
    }

    /// Stops and returns the highest RSS seen of each process tree, MiB.
    pub fn finish(mut self) -> Vec<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

/// The process `pid` and all its descendants (nginx and HAProxy workers).
fn tree_of(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", pids[i])) {
            for task in tasks.flatten() {
                let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pids.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    pids
}

/// VmRSS summed over the tree of `pid`, MiB.
fn rss_of_tree(pid: u32) -> f64 {
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    tree_of(pid).into_iter().map(rss).sum::<u64>() as f64 / 1024.0
}
