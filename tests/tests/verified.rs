//! `admission = "verified"` on forwarding services, end to end: the real binary holds each
//! client's SYN (iptables NFQUEUE) while it connects the upstream, and answers the way the
//! upstream did. Upstream listening: the client connects, bytes echo, and the upstream sees
//! exactly one connection per client (the one made during the hold). Upstream port closed:
//! the client's `connect()` fails with ECONNREFUSED. Upstream silent (our own DROP rule on its
//! port): the client's connect times out. Upstream unreachable (a route of ours): the client
//! gets EHOSTUNREACH (ICMP host unreachable). IPv6 and dual-stack listeners alike, and a
//! `tls://` upstream handshakes over the held connection. The gateway's chain goes away on
//! SIGTERM, and after SIGKILL the next gateway removes it; two gateways never touch each
//! other's rules. One test only reports numbers (connect latency, verified vs always).
//!
//! Needs root (CAP_NET_ADMIN) and the `iptables` command: without them each test prints
//! SKIPPED with the reason and passes.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sallyport_tests::*;

/// Why these tests cannot run here, if they cannot.
fn unsupported() -> Option<String> {
    match Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()
    {
        Err(e) => Some(format!(
            "no iptables command ({e}); install the Debian package iptables"
        )),
        Ok(out) if !out.status.success() => Some(format!(
            "iptables -S fails (not root / no CAP_NET_ADMIN?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

macro_rules! require_iptables {
    () => {
        if let Some(why) = unsupported() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// The chains named SALLYPORT_* right now.
fn chains() -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .expect("run iptables -S");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter(|c| c.starts_with("SALLYPORT_"))
        .map(String::from)
        .collect()
}

fn has_chain(pid: u32) -> bool {
    chains().contains(&format!("SALLYPORT_{pid}"))
}

/// A gateway with one forwarding service per `(name, upstream, admission)`.
fn gateway(services: &[(&str, SocketAddr, &str)], extra: &str) -> Gateway {
    let mut config = String::from("[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n");
    for (name, upstream, admission) in services {
        config.push_str(&format!(
            "\n[[service]]\nname = \"{name}\"\naccept = \"tcp://127.0.0.1:0\"\n\
             connect = \"tcp://{upstream}\"\nadmission = \"{admission}\"\n{extra}\n"
        ));
    }
    Gateway::start(&config)
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn verdicts(g: &Gateway, service: &str, verdict: &str) -> u64 {
    counter(
        &g.stats(),
        &["services", service, "verified", "verdicts", verdict],
    )
}

/// Our own rule dropping SYNs to one port (a silent upstream); removed when dropped.
struct Blackhole {
    spec: Vec<String>,
}

impl Blackhole {
    fn port(port: u16) -> Blackhole {
        let spec: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &port.to_string(),
            "--syn",
            "-j",
            "DROP",
        ]
        .map(String::from)
        .to_vec();
        let status = Command::new("iptables")
            .args(["-w", "-I"])
            .args(&spec)
            .status()
            .expect("run iptables -I");
        assert!(status.success(), "cannot add the blackhole rule");
        Blackhole { spec }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("iptables")
            .args(["-w", "-D"])
            .args(&self.spec)
            .status();
    }
}

#[test]
fn upstream_accepting_relays_over_the_connection_made_during_the_hold() {
    require_iptables!();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let g = gateway(&[("echo", echo.addr(), "verified")], "");
    let addr = g.service("echo");
    let back = echo_round_trip(addr, b"held, then relayed").unwrap();
    assert_eq!(back, b"held, then relayed");
    assert_eq!(
        echo.connections(),
        1,
        "the upstream saw one connection: the one made while the SYN was held"
    );
    for i in 0..20u32 {
        let payload = format!("client {i}");
        assert_eq!(
            echo_round_trip(addr, payload.as_bytes()).unwrap(),
            payload.as_bytes()
        );
    }
    assert_eq!(echo.connections(), 21, "one upstream connection per client");
    let stats = g.wait_stats("every held connection claimed", STATE_TIMEOUT, |s| {
        s["services"]["echo"]["verified"]["held"].as_u64() == Some(0)
    });
    assert_eq!(
        counter(
            &stats,
            &["services", "echo", "verified", "verdicts", "accept"]
        ),
        21
    );
    assert_eq!(
        stats["services"]["echo"]["verified"]["mechanism"],
        "nfqueue"
    );
    assert!(g
        .stderr()
        .contains("verified admission active: each SYN is held"));
    g.stop();
}

#[test]
fn tls_upstream_handshakes_over_the_held_connection() {
    require_iptables!();
    let certs = DevCerts::generate();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    // The TLS upstream: a forwarding gateway with a tls:// listener in front of the echo.
    let upstream = Gateway::start(&forward_config(
        "tls-echo",
        "tls://127.0.0.1:0",
        &format!("tcp://{}", echo.addr()),
        &certs.listener_tls(),
    ));
    let g = Gateway::start(&format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n[[service]]\nname = \"v\"\n\
         accept = \"tcp://127.0.0.1:0\"\nconnect = \"tls://{}\"\nadmission = \"verified\"\n{}\n",
        upstream.service("tls-echo"),
        certs.connect_tls()
    ));
    for i in 0..3u32 {
        let payload = format!("over TLS {i}");
        assert_eq!(
            echo_round_trip(g.service("v"), payload.as_bytes()).unwrap(),
            payload.as_bytes()
        );
    }
    let stats = upstream.stats();
    assert_eq!(
        counter(&stats, &["services", "tls-echo", "accepted"]),
        3,
        "one TLS connection per client, made while its SYN was held"
    );
    assert_eq!(verdicts(&g, "v", "accept"), 3);
    g.stop();
    upstream.stop();
}

#[test]
fn retransmitted_syns_of_a_long_hold_share_one_upstream_connect() {
    require_iptables!();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    // The upstream is silent for its first 1.5 s (our DROP rule), then answers: the gateway's
    // own SYN retransmit gets through at ~3 s, while the client's SYN (retransmitted at 1 s
    // and 3 s) is held the whole time.
    let blackhole = Blackhole::port(echo.addr().port());
    let g = gateway(
        &[("slow", echo.addr(), "verified")],
        "connect_timeout = \"10s\"",
    );
    let lift = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(blackhole);
    });
    let mut client = TcpStream::connect_timeout(&g.service("slow"), Duration::from_secs(10))
        .expect("accepted once the upstream answered");
    lift.join().unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut client, b"late").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut back).unwrap();
    assert_eq!(back, b"late");
    assert_eq!(
        echo.connections(),
        1,
        "one upstream connect for every copy of the SYN"
    );
    assert_eq!(verdicts(&g, "slow", "accept"), 1);
    assert!(
        verdicts(&g, "slow", "retransmit") >= 1,
        "the client's retransmitted SYN was held with the first: {:#}",
        g.stats()
    );
    g.stop();
}

