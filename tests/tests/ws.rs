//! WebSocket end to end with the real binary: the virtual private connection (TCP carried over
//! `ws://` and `wss://` between two `sallyport` processes), a DMZ `ws://`/`wss://` listener
//! served by prepared connections and driven by real third-party clients (headless Chromium,
//! Python's `websockets`), hundreds of short connections that must each upgrade and close
//! cleanly, keepalive, and hostile upgrade requests and frames. Every gateway is
//! its own `sallyport run` process, every address on loopback port 0; certificates come from
//! `sallyport certs`.
//!
//! Our own client here speaks the protocol with the data plane's sans-IO codecs over a blocking
//! socket, so it can also break the protocol on purpose. A missing browser or Python module is
//! reported as `SKIPPED: …` on stderr, never a silent pass. Waits poll with a deadline; the only
//! timing assertion is the keepalive's upper bound.
#![deny(unsafe_code)]

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sallyport_dataplane::wire::{http, ws};
use sallyport_tests::{
    bulk_echo, child, connect, counter, dmz_config, dmz_config_accept, echo_round_trip,
    forward_config, sys, temp_dir, DevCerts, EchoServer, Gateway, Relay, Tunnel, STATE_TIMEOUT,
};

const BULK_BYTES: usize = 64 << 20;

/// Read timeout of our WebSocket client: a gateway that should have answered or closed by then
/// is a failure, not a hang.
const WS_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a third-party client (browser, Python) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// `ws_ping` of the keepalive test.
const PING: Duration = Duration::from_millis(300);

/// Scheduling slack on top of the keepalive's 2 × `ws_ping` (a shared 2-core machine).
const KEEPALIVE_MARGIN: Duration = Duration::from_millis(1500);

/// The origin the malformed-request test allows.
const ALLOWED_ORIGIN: &str = "http://allowed.example";

/// Serializes the CPU-heavy tests (bulk transfers, Chromium) and the one with a timing bound
/// (keepalive), so a 2-core machine does not turn scheduling delays into failures.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn echo_server() -> EchoServer {
    EchoServer::start(localhost0()).expect("start echo server")
}

