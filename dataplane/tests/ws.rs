//! WebSocket legs through the real data plane: a `ws://` listener paired with prepared
//! connections, path routing and HTTP refusals, a two-gateway virtual private connection
//! (TCP → WebSocket → TCP), and keepalive. The clients here speak the protocol with the
//! crate's own sans-IO codecs over blocking sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::prepared_pair;
use sallyport_dataplane::admission::{Admission, SourcePolicy};
use sallyport_dataplane::wire::{http, socks5, ws};
use sallyport_dataplane::{
    Dataplane, OwnedConn, PublicIndex, PublicService, PublicWs, RelayMode, Upstream, UpstreamWs,
};

fn public_ws(path: &str, ping: Option<Duration>) -> PublicWs {
    PublicWs {
        path: path.to_string(),
        origins: Vec::new(),
        protocols: vec!["tunnel".to_string()],
        max_message: 1 << 20,
        ping,
        handshake_timeout: Duration::from_secs(5),
    }
}

fn service(
    name: &str,
    listen: SocketAddr,
    ws: Option<PublicWs>,
    upstream: Option<Upstream>,
) -> PublicService {
    PublicService {
        name: name.to_string(),
        idle_timeout: None,
        listen,
        timeout: Duration::from_secs(5),
        tls: None,
        ws,
        upstream,
        admission: Admission::Always,
        policy: SourcePolicy::default(),
        accept_proxy: Vec::new(),
    }
}

fn start(services: Vec<PublicService>) -> Dataplane {
    common::start(1, RelayMode::Splice, services, None)
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A blocking WebSocket client over the crate's codecs.
struct Client {
    tcp: TcpStream,
    decoder: ws::Decoder,
    pending: Vec<u8>,
}

impl Client {
    /// Connects, sends the upgrade request and `first` (a frame) in one write, and reads 101.
    fn connect(addr: SocketAddr, path: &str, first: Option<&[u8]>) -> (Client, Option<String>) {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let key = http::generate_key([7; 16]);
        let mut out = Vec::new();
        http::encode_upgrade_request(
            &addr.to_string(),
            path,
            &key,
            &["tunnel".to_string()],
            &mut out,
        );
        if let Some(payload) = first {
            ws::encode_frame(
                ws::OpCode::Binary,
                true,
                payload,
                Some([1, 2, 3, 4]),
                &mut out,
            );
        }
        tcp.write_all(&out).unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = tcp.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before the 101");
            head.extend_from_slice(&chunk[..n]);
            if let Some((resp, used)) = http::parse_upgrade_response(&head, &key).unwrap() {
                let client = Client {
                    tcp,
                    decoder: ws::Decoder::new(ws::Role::Client, 1 << 24),
                    pending: head[used..].to_vec(),
                };
                return (client, resp.protocol);
            }
        }
    }

    fn send(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        ws::encode_frame(
            ws::OpCode::Binary,
            true,
            payload,
            Some([9, 8, 7, 6]),
            &mut out,
        );
        self.tcp.write_all(&out).unwrap();
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).unwrap();
    }

    /// The next event; data chunks are appended to `data`.
    fn event(&mut self, data: &mut Vec<u8>) -> ws::Event {
        loop {
            if !self.pending.is_empty() {
                let input = std::mem::take(&mut self.pending);
                let (used, event) = self.decoder.decode(&input, data).unwrap();
                self.pending = input[used..].to_vec();
                if let Some(e) = event {
                    return e;
                }
                continue;
            }
            let mut chunk = vec![0u8; 64 << 10];
            let n = self.tcp.read(&mut chunk).unwrap();
            assert!(n > 0, "EOF without a Close frame");
            self.pending = chunk[..n].to_vec();
        }
    }

    /// Reads data until `len` bytes came.
    fn read_data(&mut self, len: usize) -> Vec<u8> {
        let mut data = Vec::new();
        while data.len() < len {
            match self.event(&mut data) {
                ws::Event::Data { .. } => {}
                other => panic!("expected data, got {other:?}"),
            }
        }
        data
    }
}

#[test]
fn ws_client_is_paired_and_frames_carry_the_stream() {
    let dp = start(vec![service(
        "echo",
        "127.0.0.1:0".parse().unwrap(),
        Some(public_ws("/echo", None)),
        None,
    )]);
    let (dmz_side, mut internal) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
        .unwrap();
    // The upgrade request and the first frame in one segment (wire rule 1).
    let (mut client, protocol) =
        Client::connect(dp.service_addr(PublicIndex(0)), "/echo?x=1", Some(b"first"));
    assert_eq!(protocol.as_deref(), Some("tunnel"));
    let mut head = vec![0u8; 15];
    internal.read_exact(&mut head).unwrap();
    let (reply, used) = socks5::parse_reply(&head).unwrap().unwrap();
    assert_eq!(reply.rep, 0);
    assert_eq!(&head[used..], b"first");

    // A ping is answered; a large message crosses in frames both ways.
    let mut ping = Vec::new();
    ws::encode_ping(b"are you there", Some([5, 5, 5, 5]), &mut ping);
    client.send_raw(&ping);
    let mut data = Vec::new();
    assert_eq!(
        client.event(&mut data),
        ws::Event::Pong(b"are you there".to_vec())
    );
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    client.send(&big);
    let mut got = vec![0u8; big.len()];
    internal.read_exact(&mut got).unwrap();
    assert!(got == big);
    internal.write_all(&big).unwrap();
    assert!(client.read_data(big.len()) == big);

    // Client Close → the prepared side sees EOF; it finishes and closes → the client gets Close.
    let mut close = Vec::new();
    ws::encode_close(Some(1000), "bye", Some([1, 1, 1, 1]), &mut close);
    client.send_raw(&close);
    let mut rest = Vec::new();
    internal.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    internal.shutdown(std::net::Shutdown::Write).unwrap();
    let mut data = Vec::new();
    match client.event(&mut data) {
        ws::Event::Close { code, .. } => assert_eq!(code, Some(1000)),
        other => panic!("expected Close, got {other:?}"),
    }
}

