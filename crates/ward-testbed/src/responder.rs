//! A small TCP server for tests: it answers every connection with one line.

use std::{
    io::Write,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread::JoinHandle,
};

/// A listener inside a host that writes `answer(&stream)` and a newline to each connection and
/// closes it: a stand-in application, or a stand-in proxy listener that reports what it sees.
/// Stops when dropped.
pub struct Responder {
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    pub(crate) fn start(listener: TcpListener, answer: impl Fn(&TcpStream) -> String + Send + 'static) -> Responder {
        let accepting = listener.try_clone().expect("clone listener");
        let thread = std::thread::spawn(move || {
            // Ends when `drop` shuts the listener down and accept fails.
            while let Ok((mut stream, _)) = accepting.accept() {
                let line = answer(&stream) + "\n";
                let _ = stream.write_all(line.as_bytes());
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        Responder { listener, thread: Some(thread) }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("listener address")
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // Shutting a listening socket down wakes the blocked accept with an error (Linux).
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Read);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
