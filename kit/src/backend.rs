//! A blocking TCP echo server used as the backend behind tunnels and as the direct-loopback baseline.
//!
//! One accept thread plus one thread per connection, each with a 256 KiB buffer. On the client's EOF a
//! connection finishes echoing what it has, shuts down its write side (so half-close is preserved end to
//! end) and closes. Dropping the server stops the accept loop and shuts down the connections still open.
//!
//! [`EchoServer::start_with`] runs the same accept loop and shutdown with the caller's
//! per-connection loop instead (`sallyport-bench` serves TLS with it).
//!
//! [`send_half_close_read`] is the client side of a half-close round trip through it (or
//! through anything that answers).
//!
//! It does not parse, delay, count bytes or limit connections; it is a measuring stick, not a target model.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Per-connection echo buffer: large enough that one read/write pair moves a bulk burst.
pub const ECHO_BUFFER: usize = 256 * 1024;

/// How long `Drop` waits for its wake-up connection before detaching the accept thread instead.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Back-off after a failed `accept` (e.g. out of fds) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Writes `payload` to `stream` on a new thread, half-closes it (shutdown write), then reads
/// until the peer closes; the thread returns the bytes that came back.
pub fn send_half_close_read(
    mut stream: TcpStream,
    payload: Vec<u8>,
) -> JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        stream.write_all(&payload)?;
        stream.shutdown(Shutdown::Write)?;
        let mut back = Vec::new();
        stream.read_to_end(&mut back)?;
        Ok(back)
    })
}

/// A TCP echo server running on background threads until dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    connections: AtomicU64,
    /// Clones of the open connections, so `Drop` can shut them down; each thread removes its own entry.
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        // A poisoned map is still a valid map of sockets; keep using it.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What serves one accepted connection, on a thread of its own; the flag is set when the
/// server is dropped (the socket is shut down then, too).
type Serve = dyn Fn(TcpStream, &AtomicBool) + Send + Sync;

impl EchoServer {
    /// Binds `bind` (use port 0 for an ephemeral port) and starts accepting. The listener is bound when
    /// this returns, so clients may connect at once.
    pub fn start(bind: SocketAddr) -> io::Result<EchoServer> {
        EchoServer::start_with(bind, "echo", |stream, _stop| {
            // Errors just end this connection; the client sees the reset or EOF.
            let _ = echo(stream);
        })
    }

    /// [`EchoServer::start`] with `serve` as each connection's loop instead of the plain echo
    /// (threads named `NAME-accept-PORT` and `NAME-ID`). `serve` should return soon after its
    /// stop flag is set or its socket is shut down.
    pub fn start_with(
        bind: SocketAddr,
        name: &str,
        serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> io::Result<EchoServer> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let serve: Arc<Serve> = Arc::new(serve);
        let conn_name = name.to_string();
        let accept = thread::Builder::new()
            .name(format!("{name}-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, &accept_shared, &conn_name, &serve))?;
        Ok(EchoServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocked `accept` with a connection to ourselves; it sees `stop` and returns.
        let woken = TcpStream::connect_timeout(&wake_addr(self.addr), WAKE_TIMEOUT).is_ok();
        if let Some(accept) = self.accept.take() {
            if woken {
                // The accept thread only panics on a bug; there is nothing to do about it in drop.
                let _ = accept.join();
            }
            // Otherwise detach it rather than hang: it exits on the next connection it accepts.
        }
        for stream in self.shared.open().values() {
            // Already-closed sockets report NotConnected; that is fine.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Where to connect to reach a listener bound to `addr` (an unspecified IP means loopback).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>, name: &str, serve: &Arc<Serve>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let id = shared.connections.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared.open().insert(id, clone);
        }
        let conn_shared = Arc::clone(shared);
        let serve = Arc::clone(serve);
        let spawned = thread::Builder::new()
            .name(format!("{name}-{id}"))
            .spawn(move || {
                serve(stream, &conn_shared.stop);
                conn_shared.open().remove(&id);
            });
        if spawned.is_err() {
            // Out of threads: the stream was moved into the failed closure and is already closed.
            shared.open().remove(&id);
        }
    }
}

/// Echoes until EOF, then half-closes the write side.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    // Latency runs send small requests; never let Nagle hold a reply back.
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; ECHO_BUFFER];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => stream.write_all(&buf[..n])?,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    stream.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn echoes_and_preserves_half_close() {
        let server = EchoServer::start(local()).expect("bind echo server");
        let mut client = TcpStream::connect(server.addr()).expect("connect");
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // 300 kB fits in loopback socket buffers both ways, so write-all-then-read cannot deadlock.
        let writer = {
            let mut client = client.try_clone().expect("clone");
            let sent = sent.clone();
            thread::spawn(move || {
                client.write_all(&sent).expect("write");
                client.shutdown(Shutdown::Write).expect("shutdown write");
            })
        };
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("read to EOF");
        writer.join().expect("writer thread");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "echoed bytes differ");
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn drop_does_not_hang_with_open_connection() {
        let server = EchoServer::start(local()).expect("bind echo server");
        let addr = server.addr();
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).expect("read echo");
        assert_eq!(&buf, b"ping");
        drop(server);
        // The open connection was shut down by the drop: the client sees EOF or a reset, not a hang.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        match client.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty()),
            Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "connection left open"),
        }
    }

    #[test]
    fn drop_of_idle_server_returns() {
        let server = EchoServer::start(local()).expect("bind echo server");
        assert_eq!(server.connections(), 0);
        drop(server);
    }

    #[test]
    fn wake_addr_maps_unspecified_to_loopback() {
        let any = SocketAddr::from(([0, 0, 0, 0], 7));
        assert_eq!(wake_addr(any), SocketAddr::from(([127, 0, 0, 1], 7)));
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 7));
        assert_eq!(wake_addr(v6), SocketAddr::from((Ipv6Addr::LOCALHOST, 7)));
    }
}
