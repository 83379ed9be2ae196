//! `Dataplane::link` through the real data plane: two connections negotiated elsewhere (here by
//! the test, standing in for the control thread) relayed as one tunnel. The DMZ use — a
//! WebSocket server front whose upgrade is already answered, plain or TLS — and the host use —
//! a plain front (the stream's target) and a TLS back (the reverse leg). The WebSocket peer
//! speaks the protocol with the crate's own codecs over blocking sockets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{prepared_pair, wait_until};
use rustls::pki_types::ServerName;
use sallyport_dataplane::leg::Leg;
use sallyport_dataplane::metrics::{Reason, Side};
use sallyport_dataplane::wire::ws;
use sallyport_dataplane::{Dataplane, Link, OwnedConn, RelayMode, WsLink};
use sallyport_kit::pki::Pki;

fn start() -> Dataplane {
    common::start(1, RelayMode::Splice, Vec::new(), None)
}

fn ws_link(ping: Option<Duration>, max_message: usize) -> Option<WsLink> {
    Some(WsLink { ping, max_message })
}

/// A masked client frame.
fn frame(opcode: ws::OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ws::encode_frame(opcode, fin, payload, Some([3, 1, 4, 1]), &mut out);
    out
}

fn close_frame(code: u16) -> Vec<u8> {
    let mut out = Vec::new();
    ws::encode_close(Some(code), "bye", Some([2, 7, 1, 8]), &mut out);
    out
}

/// The browser's side of a WebSocket whose upgrade is done: frames over any byte stream.
struct Browser<S: Read + Write> {
    io: S,
    decoder: ws::Decoder,
    pending: Vec<u8>,
}

/// What the browser received, message by message (data chunks of one message joined).
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping,
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The transport ended (EOF or reset) without a Close frame.
    End,
}

impl<S: Read + Write> Browser<S> {
    fn new(io: S) -> Browser<S> {
        Browser {
            io,
            decoder: ws::Decoder::new(ws::Role::Client, 1 << 24),
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).unwrap();
        self.io.flush().unwrap();
    }

    /// The next whole message or control frame.
    fn next(&mut self) -> Got {
        let mut data = Vec::new();
        loop {
            while !self.pending.is_empty() {
                let input = std::mem::take(&mut self.pending);
                let (used, event) = self.decoder.decode(&input, &mut data).unwrap();
                self.pending = input[used..].to_vec();
                match event {
                    None => {}
                    Some(ws::Event::Data { fin: false, .. }) => {}
                    Some(ws::Event::Data {
                        kind, fin: true, ..
                    }) => {
                        let message = std::mem::take(&mut data);
                        return match kind {
                            ws::MessageKind::Binary => Got::Binary(message),
                            ws::MessageKind::Text => Got::Text(message),
                        };
                    }
                    Some(ws::Event::Ping(_)) => return Got::Ping,
                    Some(ws::Event::Pong(p)) => return Got::Pong(p),
                    Some(ws::Event::Close { code, .. }) => return Got::Close(code),
                }
            }
            let mut chunk = vec![0u8; 64 << 10];
            match self.io.read(&mut chunk) {
                Ok(0) | Err(_) => return Got::End,
                Ok(n) => self.pending = chunk[..n].to_vec(),
            }
        }
    }

    /// Binary messages until `len` bytes came (the relay frames as it reads).
    fn binary(&mut self, len: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while all.len() < len {
            match self.next() {
                Got::Binary(m) => all.extend_from_slice(&m),
                other => panic!("expected binary data, got {other:?}"),
            }
        }
        all
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i * seed % 251) as u8).collect()
}

/// Waits until the link's tunnel has closed, and returns the snapshot then.
fn closed(dp: &Dataplane) -> sallyport_dataplane::metrics::Snapshot {
    wait_until("link closed", || dp.snapshot().links_active == 0);
    dp.snapshot()
}

