//! WebSocket and forwarding services end to end, in one process on loopback: the virtual
//! private connection (gateway A `tcp://` → `ws://`/`wss://` → gateway B → TCP echo), a DMZ
//! `ws://` listener served by an internal gateway's prepared connections, WebSocket services
//! sharing a port by path, and a forwarding service whose upstream refuses.
//!
//! The WebSocket client here speaks the protocol with the data plane's sans-IO codecs over a
//! blocking socket. Waits poll a condition with a deadline; nothing sleeps to wait.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;

use common::{internal_config, start_in, wait_for, DEADLINE};
use sallyport::gateway::Gateway;
use sallyport_dataplane::wire::{http, ws};
use sallyport_kit::backend::EchoServer;
use sallyport_kit::pki::{Ca, Role};

fn start(name: &str, text: &str) -> Gateway {
    start_in(Path::new("."), name, text)
}

fn echo() -> EchoServer {
    EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

fn public(g: &Gateway, name: &str) -> SocketAddr {
    g.public
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| *a)
        .unwrap_or_else(|| panic!("no public listener {name}"))
}

/// Sends `len` patterned bytes through `addr` from a second thread and reads them back.
fn tcp_round_trip(addr: SocketAddr, len: usize) {
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let payload: Vec<u8> = (0..len as u32).map(|i| (i * 7 % 251) as u8).collect();
    let expected = payload.clone();
    let mut writer = client.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    client
        .read_to_end(&mut back)
        .unwrap_or_else(|e| panic!("{e} after {} bytes back", back.len()));
    w.join().unwrap();
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "bytes differ");
}

/// Like [`tcp_round_trip`], but the client reads every byte back before it closes, so no
/// close handshake runs while data is in flight.
fn tcp_echo_then_close(addr: SocketAddr, len: usize) {
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let payload: Vec<u8> = (0..len as u32).map(|i| (i * 11 % 249) as u8).collect();
    let expected = payload.clone();
    let mut writer = client.try_clone().unwrap();
    let w = std::thread::spawn(move || writer.write_all(&payload).unwrap());
    let mut back = vec![0u8; len];
    client.read_exact(&mut back).unwrap();
    w.join().unwrap();
    assert!(back == expected, "bytes differ");
}

/// A blocking WebSocket client over the data plane's codecs.
struct WsClient {
    tcp: TcpStream,
    decoder: ws::Decoder,
    pending: Vec<u8>,
}

impl WsClient {
    /// Upgrade to `path`; returns the client and the chosen subprotocol.
    fn connect(addr: SocketAddr, path: &str, protocols: &[&str]) -> (WsClient, Option<String>) {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        let key = http::generate_key([3; 16]);
        let mut out = Vec::new();
        let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        http::encode_upgrade_request(&addr.to_string(), path, &key, &protocols, &mut out);
        tcp.write_all(&out).unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = tcp.read(&mut chunk).unwrap();
            assert!(
                n > 0,
                "closed before the 101: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.extend_from_slice(&chunk[..n]);
            if let Some((resp, used)) = http::parse_upgrade_response(&head, &key)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&head)))
            {
                let client = WsClient {
                    tcp,
                    decoder: ws::Decoder::new(ws::Role::Client, 1 << 24),
                    pending: head[used..].to_vec(),
                };
                return (client, resp.protocol);
            }
        }
    }

    fn send(&mut self, opcode: ws::OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        ws::encode_frame(opcode, true, payload, Some([9, 8, 7, 6]), &mut out);
        self.tcp.write_all(&out).unwrap();
    }

    /// Reads message payload until `len` bytes came.
    fn read_data(&mut self, len: usize) -> Vec<u8> {
        let mut data = Vec::new();
        while data.len() < len {
            if self.pending.is_empty() {
                let mut chunk = vec![0u8; 64 << 10];
                let n = self.tcp.read(&mut chunk).unwrap();
                assert!(n > 0, "EOF after {} of {len} bytes", data.len());
                self.pending = chunk[..n].to_vec();
            }
            let input = std::mem::take(&mut self.pending);
            let (used, event) = self.decoder.decode(&input, &mut data).unwrap();
            self.pending = input[used..].to_vec();
            match event {
                None | Some(ws::Event::Data { .. }) | Some(ws::Event::Pong(_)) => {}
                Some(other) => panic!("expected data, got {other:?}"),
            }
        }
        data
    }
}