#[test]
fn upstream_refusing_refuses_the_clients_syn() {
    require_iptables!();
    let upstream = closed_port();
    let g = gateway(&[("closed", upstream, "verified")], "");
    let addr = g.service("closed");
    for _ in 0..3 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(_) => panic!("connected to a service whose upstream refuses"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        }
    }
    assert!(verdicts(&g, "closed", "reject") >= 3);
    g.stop();
}

#[test]
fn ipv6_and_dual_stack_listeners_are_verified_too() {
    require_iptables!();
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = closed_port();
    let mut config = String::from("[gateway]\nworkers = 1\nadmin = \"127.0.0.1:0\"\n");
    for (name, accept, upstream) in [
        ("echo6", "[::1]:0", echo.addr()),
        ("closed6", "[::1]:0", refused),
        ("closed_any", "[::]:0", refused),
    ] {
        config.push_str(&format!(
            "\n[[service]]\nname = \"{name}\"\naccept = \"tcp://{accept}\"\n\
             connect = \"tcp://{upstream}\"\nadmission = \"verified\"\n"
        ));
    }
    let g = Gateway::start(&config);
    assert_eq!(echo_round_trip(g.service("echo6"), b"v6").unwrap(), b"v6");
    assert_eq!(echo.connections(), 1);
    let any = g.service("closed_any").port();
    for addr in [
        g.service("closed6"),
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], any)),
        SocketAddr::from(([127, 0, 0, 1], any)),
    ] {
        let err =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect_err("refused at SYN");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}: {err}");
    }
    g.stop();
}

#[test]
fn without_verification_the_same_client_is_accepted_then_reset() {
    // The contrast: admission = "always" completes the handshake first.
    require_iptables!();
    let g = gateway(&[("closed", closed_port(), "always")], "");
    let stream = TcpStream::connect_timeout(&g.service("closed"), Duration::from_secs(5));
    // Accepted, then reset when the upstream refuses; the reset may already be there when
    // connect() looks (ECONNRESET), which still says the handshake completed: a refused SYN
    // is ECONNREFUSED.
    match stream {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("always: the handshake completes, got {e}"),
    }
    g.stop();
}