#[test]
fn websocket_front_relays_messages_as_bytes_and_close_becomes_fin() {
    let dp = start();
    let (front, browser) = prepared_pair();
    let (back, mut host) = prepared_pair();
    // What the control thread read after the upgrade request: a text message, and the first
    // half of a binary frame whose rest is still on the wire.
    let split = frame(ws::OpCode::Binary, true, b" world");
    let mut leftover = frame(ws::OpCode::Text, true, b"hello");
    leftover.extend_from_slice(&split[..4]);
    dp.link(Link {
        front: OwnedConn::new(front, leftover),
        ws: ws_link(None, 1 << 20),
        back: OwnedConn::new(back, b"early".to_vec()),
    })
    .unwrap();
    let mut browser = Browser::new(browser);
    // The back's leftover comes first, as a binary message.
    assert_eq!(browser.next(), Got::Binary(b"early".to_vec()));
    browser.send(&split[4..]);
    let mut got = [0u8; 11];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello world");

    // Pings are answered; fragmented and large messages cross as bytes, both ways.
    let mut ping = Vec::new();
    ws::encode_ping(b"there?", Some([5, 5, 5, 5]), &mut ping);
    browser.send(&ping);
    assert_eq!(browser.next(), Got::Pong(b"there?".to_vec()));
    let mut fragmented = frame(ws::OpCode::Text, false, b"frag");
    fragmented.extend(frame(ws::OpCode::Continuation, true, b"mented"));
    browser.send(&fragmented);
    let mut got = [0u8; 10];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"fragmented");
    let big = pattern(700_000, 7);
    browser.send(&frame(ws::OpCode::Binary, true, &big));
    let mut got = vec![0u8; big.len()];
    host.read_exact(&mut got).unwrap();
    assert!(got == big, "upstream bytes differ");
    let down = pattern(900_000, 13);
    host.write_all(&down).unwrap();
    assert!(
        browser.binary(down.len()) == down,
        "downstream bytes differ"
    );

    // The browser's Close is a FIN towards the host; the host's last bytes still reach the
    // browser, then its FIN is our Close.
    browser.send(&close_frame(1000));
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    host.write_all(b"last words").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    assert_eq!(browser.next(), Got::Binary(b"last words".to_vec()));
    assert_eq!(browser.next(), Got::Close(Some(1000)));
    assert_eq!(browser.next(), Got::End);

    let snap = closed(&dp);
    assert_eq!((snap.links_total, snap.tunnels_total), (1, 1));
    assert_eq!(snap.tunnels_active, 0);
    assert_eq!(snap.closes[0], 1, "completed: {snap:?}");
    assert_eq!(snap.bytes_upstream, 11 + 10 + big.len() as u64);
    assert_eq!(snap.bytes_downstream, 5 + down.len() as u64 + 10);
}

#[test]
fn host_fin_first_is_a_close_after_its_bytes_and_the_browser_may_still_send() {
    let dp = start();
    let (front, browser) = prepared_pair();
    let (back, mut host) = prepared_pair();
    dp.link(Link {
        front: OwnedConn::new(front, Vec::new()),
        ws: ws_link(None, 1 << 20),
        back: OwnedConn::new(back, Vec::new()),
    })
    .unwrap();
    let mut browser = Browser::new(browser);
    let tail = pattern(300_000, 11);
    host.write_all(&tail).unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    assert!(browser.binary(tail.len()) == tail);
    assert_eq!(browser.next(), Got::Close(Some(1000)));
    // Half-closed: the browser's answer still goes through before its own Close.
    browser.send(&frame(ws::OpCode::Binary, true, b"after your close"));
    browser.send(&close_frame(1000));
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"after your close");
    let snap = closed(&dp);
    assert_eq!(snap.closes[0], 1, "completed: {snap:?}");
}

