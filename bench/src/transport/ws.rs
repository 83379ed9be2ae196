//! The WebSocket transport of the load loops: [`bulk_ws`] and [`rr_ws`] (the upgrade right after
//! connecting, before the clock starts; then masked binary frames) on the `sallyport-kit` bulk and
//! rr loops, framed with the sans-IO codecs of `sallyport-dataplane`.
//!
//! Client side only; it starts no servers and does not answer pings during bulk (the gateways
//! here send none: `ws_ping` is off by default).

use std::io::{self, Cursor, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use sallyport_dataplane::wire::{http, ws};
use sallyport_kit::load::{
    named, run_bulk, run_rr, BulkConn, BulkResult, BulkSpec, EchoReader, EchoWriter, RrResult,
    RrSpec, Verifier, READ_BUFFER,
};

use super::connect_all_then;

/// Largest payload of one WebSocket frame the WebSocket loads send; a longer write becomes
/// several frames (each a message of its own), so `--write-size` stays below a gateway's
/// `ws_max_message` (default 16 MiB).
pub const WS_MAX_FRAME: usize = 1 << 20;
/// Longest upgrade response head the WebSocket loads read before giving up.
const WS_MAX_HEAD: usize = 16 * 1024;

/// Where the WebSocket loads ([`bulk_ws`], [`rr_ws`]) connect: the `Host` header value and the
/// request path of the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsTarget {
    pub host: String,
    pub path: String,
}

/// [`sallyport_kit::load::bulk`] over WebSocket: each connection completes the upgrade to
/// `target` right after connecting (before the clock starts). The writer sends each write as
/// masked binary frames (of at most [`WS_MAX_FRAME`] bytes, a fresh random mask each) and, when
/// everything was sent, a Close frame (1000) instead of shutting its write side down; the reader
/// decodes the echoed frames, verifies their payload and ends at the path's Close frame. A TCP
/// EOF without a Close frame, a Close with a status other than 1000, or a protocol error is an
/// `Err` naming the connection; otherwise as `bulk`.
pub fn bulk_ws(addr: SocketAddr, spec: &BulkSpec, target: &WsTarget) -> io::Result<BulkResult> {
    let write_size = spec.write_size;
    run_bulk(
        spec,
        |deadline| connect_all_ws(addr, spec.connections, deadline, false, target),
        |(sock, rest)| {
            let frames = write_size.div_ceil(WS_MAX_FRAME);
            let writer: Box<dyn EchoWriter> = Box::new(WsWriter {
                sock: sock.try_clone()?,
                rng: rand::rngs::StdRng::from_entropy(),
                out: Vec::with_capacity(write_size + frames * ws::MAX_HEADER_LEN),
            });
            let reader: Box<dyn EchoReader> = Box::new(WsReader {
                sock: sock.try_clone()?,
                rest,
            });
            Ok((sock, BulkConn::Split(writer, reader)))
        },
    )
}

/// [`sallyport_kit::load::rr`] over WebSocket: each connection (with `TCP_NODELAY`) completes
/// the upgrade to `target` right after connecting, before the clock starts; each request is
/// then one masked binary frame and its reply is read from the echoed frames (however the path
/// split them). A protocol error or a Close from the path is an `Err` naming the connection.
/// When the run ends each connection sends a Close frame (1000) before closing.
pub fn rr_ws(addr: SocketAddr, spec: &RrSpec, target: &WsTarget) -> io::Result<RrResult> {
    run_rr(
        spec,
        |deadline| connect_all_ws(addr, spec.connections, deadline, true, target),
        |(sock, rest)| Ok((sock.try_clone()?, WsStream::new(sock, rest))),
    )
}

/// The bulk writer: each write as masked binary frames, then a Close frame (1000).
struct WsWriter {
    sock: TcpStream,
    rng: rand::rngs::StdRng,
    out: Vec<u8>,
}

