//! Every system call the data plane makes: the io_uring ring, splice(2) and pipes, eventfd,
//! non-blocking read/write, socket options and SO_REUSEPORT listeners.
//!
//! This is the only module allowed to use `unsafe`. It does not decide anything: callers own
//! the file descriptors and buffers, and each function says what it expects of them.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Poll bits a tunnel leg waits for: readable, writable, peer half-closed, errors.
pub const POLL_TUNNEL: u32 =
    (libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
/// Poll bits a parked prepared connection waits for: any byte or any close is the end of it.
pub const POLL_PARKED: u32 =
    (libc::POLLIN | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
/// Poll bits for a non-blocking connect in progress.
pub const POLL_CONNECT: u32 = (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) as u32;
/// Poll bits for the worker's wake-up eventfd.
pub const POLL_READABLE: u32 = libc::POLLIN as u32;
pub const POLLIN: u32 = libc::POLLIN as u32;
pub const POLLOUT: u32 = libc::POLLOUT as u32;

/// How the ring was set up, for logs and `tuning.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSetup {
    /// SINGLE_ISSUER | DEFER_TASKRUN: completions run only when this thread waits.
    DeferTaskrun,
    /// SINGLE_ISSUER | COOP_TASKRUN.
    CoopTaskrun,
    /// No setup flags (older kernels).
    Plain,
}

/// One completed io_uring operation.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    /// A multishot operation stays armed (IORING_CQE_F_MORE).
    pub more: bool,
}

/// The worker's io_uring instance. Only readiness (multishot poll), multishot accept and
/// cancellation are submitted: none of them lends a buffer to the kernel, so no memory has to
/// outlive a dropped request. Payload moves with splice(2)/read(2)/write(2) after readiness
/// (see `tuning.md` for why not IORING_OP_SPLICE).
pub struct Ring {
    ring: IoUring,
    setup: RingSetup,
}