fn http_status(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn services_share_a_port_by_path_and_bad_requests_get_clear_answers() {
    let addr = free_addr();
    let dp = start(vec![
        service("a", addr, Some(public_ws("/a", None)), None),
        service("b", addr, Some(public_ws("/b", None)), None),
    ]);
    assert_eq!(
        dp.service_addr(PublicIndex(0)),
        dp.service_addr(PublicIndex(1))
    );
    let (dmz_b, mut internal_b) = prepared_pair();
    dp.park(PublicIndex(1), OwnedConn::new(dmz_b, Vec::new()))
        .unwrap();
    let (mut client, _) = Client::connect(addr, "/b", None);
    client.send(b"to b");
    let mut head = vec![0u8; 14];
    internal_b.read_exact(&mut head).unwrap();
    assert_eq!(&head[10..], b"to b");

    let upgrade = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    };
    assert!(http_status(addr, upgrade("/nope").as_bytes()).contains(" 404 "));
    assert!(http_status(addr, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").contains(" 426 "));
    let huge = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(20_000)
    );
    assert!(http_status(addr, huge.as_bytes()).contains(" 431 "));
    assert!(http_status(addr, b"\x16\x03\x01garbage\r\n\r\n").contains(" 400 "));
    let rejects: u64 = dp.snapshot().services.iter().map(|s| s.ws_rejects).sum();
    assert_eq!(rejects, 4);
}

/// Gateway A: `accept tcp`, `connect ws://B/vpc`; gateway B: `accept ws /vpc`, `connect tcp`
/// to an echo server. Any TCP client talks to the echo server across WebSocket.
#[test]
fn virtual_private_connection_tcp_over_websocket() {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => s.write_all(&buf[..n]).unwrap(),
            }
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let b = start(vec![service(
        "vpc",
        "127.0.0.1:0".parse().unwrap(),
        Some(public_ws("/vpc", Some(Duration::from_secs(30)))),
        Some(Upstream {
            addr: echo_addr,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            ws: None,
            proxy_protocol: None,
            held: None,
        }),
    )]);
    let b_addr = b.service_addr(PublicIndex(0));
    let a = start(vec![service(
        "vpc",
        "127.0.0.1:0".parse().unwrap(),
        None,
        Some(Upstream {
            addr: b_addr,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            ws: Some(UpstreamWs {
                host: b_addr.to_string(),
                path: "/vpc".to_string(),
                max_message: 1 << 20,
                ping: Some(Duration::from_secs(30)),
            }),
            proxy_protocol: None,
            held: None,
        }),
    )]);
    let mut client = TcpStream::connect(a.service_addr(PublicIndex(0))).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Sent before the WebSocket upgrade between the gateways has even completed.
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let expected = payload.clone();
    let mut writer = client.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    if let Err(e) = client.read_to_end(&mut back) {
        panic!(
            "VPC stalled ({e}) after {} bytes back\nA: {:?}\nB: {:?}",
            back.len(),
            a.snapshot(),
            b.snapshot()
        );
    }
    w.join().unwrap();
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "bytes differ across the VPC");
}

#[test]
fn silent_ws_peer_is_closed_by_keepalive_and_busy_one_is_not() {
    let ping = Duration::from_millis(200);
    let dp = start(vec![service(
        "ka",
        "127.0.0.1:0".parse().unwrap(),
        Some(public_ws("/ka", Some(ping))),
        None,
    )]);
    // A busy client keeps talking: never closed.
    let (dmz1, mut internal1) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz1, Vec::new()))
        .unwrap();
    let (mut busy, _) = Client::connect(dp.service_addr(PublicIndex(0)), "/ka", None);
    let mut head = vec![0u8; 10];
    internal1.read_exact(&mut head).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        busy.send(b"x");
        let mut b = [0u8; 1];
        internal1.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    busy.send(b"still here");
    let mut got = [0u8; 10];
    internal1.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");

    // A client that answers nothing (not even pings) is closed after ~2 intervals.
    let (dmz2, mut internal2) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz2, Vec::new()))
        .unwrap();
    let (silent, _) = Client::connect(dp.service_addr(PublicIndex(0)), "/ka", None);
    let mut head = vec![0u8; 10];
    internal2.read_exact(&mut head).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    match internal2.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not closed by keepalive"
    );
    drop(silent);
}
