//! One side of a tunnel: a non-blocking socket and, for a TLS leg, its TLS state.
//!
//! [`Leg`] gives the relay one set of operations whatever the leg is: read plaintext, write
//! plaintext, flush, half-close, and drive a handshake. A TLS leg first runs the handshake pump
//! ([`Handshake::pump`], rustls) and then an established [`Session`] (rustls, pooled buffers): reading
//! returns plaintext that arrived with the handshake first (wire rule 1), then every record at
//! hand; writing seals plaintext into records and writes them in one `send`. Nothing here
//! waits: `WouldBlock` means "poll and call again".
//!
//! A WebSocket leg adds RFC 6455 framing on top (of plain or TLS): `read` returns message
//! payload (pings are answered, a Close frame is the end of the stream), `write` sends binary
//! frames, and `shutdown_write` sends Close; the closing handshake thus carries a half-close
//! each way without losing queued bytes. A client leg sends its upgrade request first and holds
//! writes until the server's 101 has come back. A server leg's upgrade is answered by the
//! worker's handshake ([`Leg::upgrade_server`]) or, for a link, already by the control thread
//! ([`Leg::upgraded_server`]).
//!
//! This is the seam kernel TLS would replace: a session can give up its traffic keys and
//! sequence numbers, what the kernel takes; with a kTLS socket the leg is plain again and the
//! relay may splice it. This kernel has no `tls` ULP, so every TLS byte goes through rustls.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::sys;
use crate::tls::{Handshake, Pump, Read, Session, TlsError};
use crate::wire::{http, ws};

/// Largest payload per WebSocket frame this side sends.
const WS_MAX_FRAME: usize = 64 << 10;
/// Bytes read from the transport per WebSocket read.
const WS_READ_CHUNK: usize = 16 << 10;

/// Bytes of a handshake flight read per `read(2)`.
const HANDSHAKE_READ_CHUNK: usize = 16 << 10;

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Why a WebSocket leg failed, carried inside the `io::Error` the relay sees.
#[derive(Debug, thiserror::Error)]
pub enum WsLegError {
    #[error("WebSocket server closed before its 101 response")]
    ClosedBeforeUpgrade,
    #[error("WebSocket peer sent nothing, not even a pong")]
    KeepaliveTimeout,
    #[error("WebSocket upgrade refused: {0}")]
    UpgradeRefused(http::HttpError),
}

/// A TLS leg's state.
enum Tls {
    /// rustls runs the handshake; plaintext written meanwhile (at most `EARLY_WRITE_LIMIT`)
    /// waits in `queued` and is sealed as soon as the session is established.
    Handshaking {
        handshake: Box<Handshake>,
        queued: Vec<u8>,
    },
    Established(Box<Session>),
    /// The handshake failed: every later operation reports it.
    Failed,
}

/// Plaintext a TLS leg takes before its handshake is over.
const EARLY_WRITE_LIMIT: usize = 64 << 10;

impl Tls {
    fn wants_write(&self) -> bool {
        match self {
            Tls::Handshaking { handshake, .. } => !handshake.outgoing().is_empty(),
            Tls::Established(session) => session.wants_write(),
            Tls::Failed => false,
        }
    }

    fn failed() -> io::Error {
        tls_error(TlsError::HandshakeFailed.into())
    }

    /// The established session, or `WouldBlock` while the handshake runs.
    fn session(&mut self) -> io::Result<&mut Session> {
        match self {
            Tls::Established(session) => Ok(session),
            Tls::Handshaking { .. } => Err(would_block()),
            Tls::Failed => Err(Tls::failed()),
        }
    }

    /// Runs the handshake pump on what the socket has: Ok(true) once the session is
    /// established, Ok(false) when waiting for the peer (or for room to send).
    fn drive(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut chunk = [0u8; HANDSHAKE_READ_CHUNK];
        let mut read = 0;
        loop {
            let handshake = match self {
                Tls::Handshaking { handshake, .. } => handshake,
                Tls::Established(_) => return Ok(true),
                Tls::Failed => return Err(Tls::failed()),
            };
            match handshake.pump(&chunk[..read]) {
                Pump::Send if send_pending(handshake.as_mut(), fd)? => read = 0,
                Pump::Send => return Ok(false),
                Pump::NeedInput => match sys::read(fd, &mut chunk) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => read = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                },
                Pump::Done => return self.establish(fd),
                Pump::Failed(e) => {
                    let _ = send_pending(handshake.as_mut(), fd); // The alert, if it fits.
                    *self = Tls::Failed;
                    return Err(tls_error(e));
                }
            }
        }
    }

    /// The handshake is complete: the session takes over, with the plaintext that waited.
    fn establish(&mut self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let Tls::Handshaking { handshake, queued } = std::mem::replace(self, Tls::Failed) else {
            return Err(Tls::failed());
        };
        let mut session = handshake.finish().map_err(tls_error)?;
        session.write_all(&queued).map_err(tls_error)?;
        // The handshake's tail and the queued records: what the socket does not take now goes
        // with the relay's next flush.
        send_pending(&mut session, fd)?;
        *self = Tls::Established(Box::new(session));
        Ok(true)
    }
}

