//! The data plane driven directly: prepared connections handed off as the control thread does,
//! real public clients on 127.0.0.1:0, both relay engines, stealing between workers, the
//! timeout reset, and no descriptor left behind once tunnels close.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{plain_service, prepared_pair, wait_until};
use sallyport_dataplane::wire::socks5;
use sallyport_dataplane::{
    Dataplane, OwnedConn, PublicIndex, PublicService, RelayMode, ReverseEvent, ReverseEvents,
    ReverseIndex, ReverseOutcome, Upstream,
};

fn start(workers: usize, mode: RelayMode, timeout: Duration) -> Dataplane {
    common::start(workers, mode, vec![plain_service("echo", timeout)], None)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads the second BIND reply from the internal end; returns the client address it names.
fn read_second_reply(internal: &mut TcpStream) -> SocketAddr {
    let mut buf = Vec::new();
    loop {
        if let Some((reply, used)) = socks5::parse_reply(&buf).unwrap() {
            assert_eq!(reply.rep, socks5::rep::SUCCEEDED);
            assert_eq!(used, buf.len(), "no client bytes were sent yet");
            let ip = match reply.host {
                socks5::Host::Ip(ip) => ip,
                other => panic!("BND should be an address, got {other}"),
            };
            return SocketAddr::new(ip, reply.port);
        }
        let mut chunk = [0u8; 64];
        let n = internal.read(&mut chunk).unwrap();
        assert!(n > 0, "EOF before the second reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn round_trip(mode: RelayMode) {
    let dp = start(1, mode, Duration::from_secs(5));
    let baseline = open_fds();
    let (dmz_side, mut internal) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
        .unwrap();
    wait_until("parked", || dp.snapshot().services[0].prepared == 1);

    let client = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
    let client_addr = client.local_addr().unwrap();
    assert_eq!(read_second_reply(&mut internal), client_addr);

    // 4 MiB up, the client half-closes, 4 MiB down, then the internal end closes.
    let up: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    let down: Vec<u8> = up.iter().rev().copied().collect();
    let writer = sallyport_kit::backend::send_half_close_read(client, up.clone());
    let mut got_up = Vec::new();
    internal.read_to_end(&mut got_up).unwrap();
    assert!(got_up == up, "upstream bytes differ");
    internal.write_all(&down).unwrap();
    drop(internal);
    assert!(
        writer.join().unwrap().unwrap() == down,
        "downstream bytes differ"
    );

    wait_until("tunnel closed", || dp.snapshot().tunnels_active == 0);
    let snap = dp.snapshot();
    assert_eq!(snap.tunnels_total, 1);
    assert_eq!(snap.closes[0], 1, "closed as completed");
    assert_eq!(
        snap.bytes_upstream,
        (4 << 20) + 10,
        "payload plus the 10-byte reply"
    );
    assert_eq!(snap.bytes_downstream, 4 << 20);
    // Pooled pipes or buffers stay with the worker; the sockets are gone.
    wait_until("descriptors released", || open_fds() <= baseline + 4);
}

#[test]
fn splice_round_trip_with_half_close() {
    round_trip(RelayMode::Splice);
}

#[test]
fn copy_round_trip_with_half_close() {
    round_trip(RelayMode::Copy);
}

#[test]
fn client_bytes_written_before_pairing_follow_the_reply() {
    let dp = start(1, RelayMode::Splice, Duration::from_secs(5));
    let mut client = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
    client.write_all(b"early bytes").unwrap();
    wait_until("client waiting", || dp.snapshot().services[0].waiting == 1);
    let (dmz_side, mut internal) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
        .unwrap();
    let mut buf = vec![0u8; 10 + 11];
    internal.read_exact(&mut buf).unwrap();
    let (reply, used) = socks5::parse_reply(&buf).unwrap().unwrap();
    assert_eq!(reply.port, client.local_addr().unwrap().port());
    assert_eq!(&buf[used..], b"early bytes");
}

#[test]
fn client_without_prepared_connection_is_reset_after_timeout() {
    let dp = start(1, RelayMode::Splice, Duration::from_millis(300));
    let started = Instant::now();
    let mut client = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 8];
    let err = client.read(&mut buf).expect_err("reset, not data or EOF");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(dp.snapshot().services[0].refused[0], 1);
}

#[test]
fn parked_connection_that_closes_leaves_the_pool() {
    let dp = start(1, RelayMode::Splice, Duration::from_secs(1));
    let (dmz_side, internal) = prepared_pair();
    dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
        .unwrap();
    wait_until("parked", || dp.snapshot().services[0].prepared == 1);
    drop(internal);
    wait_until("dropped from pool", || {
        dp.snapshot().services[0].prepared == 0
    });
    assert_eq!(dp.snapshot().services[0].prepared_lost, 1);
}

#[test]
fn workers_lend_prepared_connections_to_each_other() {
    let dp = start(2, RelayMode::Splice, Duration::from_secs(5));
    // Every client finds exactly one prepared connection somewhere; SO_REUSEPORT spreads the
    // clients over both workers, so some must take it from the other worker.
    for i in 0..24u32 {
        let (dmz_side, mut internal) = prepared_pair();
        dp.park(PublicIndex(0), OwnedConn::new(dmz_side, Vec::new()))
            .unwrap();
        wait_until("parked", || dp.snapshot().services[0].prepared == 1);
        let mut client = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
        read_second_reply(&mut internal);
        client.write_all(&i.to_be_bytes()).unwrap();
        let mut got = [0u8; 4];
        internal.read_exact(&mut got).unwrap();
        assert_eq!(u32::from_be_bytes(got), i);
        internal.write_all(b"ok").unwrap();
        let mut ok = [0u8; 2];
        client.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok");
    }
    let snap = dp.snapshot();
    assert_eq!(snap.tunnels_total, 24);
    assert!(
        snap.services[0].stolen > 0,
        "no client landed on the other worker: {snap:?}"
    );
}

/// A data plane whose reverse-leg outcomes land in a channel.
fn start_with_events() -> (Dataplane, mpsc::Receiver<ReverseEvent>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let events: ReverseEvents = Arc::new(move |event| {
        let _ = tx.lock().unwrap().send(event);
    });
    let dp = common::start(1, RelayMode::Copy, Vec::new(), Some(events));
    (dp, rx)
}

fn second_reply(client: &str) -> Vec<u8> {
    let mut out = Vec::new();
    socks5::encode_reply(socks5::rep::SUCCEEDED, client.parse().unwrap(), &mut out);
    out
}

#[test]
fn reverse_leg_connects_the_back_end_and_delivers_leftover_first() {
    let (dp, events) = start_with_events();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let (leg, mut dmz) = prepared_pair();
    dp.park_reverse(
        ReverseIndex(3),
        OwnedConn::new(leg, Vec::new()),
        common::backend(backend.local_addr().unwrap(), Duration::from_secs(5), None),
        None,
    )
    .unwrap();
    // The DMZ pairs it: the second reply and the client's first bytes in one segment.
    let mut segment = second_reply("203.0.113.5:4444");
    segment.extend_from_slice(b"first ");
    dmz.write_all(&segment).unwrap();
    let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        event,
        ReverseEvent {
            service: ReverseIndex(3),
            outcome: ReverseOutcome::Paired
        }
    );
    let (mut back, _) = backend.accept().unwrap();
    dmz.write_all(b"second").unwrap();
    let mut got = [0u8; 12];
    back.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"first second");
    back.write_all(b"back").unwrap();
    let mut reply = [0u8; 4];
    dmz.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"back");
}

