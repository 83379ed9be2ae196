//! Faults and hostile load against the real binary: what a bad network or an attacker does to a
//! gateway, and what a client and an operator observe (bytes, refusals, log lines, CPU).
//!
//! Bounds asserted here are properties (no spin: a worker that loops on a failing accept uses a
//! whole core; no flood: a log line per failure), with wide margins; speed is measured in
//! `bench/`, never here.
#![deny(unsafe_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sallyport_tests::{
    dmz_config, echo_round_trip, internal_config, EchoServer, Gateway, Relay, STATE_TIMEOUT,
};

/// User plus system CPU time of process `pid` so far (from `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A DMZ with only 96 descriptors and 400 clients: accepts fail with EMFILE. The workers must
/// pause their accepts (not spin), log a bounded number of lines, and serve again once
/// descriptors are free (the waiting clients time out, the backlog drains).
#[test]
fn emfile_pauses_accepts_instead_of_spinning() {
    let prlimit = std::path::Path::new("/usr/bin/prlimit");
    if !prlimit.exists() {
        println!("SKIPPED: no /usr/bin/prlimit (util-linux) to cap the DMZ's descriptors");
        return;
    }
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo");
    let dmz = Gateway::start_with(
        &dmz_config(Relay::Splice, "1s", 0, None),
        &["/usr/bin/prlimit", "--nofile=96:96", "--"],
    );
    let internal = Gateway::start(&internal_config(
        Relay::Splice,
        dmz.reverse(),
        echo.addr(),
        1,
        None,
    ));
    dmz.wait_prepared("echo", 1, STATE_TIMEOUT);
    let public = dmz.service("echo");

    let cpu_before = cpu_time(dmz.pid());
    let started = Instant::now();
    // Connects complete in the kernel (backlog) whether or not the gateway accepts them.
    let clients: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&public, Duration::from_millis(500)).ok())
        .collect();
    assert!(
        clients.len() > 200,
        "only {} clients connected",
        clients.len()
    );
    std::thread::sleep(Duration::from_secs(3));
    let window = started.elapsed();
    let cpu = cpu_time(dmz.pid()) - cpu_before;
    drop(clients);

    let lines = dmz
        .stderr()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    // One line per second per worker (two workers), plus the control side's: a spin logged
    // millions.
    let most = 6 * (window.as_secs() as usize + 2);
    assert!(
        lines <= most,
        "{lines} 'accept failed' lines in {window:?} (at most {most})\n{}",
        dmz.stderr()
    );
    // Paused accepts cost nothing; re-arming at once on EMFILE cost a third of a core here.
    assert!(
        cpu < window / 10,
        "the DMZ used {cpu:?} of CPU in {window:?} while out of descriptors: accepts spin"
    );
    let pauses = dmz.stats()["accept_pauses"].as_u64();
    assert!(
        pauses > Some(0),
        "no accept paused: {pauses:?}\n{}",
        dmz.stderr()
    );
    // Descriptors come back (waiting clients are reset after the 1 s timeout): served again.
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        dmz.wait_prepared("echo", 1, STATE_TIMEOUT);
        match echo_round_trip(public, b"after the storm") {
            Ok(back) if back == b"after the storm" => break,
            other if Instant::now() > deadline => panic!(
                "not served after the descriptors came back: {other:?}\n{}\n{}",
                dmz.stderr(),
                internal.stderr()
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs `iptables ARGS`; `Err` with its stderr when it fails.
fn iptables(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| format!("no iptables command ({e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Drops every packet to and from a loopback TCP port while it lives (both directions: a link
/// that went dark, no RST, no FIN).
struct Blackhole {
    rules: Vec<Vec<String>>,
}

impl Blackhole {
    fn port(port: u16) -> Result<Blackhole, String> {
        let port = port.to_string();
        let mut hole = Blackhole { rules: Vec::new() };
        for flag in ["--dport", "--sport"] {
            let rule: Vec<String> = ["INPUT", "-i", "lo", "-p", "tcp", flag, &port, "-j", "DROP"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut insert = vec!["-I".to_string()];
            insert.extend(rule.iter().cloned());
            iptables(&insert.iter().map(String::as_str).collect::<Vec<_>>())?;
            hole.rules.push(rule);
        }
        Ok(hole)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for rule in &self.rules {
            let mut delete = vec!["-D"];
            delete.extend(rule.iter().map(String::as_str));
            let _ = iptables(&delete);
        }
    }
}

/// The reverse link goes dark with prepared connections parked on it: keepalive (2 s idle, a
/// probe a second, 3 unanswered) must make both ends drop them — the DMZ stops offering them to
/// clients, the internal gateway counts them lost — and the pool refills once the link is back.
#[test]
fn keepalive_drops_parked_connections_on_a_dead_link() {
    if let Err(e) = iptables(&["-S", "INPUT"]) {
        println!("SKIPPED: iptables unusable here ({e}); needs root and the iptables package");
        return;
    }
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo");
    let dmz_text = dmz_config(Relay::Splice, "2s", 0, None)
        .replace("[reverse]\n", "[reverse]\nkeepalive = \"2s\"\n");
    let dmz = Gateway::start(&dmz_text);
    let internal_text = internal_config(Relay::Splice, dmz.reverse(), echo.addr(), 2, None)
        + "keepalive = \"2s\"\nconnect_timeout = \"1s\"\n";
    let internal = Gateway::start(&internal_text);
    dmz.wait_prepared("echo", 2, STATE_TIMEOUT);
    internal.wait_prepared("echo", 2, STATE_TIMEOUT);
    let lost_before = internal.stats()["services"]["echo"]["prepared_lost"]
        .as_u64()
        .unwrap_or(0);

    let hole = match Blackhole::port(dmz.reverse().port()) {
        Ok(hole) => hole,
        Err(e) => {
            println!("SKIPPED: cannot add iptables rules ({e})");
            return;
        }
    };
    // Dead within idle + 3 probes = 5 s; the waits allow three times that.
    dmz.wait_prepared("echo", 0, STATE_TIMEOUT);
    internal.wait_stats("the parked legs counted lost", STATE_TIMEOUT, |s| {
        s["services"]["echo"]["prepared_lost"].as_u64().unwrap_or(0) >= lost_before + 2
    });
    drop(hole);
    dmz.wait_prepared("echo", 2, STATE_TIMEOUT);
    let back = echo_round_trip(dmz.service("echo"), b"the link is back").expect("echo");
    assert_eq!(back, b"the link is back");
}

/// One source opens far more silent connections to the reverse endpoint than it may negotiate
/// at once: it keeps at most its share of the handshake slots (the rest are closed at accept,
/// counted and logged at most once a second), and a real internal gateway from another source
/// still parks at once although the silent ones would hold their slots for 30 s.
#[test]
fn one_source_cannot_hold_every_reverse_handshake_slot() {
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo");
    let dmz_text = dmz_config(Relay::Splice, "2s", 0, None)
        .replace("[reverse]\n", "[reverse]\nhandshake_timeout = \"30s\"\n");
    let dmz = Gateway::start(&dmz_text);
    let reverse = dmz.reverse();
    // 127.0.0.2 is this host too, but another source than the gateway's dials from 127.0.0.1.
    let attacker: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let silent: Vec<socket2::Socket> = (0..1100)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.bind(&attacker.into()).ok()?;
            s.connect_timeout(&reverse.into(), Duration::from_secs(1))
                .ok()?;
            Some(s)
        })
        .collect();
    assert!(silent.len() > 1024, "only {} connected", silent.len());
    dmz.wait_stats(
        "silent connections over the source's share closed",
        STATE_TIMEOUT,
        |s| s["handshake_failures"]["source_limit"].as_u64() >= Some(1100 - 128 - 64),
    );
    let internal = Gateway::start(&internal_config(
        Relay::Splice,
        reverse,
        echo.addr(),
        2,
        None,
    ));
    dmz.wait_prepared("echo", 2, STATE_TIMEOUT);
    internal.wait_prepared("echo", 2, STATE_TIMEOUT);
    let lines = dmz
        .stderr()
        .lines()
        .filter(|l| l.contains("reverse:") && l.contains("source_limit"))
        .count();
    assert!(
        lines <= 20,
        "{lines} refusal lines for one flood\n{}",
        dmz.stderr()
    );
    drop(silent);
}

/// `idle_timeout` on the DMZ's service: a tunnel silent both ways for that long is reset at
/// both ends (the internal gateway's leg ends with it, its back-end connection too), while a
/// tunnel that keeps talking is left alone; the close is counted with reason `idle`.
#[test]
fn idle_timeout_closes_silent_tunnels_and_spares_talking_ones() {
    use std::io::{ErrorKind, Read, Write};
    let t = sallyport_tests::Tunnel::start_with_dmz(
        &sallyport_tests::dmz_config_accept("tcp://127.0.0.1:0", "idle_timeout = \"1s\""),
        2,
    );
    let open = || {
        let mut c = TcpStream::connect(t.public).expect("connect");
        c.set_read_timeout(Some(STATE_TIMEOUT)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).expect("echo through the tunnel");
        assert_eq!(&back, b"hello");
        c
    };
    let mut silent = open();
    let mut talking = open();
    // Talks every 100 ms for 4 s (four idle timeouts): it stays open all along.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        talking.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        talking
            .read_exact(&mut b)
            .expect("the talking tunnel stays open");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The silent one was reset without a byte (a read ends with EOF or a reset, not the
    // read timeout).
    let mut rest = Vec::new();
    match silent.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(rest.is_empty(), "{rest:?}");
    let stats = t.dmz.wait_stats("an idle close", STATE_TIMEOUT, |s| {
        s["tunnels"]["close_reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c["reason"] == "idle" && c["count"] == 1))
    });
    assert_eq!(stats["tunnels"]["active"], 1, "{stats:#}");
    // The internal side's tunnel of the silent client ended too.
    t.internal
        .wait_stats("the internal tunnel to end", STATE_TIMEOUT, |s| {
            s["tunnels"]["active"] == 1
        });
    talking.write_all(b"z").unwrap();
    let mut b = [0u8; 1];
    talking.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"z");
}