/// The first line of the answer to `request` (read up to its end, so a 101 does not wait for
/// the tunnel to close).
fn http_status(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => response.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&response).trim_end().to_string()
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Gateway B: `accept ws://…/vpc`, `connect tcp://ECHO`; gateway A: `accept tcp://`, `connect
/// ws://B/vpc`. A TCP client talks to the echo server through both.
#[test]
fn virtual_private_connection_through_two_gateways() {
    let echo = echo();
    let b = start(
        "vpc-b.toml",
        &format!(
            r#"
            [gateway]
            workers = 1
            cores = []
            [[service]]
            name = "vpc"
            accept = "ws://127.0.0.1:0/vpc"
            connect = "tcp://{}"
            ws_ping = "30s"
            "#,
            echo.addr()
        ),
    );
    let b_addr = public(&b, "vpc");
    let a = start(
        "vpc-a.toml",
        &format!(
            r#"
            [gateway]
            workers = 2
            cores = []
            [[service]]
            name = "vpc"
            accept = "tcp://127.0.0.1:0"
            connect = "ws://{b_addr}/vpc"
            ws_ping = "30s"
            "#
        ),
    );
    let a_addr = public(&a, "vpc");
    tcp_round_trip(a_addr, 2_000_000);
    tcp_round_trip(a_addr, 1);

    wait_for("both tunnels closed", || {
        a.stats().json()["tunnels"]["active"] == 0 && b.stats().json()["tunnels"]["active"] == 0
    });
    let sa = a.stats().json();
    assert_eq!(sa["services"]["vpc"]["role"], "forward");
    assert_eq!(sa["services"]["vpc"]["accepted"], 2);
    assert_eq!(sa["services"]["vpc"]["upstream_failures"], 0);
    let sb = b.stats().json();
    assert_eq!(sb["services"]["vpc"]["accepted"], 2);
    assert_eq!(sb["services"]["vpc"]["ws_rejects"], 0);
    assert_eq!(a.stats().prepared("vpc"), None);
    let metrics = b.stats().prometheus();
    assert!(
        metrics.contains("sallyport_ws_rejects_total{service=\"vpc\"} 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("sallyport_upstream_failures_total{service=\"vpc\"} 0\n"));
}

/// The same over `wss://`: B terminates TLS with the development certificate, A verifies it.
#[test]
fn virtual_private_connection_over_wss() {
    let dir = std::env::temp_dir().join(format!("sallyport-ws-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new();
    ca.write(&dir, "ca").unwrap();
    ca.leaf(Role::Server, "b", &["localhost", "127.0.0.1"])
        .write(&dir, "b")
        .unwrap();

    let echo = echo();
    let b = start_in(
        &dir,
        "vpc-b.toml",
        &format!(
            r#"
            [gateway]
            workers = 1
            cores = []
            [[service]]
            name = "vpc"
            accept = "wss://127.0.0.1:0/vpc"
            tls = {{ cert = "b.pem", key = "b.key" }}
            connect = "tcp://{}"
            "#,
            echo.addr()
        ),
    );
    let b_addr = public(&b, "vpc");
    let a = start_in(
        &dir,
        "vpc-a.toml",
        &format!(
            r#"
            [gateway]
            workers = 1
            cores = []
            [[service]]
            name = "vpc"
            accept = "tcp://127.0.0.1:0"
            connect = "wss://localhost:{}/vpc"
            connect_tls = {{ ca = "ca.pem" }}
            "#,
            b_addr.port()
        ),
    );
    // Not tcp_round_trip: with the half-close racing the last bytes, B's close of a wss://
    // leg can reset A before A read them (B closes with A's close_notify unread, which turns
    // its FIN into a RST); reported to the data plane.
    tcp_echo_then_close(public(&a, "vpc"), 1_000_000);
    tcp_echo_then_close(public(&a, "vpc"), 10);
    assert_eq!(b.stats().json()["services"]["vpc"]["tls_failures"], 0);
    assert_eq!(b.stats().json()["services"]["vpc"]["accepted"], 2);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A DMZ `ws://` listener served by prepared connections of an internal gateway: WebSocket
/// clients reach the TCP echo server behind it.
#[test]
fn dmz_ws_listener_is_served_by_reverse_connections() {
    let echo = echo();
    let dmz = start(
        "dmz.toml",
        r#"
        [gateway]
        workers = 1
        cores = []
        [reverse]
        listen = "127.0.0.1:0"
        [[service]]
        name = "echo"
        accept = "ws://127.0.0.1:0/echo"
        connect = "reverse://echo"
        protocols = ["tunnel"]
        ws_ping = "30s"
        "#,
    );
    let internal = start(
        "internal.toml",
        &internal_config(dmz.reverse_addr.unwrap(), echo.addr(), ""),
    );
    wait_for("2 prepared connections", || {
        dmz.stats().prepared("echo") == Some(2)
    });
    let addr = public(&dmz, "echo");
    let (mut client, protocol) = WsClient::connect(addr, "/echo?token=1", &["x", "tunnel"]);
    assert_eq!(protocol.as_deref(), Some("tunnel"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    client.send(ws::OpCode::Binary, &big);
    assert!(client.read_data(big.len()) == big);
    // Text messages carry the stream too.
    client.send(ws::OpCode::Text, b"hello");
    assert_eq!(client.read_data(5), b"hello");

    // An unknown path gets 404, a plain GET 426; both are counted.
    assert!(http_status(addr, &upgrade_request("/nope")).contains(" 404 "));
    assert!(http_status(addr, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").contains(" 426 "));
    wait_for("2 ws_rejects", || {
        dmz.stats().json()["services"]["echo"]["ws_rejects"] == 2
    });
    assert_eq!(dmz.stats().json()["services"]["echo"]["role"], "dmz");
    drop(client);
    drop(internal);
}

/// Several WebSocket services on one address, routed by path; DMZ and forwarding services mix.
#[test]
fn websocket_services_share_one_port() {
    let echo = echo();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = start(
        "shared.toml",
        &format!(
            r#"
            [gateway]
            workers = 2
            cores = []
            [reverse]
            listen = "127.0.0.1:0"
            [[service]]
            name = "a"
            accept = "ws://127.0.0.1:{port}/a"
            connect = "tcp://{echo}"
            [[service]]
            name = "parked"
            accept = "ws://127.0.0.1:{port}/parked"
            connect = "reverse://parked"
            timeout = "200ms"
            [[service]]
            name = "b"
            accept = "ws://127.0.0.1:{port}/b"
            connect = "tcp://{echo}"
            origins = ["https://app.example.com"]
            "#,
            echo = echo.addr()
        ),
    );
    let addr = public(&g, "a");
    assert_eq!(addr.port(), port);
    assert_eq!(public(&g, "b"), addr);
    assert_eq!(public(&g, "parked"), addr);
    for path in ["/a", "/a?x=1"] {
        let (mut client, _) = WsClient::connect(addr, path, &[]);
        client.send(ws::OpCode::Binary, b"to a");
        assert_eq!(client.read_data(4), b"to a");
    }
    // /b requires an allowed Origin.
    assert!(http_status(addr, &upgrade_request("/b")).contains(" 403 "));
    let with_origin = upgrade_request("/b").replace(
        "Host: x\r\n",
        "Host: x\r\nOrigin: https://app.example.com\r\n",
    );
    assert!(http_status(addr, &with_origin).contains(" 101 "));
    assert!(http_status(addr, &upgrade_request("/c")).contains(" 404 "));
    // Counted by the worker right after it answered: wait rather than race it.
    wait_for("b accepted", || {
        g.stats().json()["services"]["b"]["accepted"] == 1
    });
    let s = g.stats().json();
    assert_eq!(s["services"]["a"]["accepted"], 2);
    // The shared listener counts its refusals on its first service.
    assert_eq!(s["services"]["a"]["ws_rejects"], 2);
}

/// A forwarding service whose upstream refuses mirrors the refusal: the client is reset.
#[test]
fn refused_upstream_resets_the_client() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let g = start(
        "fwd.toml",
        &format!(
            r#"
            [gateway]
            workers = 1
            cores = []
            [[service]]
            name = "fwd"
            accept = "tcp://127.0.0.1:0"
            connect = "tcp://{closed}"
            connect_timeout = "1s"
            "#
        ),
    );
    // A reset that beats `connect`'s return is reported by `connect` itself.
    let read = TcpStream::connect(public(&g, "fwd")).and_then(|mut client| {
        client.set_read_timeout(Some(DEADLINE))?;
        client.read(&mut [0u8; 16])
    });
    match read {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    wait_for("upstream_failures = 1", || {
        g.stats().json()["services"]["fwd"]["upstream_failures"] == 1
    });
    assert!(g
        .stats()
        .prometheus()
        .contains("sallyport_upstream_failures_total{service=\"fwd\"} 1\n"));
}