impl EchoWriter for WsWriter {
    fn send(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.out.clear();
        for frame in chunk.chunks(WS_MAX_FRAME) {
            let mask = ws_mask(&mut self.rng);
            ws::encode_frame(ws::OpCode::Binary, true, frame, Some(mask), &mut self.out);
        }
        self.sock.write_all(&self.out)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.clear();
        let mask = ws_mask(&mut self.rng);
        ws::encode_close(Some(ws::close_code::NORMAL), "", Some(mask), &mut self.out);
        self.sock.write_all(&self.out)
    }
}

/// The bulk reader: decodes the echoed frames until the path's Close; `rest` is what followed
/// the upgrade response.
struct WsReader {
    sock: TcpStream,
    rest: Vec<u8>,
}

impl EchoReader for WsReader {
    fn read_echo(&mut self, verify: &mut Verifier) -> io::Result<()> {
        let conn = verify.conn();
        let stream = &mut self.sock;
        let mut buf = std::mem::take(&mut self.rest);
        let mut filled = buf.len();
        buf.resize(READ_BUFFER.max(filled), 0);
        let mut decoder = ws::Decoder::new(ws::Role::Client, usize::MAX);
        loop {
            let mut at = 0;
            while at < filled {
                let (used, event) = decoder
                    .decode_in_place(&mut buf[at..filled])
                    .map_err(|e| named(conn, "WebSocket", ws_error(e)))?;
                at += used;
                match event {
                    Some(ws::Event::Data { len, .. }) => {
                        verify.check(&buf[at - len..at])?;
                    }
                    Some(ws::Event::Close { code, reason }) => {
                        if code.is_some_and(|c| c != ws::close_code::NORMAL) {
                            let msg = format!(
                                "the path closed the WebSocket with {code:?} {reason:?} after {} of {} bytes",
                                verify.received(),
                                verify.expected()
                            );
                            return Err(named(
                                conn,
                                "read",
                                io::Error::new(ErrorKind::ConnectionAborted, msg),
                            ));
                        }
                        return verify.finish();
                    }
                    Some(ws::Event::Ping(_) | ws::Event::Pong(_)) | None => {}
                }
            }
            filled = match stream.read(&mut buf) {
                Ok(0) => {
                    verify.finish()?;
                    let e = io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "TCP closed without a WebSocket Close frame",
                    );
                    return Err(named(conn, "read", e));
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => 0,
                Err(e) => return Err(named(conn, "read", e)),
            };
        }
    }
}

/// [`connect_all_then`] with a WebSocket upgrade on each connection within the time left; each
/// comes with the bytes that followed the `101` response (frames already sent, if any).
fn connect_all_ws(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
    target: &WsTarget,
) -> io::Result<Vec<(TcpStream, Vec<u8>)>> {
    connect_all_then(
        addr,
        connections,
        deadline,
        nodelay,
        "WebSocket upgrade",
        "time limit reached before the upgrade",
        |conn, mut sock, left| {
            let rest = ws_upgrade(&mut sock, target, left)
                .map_err(|e| named(conn, &format!("WebSocket upgrade to {addr}"), e))?;
            Ok((sock, rest))
        },
    )
}

/// Blocking client handshake (RFC 6455 §4.1) within `limit`, with the `sallyport-dataplane`
/// codecs: sends `GET PATH` with a fresh random key and no subprotocol, reads until the
/// `101` response is complete and checked, returns what followed it. The socket is left
/// without timeouts.
fn ws_upgrade(sock: &mut TcpStream, target: &WsTarget, limit: Duration) -> io::Result<Vec<u8>> {
    sock.set_read_timeout(Some(limit))?;
    sock.set_write_timeout(Some(limit))?;
    let mut nonce = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut nonce);
    let key = http::generate_key(nonce);
    let mut request = Vec::new();
    http::encode_upgrade_request(&target.host, &target.path, &key, &[], &mut request);
    sock.write_all(&request)?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before answering the upgrade request",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        match http::parse_upgrade_response(&head, &key) {
            Ok(Some((_, used))) => {
                sock.set_read_timeout(None)?;
                sock.set_write_timeout(None)?;
                return Ok(head.split_off(used));
            }
            Ok(None) if head.len() < WS_MAX_HEAD => {}
            Ok(None) => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "upgrade response head too large",
                ))
            }
            Err(e) => {
                let status = String::from_utf8_lossy(&head);
                let status = status.lines().next().unwrap_or("").trim().to_string();
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{e} (answer: {status:?})"),
                ));
            }
        }
    }
}

