//! Pipes for splice tunnels: `pipe2(O_NONBLOCK|O_CLOEXEC)` sized with F_SETPIPE_SZ and read
//! back, and splice(2) between a pipe and a socket.
//!
//! It does not decide when to splice or track the bytes waiting in a pipe: that is the relay's
//! (`relay::Engine`). Both ends of a [`Pipe`] are owned descriptors, closed when it drops.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt::cvt;

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
    // SAFETY: fcntl on a descriptor we own. Its result is not checked: a refused size (EPERM
    // above pipe-max-size) keeps the default, and F_GETPIPE_SZ below reads what holds.
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
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::socket::{prepare_stream, StreamOptions};
    use crate::sys::tests::socket_pair;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

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
}
