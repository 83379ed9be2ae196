//! PROXY protocol end to end, with haproxy as the real peer on both sides: haproxy in front of
//! a DMZ (`send-proxy`, `send-proxy-v2`) whose service has `accept_proxy`, and haproxy behind
//! an internal gateway (`accept-proxy`) whose service has `proxy_protocol`; a forwarding
//! service sending headers (also over a WebSocket hop into a second gateway that receives
//! them); and what a listed source that sends no valid header gets (closed, counted) versus an
//! unlisted one (its bytes are payload).
//!
//! Back-ends here record the header they got with a small parser of their own (not the
//! product's), so a bug shared by encoder and parser cannot hide. Clients bind chosen
//! 127.0.0.x sources so the addresses asserted are the client's, not a default. haproxy is
//! skipped with a message when it is not installed (`scripts/install-test-deps.sh`).
#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use sallyport_tests::{free_port, temp_dir, EchoServer, Gateway, IO_TIMEOUT, STATE_TIMEOUT};

/// What a recording back-end read at the start of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// v1 or v2 (`version`), TCP: the addresses it carried.
    Tcp {
        version: u8,
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN` or v2 `LOCAL`.
    Unknown { version: u8 },
    /// Not a PROXY header (the bytes, up to 32).
    Invalid(Vec<u8>),
}

/// A back-end that reads a PROXY header at the start of each connection, reports it, then
/// echoes the rest of the stream (half-close answered with half-close).
struct Recorder {
    addr: SocketAddr,
    seen: mpsc::Receiver<Seen>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, seen) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let tx = tx.clone();
                thread::spawn(move || {
                    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
                    let seen = read_header(&mut stream);
                    let valid = !matches!(seen, Seen::Invalid(_));
                    let mut buf = [0u8; 16 << 10];
                    if let Seen::Unknown { .. } = seen {
                        // The internal gateway's back-end probe sends a LOCAL / UNKNOWN header
                        // and closes at once: a health check, not a tunnel, so not recorded.
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tx.send(seen).is_err() || stream.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    } else if tx.send(seen).is_err() || !valid {
                        return;
                    }
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    stream.shutdown(Shutdown::Write).ok();
                });
            }
        });
        Recorder { addr, seen }
    }

    /// The next connection's header.
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(STATE_TIMEOUT)
            .expect("the back-end got a connection")
    }

    /// No connection reached the back-end within a short wait.
    fn assert_none(&self) {
        if let Ok(seen) = self.seen.recv_timeout(Duration::from_millis(300)) {
            panic!("a connection reached the back-end: {seen:?}");
        }
    }
}

/// Reads exactly one PROXY header (v1 line or v2 header) from `stream`: a parser written
/// from the spec, independent of the product's.
fn read_header(stream: &mut TcpStream) -> Seen {
    let mut first = [0u8; 1];
    if stream.read_exact(&mut first).is_err() {
        return Seen::Invalid(Vec::new());
    }
    let mut bytes = first.to_vec();
    if first[0] == b'P' {
        while !bytes.ends_with(b"\r\n") && bytes.len() < 108 {
            if stream.read_exact(&mut first).is_err() {
                return Seen::Invalid(bytes);
            }
            bytes.push(first[0]);
        }
        let line = String::from_utf8_lossy(&bytes[..bytes.len().saturating_sub(2)]).to_string();
        let fields: Vec<&str> = line.split(' ').collect();
        return match fields.as_slice() {
            ["PROXY", "UNKNOWN", ..] => Seen::Unknown { version: 1 },
            ["PROXY", "TCP4" | "TCP6", s, d, sp, dp] => {
                let parse = |ip: &str, port: &str| -> Option<SocketAddr> {
                    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
                };
                match (parse(s, sp), parse(d, dp)) {
                    (Some(source), Some(destination)) => Seen::Tcp {
                        version: 1,
                        source,
                        destination,
                    },
                    _ => Seen::Invalid(bytes),
                }
            }
            _ => Seen::Invalid(bytes),
        };
    }
    let mut fixed = [0u8; 15];
    if stream.read_exact(&mut fixed).is_err() {
        return Seen::Invalid(bytes);
    }
    bytes.extend_from_slice(&fixed);
    if &bytes[..12] != b"\r\n\r\n\0\r\nQUIT\n" || bytes[12] >> 4 != 2 {
        bytes.truncate(32);
        return Seen::Invalid(bytes);
    }
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let mut body = vec![0u8; len];
    if stream.read_exact(&mut body).is_err() {
        return Seen::Invalid(bytes);
    }
    let (command, family) = (bytes[12] & 0x0f, bytes[13]);
    match (command, family) {
        (0, _) => Seen::Unknown { version: 2 },
        (1, 0x11) if len >= 12 => {
            let ip = |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Seen::Tcp {
                version: 2,
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        (1, 0x21) if len >= 36 => {
            let ip = |at: usize| {
                let octets: [u8; 16] = body[at..at + 16].try_into().expect("16 bytes");
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Seen::Tcp {
                version: 2,
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => Seen::Invalid(bytes),
    }
}

/// A TCP connection to `to` from `source` (a 127.0.0.x address, port chosen by the kernel).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&to.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {to} from {source}: {e}"));
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Writes `payload`, half-closes, reads to EOF.
fn round_trip(mut stream: TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).expect("write");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read to EOF");
    back
}

/// A running haproxy (`haproxy -f CFG -db`), killed on drop.
struct Haproxy {
    child: Child,
    log: std::path::PathBuf,
}

impl Haproxy {
    /// Whether haproxy is installed; else the caller skips, saying so.
    fn available() -> bool {
        let found = Command::new("haproxy")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!(
                "SKIPPED: haproxy is not installed (scripts/install-test-deps.sh installs it)"
            );
        }
        found
    }

    /// Starts haproxy with `sections` (frontends, backends) after the usual defaults and a
    /// readiness frontend, and waits until that frontend answers (which touches no backend).
    fn start(sections: &str) -> Haproxy {
        let ready = free_port();
        let config = format!(
            "global\n    maxconn 1000\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
             frontend ready\n    mode http\n    bind 127.0.0.1:{ready}\n    http-request return status 200\n\n\
             {sections}"
        );
        let dir = temp_dir();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, &config).expect("write haproxy.cfg");
        let log = dir.join("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("haproxy.err")).expect("log"),
            ))
            .spawn()
            .expect("spawn haproxy");
        let mut haproxy = Haproxy { child, log };
        let addr = SocketAddr::from(([127, 0, 0, 1], ready));
        let up = sallyport_tests::child::poll_until(STATE_TIMEOUT, || {
            sallyport_tests::http_get(addr, "/").is_ok()
        });
        if !up {
            let err = std::fs::read_to_string(haproxy.log.with_file_name("haproxy.err"));
            haproxy.child.kill().ok();
            panic!("haproxy not ready\nconfig:\n{config}\nstderr: {err:?}");
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A DMZ whose service `echo` takes PROXY headers from `accept_proxy` (plain tcp on
/// 127.0.0.1:0), and an internal gateway that connects its tunnels to `backend` with
/// `internal_extra` lines on its service; both pools full.
fn tunnel(accept_proxy: &str, backend: SocketAddr, internal_extra: &str) -> (Gateway, Gateway) {
    let dmz = Gateway::start(&format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [reverse]\nlisten = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"reverse://echo\"\n\
         timeout = \"5s\"\naccept_proxy = {accept_proxy}\n"
    ));
    let internal = Gateway::start(&format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"reverse://{}/echo\"\nconnect = \"tcp://{backend}\"\n\
         prepared = 4\nretry_max = \"200ms\"\n{internal_extra}\n",
        dmz.reverse()
    ));
    dmz.wait_prepared("echo", 4, STATE_TIMEOUT);
    internal.wait_prepared("echo", 4, STATE_TIMEOUT);
    (dmz, internal)
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);

/// (a) haproxy in front of the DMZ (`send-proxy-v2` and `send-proxy`), `accept_proxy` on the
/// DMZ, `proxy_protocol = "v2"` on the internal side: the back-end learns the real client's
/// address and port as haproxy saw it, and the bytes come back.
#[test]
fn haproxy_in_front_of_the_dmz() {
    if !Haproxy::available() {
        return;
    }
    let backend = Recorder::start();
    let (dmz, internal) = tunnel(
        "[\"127.0.0.1/32\"]",
        backend.addr,
        "proxy_protocol = \"v2\"",
    );
    let public = dmz.service("echo");
    let (v2_port, v1_port) = (free_port(), free_port());
    let _haproxy = Haproxy::start(&format!(
        "frontend v2\n    bind 127.0.0.1:{v2_port}\n    default_backend dmz_v2\n\n\
         backend dmz_v2\n    server dmz {public} send-proxy-v2\n\n\
         frontend v1\n    bind 127.0.0.1:{v1_port}\n    default_backend dmz_v1\n\n\
         backend dmz_v1\n    server dmz {public} send-proxy\n"
    ));
    for port in [v2_port, v1_port] {
        let client = connect_from(CLIENT, SocketAddr::from(([127, 0, 0, 1], port)));
        let me = client.local_addr().expect("local_addr");
        let payload = format!("hello from {me} via haproxy port {port}").into_bytes();
        let back = round_trip(client, &payload);
        assert_eq!(
            back,
            payload,
            "echo through haproxy:{port}\n{}\n{}",
            dmz.stderr(),
            internal.stderr()
        );
        assert_eq!(
            backend.next(),
            Seen::Tcp {
                version: 2,
                source: me,
                destination: public,
            },
            "the back-end's header names the client haproxy saw"
        );
    }
    let stats = dmz.stats();
    assert_eq!(
        stats["services"]["echo"]["proxy_header_failures"], 0,
        "{stats:#}"
    );
}

/// (b) haproxy as the back-end (`accept-proxy`) behind the internal gateway, v1 and v2: a TCP
/// echo through it comes back (haproxy rejects a connection without a valid header), and an
/// HTTP frontend answers with `src` as it read it from the header: the client's address.
#[test]
fn haproxy_behind_the_internal_gateway() {
    if !Haproxy::available() {
        return;
    }
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo");
    let (tcp_port, http_port) = (free_port(), free_port());
    let _haproxy = Haproxy::start(&format!(
        "frontend tcp_in\n    bind 127.0.0.1:{tcp_port} accept-proxy\n    default_backend echo\n\n\
         backend echo\n    server echo {}\n\n\
         frontend http_in\n    mode http\n    bind 127.0.0.1:{http_port} accept-proxy\n    \
         http-request return status 200 content-type text/plain lf-string \"src=%[src]:%[src_port] dst=%[dst]:%[dst_port]\"\n",
        echo.addr()
    ));
    for version in ["v1", "v2"] {
        let extra = format!("proxy_protocol = \"{version}\"");
        let tcp_backend = SocketAddr::from(([127, 0, 0, 1], tcp_port));
        let (dmz, internal) = tunnel("[]", tcp_backend, &extra);
        let public = dmz.service("echo");
        let payload = vec![0x5a; 100_000];
        let back = round_trip(connect_from(CLIENT, public), &payload);
        assert!(
            back == payload,
            "{version}: {} of {} bytes back through haproxy accept-proxy\n{}",
            back.len(),
            payload.len(),
            internal.stderr()
        );
        drop((dmz, internal));

        let http_backend = SocketAddr::from(([127, 0, 0, 1], http_port));
        let (dmz, internal) = tunnel("[]", http_backend, &extra);
        let public = dmz.service("echo");
        let client = connect_from(CLIENT, public);
        let me = client.local_addr().expect("local_addr");
        let response = round_trip(client, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "{version}: {response}\n{}",
            internal.stderr()
        );
        assert!(
            response.ends_with(&format!("src={me} dst={public}")),
            "{version}: haproxy read another address from the header: {response}"
        );
    }
}

/// (c) A forwarding service with `proxy_protocol = "v1"`: the header names the client socket's
/// address and the service's listen address. And over a WebSocket hop: gateway A sends the
/// header ahead of its upgrade request to gateway B, whose ws:// listener takes headers from
/// 127.0.0.1 and sends its own (v2) to the back-end: the client's address survives both hops.
#[test]
fn forwarding_service_sends_the_header() {
    let backend = Recorder::start();
    let gateway = Gateway::start(&sallyport_tests::forward_config(
        "fwd",
        "tcp://127.0.0.1:0",
        &format!("tcp://{}", backend.addr),
        "proxy_protocol = \"v1\"",
    ));
    let listen = gateway.service("fwd");
    let client = connect_from(CLIENT, listen);
    let me = client.local_addr().expect("local_addr");
    assert_eq!(round_trip(client, b"forwarded"), b"forwarded");
    assert_eq!(
        backend.next(),
        Seen::Tcp {
            version: 1,
            source: me,
            destination: listen,
        }
    );

    let b = Gateway::start(&sallyport_tests::forward_config(
        "b",
        "ws://127.0.0.1:0/hop",
        &format!("tcp://{}", backend.addr),
        "accept_proxy = [\"127.0.0.1/32\"]\nproxy_protocol = \"v2\"",
    ));
    let b_listen = b.service("b");
    let a = Gateway::start(&sallyport_tests::forward_config(
        "a",
        "tcp://127.0.0.1:0",
        &format!("ws://{b_listen}/hop"),
        "proxy_protocol = \"v1\"",
    ));
    assert_two_hops(&a, &b, &backend, 2, b"two hops");
}

/// A client of gateway A (service `a`) echoes `payload` through A and B (service `b`, which
/// takes A's PROXY header), and the back-end's header (`version`) names that client as the
/// source and B's listener as the destination.
fn assert_two_hops(a: &Gateway, b: &Gateway, backend: &Recorder, version: u8, payload: &[u8]) {
    let client = connect_from(CLIENT, a.service("a"));
    let me = client.local_addr().expect("local_addr");
    let back = round_trip(client, payload);
    let what = String::from_utf8_lossy(payload);
    assert_eq!(back, payload, "{what}\n{}\n{}", a.stderr(), b.stderr());
    assert_eq!(
        backend.next(),
        Seen::Tcp {
            version,
            source: me,
            destination: b.service("b"),
        },
        "{what}: B took A's header as the client and sent it on"
    );
}

/// (d) From a listed source, garbage, a truncated header, or nothing before EOF: closed, not
/// paired (the back-end sees nothing), counted. From an unlisted source a PROXY line is
/// payload. A `LOCAL` header (a balancer's health check) leaves the peer as the client.
#[test]
fn malformed_headers_are_closed_and_counted() {
    let backend = Recorder::start();
    let (dmz, _internal) = tunnel(
        "[\"127.0.0.1/32\"]",
        backend.addr,
        "proxy_protocol = \"v1\"",
    );
    let public = dmz.service("echo");
    let listed = Ipv4Addr::LOCALHOST;
    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("truncated v1", b"PROXY TCP4 192.0.2.1 19"),
        ("truncated v2", b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0"),
        ("nothing", b""),
    ];
    for (n, (name, bytes)) in cases.iter().enumerate() {
        let mut client = connect_from(listed, public);
        // The gateway may reset the connection as soon as it has seen enough to refuse it,
        // before this side's write or half-close: both may then fail, and that is the answer.
        let _ = client.write_all(bytes);
        let _ = client.shutdown(Shutdown::Write);
        let mut back = Vec::new();
        // Closed: EOF or a reset, and nothing comes back.
        let _ = client.read_to_end(&mut back);
        assert!(back.is_empty(), "{name}: got {back:?}");
        let want = n as u64 + 1;
        dmz.wait_stats(&format!("{name}: {want} failures"), STATE_TIMEOUT, |s| {
            s["services"]["echo"]["proxy_header_failures"].as_u64() == Some(want)
        });
    }
    backend.assert_none();
    let metrics = dmz.metrics();
    assert!(
        metrics.contains("sallyport_proxy_header_failures_total{service=\"echo\"} 4\n"),
        "{metrics}"
    );
    assert!(
        dmz.stderr().contains("accept_proxy source reset"),
        "a log line says why: {}",
        dmz.stderr()
    );

    // Unlisted: the PROXY-looking line is payload, and the client is the peer itself.
    let unlisted = Ipv4Addr::new(127, 0, 0, 9);
    let client = connect_from(unlisted, public);
    let me = client.local_addr().expect("local_addr");
    let line = b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2\r\nhello";
    assert_eq!(round_trip(client, line), line);
    assert_eq!(
        backend.next(),
        Seen::Tcp {
            version: 1,
            source: me,
            destination: public,
        }
    );

    // LOCAL from a listed source, coalesced with payload: the peer is the client.
    let client = connect_from(listed, public);
    let me = client.local_addr().expect("local_addr");
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(b"after LOCAL");
    assert_eq!(round_trip(client, &local), b"after LOCAL");
    assert_eq!(
        backend.next(),
        Seen::Tcp {
            version: 1,
            source: me,
            destination: public,
        }
    );
    let stats = dmz.stats();
    assert_eq!(
        stats["services"]["echo"]["proxy_header_failures"], 4,
        "{stats:#}"
    );
}

/// The header goes on the raw TCP stream ahead of TLS (`tls://`, `wss://` upstreams), and a
/// `tls://` / `wss://` listener with `accept_proxy` reads it ahead of the ClientHello: gateway
/// A sends it to gateway B over TLS (and over WebSocket in TLS), B takes its source as the
/// client and sends a header of its own to the back-end.
#[test]
fn header_precedes_tls_and_websocket_in_tls() {
    let certs = sallyport_tests::DevCerts::generate();
    let backend = Recorder::start();
    for (scheme, path) in [("tls", ""), ("wss", "/hop")] {
        let b = Gateway::start(&sallyport_tests::forward_config(
            "b",
            &format!("{scheme}://127.0.0.1:0{path}"),
            &format!("tcp://{}", backend.addr),
            &format!(
                "{}\naccept_proxy = [\"127.0.0.1/32\"]\nproxy_protocol = \"v1\"",
                certs.listener_tls()
            ),
        ));
        let b_listen = b.service("b");
        let a = Gateway::start(&sallyport_tests::forward_config(
            "a",
            "tcp://127.0.0.1:0",
            &format!("{scheme}://localhost:{}{path}", b_listen.port()),
            &format!("{}\nproxy_protocol = \"v2\"", certs.connect_tls()),
        ));
        assert_two_hops(&a, &b, &backend, 1, format!("over {scheme}").as_bytes());
    }
}

/// A header that arrives in pieces (three segments) from a listed source is waited for and
/// read whole; the payload coalesced with its last piece goes on.
#[test]
fn header_in_pieces_is_reassembled() {
    let backend = Recorder::start();
    let (dmz, _internal) = tunnel(
        "[\"127.0.0.1/32\"]",
        backend.addr,
        "proxy_protocol = \"v2\"",
    );
    let public = dmz.service("echo");
    let mut client = connect_from(Ipv4Addr::LOCALHOST, public);
    let line = b"PROXY TCP4 198.51.100.20 192.0.2.80 40001 443\r\npayload";
    for piece in [&line[..3], &line[3..20], &line[20..]] {
        client.write_all(piece).expect("write");
        // Separate segments (NODELAY): the gateway must wait for the rest, not judge a prefix.
        thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(round_trip(client, b""), b"payload");
    assert_eq!(
        backend.next(),
        Seen::Tcp {
            version: 2,
            source: "198.51.100.20:40001".parse().expect("addr"),
            destination: public,
        }
    );
}
