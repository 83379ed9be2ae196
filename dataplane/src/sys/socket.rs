//! Sockets: non-blocking read and send, shutdown and reset-on-close, the options set on relayed
//! streams, SO_REUSEPORT listeners (with a port reserved first for port 0, and closed with
//! `shutdown(SHUT_RD)` / re-opened with `listen()` for admission), the exclusivity probe,
//! non-blocking connect, and the kernel TLS check.
//!
//! Every function borrows the descriptor it works on (`BorrowedFd`) or returns a new owned one;
//! none keeps a descriptor or decides what an error means for the connection.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::cvt::cvt;

/// read(2) on a non-blocking descriptor.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, exclusively borrowed slice of `buf.len()` bytes for the call.
    cvt(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// send(2) with MSG_NOSIGNAL on a non-blocking socket (a closed peer gives EPIPE, not SIGPIPE).
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid slice of `buf.len()` bytes, only read during the call.
    cvt(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Reads and discards what a socket already received (at most `limit` bytes), so that closing
/// it sends FIN, not the RST a close with unread data would send (which could destroy bytes the
/// peer has not read yet). Never blocks.
pub(crate) fn discard_input(fd: BorrowedFd<'_>, limit: usize) {
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    while total < limit {
        match read(fd, &mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Shuts down the write side of a socket (sends FIN after queued bytes).
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write)
}

/// Shuts down both directions of a socket.
pub(crate) fn shutdown_both(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
}

/// Makes the next close send RST instead of FIN: the peer sees "connection reset", never a
/// clean end it could mistake for a complete answer. SO_LINGER fails only on a descriptor that
/// is not a TCP socket; the close then is an ordinary one, and nothing else can be done.
pub(crate) fn set_reset_on_close(fd: BorrowedFd<'_>) {
    if let Err(_e) = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO)) {
        crate::dp_debug!(error = %_e, "SO_LINGER refused; this close sends FIN, not RST");
    }
}

/// Socket options for relayed streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// TCP_NODELAY: forward small writes at once instead of waiting for Nagle.
    pub nodelay: bool,
    /// SO_SNDBUF and SO_RCVBUF in bytes; `None` keeps the kernel's autotuning.
    pub buffer: Option<usize>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            nodelay: true,
            buffer: None,
        }
    }
}

/// TCP keepalive and user timeout of a reverse leg (a prepared connection, parked or relaying):
/// the probes keep NAT and firewall state alive while it is idle, and a peer that stopped
/// answering (a blackholed link, a host gone without a FIN) is noticed, so the connection is
/// closed and replaced instead of being handed to a client.
///
/// From `idle` (time with nothing received before the first probe) the rest is derived: a probe
/// every [`Keepalive::interval`] (idle / 6, within 1 s ..= 30 s), [`Keepalive::PROBES`] of them
/// unanswered end the connection, and so does data left unacknowledged for
/// [`Keepalive::user_timeout`] (the same span), so a dead relaying leg is noticed as fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: std::time::Duration,
}

impl Keepalive {
    /// Unanswered probes that end the connection.
    pub const PROBES: u32 = 3;

    pub fn interval(&self) -> std::time::Duration {
        (self.idle / 6).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        )
    }

    /// TCP_USER_TIMEOUT: how long sent data (or a probe) may go unacknowledged.
    pub fn user_timeout(&self) -> std::time::Duration {
        self.interval() * Self::PROBES
    }

    /// The longest an idle dead connection goes unnoticed.
    pub fn dead_within(&self) -> std::time::Duration {
        self.idle + self.user_timeout()
    }
}

/// Turns on `keepalive` (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and
/// TCP_USER_TIMEOUT) on a connected TCP socket.
pub fn set_keepalive(fd: BorrowedFd<'_>, keepalive: Keepalive) -> io::Result<()> {
    let sock = socket2::SockRef::from(&fd);
    let params = socket2::TcpKeepalive::new()
        .with_time(keepalive.idle)
        .with_interval(keepalive.interval())
        .with_retries(Keepalive::PROBES);
    sock.set_tcp_keepalive(&params)?;
    sock.set_tcp_user_timeout(Some(keepalive.user_timeout()))
}