#[test]
fn reverse_leg_whose_back_end_refuses_is_reset() {
    let (dp, events) = start_with_events();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (leg, mut dmz) = prepared_pair();
    // Second reply already read by the control thread along with the first.
    dp.park_reverse(
        ReverseIndex(0),
        OwnedConn::new(leg, second_reply("203.0.113.5:1")),
        common::backend(closed, Duration::from_secs(5), None),
        None,
    )
    .unwrap();
    assert_eq!(
        events
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .outcome,
        ReverseOutcome::Paired
    );
    let failed = events
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .outcome;
    assert_eq!(
        failed,
        ReverseOutcome::BackendFailed {
            errno: Some(libc_econnrefused())
        }
    );
    let err = common::read_error(&mut dmz, Duration::from_secs(10));
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

#[test]
fn reverse_leg_closed_by_the_dmz_is_lost() {
    let (dp, events) = start_with_events();
    let (leg, dmz) = prepared_pair();
    let target = "127.0.0.1:9".parse().unwrap();
    dp.park_reverse(
        ReverseIndex(1),
        OwnedConn::new(leg, Vec::new()),
        common::backend(target, Duration::from_secs(1), None),
        None,
    )
    .unwrap();
    drop(dmz);
    let event = events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(event.service, ReverseIndex(1));
    assert!(
        matches!(event.outcome, ReverseOutcome::Lost { .. }),
        "{event:?}"
    );
}

fn libc_econnrefused() -> i32 {
    std::io::Error::from(ErrorKind::ConnectionRefused)
        .raw_os_error()
        .unwrap_or(111)
}

#[test]
fn busy_port_is_a_listen_error() {
    // Even a second SO_REUSEPORT group on the same port is refused, not silently shared.
    let other = start(1, RelayMode::Splice, Duration::from_secs(1));
    let mut busy = plain_service("busy", Duration::from_secs(1));
    busy.listen = other.service_addr(PublicIndex(0));
    let err = Dataplane::start(common::config(1, RelayMode::Splice, vec![busy], None))
        .err()
        .expect("port in use");
    assert!(err.to_string().contains("service busy"), "{err}");
}

fn start_forward(upstream: SocketAddr) -> Dataplane {
    common::start(1, RelayMode::Splice, vec![forward_service(upstream)], None)
}

/// A forwarding service to `upstream` (its own connection per client).
fn forward_service(upstream: SocketAddr) -> PublicService {
    PublicService {
        upstream: Some(Upstream {
            addr: upstream,
            tls: None,
            connect_timeout: Duration::from_secs(2),
            ws: None,
            proxy_protocol: None,
            held: None,
        }),
        ..plain_service("forward", Duration::from_secs(1))
    }
}

#[test]
fn forwarding_service_connects_its_own_upstream() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let dp = start_forward(upstream.local_addr().unwrap());
    let mut client = TcpStream::connect(dp.service_addr(PublicIndex(0))).unwrap();
    client.write_all(b"ping").unwrap();
    let (mut server, _) = upstream.accept().unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
}

