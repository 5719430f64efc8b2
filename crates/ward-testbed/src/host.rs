//! A host of a testbed: a network namespace with one veth on the bridge, and ways to run
//! processes and sockets inside it.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

use crate::{Process, Responder, Testbed, netns};

/// The host's end of its veth: the interface to capture on.
const INTERFACE: &str = "eth0";

/// One machine of a testbed. Dropping it kills every process inside and deletes the namespace,
/// its veth and its `/etc/netns` files.
pub struct Host<'tb> {
    testbed: &'tb Testbed,
    name: String,
    netns: String,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    spawned: AtomicU32,
}

impl<'tb> Host<'tb> {
    pub(crate) fn create(testbed: &'tb Testbed, name: &str, index: u8, v4: Ipv4Addr, v6: Ipv6Addr) -> Host<'tb> {
        let netns = format!("{}-{name}", testbed.name());
        netns::add(&netns);
        let host = Host { testbed, name: name.to_string(), netns, v4, v6, spawned: AtomicU32::new(0) };
        let etc = Path::new(netns::ETC_DIR).join(&host.netns);
        fs::create_dir_all(&etc).expect("create /etc/netns entry");
        fs::write(etc.join("resolv.conf"), format!("nameserver {}\n", testbed.nameserver()))
            .expect("write resolv.conf");
        // The veth is created inside the testbed's namespace, so no name ever appears in the
        // machine's own network namespace and parallel testbeds cannot collide.
        let bridge_end = format!("v{index}");
        testbed.ip(&["link", "add", &bridge_end, "type", "veth", "peer", "name", INTERFACE, "netns", &host.netns]);
        testbed.ip(&["link", "set", &bridge_end, "master", testbed.bridge(), "up"]);
        host.ip(&["addr", "add", &format!("{v4}/24"), "dev", INTERFACE]);
        host.ip(&["addr", "add", &format!("{v6}/64"), "dev", INTERFACE, "nodad"]);
        host.ip(&["link", "set", INTERFACE, "up"]);
        host
    }

    /// The name the test gave this host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (for `ip netns exec`, `ip -n`, tcpdump).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The interface that joins the host to the bridge, `eth0`.
    pub fn interface(&self) -> &'static str {
        INTERFACE
    }

    /// The host's IPv4 address.
    pub fn addr(&self) -> IpAddr {
        self.v4.into()
    }

    /// The host's IPv6 address.
    pub fn addr6(&self) -> IpAddr {
        self.v6.into()
    }

    /// Starts `command` inside the host as the test's own user (root), its stdout and stderr
    /// going to a log file; it is killed when the returned handle or the host is dropped.
    pub fn spawn(&self, command: &Command) -> Process {
        self.start(None, command)
    }

    /// Starts `command` inside the host as `uid` (group `uid`, no supplementary groups).
    pub fn spawn_as(&self, uid: u32, command: &Command) -> Process {
        self.start(Some(uid), command)
    }

    /// Runs `command` inside the host as root, with no input, and waits for its output.
    pub fn exec(&self, command: &Command) -> Output {
        self.run(None, command)
    }

    /// Runs `command` inside the host as `uid` and waits for its output.
    pub fn exec_as(&self, uid: u32, command: &Command) -> Output {
        self.run(Some(uid), command)
    }

    /// Runs `f` on a thread that has entered the host's network namespace, so the sockets it
    /// creates belong to the host (and keep doing so when used from other threads afterwards).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let namespace = fs::File::open(Path::new("/run/netns").join(&self.netns)).expect("open namespace");
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                setns(&namespace, CloneFlags::CLONE_NEWNET).expect("enter the host's network namespace");
                f()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like [`Host::in_netns`], on a thread whose file-system UID is `uid`: the sockets it creates
    /// are owned by `uid`, which is what iptables' owner match (and nft's `meta skuid`) looks at.
    pub fn in_netns_as<T: Send>(&self, uid: u32, f: impl FnOnce() -> T + Send) -> T {
        self.in_netns(|| {
            // SAFETY: setfsuid takes an integer and only changes the calling thread's credentials
            // (the raw system call, not a libc wrapper that might apply it process-wide); the
            // thread ends with `f`. Asking again with an invalid id returns the current one.
            #[allow(unsafe_code)]
            let current = unsafe {
                libc::syscall(libc::SYS_setfsuid, uid);
                libc::syscall(libc::SYS_setfsuid, u32::MAX)
            };
            assert_eq!(current, i64::from(uid), "ward-testbed: setfsuid({uid})");
            f()
        })
    }

    /// Listens on `addr` inside the host and answers each connection with `answer(&stream)` and a
    /// newline, then closes it; see [`Responder`].
    pub fn respond(&self, addr: SocketAddr, answer: impl Fn(&TcpStream) -> String + Send + 'static) -> Responder {
        let listener = self
            .in_netns(|| std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("ward-testbed: listen on {addr} in {}: {e}", self.name));
        Responder::start(listener, answer)
    }

    /// Connects to `addr` from a process (bash) running as `uid` inside the host, and returns what
    /// it read until the other side closed, or the error it printed.
    pub fn tcp_read_as(&self, uid: u32, addr: SocketAddr) -> Result<String, String> {
        let mut bash = Command::new("bash");
        bash.args(["-c", r#"exec 3<>"/dev/tcp/$1/$2" && cat <&3"#, "bash"])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string());
        let output = self.exec_as(uid, &bash);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
        if output.status.success() { Ok(text(&output.stdout)) } else { Err(text(&output.stderr)) }
    }

    fn start(&self, uid: Option<u32>, command: &Command) -> Process {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let program = Path::new(command.get_program()).file_name().unwrap_or_default().to_string_lossy().into_owned();
        let log = self.testbed.dir().join(format!("{}-{n}-{program}.log", self.name));
        let file = fs::File::create(&log).expect("create log file");
        let mut wrapped = self.inside(uid, command);
        wrapped.stdin(Stdio::null()).stdout(file.try_clone().expect("log file")).stderr(file);
        let child = wrapped.spawn().unwrap_or_else(|e| panic!("ward-testbed: start {program} in {}: {e}", self.name));
        Process::new(child, log)
    }

    fn run(&self, uid: Option<u32>, command: &Command) -> Output {
        self.inside(uid, command)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ward-testbed: run {:?} in {}: {e}", command.get_program(), self.name))
    }

    /// `command` wrapped in `ip netns exec` (which also mounts the host's resolv.conf) and, for
    /// another user, `setpriv`; its arguments, environment and directory carried over.
    fn inside(&self, uid: Option<u32>, command: &Command) -> Command {
        let programs = netns::programs();
        let mut wrapped = Command::new(&programs.ip);
        wrapped.args(["netns", "exec", &self.netns]);
        if let Some(uid) = uid {
            wrapped.arg(&programs.setpriv).args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]);
        }
        wrapped.arg(command.get_program()).args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.netns];
        full.extend_from_slice(args);
        netns::ip(&full);
    }
}

impl Drop for Host<'_> {
    fn drop(&mut self) {
        netns::delete(&self.netns);
    }
}
