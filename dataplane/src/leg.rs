//! One side of a tunnel: a non-blocking socket and, for a TLS leg, the rustls session on it.
//!
//! [`Leg`] gives the relay one set of operations whatever the leg is: read plaintext, write
//! plaintext, flush, half-close, and drive a handshake. For a TLS leg, reading feeds socket
//! bytes into rustls and returns what it decrypted (bytes that arrived with the handshake's last
//! message come out first: wire rule 1); writing hands plaintext to rustls (bounded by its
//! buffer limit) and writes the records it produced. Nothing here waits: `WouldBlock` means
//! "poll and call again".
//!
//! This is the seam kernel TLS would replace: with a kTLS socket the leg is plain again and the
//! relay may splice it. This kernel has no `tls` ULP, so every TLS byte goes through rustls.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys;

/// Most plaintext and TLS bytes rustls may hold per session before `write` stops accepting.
pub const TLS_BUFFER_LIMIT: usize = 64 << 10;

/// `Read`/`Write` over a borrowed non-blocking socket, for rustls's `read_tls`/`write_tls`.
struct FdIo<'a>(BorrowedFd<'a>);

impl Read for FdIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::read(self.0, buf)
    }
}

impl Write for FdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Writes the records `tls` holds to `fd`: Ok(true) when none are left.
fn flush(tls: &mut rustls::Connection, fd: BorrowedFd<'_>) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut FdIo(fd)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A tunnel leg.
pub struct Leg {
    fd: OwnedFd,
    tls: Option<Box<rustls::Connection>>,
    /// close_notify queued (TLS half-close in progress).
    closing: bool,
}

impl Leg {
    pub fn plain(fd: OwnedFd) -> Leg {
        Leg {
            fd,
            tls: None,
            closing: false,
        }
    }

    pub fn tls(fd: OwnedFd, mut conn: Box<rustls::Connection>) -> Leg {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Leg {
            fd,
            tls: Some(conn),
            closing: false,
        }
    }

    /// A leg from a hand-off: TLS when a session came with it.
    pub fn from_parts(fd: OwnedFd, tls: Option<Box<rustls::Connection>>) -> Leg {
        match tls {
            Some(conn) => Leg::tls(fd, conn),
            None => Leg::plain(fd),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The socket and the TLS session, to hand the leg to another worker.
    pub fn into_parts(self) -> (OwnedFd, Option<Box<rustls::Connection>>) {
        (self.fd, self.tls)
    }

    /// TLS records are waiting to be written to the socket.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes the TLS records rustls holds. Ok(true) when none are left; Ok(false) when the
    /// socket is full (wait for POLLOUT). Plain legs have nothing to flush.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        match self.tls.as_mut() {
            Some(tls) => flush(tls, self.fd.as_fd()),
            None => Ok(true),
        }
    }

    /// Reads plaintext. Ok(0) is the end of the stream (for TLS: close_notify, or the socket's
    /// EOF without one); `WouldBlock` means nothing is available now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return sys::read(self.fd.as_fd(), buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: the end of what it sent.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut FdIo(self.fd.as_fd())) {
                Ok(0) => {} // EOF: the reader reports it on the next turn.
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Send the alert rustls queued, then fail.
                        let _ = flush(tls, self.fd.as_fd());
                        return Err(tls_error(e));
                    }
                    // Post-handshake records (key updates, alerts) may want an answer.
                    flush(tls, self.fd.as_fd())?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes plaintext; returns how much was accepted (for TLS: encrypted and queued, then
    /// written as far as the socket takes it). `WouldBlock` when nothing could be accepted.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return sys::send(self.fd.as_fd(), data);
        };
        let accepted = tls.writer().write(data)?;
        flush(tls, self.fd.as_fd())?;
        if accepted == 0 && !data.is_empty() {
            return Err(would_block());
        }
        Ok(accepted)
    }

    /// Half-closes the write side: close_notify first for TLS, then `shutdown(SHUT_WR)` once
    /// every record is on the wire. Ok(false) while records wait for room.
    pub fn shutdown_write(&mut self) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_mut() {
            if !self.closing {
                tls.send_close_notify();
                self.closing = true;
            }
            if !flush(tls, self.fd.as_fd())? {
                return Ok(false);
            }
        }
        match sys::shutdown_write(self.fd.as_fd()) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(true),
        }
    }

    /// Drives a TLS handshake as far as the socket allows. Ok(true) once it is complete (any
    /// application bytes that came with it stay in the session for `read`); Ok(false) to wait
    /// for the socket. Plain legs are always complete.
    pub fn handshake(&mut self) -> io::Result<bool> {
        loop {
            if !self.flush_tls()? {
                return Ok(false);
            }
            let Some(tls) = self.tls.as_mut() else {
                return Ok(true);
            };
            if !tls.is_handshaking() {
                return Ok(true);
            }
            match tls.read_tls(&mut FdIo(self.fd.as_fd())) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        let _ = flush(tls, self.fd.as_fd());
                        return Err(tls_error(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}