#[test]
fn bad_frames_in_the_leftover_fail_the_link_with_a_protocol_close() {
    let dp = start();
    let (front, browser) = prepared_pair();
    let (back, mut host) = prepared_pair();
    // An unmasked frame from a client breaks RFC 6455.
    let mut unmasked = Vec::new();
    ws::encode_frame(ws::OpCode::Binary, true, b"nope", None, &mut unmasked);
    dp.link(Link {
        front: OwnedConn::new(front, unmasked),
        ws: ws_link(None, 1 << 20),
        back: OwnedConn::new(back, Vec::new()),
    })
    .unwrap();
    let mut browser = Browser::new(browser);
    assert_eq!(
        browser.next(),
        Got::Close(Some(ws::close_code::PROTOCOL_ERROR))
    );
    let mut rest = Vec::new();
    match host.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    let snap = closed(&dp);
    let protocol = snap
        .close_reasons
        .iter()
        .find(|(r, _)| r.reason == Reason::Protocol && r.side == Some(Side::Client));
    assert!(protocol.is_some(), "{:?}", snap.close_reasons);
}

#[test]
fn a_message_over_max_message_is_refused_with_1009() {
    let dp = start();
    let (front, browser) = prepared_pair();
    let (back, _host) = prepared_pair();
    dp.link(Link {
        front: OwnedConn::new(front, Vec::new()),
        ws: ws_link(None, 1000),
        back: OwnedConn::new(back, Vec::new()),
    })
    .unwrap();
    let mut browser = Browser::new(browser);
    browser.send(&frame(ws::OpCode::Binary, true, &[0u8; 999]));
    browser.send(&frame(ws::OpCode::Binary, true, &[0u8; 1001]));
    assert_eq!(
        browser.next(),
        Got::Close(Some(ws::close_code::MESSAGE_TOO_BIG))
    );
    closed(&dp);
}

#[test]
fn a_silent_browser_is_pinged_then_closed_and_a_busy_one_is_not() {
    let dp = start();
    let ping = Duration::from_millis(200);
    let (front, browser) = prepared_pair();
    let (back, mut host) = prepared_pair();
    dp.link(Link {
        front: OwnedConn::new(front, Vec::new()),
        ws: ws_link(Some(ping), 1 << 20),
        back: OwnedConn::new(back, Vec::new()),
    })
    .unwrap();
    let mut browser = Browser::new(browser);
    // Busy for six intervals: never closed.
    let started = Instant::now();
    while started.elapsed() < ping * 6 {
        browser.send(&frame(ws::OpCode::Binary, true, b"x"));
        let mut b = [0u8; 1];
        host.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(dp.snapshot().links_active, 1);
    // Then silent: a ping after an interval, the close after another.
    let silent = Instant::now();
    assert_eq!(browser.next(), Got::Ping);
    let mut rest = Vec::new();
    match host.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    assert!(
        silent.elapsed() < Duration::from_secs(5),
        "not closed by keepalive"
    );
    let snap = closed(&dp);
    let keepalive = snap
        .close_reasons
        .iter()
        .find(|(r, _)| r.reason == Reason::Keepalive);
    assert!(keepalive.is_some(), "{:?}", snap.close_reasons);
}

fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![pki.server.cert.clone()], pki.server.key_der())
            .unwrap(),
    )
}

fn client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Runs `handshake` on `sock` to completion the way the control thread does, and gives the
/// connection with its established session (and what it read past the handshake).
fn negotiate(sock: TcpStream, handshake: sallyport_dataplane::tls::Handshake) -> OwnedConn {
    sock.set_nonblocking(true).unwrap();
    let mut leg = Leg::tls(OwnedFd::from(sock), handshake);
    wait_until("TLS handshake", || leg.handshake().unwrap());
    let (fd, session) = leg.into_parts();
    OwnedConn {
        stream: TcpStream::from(fd),
        leftover: Vec::new(),
        tls: session,
    }
}

