//! Per-source verdicts on public listeners (`allow`, `deny`, `deny_action`, `max_per_source`,
//! `rate_per_source`), seen by real clients of the real binary: forwarding services (tcp:// to
//! an echo server) and one DMZ service.
//!
//! Sources other than 127.0.0.1 come from binding the client socket to 127.0.0.x before
//! connecting; IPv6 from ::1. With CAP_NET_ADMIN and `nft` the gateway installs an nftables
//! table: a rejected source's `connect()` fails with ECONNREFUSED, a dropped one's times out,
//! and the table is gone when the gateway stops (or, after SIGKILL, when the next one starts).
//! Without CAP_NET_ADMIN (the gateway run under `setpriv`) a refused client is reset right
//! after accept. A test whose tool or privilege is missing prints SKIPPED with the reason.
//!
//! Tests that install tables run one at a time (a gateway starting removes the tables of
//! gateways that are gone, which a test asserting on a killed gateway's table must not race).
#![deny(unsafe_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sallyport_tests::{dmz_config, EchoServer, Gateway, Relay, STATE_TIMEOUT};
use socket2::{Domain, Socket, Type};

/// Connect timeout for a source whose SYN is dropped (and for every other connect).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Whether this test process may install nftables tables (and so the gateway it starts).
fn privileged() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    if eff & (1 << 12) == 0 {
        return Err("no CAP_NET_ADMIN in this test process".into());
    }
    nft(&["--version"]).map(|_| ())
}

