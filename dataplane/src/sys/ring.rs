//! The worker's io_uring instance: setup with fallbacks, multishot poll, multishot accept,
//! cancellation, submitting and draining completions.
//!
//! Sockets a multishot accept creates are taken into ownership here, as [`OwnedFd`]s, the moment
//! their completion is drained; a caller claims one with [`Ring::take_accepted`] and can never
//! turn a bare completion result into a descriptor it does not own. This module submits no
//! operation that lends memory to the kernel (no read, write or splice through the ring), and it
//! knows nothing of what the `user_data` values mean beyond the one bit it reserves.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Poll bits a tunnel leg waits for: readable, writable, peer half-closed, errors.
pub(crate) const POLL_TUNNEL: u32 =
    (libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
/// Poll bits a parked prepared connection waits for: any byte or any close is the end of it.
pub(crate) const POLL_PARKED: u32 =
    (libc::POLLIN | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
/// Poll bits for a non-blocking connect in progress.
pub(crate) const POLL_CONNECT: u32 = (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) as u32;
/// Poll bits for the worker's wake-up eventfd.
pub(crate) const POLL_READABLE: u32 = libc::POLLIN as u32;
pub(crate) const POLLIN: u32 = libc::POLLIN as u32;
pub(crate) const POLLOUT: u32 = libc::POLLOUT as u32;

/// The `user_data` bit the ring sets on multishot accepts while they are in the kernel, so that
/// their completions (whose result is a new descriptor) can never be confused with any other
/// request's. Callers' `user_data` must leave it clear.
const ACCEPT_BIT: u64 = 1 << 63;

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
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    /// A multishot operation stays armed (IORING_CQE_F_MORE).
    pub(crate) more: bool,
}

/// The worker's io_uring instance. Only readiness (multishot poll), multishot accept and
/// cancellation are submitted: none of them lends a buffer to the kernel, so no memory has to
/// outlive a dropped request. Payload moves with splice(2)/read(2)/write(2) after readiness
/// (see `tuning.md` for why not IORING_OP_SPLICE).
pub(crate) struct Ring {
    ring: IoUring,
    setup: RingSetup,
    /// `user_data` of the multishot accepts still armed (without [`ACCEPT_BIT`]).
    accepts: Vec<u64>,
    /// Sockets accepted in the last [`Ring::drain`], not yet claimed: `(user_data, socket)`.
    accepted: VecDeque<(u64, OwnedFd)>,
}

fn reserved(user_data: u64) -> io::Result<()> {
    if user_data & ACCEPT_BIT != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "io_uring user_data uses the bit the ring reserves for accepts",
        ));
    }
    Ok(())
}