/// Prepares an accepted or handed-off stream for the relay: non-blocking, plus `options`.
pub fn prepare_stream(fd: BorrowedFd<'_>, options: StreamOptions) -> io::Result<()> {
    let sock = socket2::SockRef::from(&fd);
    sock.set_nonblocking(true)?;
    sock.set_nodelay(options.nodelay)?;
    if let Some(size) = options.buffer {
        sock.set_send_buffer_size(size)?;
        sock.set_recv_buffer_size(size)?;
    }
    Ok(())
}

/// The peer address of a connected socket.
pub(crate) fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    socket2::SockRef::from(&fd)
        .peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("peer is not an inet socket"))
}

/// The socket's own address (getsockname): for an accepted public client, the address it
/// connected to.
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    socket2::SockRef::from(&fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("socket is not an inet socket"))
}

/// recv(2) with MSG_PEEK on a non-blocking socket: copies what has arrived into `buf` and
/// leaves it queued, so the next layer (a TLS handshake, an HTTP request, splice) still reads
/// it from the socket. `Ok(0)` is the peer's end of stream.
pub(crate) fn peek(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, exclusively borrowed slice of `buf.len()` bytes for the call.
    cvt(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK,
        )
    })
}

/// Bytes waiting in a socket's receive queue (FIONREAD); used to tell "peer sent data" from
/// "peer closed" for a parked connection.
pub(crate) fn readable_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `n`, which lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.max(0) as usize)
    }
}

/// Backlog of every public listener.
const BACKLOG: i32 = 4096;

/// A non-blocking SO_REUSEPORT socket bound to `addr`: each worker binds its own on the same
/// address so the kernel spreads accepts across cores. `listen`: start listening now; else it
/// only holds the address until [`listen`] is called (SYNs to it meanwhile get a RST, as
/// long as no other socket of the group listens).
///
/// Give an explicit port: a socket bound to port 0 may lose its port when it stops listening
/// ([`shutdown_read`]) and get another one from the next `listen()`. [`reserve_port`] picks one.
pub(crate) fn reuseport_listener(addr: SocketAddr, listen: bool) -> io::Result<TcpListener> {
    let socket = reuseport_socket(addr)?;
    if listen {
        socket.listen(BACKLOG)?;
    }
    Ok(socket.into())
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// For `addr` with port 0: binds a SO_REUSEPORT socket (not listening) to learn a free port,
/// and returns it with the address to give [`reuseport_listener`]; the socket holds the port
/// until those are bound and may then be dropped. Any other `addr`: `(None, addr)`.
pub(crate) fn reserve_port(addr: SocketAddr) -> io::Result<(Option<OwnedFd>, SocketAddr)> {
    if addr.port() != 0 {
        return Ok((None, addr));
    }
    let socket = reuseport_socket(addr)?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an inet address"))?;
    Ok((Some(OwnedFd::from(socket)), bound))
}

/// listen(2) on a bound (or shut down) socket: it takes connections again.
pub(crate) fn listen(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).listen(BACKLOG)
}

/// shutdown(SHUT_RD) on a listening socket: it stops listening (keeping its address when the
/// port was given explicitly), so the kernel answers new SYNs with RST, and connections still
/// in its accept queue are reset. [`listen`] makes it listen again.
pub(crate) fn shutdown_read(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read)
}

/// Fails with EADDRINUSE when something already listens on `addr`, even another process's
/// SO_REUSEPORT group (which would otherwise silently share our clients). Port 0 always passes.
pub(crate) fn probe_exclusive(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// Starts a non-blocking TCP connect to `addr`. Returns the socket and whether it is already
/// connected (loopback can complete at once); otherwise wait for POLLOUT and check
/// [`socket_error`].
pub(crate) fn connect_nonblocking(addr: SocketAddr) -> io::Result<(OwnedFd, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    let connected = match socket.connect(&addr.into()) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(e) => return Err(e),
    };
    Ok((OwnedFd::from(socket), connected))
}

