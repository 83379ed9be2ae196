//! The TLS transport of the load loops: [`bulk_tls`] and [`rr_tls`] (rustls clients on the
//! `sallyport-kit` bulk and rr loops, the handshake right after connecting, before the clock
//! starts), and the socket <-> rustls plumbing ([`pump_in`], [`pump_out`], [`wait`],
//! [`handshake`]) they share with the TLS echo server in [`crate::tls`].
//!
//! Socket reads are large (the caller's buffer, 256 KiB) and fed to rustls from memory, so a bulk
//! transfer is not a 4 KiB `read` per call. It makes no certificates and starts no servers.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use sallyport_kit::load::{
    named, run_bulk, run_rr, BulkConn, BulkResult, BulkSpec, EchoDuplex, RrResult, RrSpec, Source,
    Verifier, READ_BUFFER,
};
use sallyport_kit::sys;

use super::connect_all_then;

/// Most plaintext and TLS bytes a session buffers before `write` stops accepting.
pub const TLS_BUFFER_LIMIT: usize = 256 << 10;
/// Longest `poll` of a TLS bulk connection before it looks at the stop flag again.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// Where the TLS loads ([`bulk_tls`], [`rr_tls`]) connect: the client configuration (trusted
/// CAs, protocol versions) and the name the server's certificate must be valid for.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// [`sallyport_kit::load::bulk`] over TLS: each connection completes a TLS handshake with `tls`
/// right after connecting (before the clock starts), then one thread per connection drives its
/// rustls session (a session cannot be split between a writer and a reader thread): it encrypts
/// the pattern, writes records, reads records, decrypts and verifies the echo. When everything
/// was sent it sends close_notify and shuts its write side down; the run ends at the echo's
/// close_notify (or EOF). Errors and the time limit behave as in `bulk`; a failed handshake is
/// an `Err` naming the connection.
pub fn bulk_tls(addr: SocketAddr, spec: &BulkSpec, tls: &TlsTarget) -> io::Result<BulkResult> {
    run_bulk(
        spec,
        |deadline| connect_all_tls(addr, spec.connections, deadline, false, tls),
        |(session, sock)| {
            let handle = sock.try_clone()?;
            let duplex: Box<dyn EchoDuplex> = Box::new(TlsDuplex {
                session: rustls::Connection::Client(session),
                sock,
                write_size: spec.write_size,
            });
            Ok((handle, BulkConn::Duplex(duplex)))
        },
    )
}

/// [`sallyport_kit::load::rr`] over TLS: each connection (with `TCP_NODELAY`) completes a TLS
/// handshake with `tls` right after connecting, before the clock starts; each request and reply
/// is then one TLS record each way. Errors as in `rr`; a failed handshake is an `Err` naming the
/// connection.
pub fn rr_tls(addr: SocketAddr, spec: &RrSpec, tls: &TlsTarget) -> io::Result<RrResult> {
    run_rr(
        spec,
        |deadline| connect_all_tls(addr, spec.connections, deadline, true, tls),
        |(session, sock)| Ok((sock.try_clone()?, rustls::StreamOwned::new(session, sock))),
    )
}

/// [`connect_all_then`] with a TLS handshake on each connection within the time left.
fn connect_all_tls(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
    tls: &TlsTarget,
) -> io::Result<Vec<(rustls::ClientConnection, TcpStream)>> {
    connect_all_then(
        addr,
        connections,
        deadline,
        nodelay,
        "TLS handshake",
        "time limit reached before the handshake",
        |conn, mut sock, left| {
            let session =
                rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                    .map_err(|e| named(conn, "TLS session", io::Error::other(e)))?;
            let mut session = rustls::Connection::Client(session);
            handshake(&mut session, &mut sock, left)
                .map_err(|e| named(conn, "TLS handshake", e))?;
            let rustls::Connection::Client(session) = session else {
                // Built as a client session just above; never taken.
                return Err(named(
                    conn,
                    "TLS session",
                    io::Error::other("not a client session"),
                ));
            };
            Ok((session, sock))
        },
    )
}

/// One connection of [`bulk_tls`]: the session and its non-blocking socket.
struct TlsDuplex {
    session: rustls::Connection,
    sock: TcpStream,
    write_size: usize,
}

