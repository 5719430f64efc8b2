//! The accept loop when the process is out of file descriptors: it waits instead of spinning,
//! and takes the waiting connection once descriptors are free again. A test binary of its own,
//! since it lowers the whole process's descriptor limit.

use std::{
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use ward_http::{Limits, accept};

/// CPU time (user and system) this process used so far.
fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let (user, system) = (usage.user_time(), usage.system_time());
    Duration::from_micros(
        (user.tv_sec() * 1_000_000 + user.tv_usec() + system.tv_sec() * 1_000_000 + system.tv_usec()) as u64,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn out_of_file_descriptors_the_accept_loop_waits_then_recovers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        accept::serve(listener, &Limits::default(), &TaskTracker::new(), CancellationToken::new(), move |tcp, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                std::future::pending::<()>().await;
                drop(tcp);
            }
        })
        .await
    });

    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, open + 16, hard).unwrap();
    // Connect until the process has no descriptor left, letting the loop accept each one.
    let mut clients = Vec::new();
    loop {
        match TcpStream::connect(address) {
            Ok(client) => clients.push(client),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::EMFILE as i32), "{e}");
                break;
            }
        }
        let before = accepted.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.load(Ordering::SeqCst) == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // One more connection waits in the kernel's queue: the loop cannot accept it (EMFILE).
    clients.pop();
    let waiting = TcpStream::connect(address).unwrap();
    let taken = accepted.load(Ordering::SeqCst);
    let (cpu, wall) = (cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time() - cpu;
    assert_eq!(accepted.load(Ordering::SeqCst), taken, "nothing can be accepted without a descriptor");
    assert!(used < wall.elapsed() / 4, "the accept loop spins on EMFILE: {used:?} of CPU in {:?}", wall.elapsed());

    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) == taken {
        assert!(Instant::now() < deadline, "the waiting connection is taken once descriptors are free");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop((clients, waiting));
}