impl Ring {
    /// Builds a ring with `entries` submission slots, trying `preferred` first and then each
    /// cheaper-to-support setup after it (a kernel may lack the newer flags).
    pub fn with_setup(entries: u32, preferred: RingSetup) -> io::Result<Ring> {
        type Configure = fn(&mut io_uring::Builder);
        let attempts: [(RingSetup, Configure); 3] = [
            (RingSetup::DeferTaskrun, |b| {
                b.setup_single_issuer().setup_defer_taskrun();
            }),
            (RingSetup::CoopTaskrun, |b| {
                b.setup_single_issuer().setup_coop_taskrun();
            }),
            (RingSetup::Plain, |_| {}),
        ];
        let mut last = None;
        let start = attempts
            .iter()
            .position(|(s, _)| *s == preferred)
            .unwrap_or(0);
        for (setup, configure) in attempts.into_iter().skip(start) {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(entries * 4);
            configure(&mut builder);
            match builder.build(entries) {
                Ok(ring) => return Ok(Ring { ring, setup }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    pub fn setup(&self) -> RingSetup {
        self.setup
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the entries built here (poll, accept, cancel) carry no pointers to
            // user memory; the kernel takes its own reference on the file at submission, so
            // nothing the entry names can be freed under it.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand what is queued to the kernel and retry.
            self.ring.submit()?;
        }
    }

    /// Arms a multishot poll on `fd` for `events`; each readiness change posts a completion.
    pub fn poll_multi(&mut self, fd: RawFd, events: u32, user_data: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), events)
            .multi(true)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Arms a multishot accept on a listening socket; accepted sockets are non-blocking and
    /// close-on-exec.
    pub fn accept_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Cancels the request submitted with `target`; the cancel's own completion carries
    /// `user_data`.
    pub fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Submits what is queued and waits for one completion or until `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            out.push(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                more: cqueue::more(cqe.flags()),
            });
        }
    }
}

fn cvt(res: libc::ssize_t) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}

/// A pipe for one direction of a splice tunnel: both ends non-blocking.
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// The capacity the kernel actually granted (F_GETPIPE_SZ), in bytes.
    pub capacity: usize,
}

/// Creates a pipe with `pipe2(O_NONBLOCK|O_CLOEXEC)`, asks for `size` bytes with F_SETPIPE_SZ
/// and reads back what was granted. A refused size keeps the default (64 KiB): the capacity
/// read back is what the caller must use.
pub fn pipe(size: usize) -> io::Result<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid two-element array the kernel writes the new descriptors into.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let requested = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: fcntl on a descriptor we own; failure (EPERM above pipe-max-size) is tolerated.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, requested) };
    // SAFETY: as above; F_GETPIPE_SZ only reads the pipe's capacity.
    let granted = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if granted <= 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Pipe {
        read,
        write,
        capacity: granted as usize,
    })
}

/// splice(2) up to `len` bytes from `from` to `to` without blocking (SPLICE_F_NONBLOCK |
/// SPLICE_F_MOVE). Ok(0) means end of stream on `from` when it is a socket.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed for the duration of the call; null offsets are
    // required for pipes and sockets; no user memory is involved.
    let res = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    cvt(res)
}

/// read(2) on a non-blocking descriptor.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, exclusively borrowed slice of `buf.len()` bytes for the call.
    cvt(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// send(2) with MSG_NOSIGNAL on a non-blocking socket (a closed peer gives EPIPE, not SIGPIPE).
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
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

/// sendmsg(2) of several buffers at once with MSG_NOSIGNAL (TLS records in one syscall).
pub fn send_vectored(fd: BorrowedFd<'_>, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    let iovcnt = bufs.len().min(libc::UIO_MAXIOV as usize);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec (std guarantees it on Unix); the slices outlive
    // the call and are only read.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovcnt as _;
    // SAFETY: `msg` points at `iovcnt` valid iovecs for the duration of the call.
    cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
}

/// Reads and discards what a socket already received (at most `limit` bytes), so that closing
/// it sends FIN, not the RST a close with unread data would send (which could destroy bytes the
/// peer has not read yet). Never blocks.
pub fn discard_input(fd: BorrowedFd<'_>, limit: usize) {
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
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Write)
}

/// Shuts down both directions of a socket.
pub fn shutdown_both(fd: BorrowedFd<'_>) -> io::Result<()> {
    socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both)
}

/// Makes the next close send RST instead of FIN: the peer sees "connection reset", never a
/// clean end it could mistake for a complete answer.
pub fn set_reset_on_close(fd: BorrowedFd<'_>) {
    let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
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
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    socket2::SockRef::from(&fd)
        .peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("peer is not an inet socket"))
}

/// Bytes waiting in a socket's receive queue (FIONREAD); used to tell "peer sent data" from
/// "peer closed" for a parked connection.
pub fn readable_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `n`, which lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.max(0) as usize)
    }
}

/// A non-blocking SO_REUSEPORT listener: each worker binds its own on the same address so
/// the kernel spreads accepts across cores.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Fails with EADDRINUSE when something already listens on `addr`, even another process's
/// SO_REUSEPORT group (which would otherwise silently share our clients). Port 0 always passes.
pub fn probe_exclusive(addr: SocketAddr) -> io::Result<()> {
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
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<(OwnedFd, bool)> {
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
pub fn socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    socket2::SockRef::from(&fd).take_error()
}

/// Eight bytes from the kernel's random source (getrandom(2)); WebSocket keys and masks.
pub fn random_u64() -> u64 {
    let mut value = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `value`, which lives for the call.
    let n = unsafe { libc::getrandom((&mut value as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // Never expected after boot; fall back to the clock so a key is still unpredictable
        // enough for masking (which only defeats cache poisoning by intermediaries).
        value = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
    }
    value
}

/// Whether this kernel offers kernel TLS (the `tls` upper-layer protocol), which would let a
/// TLS leg be spliced after the handshake. Read from `/proc/sys/net/ipv4/tcp_available_ulp`.
pub fn kernel_tls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .map(|ulps| ulps.split_whitespace().any(|u| u == "tls"))
        .unwrap_or(false)
}

/// An eventfd a worker polls to learn that its queue has messages.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (wakes its poller). Never blocks.
pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64; EAGAIN (counter saturated) still leaves it readable.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64; EAGAIN (already zero) is fine.
    unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
}

/// Pins the calling thread to `core`; false when the core does not exist or pinning failed.
pub fn pin_current_thread(core: usize) -> bool {
    core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().find(|id| id.id == core))
        .map(core_affinity::set_for_current)
        .unwrap_or(false)
}

/// Number of cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Takes ownership of a descriptor returned by a completed io_uring accept.
pub fn owned_fd(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0, "not a descriptor");
    // SAFETY: the caller passes the result of a completed accept: a new descriptor that
    // nothing else owns or will close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Borrows a raw descriptor that the caller knows to be open for the borrow's lifetime.
pub fn as_fd<T: AsFd>(owner: &T) -> BorrowedFd<'_> {
    owner.as_fd()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A connected loopback TCP pair (blocking), for tests of this crate.
    pub(crate) fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn pipe_reports_granted_capacity() {
        let p = pipe(1 << 20).unwrap();
        assert!(p.capacity >= 4096);
        // A page-rounded size the kernel accepts is granted as asked.
        let small = pipe(128 << 10).unwrap();
        assert_eq!(small.capacity, 128 << 10);
    }

    #[test]
    fn splice_moves_socket_bytes_through_a_pipe() {
        let (mut a, b) = socket_pair();
        let (c, mut d) = socket_pair();
        prepare_stream(b.as_fd(), StreamOptions::default()).unwrap();
        let p = pipe(64 << 10).unwrap();
        a.write_all(b"hello splice").unwrap();
        let mut moved = 0;
        while moved < 12 {
            match splice(b.as_fd(), p.write.as_fd(), 1 << 16) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(splice(p.read.as_fd(), c.as_fd(), moved).unwrap(), 12);
        let mut got = [0u8; 12];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello splice");
        // Empty non-blocking socket: WouldBlock, not a hang.
        let err = splice(b.as_fd(), p.write.as_fd(), 1 << 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(
            splice(b.as_fd(), p.write.as_fd(), 1 << 16).unwrap(),
            0,
            "EOF"
        );
    }

    #[test]
    fn eventfd_wakes_a_multishot_poll() {
        let mut ring = Ring::with_setup(8, RingSetup::DeferTaskrun).unwrap();
        let efd = eventfd().unwrap();
        ring.poll_multi(efd.as_raw_fd(), POLL_READABLE, 7).unwrap();
        eventfd_signal(efd.as_fd());
        let mut out = Vec::new();
        while out.is_empty() {
            ring.submit_and_wait(Some(Duration::from_secs(5))).unwrap();
            ring.drain(&mut out);
        }
        assert_eq!(out[0].user_data, 7);
        assert!(out[0].more);
        eventfd_drain(efd.as_fd());
        ring.cancel(7, 8).unwrap();
        out.clear();
        while out.len() < 2 {
            ring.submit_and_wait(Some(Duration::from_secs(5))).unwrap();
            ring.drain(&mut out);
        }
        assert!(out
            .iter()
            .any(|c| c.user_data == 7 && c.result == -libc::ECANCELED));
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
}