fn nft(args: &[&str]) -> Result<String, String> {
    let bin = ["/usr/sbin/nft", "/sbin/nft", "nft"]
        .into_iter()
        .find(|p| !p.starts_with('/') || std::path::Path::new(p).is_file())
        .unwrap_or("nft");
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| format!("no nft ({e}); install the nftables package"))?;
    if !out.status.success() {
        return Err(format!(
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

macro_rules! require_privilege {
    () => {
        if let Err(why) = privileged() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// The inet tables whose name begins with `sallyport_`.
fn tables() -> Vec<String> {
    nft(&["list", "tables", "inet"])
        .expect("nft list tables")
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|n| n.starts_with("sallyport_"))
        .map(str::to_string)
        .collect()
}

/// A gateway with one forwarding service `fwd` on 127.0.0.1 to `echo`, plus `keys` on it.
/// An echo back-end and a gateway forwarding `listen` to it, with `extra` service lines.
fn forwarder(listen: &str, extra: &str) -> (EchoServer, Gateway) {
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let gw = Gateway::start(&fwd_config(backend.addr(), listen, extra));
    (backend, gw)
}

fn fwd_config(echo: SocketAddr, listen: &str, keys: &str) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"fwd\"\naccept = \"tcp://{listen}\"\nconnect = \"tcp://{echo}\"\n{keys}\n"
    )
}

fn mechanism(gw: &Gateway) -> String {
    gw.stats()["services"]["fwd"]["policy"]["mechanism"]
        .as_str()
        .unwrap_or_else(|| panic!("no policy mechanism in /stats: {:#}", gw.stats()))
        .to_string()
}

/// The table a gateway says it installed.
fn table_of(gw: &Gateway) -> String {
    let m = mechanism(gw);
    m.strip_prefix("nftables table inet ")
        .unwrap_or_else(|| panic!("no kernel table: {m}\n{}", gw.stderr()))
        .to_string()
}

/// Waits until `/stats` counts at least `n` verdicts `verdict` for `service` (the kernel's
/// counters are read at most a few times a second).
fn wait_verdicts(gw: &Gateway, service: &str, verdict: &str, n: u64) {
    gw.wait_stats(
        &format!("services.{service}.policy.verdicts.{verdict} >= {n}"),
        STATE_TIMEOUT,
        |s| s["services"][service]["policy"]["verdicts"][verdict].as_u64() >= Some(n),
    );
}

/// Waits until the table refuses `n` sources of `service` for `max_per_source`.
fn wait_full_sources(gw: &Gateway, service: &str, n: u64) {
    gw.wait_stats(
        &format!("services.{service}.policy.full_sources == {n}"),
        STATE_TIMEOUT,
        |s| s["services"][service]["policy"]["full_sources"].as_u64() == Some(n),
    );
}

/// A TCP connection from `source` (port 0) to `to`.
fn connect_from(source: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let domain = if to.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// A round trip through the echo server on an open connection.
fn echo(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(b"ping")?;
    let mut back = [0u8; 4];
    stream.read_exact(&mut back)?;
    if &back != b"ping" {
        return Err(io::Error::other(format!("echo sent back {back:?}")));
    }
    Ok(())
}

/// Closes `stream` cleanly: FIN, then the gateway's FIN back.
fn close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

fn assert_refused(result: io::Result<TcpStream>, what: &str, gw: &Gateway) {
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("{what}: expected ECONNREFUSED, got {e}\n{}", gw.stderr()),
        Ok(s) => panic!(
            "{what}: expected ECONNREFUSED, connected ({:?})\n{}",
            s.local_addr(),
            gw.stderr()
        ),
    }
}

fn assert_echo_from(source: IpAddr, to: SocketAddr, gw: &Gateway) {
    let mut s = connect_from(source, to)
        .unwrap_or_else(|e| panic!("connect from {source}: {e}\n{}", gw.stderr()));
    echo(&mut s).unwrap_or_else(|e| panic!("echo from {source}: {e}\n{}", gw.stderr()));
    close(s);
}

/// Polls `connect_from` until it succeeds (a slot freed by a close comes back once the
/// gateway has closed its side); returns the open connection.
fn connect_eventually(source: IpAddr, to: SocketAddr, gw: &Gateway) -> TcpStream {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        match connect_from(source, to).and_then(|mut s| echo(&mut s).map(|()| s)) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "no connection from {source} within {STATE_TIMEOUT:?}: {e}\n{}",
                    gw.stderr()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn a_denied_source_is_refused_at_connect() {
    require_privilege!();
    let _serial = serial();
    let (backend, gw) = forwarder("127.0.0.1:0", "deny = [\"127.0.0.9\"]");
    let public = gw.service("fwd");
    assert!(mechanism(&gw).starts_with("nftables table inet sallyport_"));
    assert_refused(connect_from(ip("127.0.0.9"), public), "from 127.0.0.9", &gw);
    assert_echo_from(ip("127.0.0.1"), public, &gw);
    assert_echo_from(ip("127.0.0.8"), public, &gw);
    // The refused SYN never became a client: only the two others reached the back-end.
    assert_eq!(backend.connections(), 2);
    wait_verdicts(&gw, "fwd", "reject", 1);
    // The metric agrees with /stats.
    let metrics = gw.metrics();
    assert!(
        metrics.contains("sallyport_admission_total{service=\"fwd\",verdict=\"reject\"} "),
        "{metrics}"
    );
    gw.stop();
}

#[test]
fn a_dropped_source_gets_no_answer() {
    require_privilege!();
    let _serial = serial();
    let (_backend, gw) = forwarder(
        "127.0.0.1:0",
        "deny = [\"127.0.0.9/32\"]\ndeny_action = \"drop\"",
    );
    let public = gw.service("fwd");
    match connect_from(ip("127.0.0.9"), public) {
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
        other => panic!("from 127.0.0.9: expected a connect timeout, got {other:?}"),
    }
    assert_echo_from(ip("127.0.0.1"), public, &gw);
    wait_verdicts(&gw, "fwd", "drop", 1);
    gw.stop();
}

#[test]
fn allow_takes_only_the_listed_sources() {
    require_privilege!();
    let _serial = serial();
    let (_backend, gw) = forwarder("0.0.0.0:0", "allow = [\"127.0.0.2/32\"]");
    let port = gw.service("fwd").port();
    let public = SocketAddr::from(([127, 0, 0, 1], port));
    assert_refused(connect_from(ip("127.0.0.3"), public), "from 127.0.0.3", &gw);
    assert_refused(connect_from(ip("127.0.0.1"), public), "from 127.0.0.1", &gw);
    assert_echo_from(ip("127.0.0.2"), public, &gw);
    gw.stop();
}

#[test]
fn max_per_source_refuses_the_third_until_one_closes() {
    require_privilege!();
    let _serial = serial();
    let (_backend, gw) = forwarder("127.0.0.1:0", "max_per_source = 2");
    let public = gw.service("fwd");
    let a = connect_eventually(ip("127.0.0.5"), public, &gw);
    let _b = connect_eventually(ip("127.0.0.5"), public, &gw);
    // The data plane counts live connections; the source at its limit goes into the table,
    // which then refuses its SYNs (no connection tracking involved).
    wait_full_sources(&gw, "fwd", 1);
    let table = Command::new("nft")
        .args(["list", "table", "inet", &table_of(&gw)])
        .output()
        .expect("nft list table");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("127.0.0.5"), "{table}");
    assert!(
        !table.contains("ct count"),
        "no connection tracking: {table}"
    );
    assert_refused(
        connect_from(ip("127.0.0.5"), public),
        "third from 127.0.0.5",
        &gw,
    );
    // Another source has slots of its own.
    assert_echo_from(ip("127.0.0.6"), public, &gw);
    close(a);
    wait_full_sources(&gw, "fwd", 0);
    let _c = connect_eventually(ip("127.0.0.5"), public, &gw);
    wait_verdicts(&gw, "fwd", "limit", 1);
    gw.stop();
}

#[test]
fn rate_per_source_refuses_a_burst() {
    require_privilege!();
    let _serial = serial();
    let (_backend, gw) = forwarder("127.0.0.1:0", "rate_per_source = \"5/s\"");
    let public = gw.service("fwd");
    let results: Vec<io::Result<TcpStream>> = (0..20)
        .map(|_| connect_from(ip("127.0.0.7"), public))
        .collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::ConnectionRefused))
        .count();
    let taken = results.iter().filter(|r| r.is_ok()).count();
    assert!(refused >= 5, "{refused} of 20 refused, {taken} taken");
    assert!(taken >= 1, "{refused} of 20 refused, {taken} taken");
    wait_verdicts(&gw, "fwd", "limit", refused as u64);
    gw.stop();
}