/// Bytes waiting for the socket: a handshake's flight or an established session's records.
trait Outgoing {
    fn pending(&self) -> &[u8];
    fn sent(&mut self, n: usize);
}

impl Outgoing for Handshake {
    fn pending(&self) -> &[u8] {
        self.outgoing()
    }
    fn sent(&mut self, n: usize) {
        Handshake::sent(self, n);
    }
}

impl Outgoing for Session {
    fn pending(&self) -> &[u8] {
        self.output()
    }
    fn sent(&mut self, n: usize) {
        Session::sent(self, n);
    }
}

/// Writes `out`'s pending bytes to `fd` (one `send` per call of the kernel's choosing): Ok(true)
/// when nothing is left, Ok(false) when the socket is full.
fn send_pending(out: &mut impl Outgoing, fd: BorrowedFd<'_>) -> io::Result<bool> {
    while !out.pending().is_empty() {
        match sys::send(fd, out.pending()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.sent(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes what the TLS state has for the peer to `fd`: Ok(true) when nothing is left.
fn flush(tls: &mut Tls, fd: BorrowedFd<'_>) -> io::Result<bool> {
    match tls {
        Tls::Handshaking { handshake, .. } => send_pending(handshake.as_mut(), fd),
        Tls::Established(session) => send_pending(session.as_mut(), fd),
        Tls::Failed => Ok(true),
    }
}

/// WebSocket state of a leg.
struct WsLayer {
    decoder: ws::Decoder,
    /// Mask keys for a client's frames (xorshift64 seeded from the kernel's random source).
    mask_state: u64,
    /// Decoded payload not yet returned by `read`.
    inbound: Vec<u8>,
    inbound_pos: usize,
    /// Encoded bytes (101 response, frames, pongs, Close) not yet handed to the transport.
    outbound: Vec<u8>,
    outbound_pos: usize,
    /// Client: the key of the upgrade request sent, and the response bytes so far, until 101.
    pending_upgrade: Option<(String, Vec<u8>)>,
    close_received: bool,
    close_sent: bool,
    /// When any byte last arrived (keepalive: idle means nothing at all arrived).
    last_rx: Instant,
    /// A keepalive ping was sent and nothing has arrived since.
    ping_outstanding: bool,
    /// Keepalive: ping after this long without a byte from the peer.
    ping: Option<std::time::Duration>,
    /// Frames that came before the layer was made (an upgrade answered on another thread),
    /// decoded by the first read ahead of anything from the transport.
    unread: Vec<u8>,
}

impl WsLayer {
    fn new(role: ws::Role, max_message: usize, ping: Option<std::time::Duration>) -> WsLayer {
        WsLayer {
            decoder: ws::Decoder::new(role, max_message),
            mask_state: sys::random_u64() | 1,
            inbound: Vec::new(),
            inbound_pos: 0,
            outbound: Vec::new(),
            outbound_pos: 0,
            pending_upgrade: None,
            close_received: false,
            close_sent: false,
            last_rx: Instant::now(),
            ping_outstanding: false,
            ping,
            unread: Vec::new(),
        }
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        if self.decoder.role() == ws::Role::Server {
            return None;
        }
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        Some((x as u32).to_le_bytes())
    }

    /// Decodes `input` into `inbound`, answering pings and noting a Close.
    fn absorb(&mut self, mut input: &[u8]) -> Result<(), ws::WsError> {
        while !input.is_empty() {
            let (used, event) = self.decoder.decode(input, &mut self.inbound)?;
            input = &input[used..];
            match event {
                Some(ws::Event::Ping(payload)) if !self.close_sent => {
                    let mask = self.mask();
                    ws::encode_pong(&payload, mask, &mut self.outbound);
                }
                Some(ws::Event::Close { .. }) => self.close_received = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A tunnel leg.
pub struct Leg {
    fd: OwnedFd,
    tls: Option<Tls>,
    ws: Option<Box<WsLayer>>,
    /// The client's slot under `max_per_source`, given back when the leg is dropped.
    held: Option<crate::policy::Held>,
}

fn transport_read(fd: BorrowedFd<'_>, tls: Option<&mut Tls>, buf: &mut [u8]) -> io::Result<usize> {
    let Some(tls) = tls else {
        return sys::read(fd, buf);
    };
    // Reading is what moves a handshake on (the peer's flight arrives as POLLIN).
    if !tls.drive(fd)? {
        return Err(would_block());
    }
    let session = tls.session()?;
    loop {
        match session.read(buf) {
            Ok(Read::Data(n)) => return Ok(n),
            Ok(Read::End) => return Ok(0),
            Ok(Read::NeedInput) => {}
            Err(e) => {
                // The alert that tells the peer why, if the socket takes it.
                let _ = send_pending(session, fd);
                return Err(tls_error(e));
            }
        }
        match sys::read(fd, session.input_space())? {
            0 => session.transport_ended(),
            n => session.received(n),
        }
    }
}

fn transport_write(fd: BorrowedFd<'_>, tls: Option<&mut Tls>, data: &[u8]) -> io::Result<usize> {
    let Some(tls) = tls else {
        return sys::send(fd, data);
    };
    let accepted = match tls {
        Tls::Established(session) => session.write(data).map_err(tls_error)?,
        Tls::Handshaking { queued, .. } => {
            // Held until the handshake is over, like the first bytes of any TLS client.
            let take = data.len().min(EARLY_WRITE_LIMIT - queued.len());
            queued.extend_from_slice(&data[..take]);
            take
        }
        Tls::Failed => return Err(Tls::failed()),
    };
    flush(tls, fd)?;
    if accepted == 0 && !data.is_empty() {
        return Err(would_block());
    }
    Ok(accepted)
}

impl Leg {
    pub fn plain(fd: OwnedFd) -> Leg {
        Leg {
            fd,
            tls: None,
            ws: None,
            held: None,
        }
    }

    /// A TLS leg whose handshake runs here: driven by [`Leg::handshake`], or by the relay's
    /// reads (plaintext written meanwhile waits, up to 64 KiB).
    pub fn tls(fd: OwnedFd, handshake: Handshake) -> Leg {
        Leg {
            fd,
            tls: Some(Tls::Handshaking {
                handshake: Box::new(handshake),
                queued: Vec::new(),
            }),
            ws: None,
            held: None,
        }
    }

    /// A plain leg becomes a TLS leg whose handshake starts now: after bytes that came in the
    /// clear ahead of TLS (a PROXY header).
    pub fn start_tls(&mut self, handshake: Handshake) {
        debug_assert!(
            self.tls.is_none() && self.ws.is_none(),
            "already TLS or WebSocket"
        );
        self.tls = Some(Tls::Handshaking {
            handshake: Box::new(handshake),
            queued: Vec::new(),
        });
    }

    /// A leg from a hand-off: TLS when an established session came with it.
    pub fn from_parts(fd: OwnedFd, session: Option<Box<Session>>) -> Leg {
        Leg {
            fd,
            tls: session.map(Tls::Established),
            ws: None,
            held: None,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Keeps `held` (a source's slot under `max_per_source`) until this leg is dropped,
    /// whichever way its connection ends.
    pub fn hold(&mut self, held: Option<crate::policy::Held>) {
        self.held = held;
    }

    /// The socket and the established TLS session, to hand the leg to another worker. A leg
    /// still in its handshake is not handed on: the socket comes back shut down, so the peer
    /// and the next owner both see a closed connection rather than plaintext.
    pub fn into_parts(self) -> (OwnedFd, Option<Box<Session>>) {
        match self.tls {
            None => (self.fd, None),
            Some(Tls::Established(mut session)) => {
                session.release_idle_buffers();
                (self.fd, Some(session))
            }
            Some(_) => {
                let _ = sys::shutdown_both(self.fd.as_fd());
                (self.fd, None)
            }
        }
    }

    /// Plaintext or TLS records were received and are waiting inside the leg: no socket event
    /// will announce them.
    pub fn has_buffered_input(&self) -> bool {
        matches!(&self.tls, Some(Tls::Established(s)) if s.has_buffered_input())
            || self.ws.as_ref().is_some_and(|w| !w.unread.is_empty())
    }

    /// TLS records are waiting to be written to the socket.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
            || self
                .ws
                .as_ref()
                .is_some_and(|w| w.outbound_pos < w.outbound.len())
    }

    /// The leg's bytes must pass through userspace (TLS or WebSocket): no splice.
    pub fn needs_userspace(&self) -> bool {
        self.tls.is_some() || self.ws.is_some()
    }

    /// Server side of a WebSocket upgrade: `response` (the 101) goes out first; `leftover` is
    /// what the client sent after its request head (its first frames, wire rule 1).
    pub fn upgrade_server(
        &mut self,
        response: Vec<u8>,
        leftover: &[u8],
        max_message: usize,
        ping: Option<std::time::Duration>,
    ) -> io::Result<()> {
        let mut layer = Box::new(WsLayer::new(ws::Role::Server, max_message, ping));
        layer.outbound = response;
        layer
            .absorb(leftover)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.ws = Some(layer);
        self.flush_tls().map(drop)
    }

    /// Server side of an upgrade answered elsewhere (the control thread sent the 101):
    /// `leftover` holds the frames that followed the request. They are decoded by the first
    /// read, so a protocol error in them fails the tunnel like any later one (its Close code
    /// sent, counted as a WebSocket error) instead of failing here.
    pub fn upgraded_server(
        &mut self,
        leftover: Vec<u8>,
        max_message: usize,
        ping: Option<std::time::Duration>,
    ) {
        debug_assert!(self.ws.is_none(), "already WebSocket");
        let mut layer = Box::new(WsLayer::new(ws::Role::Server, max_message, ping));
        layer.unread = leftover;
        self.ws = Some(layer);
    }

    /// Client side: queues an upgrade request for `path` on `host`; writes wait for the 101.
    pub fn upgrade_client(
        &mut self,
        host: &str,
        path: &str,
        max_message: usize,
        ping: Option<std::time::Duration>,
    ) {
        let mut layer = Box::new(WsLayer::new(ws::Role::Client, max_message, ping));
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&sys::random_u64().to_le_bytes());
        nonce[8..].copy_from_slice(&sys::random_u64().to_le_bytes());
        let key = http::generate_key(nonce);
        http::encode_upgrade_request(host, path, &key, &[], &mut layer.outbound);
        layer.pending_upgrade = Some((key, Vec::new()));
        self.ws = Some(layer);
    }

    /// Keepalive: when nothing at all arrived for the interval, send a ping; when nothing
    /// arrived for another interval after that ping either, the peer is gone (Err). A pong, or
    /// any byte, that arrives before the ping is even written counts (wire rule 3). Returns the
    /// next time to look, `None` when the leg has no keepalive.
    pub fn keepalive(&mut self, now: Instant) -> io::Result<Option<Instant>> {
        let Some(layer) = self.ws.as_mut() else {
            return Ok(None);
        };
        let Some(idle) = layer.ping else {
            return Ok(None);
        };
        let quiet = now.saturating_duration_since(layer.last_rx);
        if quiet < idle {
            return Ok(Some(layer.last_rx + idle));
        }
        if layer.ping_outstanding {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                WsLegError::KeepaliveTimeout,
            ));
        }
        if layer.pending_upgrade.is_none() && !layer.close_sent {
            let mask = layer.mask();
            ws::encode_ping(b"sallyport", mask, &mut layer.outbound);
        }
        layer.ping_outstanding = true;
        // Count the wait for the pong from now: the next look is one interval later.
        layer.last_rx = now;
        self.flush_tls()?;
        Ok(Some(now + idle))
    }

    /// Writes the TLS records rustls holds. Ok(true) when none are left; Ok(false) when the
    /// socket is full (wait for POLLOUT). Plain legs have nothing to flush.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        let fd = self.fd.as_fd();
        if let Some(layer) = self.ws.as_mut() {
            while layer.outbound_pos < layer.outbound.len() {
                match transport_write(fd, self.tls.as_mut(), &layer.outbound[layer.outbound_pos..])
                {
                    Ok(n) => layer.outbound_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            layer.outbound.clear();
            layer.outbound_pos = 0;
        }
        match self.tls.as_mut() {
            Some(tls) => flush(tls, fd),
            None => Ok(true),
        }
    }

    /// Reads plaintext (for WebSocket: message payload). Ok(0) is the end of the stream (TLS:
    /// close_notify or EOF without one; WebSocket: a Close frame); `WouldBlock` means nothing is
    /// available now.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(layer) = self.ws.as_mut() else {
                return transport_read(self.fd.as_fd(), self.tls.as_mut(), buf);
            };
            if layer.inbound_pos < layer.inbound.len() {
                let n = buf.len().min(layer.inbound.len() - layer.inbound_pos);
                buf[..n].copy_from_slice(&layer.inbound[layer.inbound_pos..layer.inbound_pos + n]);
                layer.inbound_pos += n;
                if layer.inbound_pos == layer.inbound.len() {
                    layer.inbound.clear();
                    layer.inbound_pos = 0;
                }
                return Ok(n);
            }
            if layer.close_received {
                return Ok(0);
            }
            if !layer.unread.is_empty() {
                let unread = std::mem::take(&mut layer.unread);
                if let Err(e) = layer.absorb(&unread) {
                    return Err(self.ws_failed(e));
                }
                self.flush_tls()?;
                continue;
            }
            let mut chunk = [0u8; WS_READ_CHUNK];
            let n = match transport_read(self.fd.as_fd(), self.tls.as_mut(), &mut chunk) {
                Ok(0) if layer.pending_upgrade.is_some() => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        WsLegError::ClosedBeforeUpgrade,
                    ))
                }
                Ok(0) => return Ok(0), // TCP/TLS end without a Close frame: end of stream.
                Ok(n) => n,
                Err(e) => return Err(e),
            };
            layer.last_rx = Instant::now();
            layer.ping_outstanding = false;
            let mut input = &chunk[..n];
            let mut upgraded_leftover = Vec::new();
            if let Some((key, head)) = layer.pending_upgrade.as_mut() {
                head.extend_from_slice(input);
                match http::parse_upgrade_response(head, key) {
                    Ok(None) => continue,
                    Ok(Some((_, used))) => {
                        upgraded_leftover = head.split_off(used);
                        layer.pending_upgrade = None;
                        input = &upgraded_leftover;
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            WsLegError::UpgradeRefused(e),
                        ))
                    }
                }
            }
            if let Err(e) = layer.absorb(input) {
                return Err(self.ws_failed(e));
            }
            drop(upgraded_leftover);
            // Pongs (and anything else queued) go out now.
            self.flush_tls()?;
        }
    }

    /// A protocol error from the WebSocket peer: our Close with its code goes out (if the
    /// socket takes it), and the error is what the read reports.
    fn ws_failed(&mut self, e: ws::WsError) -> io::Error {
        if let Some(layer) = self.ws.as_mut() {
            if !layer.close_sent {
                let mask = layer.mask();
                ws::encode_close(Some(e.close_code()), "", mask, &mut layer.outbound);
                layer.close_sent = true;
            }
        }
        let _ = self.flush_tls();
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// Writes plaintext; returns how much was accepted (for TLS: encrypted and queued, then
    /// written as far as the socket takes it; for WebSocket: framed). `WouldBlock` when nothing
    /// could be accepted.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.ws.is_none() {
            return transport_write(self.fd.as_fd(), self.tls.as_mut(), data);
        }
        // Earlier frames (or the upgrade request) first: one frame in flight at a time.
        if !self.flush_tls()? {
            return Err(would_block());
        }
        let Some(layer) = self.ws.as_mut() else {
            return transport_write(self.fd.as_fd(), self.tls.as_mut(), data);
        };
        if layer.pending_upgrade.is_some() {
            return Err(would_block()); // No data before the server's 101 (RFC 6455 §4.1).
        }
        if layer.close_sent {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let take = data.len().min(WS_MAX_FRAME);
        let mask = layer.mask();
        ws::encode_frame(
            ws::OpCode::Binary,
            true,
            &data[..take],
            mask,
            &mut layer.outbound,
        );
        self.flush_tls()?;
        Ok(take)
    }

    /// Half-closes the write side: close_notify first for TLS, then `shutdown(SHUT_WR)` once
    /// every record is on the wire. Ok(false) while records wait for room.
    pub fn shutdown_write(&mut self) -> io::Result<bool> {
        if let Some(layer) = self.ws.as_mut() {
            if layer.pending_upgrade.is_some() {
                // Nothing was sent yet: wait for the 101 before closing properly.
                return Ok(false);
            }
            if !layer.close_sent {
                let mask = layer.mask();
                ws::encode_close(Some(ws::close_code::NORMAL), "", mask, &mut layer.outbound);
                layer.close_sent = true;
            }
            if !self.flush_tls()? {
                return Ok(false);
            }
        }
        if let Some(tls) = self.tls.as_mut() {
            // A leg still in its handshake has nothing to close_notify (its queued plaintext,
            // if any, goes with the session first).
            if matches!(tls, Tls::Handshaking { .. }) && !tls.drive(self.fd.as_fd())? {
                return Ok(false);
            }
            if let Tls::Established(session) = tls {
                session.close().map_err(tls_error)?;
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
        match self.tls.as_mut() {
            Some(tls) => tls.drive(self.fd.as_fd()),
            None => Ok(true),
        }
    }
}