/// A fresh client mask key (RFC 6455 §5.3: unpredictable, one per frame).
fn ws_mask(rng: &mut rand::rngs::StdRng) -> [u8; 4] {
    rng.next_u32().to_ne_bytes()
}

fn ws_error(e: ws::WsError) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

/// A blocking WebSocket client connection as a byte stream (for [`run_rr`]): each `write` sends
/// one masked binary frame (at most [`WS_MAX_FRAME`] bytes of it), `read` returns decoded
/// payload, answering pings on the way; the path's Close frame reads as EOF. Dropping it sends
/// a Close frame (1000) unless the path closed first.
struct WsStream {
    sock: TcpStream,
    decoder: ws::Decoder,
    rng: rand::rngs::StdRng,
    frame: Vec<u8>,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Decoded payload not read yet; emptied (and rewound) once read to its end.
    payload: Cursor<Vec<u8>>,
    closed: bool,
}

impl WsStream {
    fn new(sock: TcpStream, rest: Vec<u8>) -> WsStream {
        let mut input = rest;
        let in_end = input.len();
        input.resize(in_end.max(64 * 1024), 0);
        WsStream {
            sock,
            decoder: ws::Decoder::new(ws::Role::Client, usize::MAX),
            rng: rand::rngs::StdRng::from_entropy(),
            frame: Vec::new(),
            input,
            in_start: 0,
            in_end,
            payload: Cursor::default(),
            closed: false,
        }
    }

    fn send_control(
        &mut self,
        encode: impl FnOnce(Option<[u8; 4]>, &mut Vec<u8>),
    ) -> io::Result<()> {
        self.frame.clear();
        encode(Some(ws_mask(&mut self.rng)), &mut self.frame);
        self.sock.write_all(&self.frame)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(WS_MAX_FRAME);
        self.frame.clear();
        let mask = ws_mask(&mut self.rng);
        ws::encode_frame(
            ws::OpCode::Binary,
            true,
            &buf[..n],
            Some(mask),
            &mut self.frame,
        );
        self.sock.write_all(&self.frame)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for WsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let k = self.payload.read(buf)?;
            if k > 0 {
                if self.payload.position() == self.payload.get_ref().len() as u64 {
                    self.payload.get_mut().clear();
                    self.payload.set_position(0);
                }
                return Ok(k);
            }
            if self.closed {
                return Ok(0);
            }
            if self.in_start < self.in_end {
                let (used, event) = self
                    .decoder
                    .decode(
                        &self.input[self.in_start..self.in_end],
                        self.payload.get_mut(),
                    )
                    .map_err(ws_error)?;
                self.in_start += used;
                match event {
                    Some(ws::Event::Ping(data)) => {
                        self.send_control(|mask, out| ws::encode_pong(&data, mask, out))?;
                    }
                    Some(ws::Event::Close { code, reason }) => {
                        self.closed = true;
                        return Err(io::Error::new(
                            ErrorKind::ConnectionAborted,
                            format!("the path sent a WebSocket Close ({code:?} {reason:?})"),
                        ));
                    }
                    Some(ws::Event::Data { .. } | ws::Event::Pong(_)) | None => {}
                }
                continue;
            }
            let n = self.sock.read(&mut self.input)?;
            if n == 0 {
                return Ok(0);
            }
            self.in_start = 0;
            self.in_end = n;
        }
    }
}

impl Drop for WsStream {
    fn drop(&mut self) {
        if !self.closed {
            // Best effort: a halted socket refuses it, which is fine.
            let _ = self.sock.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = self.send_control(|mask, out| {
                ws::encode_close(Some(ws::close_code::NORMAL), "", mask, out);
            });
        }
    }
}