#[test]
fn ipv6_sources_are_judged_too() {
    require_privilege!();
    let _serial = serial();
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback (::1) here");
        return;
    }
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = format!(
        "{}\n[[service]]\nname = \"open6\"\naccept = \"tcp://[::1]:0\"\nconnect = \"tcp://{}\"\n\
         deny = [\"2001:db8::/32\"]\nmax_per_source = 1\n",
        fwd_config(backend.addr(), "[::]:0", "deny = [\"::1/128\"]"),
        backend.addr()
    );
    let gw = Gateway::start(&config);
    let port = gw.service("fwd").port();
    assert_refused(
        connect_from(ip("::1"), SocketAddr::new(ip("::1"), port)),
        "from ::1",
        &gw,
    );
    // A dual-stack listener's IPv4 clients are not caught by the IPv6 deny.
    assert_echo_from(ip("127.0.0.1"), SocketAddr::new(ip("127.0.0.1"), port), &gw);
    // A service whose IPv6 deny does not match ::1 takes it, once (max_per_source, the /64).
    let open6 = gw.service("open6");
    let first = connect_eventually(ip("::1"), open6, &gw);
    wait_full_sources(&gw, "open6", 1);
    assert_refused(connect_from(ip("::1"), open6), "second from ::1", &gw);
    drop(first);
    gw.stop();
}

#[test]
fn the_table_goes_with_its_gateway_even_after_sigkill() {
    require_privilege!();
    let _serial = serial();
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = fwd_config(backend.addr(), "127.0.0.1:0", "deny = [\"127.0.0.9\"]");

    let gw = Gateway::start(&config);
    let first = table_of(&gw);
    assert!(tables().contains(&first), "{first} not in {:?}", tables());
    gw.stop();
    assert!(!tables().contains(&first), "{first} left after SIGTERM");

    let mut killed = Gateway::start(&config);
    let leftover = table_of(&killed);
    killed.kill();
    assert!(
        tables().contains(&leftover),
        "SIGKILL cannot clean up; the table should still be there"
    );
    let next = Gateway::start(&config);
    let current = table_of(&next);
    let now = tables();
    assert!(
        !now.contains(&leftover),
        "leftover {leftover} still in {now:?}"
    );
    assert!(now.contains(&current));
    assert!(next.stderr().contains(&leftover), "{}", next.stderr());
    next.stop();

    // A gateway whose config no longer has a policy still removes a dead one's table, which
    // would otherwise keep refusing that port's clients.
    let mut killed = Gateway::start(&config);
    let leftover = table_of(&killed);
    killed.kill();
    let open = Gateway::start(&fwd_config(backend.addr(), "127.0.0.1:0", ""));
    assert!(
        !tables().contains(&leftover),
        "leftover {leftover} still in {:?}",
        tables()
    );
    open.stop();
}

