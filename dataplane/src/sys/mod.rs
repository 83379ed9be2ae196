//! Every system call the data plane makes, split by concern: [`ring`] (io_uring setup and
//! ops), [`pipe`] (pipe2, F_SETPIPE_SZ, splice), [`socket`] (read/send, socket options,
//! listeners, connect), [`eventfd`], [`cpu`] (affinity, available cores), [`random`].
//!
//! This is the only module allowed to use `unsafe`, and it exposes nothing unsound to the rest
//! of the crate: functions borrow descriptors (`BorrowedFd`) and buffers (slices), and every
//! descriptor a call creates comes back as an `OwnedFd`. It does not decide anything: callers
//! own the descriptors and buffers, and each function says what it expects of them. The crate
//! re-exports only what its users configure or benchmark with (`RingSetup`, `StreamOptions`,
//! `available_cores`, `Pipe`, `pipe`, `prepare_stream`).
#![allow(unsafe_code)]

mod cpu;
mod cvt;
mod eventfd;
mod pipe;
mod random;
mod ring;
mod socket;

pub use cpu::available_cores;
pub(crate) use cpu::pin_current_thread;
pub(crate) use eventfd::{eventfd, eventfd_drain, eventfd_signal};
pub(crate) use pipe::splice;
pub use pipe::{pipe, Pipe};
pub(crate) use random::random_u64;
pub use ring::RingSetup;
pub(crate) use ring::{
    Completion, Ring, POLLIN, POLLOUT, POLL_CONNECT, POLL_PARKED, POLL_READABLE, POLL_TUNNEL,
};
pub(crate) use socket::{
    connect_nonblocking, discard_input, kernel_tls_available, listen, peer_addr, probe_exclusive,
    read, readable_bytes, reserve_port, reuseport_listener, send, set_reset_on_close,
    shutdown_both, shutdown_read, shutdown_write, socket_error,
};
pub use socket::{prepare_stream, set_keepalive, Keepalive, StreamOptions};
// The PROXY header stage (worker/handshake.rs) and the header sent to back-ends.
pub(crate) use socket::{local_addr, peek};

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{TcpListener, TcpStream};

    /// A connected loopback TCP pair (blocking), for tests of this crate.
    pub(crate) fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }
}