impl EchoDuplex for TlsDuplex {
    fn pump(
        &mut self,
        source: &mut Source,
        verify: &mut Verifier,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let conn = verify.conn();
        let session = &mut self.session;
        let sock = &self.sock;
        session.set_buffer_limit(Some(TLS_BUFFER_LIMIT.max(self.write_size)));
        sock.set_nonblocking(true)
            .map_err(|e| named(conn, "set non-blocking", e))?;
        let mut wire = vec![0u8; READ_BUFFER];
        let mut plain = vec![0u8; READ_BUFFER];
        let mut close_queued = false;
        let mut shut = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                let e = io::Error::new(ErrorKind::Interrupted, "stopped");
                return Err(named(conn, "bulk", e));
            }
            let mut progress = false;
            while source.remaining() > 0 {
                let k = session
                    .writer()
                    .write(source.peek())
                    .map_err(|e| named(conn, "encrypt", e))?;
                if k == 0 {
                    break;
                }
                source.consume(k);
                progress = true;
            }
            if source.remaining() == 0 && !close_queued {
                session.send_close_notify();
                close_queued = true;
            }
            let (wrote, drained) = pump_out(session, sock).map_err(|e| named(conn, "write", e))?;
            progress |= wrote;
            if close_queued && drained && !shut {
                sock.shutdown(Shutdown::Write)
                    .map_err(|e| named(conn, "shutdown", e))?;
                shut = true;
            }
            let inbound = pump_in(session, sock, &mut wire, &mut plain, |chunk| {
                verify.check(chunk)
            });
            match inbound {
                Ok(Inbound::Idle) => {}
                Ok(Inbound::Data) => progress = true,
                Ok(Inbound::End) => return verify.finish(),
                Err(e) if verify.failed() => return Err(e),
                Err(e) => return Err(named(conn, "read", e)),
            }
            if !progress {
                wait(sock, true, session.wants_write(), POLL_SLICE)
                    .map_err(|e| named(conn, "poll", e))?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Socket <-> rustls plumbing

/// What one [`pump_in`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// The socket had nothing (`WouldBlock`).
    Idle,
    /// Bytes arrived (plaintext, if any, went to the sink).
    Data,
    /// The peer's stream ended: close_notify, or TCP EOF without one.
    End,
}

/// Hands `sink` the plaintext `tls` already holds (e.g. decrypted together with the handshake's
/// last message, or left by a [`pump_in`] that failed in `sink`) if there is any; otherwise one
/// `read` of up to `wire.len()` bytes from the non-blocking `sock`, fed through `tls`, every chunk
/// of plaintext that comes out passed to `sink`.
pub fn pump_in(
    tls: &mut rustls::Connection,
    sock: &TcpStream,
    wire: &mut [u8],
    plain: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Inbound> {
    match drain(tls, plain, &mut sink)? {
        Drained::End => return Ok(Inbound::End),
        Drained::Some => return Ok(Inbound::Data),
        Drained::Nothing => {}
    }
    let n = match (&*sock).read(wire) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return Ok(Inbound::Idle)
        }
        Err(e) => return Err(e),
    };
    if n == 0 {
        // Tell rustls the transport ended; the reader then says whether close_notify came first.
        tls.read_tls(&mut io::empty())?;
    }
    let mut rest = &wire[..n];
    loop {
        // Never hand rustls an empty slice while data flows: it would take it for EOF.
        if !rest.is_empty() {
            tls.read_tls(&mut rest)?;
        }
        tls.process_new_packets()
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        if drain(tls, plain, &mut sink)? == Drained::End {
            return Ok(Inbound::End);
        }
        if rest.is_empty() {
            break;
        }
    }
    Ok(if n == 0 { Inbound::End } else { Inbound::Data })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    Nothing,
    Some,
    End,
}

/// Passes the plaintext `tls` holds to `sink`; `End` once the peer's stream has ended.
fn drain(
    tls: &mut rustls::Connection,
    plain: &mut [u8],
    sink: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Drained> {
    let mut got = Drained::Nothing;
    loop {
        match tls.reader().read(plain) {
            Ok(0) => return Ok(Drained::End),
            Ok(k) => {
                got = Drained::Some;
                sink(&plain[..k])?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(got),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(Drained::End),
            Err(e) => return Err(e),
        }
    }
}

/// Writes the records `tls` holds to the non-blocking `sock`: (wrote anything, none left).
pub fn pump_out(tls: &mut rustls::Connection, sock: &TcpStream) -> io::Result<(bool, bool)> {
    let mut wrote = false;
    while tls.wants_write() {
        match tls.write_tls(&mut &*sock) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => wrote = true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok((wrote, false)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((wrote, true))
}

/// `poll` on `sock` for reading and/or writing, at most `timeout`.
pub fn wait(sock: &TcpStream, read: bool, write: bool, timeout: Duration) -> io::Result<()> {
    sys::poll(sock, read, write, timeout)
}

/// Blocking handshake on `sock` (with timeouts), then leaves the socket without timeouts.
pub fn handshake(
    tls: &mut rustls::Connection,
    sock: &mut TcpStream,
    limit: Duration,
) -> io::Result<()> {
    sock.set_read_timeout(Some(limit))?;
    sock.set_write_timeout(Some(limit))?;
    while tls.is_handshaking() {
        tls.complete_io(sock)?;
    }
    while tls.wants_write() {
        tls.write_tls(sock)?;
    }
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)
}