/// No gateway may have panicked, whatever the client did.
fn assert_no_panic(who: &str, gateway: &Gateway) {
    let stderr = gateway.stderr();
    assert!(
        !stderr.contains("panicked"),
        "{who} gateway panicked:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Our WebSocket client (the data plane's codecs over a blocking socket)
// ---------------------------------------------------------------------------------------------

/// The upgrade request of RFC 6455 §4.1, with an `Origin` when given.
fn upgrade_request(host: &str, path: &str, key: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

/// The client side of a WebSocket connection over `S`: a `TcpStream` for `ws://`, a rustls
/// stream for `wss://`.
struct WsClient<S: Read + Write = TcpStream> {
    stream: S,
    decoder: ws::Decoder,
    /// Bytes read but not yet decoded.
    pending: Vec<u8>,
    /// State of the mask-key generator (a client masks every frame).
    masks: u32,
    /// Pings the gateway sent us (never answered).
    pings: usize,
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl WsClient {
    /// Connects and completes the upgrade for `path`; `Err` with what came back otherwise.
    fn connect(addr: SocketAddr, path: &str, origin: Option<&str>) -> Result<WsClient, String> {
        let tcp = connect(addr);
        tcp.set_read_timeout(Some(WS_TIMEOUT))
            .expect("set_read_timeout");
        WsClient::upgrade(tcp, &addr.to_string(), path, origin)
    }
}

impl WsClient<TlsStream> {
    /// `wss://`: connects, verifies the gateway's certificate as `localhost` with `config` and
    /// completes the upgrade. With `handshake_first` the TLS handshake completes before the
    /// upgrade request is written (as OpenSSL-based clients do); otherwise the request is handed
    /// to rustls before the handshake ends and leaves right behind the client's Finished.
    fn connect_tls(
        addr: SocketAddr,
        path: &str,
        config: &Arc<ClientConfig>,
        handshake_first: bool,
    ) -> Result<WsClient<TlsStream>, String> {
        let tcp = connect(addr);
        tcp.set_read_timeout(Some(WS_TIMEOUT))
            .expect("set_read_timeout");
        let name = ServerName::try_from("localhost").expect("server name");
        let mut conn = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| format!("TLS client: {e}"))?;
        let mut tcp = tcp;
        if handshake_first {
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp)
                    .map_err(|e| format!("TLS handshake: {e}"))?;
            }
        }
        WsClient::upgrade(StreamOwned::new(conn, tcp), &addr.to_string(), path, None)
    }
}

impl<S: Read + Write> WsClient<S> {
    /// Sends the upgrade request for `path` on `stream` and reads the 101.
    fn upgrade(
        mut stream: S,
        host: &str,
        path: &str,
        origin: Option<&str>,
    ) -> Result<WsClient<S>, String> {
        let nonce: [u8; 16] = rand::random();
        let key = http::generate_key(nonce);
        stream
            .write_all(upgrade_request(host, path, &key, origin).as_bytes())
            .map_err(|e| format!("send the upgrade request: {e}"))?;
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
                Err(e) => {
                    return Err(format!(
                        "read the upgrade response: {e}; got {:?}",
                        String::from_utf8_lossy(&head)
                    ))
                }
            };
            if n == 0 {
                return Err(format!(
                    "closed before the 101; got {:?}",
                    String::from_utf8_lossy(&head)
                ));
            }
            head.extend_from_slice(&chunk[..n]);
            match http::parse_upgrade_response(&head, &key) {
                Ok(Some((_, used))) => {
                    return Ok(WsClient {
                        stream,
                        decoder: ws::Decoder::new(ws::Role::Client, 1 << 24),
                        pending: head[used..].to_vec(),
                        masks: u32::from_le_bytes([nonce[0], nonce[1], nonce[2], nonce[3]]) | 1,
                        pings: 0,
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(format!(
                        "bad upgrade response ({e}): {:?}",
                        String::from_utf8_lossy(&head)
                    ))
                }
            }
        }
    }

    /// Reads to the end of the stream; a TCP close without TLS close_notify is an end too (the
    /// WebSocket Close is the protocol's own end).
    fn read_rest(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => Ok(rest),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(rest),
            Err(e) => Err(e),
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        self.masks = self
            .masks
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        self.masks.to_be_bytes()
    }

    /// Sends one masked, final frame.
    fn send(&mut self, opcode: ws::OpCode, payload: &[u8]) -> io::Result<()> {
        let mask = self.mask();
        let mut out = Vec::new();
        ws::encode_frame(opcode, true, payload, Some(mask), &mut out);
        self.stream.write_all(&out)
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next event (data chunks appended to `data`); `Ok(None)` at EOF. A frame the gateway
    /// should never send is an `InvalidData` error.
    fn event(&mut self, data: &mut Vec<u8>) -> io::Result<Option<ws::Event>> {
        loop {
            if !self.pending.is_empty() {
                let input = std::mem::take(&mut self.pending);
                let (used, event) = self
                    .decoder
                    .decode(&input, data)
                    .map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
                self.pending = input[used..].to_vec();
                if let Some(event) = event {
                    if matches!(event, ws::Event::Ping(_)) {
                        self.pings += 1;
                    }
                    return Ok(Some(event));
                }
                continue;
            }
            let mut chunk = vec![0u8; 64 << 10];
            let n = match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
                other => other?,
            };
            if n == 0 {
                return Ok(None);
            }
            chunk.truncate(n);
            self.pending = chunk;
        }
    }

    /// Reads data until `len` bytes came; pings are counted, not answered. A Close, EOF or
    /// error first is an `Err` naming it.
    fn read_data(&mut self, len: usize) -> Result<Vec<u8>, String> {
        let mut data = Vec::new();
        while data.len() < len {
            match self.event(&mut data) {
                Ok(Some(ws::Event::Data { .. } | ws::Event::Ping(_) | ws::Event::Pong(_))) => {}
                Ok(Some(ws::Event::Close { code, reason })) => {
                    return Err(format!(
                        "Close {code:?} {reason:?} after {} of {len} bytes",
                        data.len()
                    ))
                }
                Ok(None) => return Err(format!("EOF after {} of {len} bytes", data.len())),
                Err(e) => return Err(format!("{e} after {} of {len} bytes", data.len())),
            }
        }
        Ok(data)
    }

    /// Sends `messages` (binary, then text, alternating) and reads their concatenation back.
    fn round_trip(&mut self, messages: &[&[u8]]) -> Result<(), String> {
        let mut want = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let op = if i % 2 == 0 {
                ws::OpCode::Binary
            } else {
                ws::OpCode::Text
            };
            self.send(op, m).map_err(|e| format!("send: {e}"))?;
            want.extend_from_slice(m);
        }
        let got = self.read_data(want.len())?;
        if got != want {
            return Err(format!(
                "echo differs: sent {} bytes, got {:?}",
                want.len(),
                String::from_utf8_lossy(&got)
            ));
        }
        Ok(())
    }

    /// Sends Close 1000 and reads until the gateway's Close; returns its code. The stream must
    /// end after it.
    fn close(mut self) -> Result<Option<u16>, String> {
        let mask = self.mask();
        let mut out = Vec::new();
        ws::encode_close(Some(1000), "bye", Some(mask), &mut out);
        self.send_raw(&out)
            .map_err(|e| format!("send Close: {e}"))?;
        let mut data = Vec::new();
        let code = loop {
            match self.event(&mut data) {
                Ok(Some(ws::Event::Close { code, .. })) => break code,
                Ok(Some(_)) => {}
                Ok(None) => return Err("EOF without a Close frame".to_string()),
                Err(e) => return Err(format!("waiting for Close: {e}")),
            }
        };
        match self.read_rest() {
            Ok(rest) if rest.is_empty() => Ok(code),
            Ok(rest) => Err(format!("{} bytes after the Close frame", rest.len())),
            Err(e) => Err(format!("waiting for EOF after Close: {e}")),
        }
    }

    /// How the gateway ends this connection after a protocol violation: the Close code it sent
    /// (`None`: it closed without one). Data before that, or no end within [`WS_TIMEOUT`], is
    /// an `Err`.
    fn closed_by_gateway(&mut self) -> Result<Option<u16>, String> {
        let mut data = Vec::new();
        let mut close = None;
        loop {
            match self.event(&mut data) {
                Ok(Some(ws::Event::Close { code, .. })) if close.is_none() => close = Some(code),
                Ok(Some(ws::Event::Ping(_) | ws::Event::Pong(_))) => {}
                Ok(Some(other)) => {
                    return Err(format!(
                        "unexpected {other:?} (data so far {:?})",
                        String::from_utf8_lossy(&data)
                    ))
                }
                Ok(None) => return Ok(close.flatten()),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(close.flatten()),
                Err(e) if e.kind() == ErrorKind::InvalidData && close.is_some() => {
                    return Err(format!("bytes after the gateway's Close: {e}"))
                }
                Err(e) => return Err(format!("{e} (Close so far: {close:?})")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The virtual private connection
// ---------------------------------------------------------------------------------------------

/// Gateway B (`accept` WebSocket, `connect` the echo server), gateway A (`accept` TCP, `connect`
/// B over WebSocket): 64 MiB each way from a TCP client at A, compared by sha256.
fn vpc(scheme: &str, b_extra: &str, a_extra: &str) {
    let _heavy = heavy();
    let echo = echo_server();
    let b = Gateway::start(&forward_config(
        "vpc",
        &format!("{scheme}://127.0.0.1:0/vpc"),
        &format!("tcp://{}", echo.addr()),
        &format!("ws_ping = \"5s\"\n{b_extra}"),
    ));
    let b_addr = b.service("vpc");
    let a = Gateway::start(&forward_config(
        "vpc",
        "tcp://127.0.0.1:0",
        &format!("{scheme}://127.0.0.1:{}/vpc", b_addr.port()),
        &format!("ws_ping = \"5s\"\n{a_extra}"),
    ));
    let logs = || {
        format!(
            "--- A stderr ---\n{}\n--- B stderr ---\n{}",
            a.stderr(),
            b.stderr()
        )
    };
    if let Err(e) = bulk_echo(a.service("vpc"), BULK_BYTES, 0x0005_a11f_00f7) {
        panic!("{scheme} VPC: {e}\n{}", logs());
    }
    // The bytes crossed both gateways (as a forwarding service each), both ways.
    let want = BULK_BYTES as u64;
    for (who, g) in [("A", &a), ("B", &b)] {
        let s = g.wait_stats(
            &format!("{who}: bytes both ways >= 64 MiB"),
            STATE_TIMEOUT,
            |s| {
                s["bytes"]["upstream"].as_u64() >= Some(want)
                    && s["bytes"]["downstream"].as_u64() >= Some(want)
            },
        );
        let svc = &s["services"]["vpc"];
        assert_eq!(svc["role"], "forward", "{who}: {s:#}\n{}", logs());
        assert_eq!(counter(svc, &["accepted"]), 1, "{who}: {s:#}");
        assert_eq!(counter(svc, &["upstream_failures"]), 0, "{who}: {s:#}");
        assert_eq!(counter(svc, &["ws_rejects"]), 0, "{who}: {s:#}");
        assert_eq!(counter(svc, &["tls_failures"]), 0, "{who}: {s:#}");
        assert_no_panic(who, g);
    }
    a.stop();
    b.stop();
}

#[test]
fn vpc_64mib_each_way_over_ws() {
    vpc("ws", "", "");
}

#[test]
fn vpc_64mib_each_way_over_wss() {
    let certs = DevCerts::generate();
    vpc("wss", &certs.listener_tls(), &certs.connect_tls());
}

// ---------------------------------------------------------------------------------------------
// 2. A real browser
// ---------------------------------------------------------------------------------------------

/// The page the browser loads: it opens `url`, sends binary and text messages (one larger than
/// a sallyport's 64 KiB frames), checks that the concatenation of their bytes comes back (as
/// binary messages, chunked as the gateway likes), closes with 1000, and reports
/// `PASS code=… clean=…` or `FAIL: …` in its title, its body and a request to `/result?…`.
fn page_html(url: &str) -> String {
    r#"<!doctype html>
<html><head><meta charset="utf-8"><title>running</title></head><body>running<script>
"use strict";
let reported = false;
function report(result) {
  if (reported) return;
  reported = true;
  document.title = result;
  document.body.textContent = result;
  fetch("/result?" + encodeURIComponent(result)).catch(() => {});
}
try {
  const enc = new TextEncoder();
  const bin = new Uint8Array(256).map((_, i) => i);
  const big = new Uint8Array(200000).map((_, i) => (i * 7) % 251);
  const text1 = "hello from chromium \u2713 \u00e9t\u00e9";
  const text2 = "second text message";
  const parts = [bin, enc.encode(text1), big, enc.encode(text2)];
  const total = parts.reduce((n, p) => n + p.length, 0);
  const expected = new Uint8Array(total);
  let off = 0;
  for (const p of parts) { expected.set(p, off); off += p.length; }
  const got = new Uint8Array(total);
  let gotLen = 0;
  let done = false;
  const timer = setTimeout(() => report("FAIL: timeout with " + gotLen + " of " + total + " bytes back"), 20000);
  const ws = new WebSocket("URL");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    if (ws.protocol !== "" || ws.extensions !== "") {
      report("FAIL: negotiated protocol " + JSON.stringify(ws.protocol) + " extensions " + JSON.stringify(ws.extensions));
      return;
    }
    ws.send(bin); ws.send(text1); ws.send(big.buffer); ws.send(text2);
  };
  ws.onmessage = (ev) => {
    if (!(ev.data instanceof ArrayBuffer)) { report("FAIL: a text message came back"); return; }
    const chunk = new Uint8Array(ev.data);
    if (gotLen + chunk.length > total) { report("FAIL: more bytes back than sent"); return; }
    got.set(chunk, gotLen);
    gotLen += chunk.length;
    if (gotLen === total) {
      for (let i = 0; i < total; i++) {
        if (got[i] !== expected[i]) { report("FAIL: byte " + i + " differs"); return; }
      }
      done = true;
      ws.close(1000, "done");
    }
  };
  ws.onerror = () => { if (!done) report("FAIL: error event with " + gotLen + " of " + total + " bytes back"); };
  ws.onclose = (ev) => {
    clearTimeout(timer);
    if (done) report("PASS code=" + ev.code + " clean=" + ev.wasClean);
    else report("FAIL: closed code=" + ev.code + " reason=" + JSON.stringify(ev.reason) + " after " + gotLen + " of " + total + " bytes");
  };
} catch (e) {
  report("FAIL: exception " + e);
}
</script></body></html>
"#
    .replace("URL", url)
}

/// A one-page HTTP server: `GET /` answers the page, `GET /result?R` hands `R` to the test,
/// anything else 404. Stops when dropped.
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    results: mpsc::Receiver<String>,
}

impl PageServer {
    /// Binds first, so the page's origin is known before the gateway's `origins`.
    fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind(localhost0()).expect("bind the page server");
        let addr = listener.local_addr().expect("page server address");
        (listener, addr)
    }

    fn serve(listener: TcpListener, html: String) -> PageServer {
        let addr = listener.local_addr().expect("page server address");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, results) = mpsc::channel();
        let flag = Arc::clone(&stop);
        // Blocking accepts; `drop` sets `stop` and connects once to wake the last one.
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                match stream {
                    Ok(stream) => serve_one(stream, &html, &tx),
                    // Out of descriptors or the like: do not spin.
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
            results,
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The wake-up: the accept it completes sees `stop`. If it cannot connect, the thread
        // is left to end with the test process rather than joined forever.
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok();
        if let Some(t) = self.thread.take().filter(|_| woken) {
            let _ = t.join();
        }
    }
}

fn serve_one(mut stream: TcpStream, html: &str, results: &mpsc::Sender<String>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if target == "/" {
        ("200 OK", "text/html; charset=utf-8", html.to_string())
    } else if let Some(result) = target.strip_prefix("/result?") {
        let _ = results.send(percent_decode(result));
        ("204 No Content", "text/plain", String::new())
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// A child in a process group of its own (the browser and its helpers), killed as a group.
struct Browser {
    child: Child,
}

impl Browser {
    fn kill(&mut self) {
        // `-pid` names the process group our own child leads (process_group(0) at spawn) and
        // is not reaped yet, so it names no one else. Already gone: nothing to kill.
        let _ = sys::kill(-i64::from(self.child.id()), sys::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Loads `page` in headless Chromium and returns what it reported to `/result`. Bounded by
/// [`TOOL_TIMEOUT`]; `Err` with the browser's output when it reported nothing.
fn run_chromium(page: &PageServer, extra_args: &[&str]) -> Result<String, String> {
    let profile = temp_dir();
    let log_path = profile.join("chromium.log");
    let log = fs::File::create(&log_path).expect("create chromium log");
    let log2 = log.try_clone().expect("clone chromium log");
    let url = format!("http://{}/", page.addr);
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.join("profile").display()
    ))
    .args(extra_args)
    .arg(&url)
    .stdin(Stdio::null())
    .stdout(Stdio::from(log))
    .stderr(Stdio::from(log2))
    .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("spawn {CHROMIUM}: {e}"))?;
    let mut browser = Browser { child };
    let end = Instant::now() + TOOL_TIMEOUT;
    let outcome = loop {
        match page.results.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => break Ok(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("the page server stopped".to_string())
            }
        }
        if let Ok(Some(status)) = browser.child.try_wait() {
            // One last look: the report may have landed just before it exited.
            break page
                .results
                .recv_timeout(Duration::from_millis(200))
                .map_err(|_| format!("chromium exited ({status}) without a result"));
        }
        if Instant::now() >= end {
            break Err(format!("no result from the page within {TOOL_TIMEOUT:?}"));
        }
    };
    browser.kill();
    let log_text = fs::read_to_string(&log_path).unwrap_or_default();
    let _ = fs::remove_dir_all(&profile);
    outcome.map_err(|e| format!("{e}\n--- chromium output ---\n{log_text}"))
}

/// A browser on a page from `page`'s origin opens `{scheme}://…/echo` on a DMZ listener served
/// by prepared connections, round-trips binary and text messages and closes cleanly.
fn browser_round_trip(scheme: &str, extra_args: &[&str]) {
    if !Path::new(CHROMIUM).is_file() {
        eprintln!(
            "SKIPPED: chromium not installed: no {CHROMIUM} (scripts/install-test-deps.sh installs it); \
             the real-browser {scheme}:// test did not run"
        );
        return;
    }
    let _heavy = heavy();
    let certs = (scheme == "wss").then(DevCerts::generate);
    let (listener, page_addr) = PageServer::bind();
    // Only the page's own origin may open the WebSocket, as a browser app would configure it.
    let mut extra = format!("origins = [\"http://{page_addr}\"]\n");
    if let Some(c) = &certs {
        extra.push_str(&c.listener_tls());
    }
    let t = Tunnel::start_with_dmz(
        &dmz_config_accept(&format!("{scheme}://127.0.0.1:0/echo"), &extra),
        2,
    );
    let ws_url = format!("{scheme}://127.0.0.1:{}/echo", t.public.port());
    let page = PageServer::serve(listener, page_html(&ws_url));
    let result = match run_chromium(&page, extra_args) {
        Ok(r) => r,
        Err(e) => panic!("chromium on {ws_url}: {e}\n{}", t.logs()),
    };
    assert!(
        result == "PASS code=1000 clean=true",
        "chromium on {ws_url} reported {result:?}\n{}",
        t.logs()
    );
    let s = t.dmz.stats();
    assert!(counter(&s, &["services", "echo", "accepted"]) >= 1, "{s:#}");
    assert_eq!(counter(&s, &["services", "echo", "ws_rejects"]), 0, "{s:#}");
    assert_no_panic("DMZ", &t.dmz);
}

#[test]
fn chromium_round_trips_messages_over_ws() {
    browser_round_trip("ws", &[]);
}

#[test]
fn chromium_round_trips_messages_over_wss() {
    // The development CA from `sallyport certs` is not in the browser's trust store, and
    // headless Chromium has no flag to add one: --ignore-certificate-errors makes it accept the
    // DMZ's certificate. So this checks the browser's TLS + WebSocket against the wss://
    // listener, not certificate verification (the Python test verifies against the CA).
    browser_round_trip("wss", &["--ignore-certificate-errors"]);
}

// ---------------------------------------------------------------------------------------------
// 3. A third-party client library: Python's websockets
// ---------------------------------------------------------------------------------------------

/// The client script. It uses websockets' asyncio client: the threaded sync client reads in a
/// background thread while the main thread writes, and with TLS 1.3 that races inside OpenSSL
/// (seen here: about 1 in 50 `wss://` connections never sent its upgrade request once the
/// server's session tickets arrived, and some closed the socket before reading the server's
/// Close; a byte-counting proxy showed the gateway's side complete). Not a gateway fault, so
/// not something to test here.
const PYTHON_CLIENT: &str = r#"
import asyncio, inspect, ssl, sys
import websockets

async def main(uri, ca):
    connect = websockets.connect
    kw = {}
    if "proxy" in inspect.signature(connect).parameters:
        kw["proxy"] = None
    if ca:
        kw["ssl"] = ssl.create_default_context(cafile=ca)
    parts = [bytes(range(256)), "hello from python websockets \u2713",
             bytes((i * 7) % 251 for i in range(150000)), "second text"]
    expected = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
    async with connect(uri, subprotocols=["tunnel"], open_timeout=10, close_timeout=10, **kw) as ws:
        proto = getattr(ws, "protocol", None)
        extensions = getattr(proto, "extensions", None)
        if extensions is None:
            extensions = ws.extensions
        print("subprotocol", ws.subprotocol)
        print("extensions", [type(e).__name__ for e in extensions])
        for p in parts:
            await ws.send(p)
        got = b""
        while len(got) < len(expected):
            m = await asyncio.wait_for(ws.recv(), 20)
            if isinstance(m, str):
                print("FAIL text message back")
                return 1
            got += m
        print("echo", "ok" if got == expected else "DIFFERS", len(got), len(expected))
        await ws.close(code=1000, reason="done")
        rcvd = getattr(proto, "close_rcvd", None) if proto is not None else None
        if rcvd is None:
            rcvd = getattr(ws, "close_rcvd", None)
        print("close_rcvd", rcvd.code if rcvd else None)
    return 0 if got == expected else 1

sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
"#;

fn python_websockets(scheme: &str) {
    let ok = Command::new("python3")
        .args(["-c", "import asyncio, websockets"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: python3 or its websockets module is not installed (scripts/install-test-deps.sh \
             installs it); the websockets {scheme}:// interop test did not run"
        );
        return;
    }
    let certs = (scheme == "wss").then(DevCerts::generate);
    let mut extra = "protocols = [\"tunnel\"]\n".to_string();
    if let Some(c) = &certs {
        extra.push_str(&c.listener_tls());
    }
    let t = Tunnel::start_with_dmz(
        &dmz_config_accept(&format!("{scheme}://127.0.0.1:0/echo"), &extra),
        2,
    );
    let uri = format!("{scheme}://127.0.0.1:{}/echo", t.public.port());
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PYTHON_CLIENT).arg(&uri);
    if let Some(c) = &certs {
        cmd.arg(c.path("ca.pem"));
    }
    let out = child::output_within(&mut cmd, TOOL_TIMEOUT)
        .expect("spawn python3")
        .unwrap_or_else(|_| {
            panic!(
                "python websockets client still running after {TOOL_TIMEOUT:?}\n{}",
                t.logs()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!(
        "python websockets on {uri} ({})\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        out.status,
        t.logs()
    );
    assert!(out.status.success(), "{what}");
    assert!(stdout.contains("subprotocol tunnel\n"), "{what}");
    // websockets offers permessage-deflate; a sallyport never negotiates an extension.
    assert!(stdout.contains("extensions []\n"), "{what}");
    assert!(stdout.contains("echo ok "), "{what}");
    // The closing handshake completed (the gateway's Close carried 1000), or the connection
    // ended without an error, which websockets would have raised above.
    let close = stdout
        .lines()
        .find_map(|l| l.strip_prefix("close_rcvd "))
        .unwrap_or("");
    assert!(close == "1000" || close == "None", "{what}");
    if close == "None" {
        eprintln!("note: the gateway closed the {scheme}:// connection without a Close frame");
    }
    let s = t.dmz.stats();
    assert!(counter(&s, &["services", "echo", "accepted"]) >= 1, "{s:#}");
    assert_eq!(counter(&s, &["services", "echo", "ws_rejects"]), 0, "{s:#}");
    assert_eq!(
        counter(&s, &["services", "echo", "tls_failures"]),
        0,
        "{s:#}"
    );
    assert_no_panic("DMZ", &t.dmz);
}

#[test]
fn python_websockets_client_interoperates_over_ws() {
    python_websockets("ws");
}

#[test]
fn python_websockets_client_interoperates_over_wss() {
    python_websockets("wss");
}

// ---------------------------------------------------------------------------------------------
// 3b. Many short connections: every upgrade answered, every close handshake completed
// ---------------------------------------------------------------------------------------------

/// Sequential short connections per scheme; enough that a fault of a few percent shows.
const CYCLES: usize = 200;

/// Wall-clock cap of the cycles (a hung upgrade costs the DMZ's 1 s handshake_timeout).
const CYCLES_BUDGET: Duration = Duration::from_secs(20);

/// A rustls client that trusts the CA of `certs` (no client certificate); with `resume`, it
/// resumes sessions from the gateway's tickets (rustls' default), else every handshake is full.
fn tls_client_config(certs: &DevCerts, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.path("ca.pem")).expect("read ca.pem") {
        roots.add(cert.expect("parse ca.pem")).expect("add CA root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = config;
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

/// One short connection: the upgrade, a message echoed, our Close 1000 answered by the
/// gateway's Close 1000, then the end of the stream.
fn cycle<S: Read + Write>(client: Result<WsClient<S>, String>) -> Result<(), String> {
    let mut c = client.map_err(|e| format!("upgrade: {e}"))?;
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    c.round_trip(&[&payload])
        .map_err(|e| format!("echo: {e}"))?;
    match c.close() {
        Ok(Some(1000)) => Ok(()),
        Ok(other) => Err(format!("close: the gateway's Close carried {other:?}")),
        Err(e) => Err(format!("close: {e}")),
    }
}

/// [`CYCLES`] sequential connections to a DMZ `{scheme}://` listener; every one must complete.
fn short_connections(scheme: &str) {
    let certs = (scheme == "wss").then(DevCerts::generate);
    let mut extra = "handshake_timeout = \"1s\"\n".to_string();
    if let Some(c) = &certs {
        extra.push_str(&c.listener_tls());
    }
    let t = Tunnel::start_with_dmz(
        &dmz_config_accept(&format!("{scheme}://127.0.0.1:0/echo"), &extra),
        4,
    );
    // wss://: every mix of session resumption and of the request's place in the handshake.
    let configs = certs
        .as_ref()
        .map(|c| [tls_client_config(c, true), tls_client_config(c, false)]);
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut done = 0;
    while done < CYCLES && start.elapsed() < CYCLES_BUDGET {
        let began = Instant::now();
        let result = match &configs {
            None => cycle(WsClient::connect(t.public, "/echo", None)),
            Some(configs) => cycle(WsClient::connect_tls(
                t.public,
                "/echo",
                &configs[done % 2],
                (done / 2) % 2 == 1,
            )),
        };
        if let Err(e) = result {
            failures.push(format!("#{done} after {:?}: {e}", began.elapsed()));
        }
        done += 1;
    }
    if !failures.is_empty() || done < CYCLES {
        let stderr = t.dmz.stderr();
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        panic!(
            "{scheme}://: {} of {done} short connections failed ({CYCLES} planned, {:?} spent); first ones:\n{}\n\
             --- DMZ stderr, last lines ---\n{}",
            failures.len(),
            start.elapsed(),
            failures.iter().take(8).cloned().collect::<Vec<_>>().join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert_no_panic("DMZ", &t.dmz);
}

#[test]
fn ws_short_connections_all_upgrade_and_close_cleanly() {
    short_connections("ws");
}

#[test]
fn wss_short_connections_all_upgrade_and_close_cleanly() {
    short_connections("wss");
}

// ---------------------------------------------------------------------------------------------
// 4. Keepalive
// ---------------------------------------------------------------------------------------------

/// With `ws_ping = "300ms"`: a client that goes quiet and never answers pings is pinged and then
/// closed within 2 × ws_ping (plus scheduling slack); a client that sends a message every 50 ms
/// for over 3 × ws_ping (and answers no ping either) is never closed.
#[test]
fn keepalive_closes_a_silent_client_and_spares_a_busy_one() {
    let _heavy = heavy();
    let echo = echo_server();
    let g = Gateway::start(&forward_config(
        "ka",
        "ws://127.0.0.1:0/ka",
        &format!("tcp://{}", echo.addr()),
        &format!("ws_ping = \"{}ms\"", PING.as_millis()),
    ));
    let addr = g.service("ka");

    let busy = thread::spawn(move || -> Result<usize, String> {
        let mut c = WsClient::connect(addr, "/ka", None)?;
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < PING * 4 {
            let msg = format!("busy {i}");
            c.round_trip(&[msg.as_bytes()])
                .map_err(|e| format!("message {i} after {:?}: {e}", start.elapsed()))?;
            i += 1;
            thread::sleep(Duration::from_millis(50));
        }
        c.round_trip(&[b"still here"])
            .map_err(|e| format!("after {:?}: {e}", start.elapsed()))?;
        let pings = c.pings;
        let code = c.close()?;
        if code != Some(1000) {
            return Err(format!("busy client's close answered with {code:?}"));
        }
        Ok(pings)
    });

    let mut silent = WsClient::connect(addr, "/ka", None)
        .unwrap_or_else(|e| panic!("silent client: {e}\n{}", g.stderr()));
    let last_sent = Instant::now();
    silent
        .round_trip(&[b"hello, then silence"])
        .unwrap_or_else(|e| panic!("silent client's round trip: {e}\n{}", g.stderr()));
    // Read (so we see what the gateway does) but never answer: to the gateway this peer is gone.
    let mut data = Vec::new();
    let mut close_code = None;
    let ended = loop {
        match silent.event(&mut data) {
            Ok(Some(ws::Event::Ping(_) | ws::Event::Pong(_))) => {}
            Ok(Some(ws::Event::Close { code, .. })) => {
                close_code = Some(code);
                break last_sent.elapsed();
            }
            Ok(Some(other)) => panic!("silent client got {other:?}\n{}", g.stderr()),
            Ok(None) => break last_sent.elapsed(),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break last_sent.elapsed(),
            Err(e) => panic!(
                "silent client not closed by keepalive ({e} after {:?}, {} pings)\n{}",
                last_sent.elapsed(),
                silent.pings,
                g.stderr()
            ),
        }
    };
    let bound = PING * 2 + KEEPALIVE_MARGIN;
    assert!(
        ended <= bound,
        "silent client closed only after {ended:?} (ws_ping {PING:?}, bound {bound:?})\n{}",
        g.stderr()
    );
    assert!(
        silent.pings >= 1,
        "the gateway closed the silent client after {ended:?} without pinging it first\n{}",
        g.stderr()
    );
    // After its Close the gateway ends the TCP connection too (the peer will never answer).
    if close_code.is_some() {
        match silent.read_rest() {
            Ok(rest) => assert!(rest.is_empty(), "{} bytes after the Close", rest.len()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "TCP still open {:?} after the keepalive Close: {e}\n{}",
                last_sent.elapsed(),
                g.stderr()
            ),
        }
    }
    eprintln!(
        "silent client: {} ping(s), closed after {ended:?} with Close {close_code:?}",
        silent.pings
    );

    match busy.join().expect("busy client thread panicked") {
        Ok(pings) => eprintln!("busy client: never closed; {pings} ping(s) seen"),
        Err(e) => panic!("busy client was disturbed: {e}\n{}", g.stderr()),
    }
    // Both tunnels are gone, the closed one included (its upstream leg released too).
    let s = g.wait_stats("tunnels.active == 0", STATE_TIMEOUT, |s| {
        s["tunnels"]["active"].as_u64() == Some(0)
    });
    assert_eq!(counter(&s, &["services", "ka", "accepted"]), 2, "{s:#}");
    assert_no_panic("keepalive", &g);
    g.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. Hostile handshakes and frames
// ---------------------------------------------------------------------------------------------

/// Sends `request` on a fresh connection and returns the response head (status line and
/// headers) the gateway answered before closing. The gateway may reset the connection after its
/// answer (unread request bytes); what arrived before counts.
fn http_answer(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = connect(addr);
    tcp.set_read_timeout(Some(WS_TIMEOUT))
        .expect("set_read_timeout");
    // A refusal may come (and the socket close) before all of a large request is written.
    let _ = tcp.write_all(request);
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no answer to {:?}: {e}; got {:?}",
                String::from_utf8_lossy(&request[..request.len().min(80)]),
                String::from_utf8_lossy(&response)
            ),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, _)) => head.to_string(),
        None => text,
    }
}

#[test]
fn hostile_handshakes_and_frames_never_crash_the_gateway() {
    let t = Tunnel::start_with_dmz(
        &dmz_config_accept(
            "ws://127.0.0.1:0/echo",
            &format!(
                "origins = [\"{ALLOWED_ORIGIN}\"]\nws_max_message = \"64KiB\"\nhandshake_timeout = \"1s\""
            ),
        ),
        4,
    );
    let addr = t.public;
    let host = addr.to_string();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let good = |path: &str| upgrade_request(&host, path, key, Some(ALLOWED_ORIGIN));

    // HTTP refusals: (what, request, expected status, a header the answer must carry).
    let many_headers: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let refusals: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("unknown path", good("/nope"), 404, None),
        (
            "plain GET without upgrade",
            format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nOrigin: {ALLOWED_ORIGIN}\r\n\r\n"),
            426,
            None,
        ),
        (
            "oversized header",
            format!(
                "GET /echo HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
                "y".repeat(20_000)
            ),
            431,
            None,
        ),
        (
            "more than 64 headers",
            format!("GET /echo HTTP/1.1\r\nHost: {host}\r\n{many_headers}\r\n"),
            431,
            None,
        ),
        (
            "garbage",
            "\x16\x03\x01garbage\r\n\r\n".to_string(),
            400,
            None,
        ),
        (
            "origin not allowed",
            upgrade_request(&host, "/echo", key, Some("http://evil.example")),
            403,
            None,
        ),
        (
            "no origin while origins are configured",
            upgrade_request(&host, "/echo", key, None),
            403,
            None,
        ),
        ("POST", good("/echo").replacen("GET", "POST", 1), 405, None),
        (
            "WebSocket version 8",
            good("/echo").replace("Version: 13", "Version: 8"),
            426,
            Some("sec-websocket-version: 13"),
        ),
        (
            "no Host",
            good("/echo").replace(&format!("Host: {host}\r\n"), ""),
            400,
            None,
        ),
        (
            "bad Sec-WebSocket-Key",
            good("/echo").replace(key, "c2hvcnQ="),
            400,
            None,
        ),
    ];
    for (what, request, status, header) in &refusals {
        let head = http_answer(addr, request.as_bytes());
        let status_line = head.lines().next().unwrap_or("");
        assert!(
            status_line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: expected {status}, got {head:?}\n{}",
            t.logs()
        );
        if let Some(h) = header {
            assert!(
                head.to_ascii_lowercase().contains(h),
                "{what}: no {h:?} in {head:?}"
            );
        }
    }
    let rejects = refusals.len() as u64;
    t.dmz.wait_stats(
        &format!("services.echo.ws_rejects == {rejects}"),
        STATE_TIMEOUT,
        |s| s["services"]["echo"]["ws_rejects"].as_u64() == Some(rejects),
    );

    // Protocol violations after a valid upgrade: (what, raw bytes, Close code expected).
    let mut unmasked = Vec::new();
    ws::encode_frame(ws::OpCode::Binary, true, b"not masked", None, &mut unmasked);
    let mut rsv1 = Vec::new();
    ws::encode_frame(
        ws::OpCode::Binary,
        true,
        b"rsv1",
        Some([1, 2, 3, 4]),
        &mut rsv1,
    );
    rsv1[0] |= 0x40;
    let unknown_opcode = vec![0x83, 0x84, 1, 2, 3, 4, b'a', b'b', b'c', b'd'];
    let mut long_ping = vec![0x89, 0x80 | 126, 0, 126, 1, 2, 3, 4];
    long_ping.extend_from_slice(&[b'p'; 126]);
    let mut stray_continuation = Vec::new();
    ws::encode_frame(
        ws::OpCode::Continuation,
        true,
        b"x",
        Some([1, 2, 3, 4]),
        &mut stray_continuation,
    );
    // A message over ws_max_message (64 KiB): 1 MiB announced, 70 000 bytes sent.
    let (h, n) = ws::encode_header(ws::OpCode::Binary, true, 1 << 20, Some([1, 2, 3, 4]));
    let mut too_big = h[..n].to_vec();
    too_big.extend_from_slice(&[0u8; 70_000]);
    let violations: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked client frame", unmasked, 1002),
        ("reserved bit set", rsv1, 1002),
        ("unknown opcode", unknown_opcode, 1002),
        ("ping over 125 bytes", long_ping, 1002),
        ("continuation without a message", stray_continuation, 1002),
        ("message over ws_max_message", too_big, 1009),
    ];
    for (what, bytes, code) in &violations {
        let mut c = WsClient::connect(addr, "/echo", Some(ALLOWED_ORIGIN))
            .unwrap_or_else(|e| panic!("upgrade before {what}: {e}\n{}", t.logs()));
        // The gateway may close before all of a large frame is written.
        let _ = c.send_raw(bytes);
        match c.closed_by_gateway() {
            Ok(Some(got)) => assert_eq!(
                got,
                *code,
                "{what}: Close {got}, expected {code}\n{}",
                t.logs()
            ),
            Ok(None) => panic!(
                "{what}: the gateway closed without a Close frame (expected {code})\n{}",
                t.logs()
            ),
            Err(e) => panic!("{what}: {e}\n{}", t.logs()),
        }
    }

    // The gateway still serves a good client, and counted only the HTTP refusals.
    let good_client = |label: &str| {
        let mut c = WsClient::connect(addr, "/echo", Some(ALLOWED_ORIGIN))
            .unwrap_or_else(|e| panic!("good client {label}: {e}\n{}", t.logs()));
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        if let Err(e) = c.round_trip(&[b"binary after abuse", b"text after abuse", &big]) {
            panic!("good client {label}: {e}\n{}", t.logs());
        }
        match c.close() {
            Ok(Some(1000)) => {}
            other => panic!(
                "good client {label}: close ended with {other:?}\n{}",
                t.logs()
            ),
        }
    };
    good_client("after the refusals and violations");
    let s = t.dmz.stats();
    assert_eq!(
        counter(&s, &["services", "echo", "ws_rejects"]),
        rejects,
        "only HTTP refusals count as ws_rejects: {s:#}"
    );

    // Clients that give up or stall mid-request: no answer is owed, nothing may break.
    drop(connect(addr));
    {
        let mut c = connect(addr);
        let _ = c.write_all(b"GET /echo HTTP/1.1\r\nHo");
        let _ = c.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    {
        // handshake_timeout = 1s: a stalled head is closed, whatever it is answered.
        let mut c = connect(addr);
        c.set_read_timeout(Some(WS_TIMEOUT))
            .expect("set_read_timeout");
        c.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
            .expect("write a partial head");
        let mut rest = Vec::new();
        match c.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "stalled upgrade request not closed within {WS_TIMEOUT:?} (handshake_timeout 1s): {e}\n{}",
                t.logs()
            ),
        }
    }
    good_client("after abandoned and stalled requests");
    assert_no_panic("DMZ", &t.dmz);
    assert_no_panic("internal", &t.internal);
}

/// An internal gateway whose back-end speaks WebSocket (`connect = "ws://…"` on a reverse://
/// service): each tunnel taken from the pool upgrades to gateway B's WebSocket listener, which
/// forwards to the echo. Bytes come back intact, 16 MiB each way included.
#[test]
fn internal_service_connects_its_back_end_over_websocket() {
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo");
    let b = Gateway::start(&forward_config(
        "b",
        "ws://127.0.0.1:0/tunnel",
        &format!("tcp://{}", echo.addr()),
        "",
    ));
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "5s", 0, None));
    let internal = Gateway::start(&format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"reverse://{}/echo\"\n\
         connect = \"ws://{}/tunnel\"\nprepared = 2\n",
        dmz.reverse(),
        b.service("b")
    ));
    dmz.wait_prepared("echo", 2, STATE_TIMEOUT);
    let public = dmz.service("echo");
    let back = echo_round_trip(public, b"through a websocket back-end").expect("round trip");
    assert_eq!(back, b"through a websocket back-end");
    if let Err(e) = bulk_echo(public, 16 << 20, 0x0000_0bac_4e0d) {
        panic!(
            "bulk over a WebSocket back-end: {e}\n--- internal ---\n{}\n--- b ---\n{}",
            internal.stderr(),
            b.stderr()
        );
    }
    // B saw WebSocket clients: the upgrades came from the internal gateway.
    let stats = b.stats();
    assert!(
        stats["services"]["b"]["accepted"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
    internal.stop();
    dmz.stop();
    b.stop();
}