#[test]
fn forwarding_service_mirrors_a_refused_upstream_as_a_reset() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dp = start_forward(closed);
    let err = common::connect_error(dp.service_addr(PublicIndex(0)), Duration::from_secs(10));
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    wait_until("failure counted", || {
        dp.snapshot().services[0].upstream_failures == 1
    });
}

#[test]
fn idle_timeout_resets_a_silent_tunnel_and_spares_a_talking_one() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut dp_service = forward_service(upstream.local_addr().unwrap());
    dp_service.idle_timeout = Some(Duration::from_millis(300));
    let dp = common::start(1, RelayMode::Splice, vec![dp_service], None);
    let addr = dp.service_addr(PublicIndex(0));
    let open = |tag: &[u8]| {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(tag).unwrap();
        let (mut server, _) = upstream.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = vec![0u8; tag.len()];
        server.read_exact(&mut got).unwrap();
        assert_eq!(got, tag);
        (client, server)
    };
    let (mut silent, mut silent_server) = open(b"quiet");
    let (mut talking, mut talking_server) = open(b"chatty");
    // The talking tunnel moves a byte every 50 ms for 1.5 s (five idle timeouts): it stays.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        talking.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        talking_server.read_exact(&mut b).unwrap();
        talking_server.write_all(b"y").unwrap();
        talking.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The silent one was reset, both legs: neither end reads a byte.
    let mut rest = Vec::new();
    let got = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "client got {rest:?}");
    assert!(
        got.is_ok() || got.as_ref().unwrap_err().kind() == ErrorKind::ConnectionReset,
        "{got:?}"
    );
    let got = silent_server.read_to_end(&mut rest);
    assert!(rest.is_empty(), "server got {rest:?}");
    assert!(
        got.is_ok() || got.as_ref().unwrap_err().kind() == ErrorKind::ConnectionReset,
        "{got:?}"
    );
    let snap = dp.snapshot();
    let idle: Vec<_> = snap
        .close_reasons
        .iter()
        .filter(|(r, _)| r.reason == sallyport_dataplane::metrics::Reason::Idle)
        .collect();
    assert_eq!(idle.len(), 1, "{:?}", snap.close_reasons);
    assert_eq!(idle[0].1, 1, "{:?}", snap.close_reasons);
    assert_eq!(snap.tunnels_active, 1, "the talking tunnel is still open");
    talking.write_all(b"z").unwrap();
    let mut b = [0u8; 1];
    talking_server.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"z");
}