impl Ring {
    /// Builds a ring with `entries` submission slots, trying `preferred` first and then each
    /// cheaper-to-support setup after it (a kernel may lack the newer flags).
    pub(crate) fn with_setup(entries: u32, preferred: RingSetup) -> io::Result<Ring> {
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
                Ok(ring) => {
                    return Ok(Ring {
                        ring,
                        setup,
                        accepts: Vec::new(),
                        accepted: VecDeque::new(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    pub(crate) fn setup(&self) -> RingSetup {
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
    ///
    /// `fd` is a plain number: the kernel resolves it at submission and keeps its own reference
    /// on the file, so a wrong number polls the wrong file or fails with EBADF (a logic error
    /// of the caller), never touches memory.
    pub(crate) fn poll_multi(&mut self, fd: RawFd, events: u32, user_data: u64) -> io::Result<()> {
        reserved(user_data)?;
        let entry = opcode::PollAdd::new(types::Fd(fd), events)
            .multi(true)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Arms a multishot accept on a listening socket; accepted sockets are non-blocking and
    /// close-on-exec, and are owned by the ring until claimed with [`Ring::take_accepted`].
    /// `fd` is resolved by the kernel as for [`Ring::poll_multi`].
    pub(crate) fn accept_multi(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        reserved(user_data)?;
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data | ACCEPT_BIT);
        self.push(entry)?;
        self.accepts.push(user_data);
        Ok(())
    }

    /// Cancels the request submitted with `target` (a poll or an accept); the cancel's own
    /// completion carries `user_data`.
    pub(crate) fn cancel(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        reserved(target)?;
        reserved(user_data)?;
        let in_kernel = if self.accepts.contains(&target) {
            target | ACCEPT_BIT
        } else {
            target
        };
        let entry = opcode::AsyncCancel::new(in_kernel)
            .build()
            .user_data(user_data);
        self.push(entry)
    }

    /// Submits what is queued without waiting.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Submits what is queued and waits for one completion or until `timeout`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
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

    /// Moves every available completion into `out`. Sockets accepted by the previous drain and
    /// not claimed since are closed first, so a completion nobody handles cannot leak one.
    pub(crate) fn drain(&mut self, out: &mut Vec<Completion>) {
        self.accepted.clear();
        for cqe in self.ring.completion() {
            let mut completion = Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                more: cqueue::more(cqe.flags()),
            };
            if completion.user_data & ACCEPT_BIT != 0 {
                completion.user_data &= !ACCEPT_BIT;
                if completion.result >= 0 {
                    // SAFETY: a non-negative result of an accept (marked by ACCEPT_BIT, which
                    // no other request carries) is a descriptor the kernel just created for
                    // this ring; this is its only completion, so nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(completion.result) };
                    self.accepted.push_back((completion.user_data, fd));
                }
                if !completion.more {
                    if let Some(i) = self.accepts.iter().position(|&u| u == completion.user_data) {
                        self.accepts.swap_remove(i);
                    }
                }
            }
            out.push(completion);
        }
    }

    /// The socket an accept completion from the last [`Ring::drain`] names, once: `None` for
    /// any other completion, a failed accept, or one already claimed.
    pub(crate) fn take_accepted(&mut self, completion: &Completion) -> Option<OwnedFd> {
        use std::os::fd::AsRawFd;
        let i = self.accepted.iter().position(|(user_data, fd)| {
            *user_data == completion.user_data && fd.as_raw_fd() == completion.result
        })?;
        self.accepted.remove(i).map(|(_, fd)| fd)
    }
}

impl Drop for Ring {
    /// Closes the sockets of accept completions still in the queue (the kernel installed them
    /// in this process's table already); the ring itself is torn down by `IoUring`'s drop.
    fn drop(&mut self) {
        let mut rest = Vec::new();
        self.drain(&mut rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd::{eventfd, eventfd_drain, eventfd_signal};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd};

    /// Drains until `done` holds for what was collected (each wait bounded by the kernel).
    fn drain_until(
        ring: &mut Ring,
        out: &mut Vec<Completion>,
        done: impl Fn(&[Completion]) -> bool,
    ) {
        while !done(out) {
            ring.submit_and_wait(Some(Duration::from_secs(5))).unwrap();
            ring.drain(out);
        }
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
    fn accept_hands_over_each_socket_once() {
        let mut ring = Ring::with_setup(8, RingSetup::DeferTaskrun).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ring.accept_multi(listener.as_raw_fd(), 3).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut out = Vec::new();
        drain_until(&mut ring, &mut out, |c| !c.is_empty());
        let accept = out[0];
        assert_eq!(accept.user_data, 3, "the reserved bit is not shown");
        assert!(accept.more && accept.result >= 0);
        // A forged completion naming another descriptor gets nothing.
        let forged = Completion {
            result: listener.as_raw_fd(),
            ..accept
        };
        assert!(ring.take_accepted(&forged).is_none());
        let socket = ring.take_accepted(&accept).expect("accepted socket");
        assert_eq!(socket.as_raw_fd(), accept.result);
        assert!(ring.take_accepted(&accept).is_none(), "claimed twice");
    }

    #[test]
    fn unclaimed_accepted_socket_is_closed_at_the_next_drain() {
        let mut ring = Ring::with_setup(8, RingSetup::DeferTaskrun).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ring.accept_multi(listener.as_raw_fd(), 3).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut out = Vec::new();
        drain_until(&mut ring, &mut out, |c| !c.is_empty());
        // Not claimed: the next drain closes it, and the client sees the end of the stream.
        ring.drain(&mut out);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0, "closed, not leaked");
    }

    #[test]
    fn cancel_ends_a_multishot_accept() {
        let mut ring = Ring::with_setup(8, RingSetup::DeferTaskrun).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ring.accept_multi(listener.as_raw_fd(), 3).unwrap();
        ring.submit().unwrap();
        ring.cancel(3, 4).unwrap();
        let mut out = Vec::new();
        drain_until(&mut ring, &mut out, |c| c.len() >= 2);
        let accept = out.iter().find(|c| c.user_data == 3).expect("accept ended");
        assert_eq!(accept.result, -libc::ECANCELED);
        assert!(!accept.more);
        assert!(out.iter().any(|c| c.user_data == 4 && c.result == 0));
        assert!(ring.accepts.is_empty(), "no longer armed");
        assert!(ring.take_accepted(accept).is_none());
    }

    #[test]
    fn the_reserved_bit_is_refused() {
        let mut ring = Ring::with_setup(8, RingSetup::DeferTaskrun).unwrap();
        let efd = eventfd().unwrap();
        for result in [
            ring.poll_multi(efd.as_raw_fd(), POLL_READABLE, ACCEPT_BIT | 1),
            ring.accept_multi(efd.as_raw_fd(), ACCEPT_BIT),
            ring.cancel(ACCEPT_BIT, 1),
            ring.cancel(1, ACCEPT_BIT),
        ] {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
    }
}