/// The host's use: the stream's target (plain) in front, the reverse leg to the DMZ (TLS)
/// behind; bytes and half-closes both ways.
#[test]
fn host_links_a_plain_target_with_a_tls_reverse_leg() {
    let pki = Pki::localhost();
    let dp = start();
    // The DMZ end of the reverse leg: a TLS server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(&pki);
    let up = pattern(500_000, 17);
    let down = pattern(400_000, 19);
    let (up2, down2) = (up.clone(), down.clone());
    let dmz = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The browser's bytes, already queued behind the second reply.
        tls.write_all(b"queued;").unwrap();
        tls.write_all(&down2).unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).unwrap();
        assert!(got == up2, "bytes over the TLS leg differ");
    });
    let reverse = TcpStream::connect(addr).unwrap();
    let handshake = sallyport_dataplane::tls::Handshake::client(
        client_config(&pki),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let back = negotiate(reverse, handshake);
    let (front, mut target) = prepared_pair();
    target
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    dp.link(Link {
        front: OwnedConn::new(front, Vec::new()),
        ws: None,
        back,
    })
    .unwrap();
    let mut got = Vec::new();
    target.read_to_end(&mut got).unwrap();
    assert_eq!(&got[..7], b"queued;");
    assert!(got[7..] == down[..], "bytes to the target differ");
    target.write_all(&up).unwrap();
    target.shutdown(Shutdown::Write).unwrap();
    dmz.join().unwrap();
    let snap = closed(&dp);
    assert_eq!(snap.closes[0], 1, "completed: {snap:?}");
    assert_eq!(snap.links_total, 1);
}

/// A plain front's leftover goes to the back first, the back's to the front.
#[test]
fn plain_legs_deliver_both_leftovers_first() {
    let dp = start();
    let (front, mut target) = prepared_pair();
    let (back, mut dmz) = prepared_pair();
    dp.link(Link {
        front: OwnedConn::new(front, b"to back;".to_vec()),
        ws: None,
        back: OwnedConn::new(back, b"to front;".to_vec()),
    })
    .unwrap();
    target.write_all(b"more up").unwrap();
    dmz.write_all(b"more down").unwrap();
    let mut up = [0u8; 15];
    dmz.read_exact(&mut up).unwrap();
    assert_eq!(&up, b"to back;more up");
    let mut down = [0u8; 18];
    target.read_exact(&mut down).unwrap();
    assert_eq!(&down, b"to front;more down");
    drop(target);
    drop(dmz);
    closed(&dp);
}

