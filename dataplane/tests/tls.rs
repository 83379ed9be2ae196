//! TLS legs through the real data plane: a public `tls://` listener whose clients finish their
//! handshake in the worker, bytes that ride with the handshake's last flight, a stalled
//! handshake that times out without disturbing others, and a TLS back-end on the internal side.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{prepared_pair, wait_until};
use rustls::pki_types::ServerName;
use sallyport_dataplane::wire::socks5;
use sallyport_dataplane::{
    Dataplane, OwnedConn, PublicIndex, PublicService, PublicTls, RelayMode, ReverseEvent,
    ReverseEvents, ReverseIndex, ReverseOutcome, TargetTls,
};
use sallyport_kit::pki::Pki;

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

fn start_public(pki: &Pki, handshake_timeout: Duration) -> Dataplane {
    let service = PublicService {
        tls: Some(PublicTls {
            config: sallyport_dataplane::tls::Reloadable::new(server_config(pki)),
            handshake_timeout,
        }),
        ..common::plain_service("secure", Duration::from_secs(5))
    };
    common::start(1, RelayMode::Splice, vec![service], None)
}

fn tls_client(
    pki: &Pki,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = rustls::ClientConnection::new(
        client_config(pki),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn tls_client_is_relayed_to_a_plain_prepared_connection() {
    let pki = Pki::localhost();
    let dp = start_public(&pki, Duration::from_secs(5));
    let (dmz_side, mut internal) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
        .unwrap();

    let mut client = tls_client(&pki, dp.service_addr(PublicIndex(0)));
    // The first write completes the handshake and sends the data right behind the client's
    // Finished: the worker must deliver it after the second BIND reply, not drop it.
    client.write_all(b"hello through tls").unwrap();
    let mut head = vec![0u8; 10 + 17];
    internal.read_exact(&mut head).unwrap();
    let (reply, used) = socks5::parse_reply(&head).unwrap().unwrap();
    assert_eq!(reply.rep, socks5::rep::SUCCEEDED);
    assert_eq!(&head[used..], b"hello through tls");

    // 2 MiB each way, then half-close from the client.
    let up: Vec<u8> = (0..2u32 << 20).map(|i| (i % 241) as u8).collect();
    let expected_up = up.clone();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; expected_up.len()];
        internal.read_exact(&mut got).unwrap();
        assert!(got == expected_up, "upstream differs");
        internal.write_all(&got).unwrap();
        internal.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        internal.read_to_end(&mut rest).unwrap();
        rest
    });
    client.write_all(&up).unwrap();
    let mut back = vec![0u8; up.len()];
    client.read_exact(&mut back).unwrap();
    assert!(back == up, "downstream differs");
    // The prepared side closed: the client sees a clean TLS end (close_notify).
    let mut tail = Vec::new();
    client.read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty());
    client.conn.send_close_notify();
    client.flush().unwrap();
    client.sock.shutdown(Shutdown::Write).unwrap();
    assert!(reader.join().unwrap().is_empty());
}

#[test]
fn stalled_handshake_times_out_without_blocking_others() {
    let pki = Pki::localhost();
    let dp = start_public(&pki, Duration::from_millis(300));
    // A client that connects and says nothing.
    let mut stalled = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Meanwhile a good client is served.
    let (dmz_side, mut internal) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
        .unwrap();
    let mut good = tls_client(&pki, dp.service_addr(PublicIndex(0)));
    good.write_all(b"ok?").unwrap();
    let mut head = vec![0u8; 13];
    internal.read_exact(&mut head).unwrap();
    assert_eq!(&head[10..], b"ok?");
    // The stalled one is closed after its timeout.
    let started = Instant::now();
    let mut buf = [0u8; 16];
    match stalled.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the stalled client to be closed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("tls failure counted", || {
        dp.snapshot().services[0].tls_failures > 0
    });
}

#[test]
fn plain_client_on_a_tls_listener_fails_its_handshake() {
    let pki = Pki::localhost();
    let dp = start_public(&pki, Duration::from_secs(5));
    let mut plain = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf); // An alert, then close (or reset).
    wait_until("tls failure counted", || {
        dp.snapshot().services[0].tls_failures > 0
    });
    assert_eq!(dp.snapshot().tunnels_total, 0);
}

#[test]
fn reverse_leg_reaches_a_tls_back_end() {
    let pki = Pki::localhost();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let events: ReverseEvents = Arc::new(move |e: ReverseEvent| {
        let _ = tx.lock().unwrap().send(e);
    });
    let dp = common::start(1, RelayMode::Splice, Vec::new(), Some(events));
    // A TLS echo back-end.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let config = server_config(&pki);
    let server = std::thread::spawn(move || {
        let (tcp, _) = backend.accept().unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 11];
        tls.read_exact(&mut buf).unwrap();
        tls.write_all(&buf).unwrap();
        tls.flush().unwrap();
        buf
    });
    let (leg, mut dmz) = prepared_pair();
    let target_tls = TargetTls {
        config: sallyport_dataplane::tls::Reloadable::new(client_config(&pki)),
        server_name: ServerName::try_from("localhost").unwrap(),
    };
    dp.park_reverse(
        ReverseIndex(0),
        OwnedConn::new(leg, Vec::new()),
        common::backend(backend_addr, Duration::from_secs(5), Some(target_tls)),
        None,
    )
    .unwrap();
    let mut segment = Vec::new();
    socks5::encode_reply(0, "198.51.100.1:1000".parse().unwrap(), &mut segment);
    segment.extend_from_slice(b"hello ");
    dmz.write_all(&segment).unwrap();
    dmz.write_all(b"tls").unwrap();
    dmz.write_all(b"!!").unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().outcome,
        ReverseOutcome::Paired
    );
    assert_eq!(&server.join().unwrap(), b"hello tls!!");
    dmz.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut back = [0u8; 11];
    dmz.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello tls!!");
}

/// rustls hands out one record's plaintext per read; the leg gives the relay every record that
/// has arrived in one call, so the plain side is written in large sends, not 16 KiB ones.
#[test]
fn a_tls_leg_returns_every_record_at_hand_in_one_read() {
    use sallyport_dataplane::leg::Leg;
    use std::os::fd::OwnedFd;

    let pki = Pki::localhost();
    let client_config = client_config(&pki);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let payload: Vec<u8> = (0..48 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let (written_tx, written_rx) = mpsc::channel();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let conn = rustls::ClientConnection::new(
            client_config,
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        // Three full records, all on the wire before the leg reads.
        tls.write_all(&sent).unwrap();
        tls.flush().unwrap();
        written_tx.send(()).unwrap();
        close_rx.recv().unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
    });
    let (sock, _) = listener.accept().unwrap();
    sock.set_nonblocking(true).unwrap();
    let handshake = sallyport_dataplane::tls::Handshake::server(server_config(&pki)).unwrap();
    let mut leg = Leg::tls(OwnedFd::from(sock), handshake);
    wait_until("handshake finished", || leg.handshake().unwrap());
    written_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    wait_until("plaintext", || match leg.read(&mut buf) {
        Ok(read) => {
            n = read;
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("read failed: {e}"),
    });
    assert_eq!(n, payload.len(), "one read returns all three records");
    assert!(buf[..n] == payload[..]);
    let e = leg.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    // close_notify is the end of the stream.
    close_tx.send(()).unwrap();
    client.join().unwrap();
    let mut end = None;
    wait_until("end of stream", || match leg.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        other => {
            end = Some(other.unwrap());
            true
        }
    });
    let end = end.unwrap();
    assert_eq!(end, 0);
}