#[test]
fn silent_upstream_leaves_the_client_unanswered() {
    require_iptables!();
    let upstream = closed_port();
    let _blackhole = Blackhole::port(upstream.port());
    let g = gateway(
        &[("silent", upstream, "verified")],
        "connect_timeout = \"1s\"",
    );
    let addr = g.service("silent");
    let started = Instant::now();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(_) => panic!("connected to a service whose upstream is silent"),
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::TimedOut,
            "no answer at all, not a refusal: {e} after {:?}",
            started.elapsed()
        ),
    }
    g.wait_stats("the drop counted", STATE_TIMEOUT, |s| {
        s["services"]["silent"]["verified"]["verdicts"]["drop"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    g.stop();
}

/// An `unreachable` route to one TEST-NET-2 address (connects to it fail with EHOSTUNREACH;
/// not TEST-NET-1, where this host's own network may be); removed when dropped.
struct UnreachableRoute(&'static str);

impl UnreachableRoute {
    fn add(addr: &'static str) -> Option<UnreachableRoute> {
        let ok = Command::new("ip")
            .args(["route", "add", "unreachable", addr])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(UnreachableRoute(addr))
    }
}

impl Drop for UnreachableRoute {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", "unreachable", self.0])
            .status();
    }
}

#[test]
fn unreachable_upstream_answers_the_client_with_the_same_icmp_error() {
    require_iptables!();
    let Some(_route) = UnreachableRoute::add("198.51.100.77/32") else {
        eprintln!("SKIPPED: cannot add an unreachable route with `ip route`");
        return;
    };
    let g = gateway(
        &[("nowhere", "198.51.100.77:80".parse().unwrap(), "verified")],
        "",
    );
    match TcpStream::connect_timeout(&g.service("nowhere"), Duration::from_secs(5)) {
        Ok(_) => panic!("connected to a service whose upstream is unreachable"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(113), "EHOSTUNREACH expected: {e}"),
    }
    assert!(verdicts(&g, "nowhere", "unreachable") >= 1);
    g.stop();
}

#[test]
fn chain_is_removed_on_stop_and_after_sigkill_by_the_next_start() {
    require_iptables!();
    let upstream = closed_port();
    let g = gateway(&[("a", upstream, "verified")], "");
    let pid = g.pid();
    assert!(has_chain(pid), "chain of {pid} installed: {:?}", chains());
    g.stop();
    assert!(!has_chain(pid), "SIGTERM removes the chain: {:?}", chains());

    let mut killed = gateway(&[("a", upstream, "verified")], "");
    let dead = killed.pid();
    killed.kill();
    assert!(has_chain(dead), "SIGKILL leaves the chain behind");
    // While no reader is bound, the rule lets SYNs through (queue-bypass: fail-open).
    let next = gateway(&[("a", upstream, "verified")], "");
    assert!(
        !has_chain(dead),
        "the next start removed the dead gateway's chain: {:?}",
        chains()
    );
    assert!(has_chain(next.pid()));
    next.stop();

    // A gateway without a verified service still removes a dead one's chain.
    let mut killed = gateway(&[("a", upstream, "verified")], "");
    let dead = killed.pid();
    killed.kill();
    let plain = gateway(&[("a", upstream, "always")], "");
    assert!(
        !has_chain(dead),
        "a start without verified services removed the dead gateway's chain: {:?}",
        chains()
    );
    plain.stop();
}

#[test]
fn two_gateways_do_not_touch_each_others_rules() {
    require_iptables!();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = closed_port();
    let services = [
        ("echo", echo.addr(), "verified"),
        ("closed", refused, "verified"),
    ];
    let one = gateway(&services, "");
    let two = gateway(&services, "");
    assert!(
        has_chain(one.pid()) && has_chain(two.pid()),
        "{:?}",
        chains()
    );
    let queue = |g: &Gateway| g.stats()["services"]["echo"]["verified"]["queue"].as_u64();
    assert_ne!(queue(&one), queue(&two), "each gateway has its own queue");
    for g in [&one, &two] {
        assert_eq!(echo_round_trip(g.service("echo"), b"x").unwrap(), b"x");
    }
    two.stop();
    assert!(has_chain(one.pid()), "stopping one left the other's chain");
    assert_eq!(
        echo_round_trip(one.service("echo"), b"still held").unwrap(),
        b"still held"
    );
    let err = TcpStream::connect_timeout(&one.service("closed"), Duration::from_secs(5))
        .expect_err("still refused at SYN");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    one.stop();
}

/// Not an assertion on speed: prints the connect latency of 1,000 sequential connects to a
/// verified and to an always service with the same upstream.
#[test]
fn connect_latency_verified_vs_always() {
    require_iptables!();
    let echo = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let g = gateway(
        &[
            ("verified", echo.addr(), "verified"),
            ("always", echo.addr(), "always"),
        ],
        "",
    );
    const N: usize = 1000;
    for name in ["always", "verified"] {
        let addr = g.service(name);
        let mut micros: Vec<u128> = (0..N)
            .map(|_| {
                let t = Instant::now();
                let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
                let us = t.elapsed().as_micros();
                drop(s);
                us
            })
            .collect();
        micros.sort_unstable();
        println!(
            "connect latency, admission = {name}: p50 {} us, p90 {} us, p99 {} us ({N} sequential connects)",
            micros[N / 2],
            micros[N * 9 / 10],
            micros[N * 99 / 100]
        );
    }
    g.stop();
}