#[test]
fn two_gateways_keep_to_their_own_tables() {
    require_privilege!();
    let _serial = serial();
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = fwd_config(backend.addr(), "127.0.0.1:0", "deny = [\"127.0.0.9\"]");
    let mut a = Gateway::start(&config);
    let b = Gateway::start(&config);
    let (ta, tb) = (table_of(&a), table_of(&b));
    assert_ne!(ta, tb);
    let both = tables();
    assert!(both.contains(&ta) && both.contains(&tb), "{both:?}");
    // b starting left a's (live) table alone; a dying leaves b's.
    a.kill();
    assert!(tables().contains(&tb));
    assert_refused(
        connect_from(ip("127.0.0.9"), b.service("fwd")),
        "b, from .9",
        &b,
    );
    // A third start removes a's leftover, never b's.
    let c = Gateway::start(&config);
    let now = tables();
    assert!(!now.contains(&ta) && now.contains(&tb), "{now:?}");
    c.stop();
    assert!(tables().contains(&tb));
    b.stop();
    assert!(!tables().contains(&tb));
}

#[test]
fn a_dmz_service_refuses_a_denied_source() {
    require_privilege!();
    let _serial = serial();
    let config = format!(
        "{}admission = \"always\"\ndeny = [\"127.0.0.9\"]\n",
        dmz_config(Relay::Splice, "5s", 0, None)
    );
    let gw = Gateway::start(&config);
    let public = gw.service("echo");
    assert_refused(connect_from(ip("127.0.0.9"), public), "from .9", &gw);
    // Any other source is accepted (and waits for a prepared connection).
    let s = connect_from(ip("127.0.0.1"), public).expect("connect from 127.0.0.1");
    drop(s);
    wait_verdicts(&gw, "echo", "reject", 1);
    gw.stop();
}

/// The command prefix that runs the gateway without CAP_NET_ADMIN, if this host has one.
fn unprivileged_wrapper() -> Result<Vec<&'static str>, String> {
    let works = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .arg("true")
            .status()
            .is_ok_and(|s| s.success())
    };
    let setpriv = vec![
        "setpriv",
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
        "--",
    ];
    if works(&setpriv) {
        return Ok(setpriv);
    }
    Err("neither setpriv nor a way to drop CAP_NET_ADMIN here".into())
}

/// Whether a connection from `source` is reset without serving a byte: the connect may
/// succeed (the kernel completed the handshake), the first read ends in ECONNRESET or EOF; or
/// the reset (or a refusal) arrives while the client socket is still being set up.
fn assert_reset(source: IpAddr, to: SocketAddr, gw: &Gateway) {
    let mut s = match connect_from(source, to) {
        Ok(s) => s,
        // Reset so fast that setting up the client socket already saw it: the same answer.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
            ) =>
        {
            return
        }
        Err(e) => panic!("from {source}: {e}"),
    };
    let _ = s.write_all(b"ping");
    let mut buf = [0u8; 4];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!(
            "from {source}: expected a reset, read {other:?}\n{}",
            gw.stderr()
        ),
    }
}

#[test]
fn without_cap_net_admin_refused_clients_are_reset_after_accept() {
    let wrapper = match unprivileged_wrapper() {
        Ok(w) => w,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let backend = EchoServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let gw = Gateway::start_with(
        &fwd_config(
            backend.addr(),
            "127.0.0.1:0",
            "deny = [\"127.0.0.9\"]\ndeny_action = \"drop\"\nmax_per_source = 2\n",
        ),
        &wrapper,
    );
    let public = gw.service("fwd");
    let m = mechanism(&gw);
    assert!(
        m.contains("userspace") && m.contains("drop acts as reject"),
        "{m}"
    );
    assert!(gw.stderr().contains("WARN"), "{}", gw.stderr());
    assert_reset(ip("127.0.0.9"), public, &gw);
    assert_eq!(
        backend.connections(),
        0,
        "a refused client reached the back-end"
    );
    assert_echo_from(ip("127.0.0.1"), public, &gw);
    wait_verdicts(&gw, "fwd", "reject", 1);

    // max_per_source in userspace: the third is reset; a slot comes back when one closes.
    let a = connect_eventually(ip("127.0.0.5"), public, &gw);
    let _b = connect_eventually(ip("127.0.0.5"), public, &gw);
    let before = backend.connections();
    assert_reset(ip("127.0.0.5"), public, &gw);
    assert_eq!(backend.connections(), before);
    close(a);
    let _c = connect_eventually(ip("127.0.0.5"), public, &gw);
    wait_verdicts(&gw, "fwd", "limit", 1);
    // No table was installed by this gateway.
    if privileged().is_ok() {
        assert!(!tables()
            .iter()
            .any(|t| t.contains(&format!("_{}_", gw.pid()))));
    }
    gw.stop();
}
