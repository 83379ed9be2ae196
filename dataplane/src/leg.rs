//! One side of a tunnel: a non-blocking socket and, for a TLS leg, the rustls session on it.
//!
//! [`Leg`] gives the relay one set of operations whatever the leg is: read plaintext, write
//! plaintext, flush, half-close, and drive a handshake. For a TLS leg, reading feeds socket
//! bytes into rustls and returns what it decrypted (bytes that arrived with the handshake's last
//! message come out first: wire rule 1); writing hands plaintext to rustls (bounded by its
//! buffer limit) and writes the records it produced. Nothing here waits: `WouldBlock` means
//! "poll and call again".
//!
//! A WebSocket leg adds RFC 6455 framing on top (of plain or TLS): `read` returns message
//! payload (pings are answered, a Close frame is the end of the stream), `write` sends binary
//! frames, and `shutdown_write` sends Close; the closing handshake thus carries a half-close
//! each way without losing queued bytes. A client leg sends its upgrade request first and holds
//! writes until the server's 101 has come back.
//!
//! This is the seam kernel TLS would replace: with a kTLS socket the leg is plain again and the
//! relay may splice it. This kernel has no `tls` ULP, so every TLS byte goes through rustls.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::sys;
use crate::wire::{http, ws};

/// Largest payload per WebSocket frame this side sends.
const WS_MAX_FRAME: usize = 64 << 10;
/// Socket bytes read at once for a TLS leg. rustls takes at most 4 KiB per `read_tls`; feeding
/// it from this buffer instead of the socket makes one syscall per 64 KiB, not per 4 KiB.
const TLS_READ_CHUNK: usize = 64 << 10;

/// Ciphertext read from the socket and not yet given to rustls.
struct TlsInput {
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

/// Bytes read from the transport per WebSocket read.
const WS_READ_CHUNK: usize = 16 << 10;

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
    // rustls hands every queued record at once: one sendmsg instead of one send per record.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        sys::send_vectored(self.0, bufs)
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
    tls: Option<Box<rustls::Connection>>,
    /// TLS legs: socket bytes read ahead for rustls.
    tls_input: Option<Box<TlsInput>>,
    ws: Option<Box<WsLayer>>,
    /// close_notify queued (TLS half-close in progress).
    closing: bool,
}

fn transport_read(
    fd: BorrowedFd<'_>,
    tls: Option<&mut Box<rustls::Connection>>,
    input: &mut Option<Box<TlsInput>>,
    buf: &mut [u8],
) -> io::Result<usize> {
    let Some(tls) = tls else {
        return sys::read(fd, buf);
    };
    let input = input.get_or_insert_with(|| {
        Box::new(TlsInput {
            buf: vec![0u8; TLS_READ_CHUNK].into_boxed_slice(),
            pos: 0,
            len: 0,
        })
    });
    let mut filled = 0;
    loop {
        match tls.reader().read(&mut buf[filled..]) {
            // rustls returns one record's plaintext per call: fill `buf` from what is already
            // decrypted or read ahead, so the relay writes 64 KiB at once, not 16 KiB.
            Ok(n) if n > 0 && filled + n < buf.len() => {
                filled += n;
                continue;
            }
            Ok(n) => return Ok(filled + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if filled > 0 && input.pos == input.len {
                    return Ok(filled);
                }
            }
            // The peer closed TCP without close_notify: the end of what it sent.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
            // Deliver what was decrypted first; the error comes back on the next call.
            Err(_) if filled > 0 => return Ok(filled),
            Err(e) => return Err(e),
        }
        // Records already inside the session but not yet processed (read by the control
        // thread before the hand-off) come first: no socket event would announce them.
        // rustls keeps a failed session failed, so an error here reaches the caller once the
        // plaintext before it has been delivered.
        match tls.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() > 0 => continue,
            Ok(_) => {}
            Err(_) if filled > 0 => return Ok(filled),
            Err(e) => {
                let _ = flush(tls, fd);
                return Err(tls_error(e));
            }
        }
        if input.pos == input.len {
            let n = sys::read(fd, &mut input.buf)?;
            (input.pos, input.len) = (0, n);
        }
        let mut pending = &input.buf[input.pos..input.len];
        match tls.read_tls(&mut pending) {
            Ok(0) => {} // EOF: the reader reports it on the next turn.
            Ok(n) => {
                input.pos += n;
                if let Err(e) = tls.process_new_packets() {
                    if filled > 0 {
                        return Ok(filled);
                    }
                    // Send the alert rustls queued, then fail.
                    let _ = flush(tls, fd);
                    return Err(tls_error(e));
                }
                // Post-handshake records (key updates, alerts) may want an answer.
                flush(tls, fd)?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn transport_write(
    fd: BorrowedFd<'_>,
    tls: Option<&mut Box<rustls::Connection>>,
    data: &[u8],
) -> io::Result<usize> {
    let Some(tls) = tls else {
        return sys::send(fd, data);
    };
    let accepted = tls.writer().write(data)?;
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
            tls_input: None,
            ws: None,
            closing: false,
        }
    }

    pub fn tls(fd: OwnedFd, mut conn: Box<rustls::Connection>) -> Leg {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Leg {
            fd,
            tls: Some(conn),
            tls_input: None,
            ws: None,
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
            || self
                .ws
                .as_ref()
                .is_some_and(|w| w.outbound_pos < w.outbound.len())
    }

    pub fn is_websocket(&self) -> bool {
        self.ws.is_some()
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

    /// The keepalive interval of a WebSocket leg that has one.
    pub fn keepalive_interval(&self) -> Option<std::time::Duration> {
        self.ws.as_ref().and_then(|w| w.ping)
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
                "WebSocket peer sent nothing, not even a pong",
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
        let invalid = |e: ws::WsError| io::Error::new(io::ErrorKind::InvalidData, e);
        loop {
            let Some(layer) = self.ws.as_mut() else {
                return transport_read(
                    self.fd.as_fd(),
                    self.tls.as_mut(),
                    &mut self.tls_input,
                    buf,
                );
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
            let mut chunk = [0u8; WS_READ_CHUNK];
            let n = match transport_read(
                self.fd.as_fd(),
                self.tls.as_mut(),
                &mut self.tls_input,
                &mut chunk,
            ) {
                Ok(0) if layer.pending_upgrade.is_some() => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "WebSocket server closed before its 101 response",
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
                            format!("WebSocket upgrade refused: {e}"),
                        ))
                    }
                }
            }
            if let Err(e) = layer.absorb(input) {
                if !layer.close_sent {
                    let mask = layer.mask();
                    ws::encode_close(Some(e.close_code()), "", mask, &mut layer.outbound);
                    layer.close_sent = true;
                }
                let _ = self.flush_tls();
                return Err(invalid(e));
            }
            drop(upgraded_leftover);
            // Pongs (and anything else queued) go out now.
            self.flush_tls()?;
        }
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