/// The pending error of a socket (SO_ERROR), cleared by reading it: `None` after a successful
/// non-blocking connect.
pub(crate) fn socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    socket2::SockRef::from(&fd).take_error()
}

/// Whether this kernel offers kernel TLS (the `tls` upper-layer protocol), which would let a
/// TLS leg be spliced after the handshake. Read from `/proc/sys/net/ipv4/tcp_available_ulp`.
pub(crate) fn kernel_tls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|ulps| ulps.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::tests::socket_pair;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn a_shut_listener_refuses_and_listens_again_on_the_same_port() {
        use std::net::TcpStream;
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (reserved, addr) = reserve_port(any).unwrap();
        assert!(reserved.is_some() && addr.port() != 0);
        let a = reuseport_listener(addr, true).unwrap();
        let b = reuseport_listener(addr, false).unwrap();
        drop(reserved);
        a.set_nonblocking(false).unwrap();
        let served = TcpStream::connect(addr).unwrap();
        drop(served);
        shutdown_read(a.as_fd()).unwrap();
        let err = TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        listen(b.as_fd()).unwrap();
        TcpStream::connect(addr).expect("the other socket listens on the same port");
        shutdown_read(b.as_fd()).unwrap();
        assert_eq!(
            TcpStream::connect(addr).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        listen(a.as_fd()).unwrap();
        assert_eq!(a.local_addr().unwrap(), addr, "the port survived the cycle");
        TcpStream::connect(addr).expect("listening again");
    }

    #[test]
    fn reset_on_close_resets_the_peer() {
        let (mut a, b) = socket_pair();
        set_reset_on_close(b.as_fd());
        drop(b);
        let mut buf = [0u8; 4];
        let err = a.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn peek_leaves_the_bytes_for_the_next_read() {
        use std::io::Write;
        let (mut a, b) = socket_pair();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let empty = peek(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"PROXY payload").unwrap();
        // Loopback delivers at once, but give the kernel a few tries to be safe.
        let mut n = 0;
        for _ in 0..1000 {
            match peek(b.as_fd(), &mut buf) {
                Ok(k) if k == 13 => {
                    n = k;
                    break;
                }
                _ => std::thread::yield_now(),
            }
        }
        assert_eq!(&buf[..n], b"PROXY payload");
        assert_eq!(peek(b.as_fd(), &mut buf[..5]).unwrap(), 5, "peeks again");
        assert_eq!(read(b.as_fd(), &mut buf[..6]).unwrap(), 6);
        assert_eq!(&buf[..6], b"PROXY ");
        assert_eq!(read(b.as_fd(), &mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"payload");
        drop(a);
        let mut eof = 1;
        for _ in 0..1000 {
            match peek(b.as_fd(), &mut buf) {
                Ok(k) => {
                    eof = k;
                    break;
                }
                Err(_) => std::thread::yield_now(),
            }
        }
        assert_eq!(eof, 0, "end of stream peeks as 0");
        let local = local_addr(b.as_fd()).unwrap();
        assert_eq!(local, b.local_addr().unwrap());
    }
}

#[cfg(test)]
mod keepalive_tests {
    use std::os::fd::AsFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn derived_values() {
        let k = Keepalive {
            idle: Duration::from_secs(30),
        };
        assert_eq!(k.interval(), Duration::from_secs(5));
        assert_eq!(k.user_timeout(), Duration::from_secs(15));
        assert_eq!(k.dead_within(), Duration::from_secs(45));
        let short = Keepalive {
            idle: Duration::from_secs(2),
        };
        assert_eq!(short.interval(), Duration::from_secs(1));
        let long = Keepalive {
            idle: Duration::from_secs(7200),
        };
        assert_eq!(long.interval(), Duration::from_secs(30));
    }

    #[test]
    fn the_kernel_takes_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let k = Keepalive {
            idle: Duration::from_secs(12),
        };
        set_keepalive(stream.as_fd(), k).unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(12));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(2));
        assert_eq!(sock.keepalive_retries().unwrap(), 3);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(6))
        );
    }
}