/// The DMZ's use over wss: the browser's TLS session in `front.tls`, the frames that came
/// after its upgrade request in `front.leftover`.
#[test]
fn wss_front_carries_its_tls_session_and_leftover_frames() {
    let pki = Pki::localhost();
    let dp = start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client_config = client_config(&pki);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let browser = std::thread::spawn(move || {
        let conn = rustls::ClientConnection::new(
            client_config,
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut browser = Browser::new(rustls::StreamOwned::new(conn, tcp));
        // Rides with the handshake's end: the "control thread" keeps it as leftover or in
        // the session, either way it reaches the host first.
        browser.send(&frame(ws::OpCode::Text, true, b"first;"));
        ready_rx.recv().unwrap();
        browser.send(&frame(ws::OpCode::Binary, true, b"second"));
        let reply = browser.binary(5);
        assert_eq!(reply, b"hello");
        browser.send(&close_frame(1000));
        assert_eq!(browser.next(), Got::Close(Some(1000)));
    });
    let (sock, _) = listener.accept().unwrap();
    let handshake = sallyport_dataplane::tls::Handshake::server(server_config(&pki)).unwrap();
    let mut front = negotiate(sock, handshake);
    // Read what the session opens, as the control thread reads past the upgrade request.
    if let Some(session) = front.tls.as_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 256];
        while front.leftover.len() < 12 && Instant::now() < deadline {
            match session.read(&mut buf).unwrap() {
                sallyport_dataplane::tls::Read::Data(n) => {
                    front.leftover.extend_from_slice(&buf[..n])
                }
                sallyport_dataplane::tls::Read::End => panic!("browser closed"),
                sallyport_dataplane::tls::Read::NeedInput => {
                    let mut fd_read = || {
                        let space = session.input_space();
                        match (&front.stream).read(space) {
                            Ok(n) => Some(n),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                            Err(e) => panic!("{e}"),
                        }
                    };
                    match fd_read() {
                        Some(0) => session.transport_ended(),
                        Some(n) => session.received(n),
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        }
    }
    assert_eq!(front.leftover.len(), 12, "the first frame, masked");
    let (back, mut host) = prepared_pair();
    dp.link(Link {
        front,
        ws: ws_link(Some(Duration::from_secs(30)), 1 << 20),
        back: OwnedConn::new(back, Vec::new()),
    })
    .unwrap();
    ready_tx.send(()).unwrap();
    let mut got = [0u8; 12];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"first;second");
    host.write_all(b"hello").unwrap();
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    host.shutdown(Shutdown::Write).unwrap();
    browser.join().unwrap();
    let snap = closed(&dp);
    assert_eq!(snap.closes[0], 1, "completed: {snap:?}");
}

#[test]
fn link_is_given_back_when_the_workers_are_gone() {
    let dp = start();
    dp.shutdown();
    let (front, _a) = prepared_pair();
    let (back, _b) = prepared_pair();
    let link = Link {
        front: OwnedConn::new(front, Vec::new()),
        ws: None,
        back: OwnedConn::new(back, Vec::new()),
    };
    let back = dp.link(link).unwrap_err();
    assert!(back.ws.is_none());
}

/// The browser sent its last message and its Close before the link was made: both reach the
/// host (bytes, then FIN), and the host's answer still comes back before our Close.
#[test]
fn a_close_already_in_the_leftover_loses_no_byte() {
    let dp = start();
    let (front, browser) = prepared_pair();
    let (back, mut host) = prepared_pair();
    let mut leftover = frame(ws::OpCode::Text, true, b"all I had");
    leftover.extend(close_frame(1000));
    dp.link(Link {
        front: OwnedConn::new(front, leftover),
        ws: ws_link(None, 1 << 20),
        back: OwnedConn::new(back, Vec::new()),
    })
    .unwrap();
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"all I had");
    host.write_all(b"noted").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    let mut browser = Browser::new(browser);
    assert_eq!(browser.next(), Got::Binary(b"noted".to_vec()));
    assert_eq!(browser.next(), Got::Close(Some(1000)));
    let snap = closed(&dp);
    assert_eq!(snap.closes[0], 1, "completed: {snap:?}");
}

/// Links on a two-worker data plane (handed out in turn) run side by side; each is counted once.
#[test]
fn links_run_side_by_side_on_two_workers_and_are_counted() {
    let dp = common::start(2, RelayMode::Splice, Vec::new(), None);
    let mut pairs = Vec::new();
    for i in 0..6u8 {
        let (front, target) = prepared_pair();
        let (back, dmz) = prepared_pair();
        dp.link(Link {
            front: OwnedConn::new(front, Vec::new()),
            ws: None,
            back: OwnedConn::new(back, Vec::new()),
        })
        .unwrap();
        pairs.push((i, target, dmz));
    }
    wait_until("six links active", || dp.snapshot().links_active == 6);
    for (i, target, dmz) in &mut pairs {
        dmz.write_all(&[*i; 3]).unwrap();
        let mut got = [0u8; 3];
        target.read_exact(&mut got).unwrap();
        assert_eq!(got, [*i; 3]);
    }
    for (_, target, dmz) in &pairs {
        target.shutdown(Shutdown::Write).unwrap();
        dmz.shutdown(Shutdown::Write).unwrap();
    }
    let snap = closed(&dp);
    assert_eq!((snap.links_total, snap.tunnels_total), (6, 6));
    assert_eq!(snap.closes[0], 6, "completed: {snap:?}");
    assert_eq!(snap.bytes_downstream, 18);
}
