//! `admission = "ready"` on DMZ services, end to end with the real binary: while a service is
//! down (no prepared connection parked, or the last one lost, or none within its timeout) a
//! client's `connect()` fails with ECONNREFUSED; once the internal gateway parks one it
//! succeeds again; a burst larger than the pool waits and is served; `admission = "always"`
//! keeps the accept-then-reset behaviour; a port-0 service keeps its port across a down/up
//! cycle.
//!
//! Assertions are on what a client sees (`connect()` errors, echoed bytes) and on `/stats`;
//! nothing is timed beyond waiting for a state with a deadline.
#![deny(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use sallyport_tests::{
    connect, dmz_config, echo_round_trip, internal_config, sys, EchoServer, Gateway, Relay, Tunnel,
    IO_TIMEOUT, STATE_TIMEOUT,
};
use serde_json::Value;

/// Linux signal numbers the kit does not re-export.
const SIGSTOP: sys::c_int = 19;
const SIGCONT: sys::c_int = 18;

fn state(stats: &Value) -> (&str, &str) {
    let a = &stats["services"]["echo"]["admission"];
    (
        a["state"].as_str().unwrap_or("?"),
        a["why"].as_str().unwrap_or("?"),
    )
}

fn wait_state(dmz: &Gateway, want: &str) -> Value {
    dmz.wait_stats(
        &format!("services.echo.admission.state == {want}"),
        STATE_TIMEOUT,
        |s| state(s).0 == want,
    )
}

/// How long after `/stats` says "down" the workers may take to shut their listeners (the
/// keeper publishes the state, then wakes them).
const DOOR_SETTLE: Duration = Duration::from_millis(500);

/// `connect()` to `addr` must fail with ECONNREFUSED (not time out, not fail otherwise); a
/// connect accepted in the moment before the workers shut the door is retried, within
/// [`DOOR_SETTLE`].
fn assert_refused(addr: SocketAddr, context: &str) {
    let deadline = std::time::Instant::now() + DOOR_SETTLE;
    loop {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) => panic!("{context}: connect to {addr} succeeded; expected ECONNREFUSED"),
            Err(e) => {
                return assert_eq!(
                    e.kind(),
                    ErrorKind::ConnectionRefused,
                    "{context}: connect to {addr} failed with {e}; expected ECONNREFUSED"
                )
            }
        }
    }
}

fn assert_echo(addr: SocketAddr, payload: &[u8], logs: impl Fn() -> String) {
    match echo_round_trip(addr, payload) {
        Ok(back) => assert_eq!(back, payload, "echo mismatch\n{}", logs()),
        Err(e) => panic!("echo through {addr} failed: {e}\n{}", logs()),
    }
}

#[test]
fn no_internal_gateway_refuses_at_syn() {
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "2s", 0, None));
    let public = dmz.service("echo");
    for _ in 0..3 {
        assert_refused(public, "no internal gateway");
    }
    let stats = dmz.stats();
    let a = &stats["services"]["echo"]["admission"];
    assert_eq!(state(&stats), ("down", "never served"), "{stats:#}");
    assert_eq!(a["mechanism"], "listener closed while down", "{stats:#}");
    assert_eq!(a["verdicts"]["accept"], 0);
    let metrics = dmz.metrics();
    assert!(
        metrics.contains("sallyport_service_up{service=\"echo\"} 0\n"),
        "{metrics}"
    );
    dmz.stop();
}

#[test]
fn up_when_parked_refused_when_internal_killed_same_port_after() {
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("start echo");
    // The public service listens on port 0: its port must survive the down/up cycles.
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "2s", 0, None));
    let public = dmz.service("echo");
    assert_refused(public, "before the internal gateway");
    let internal_toml = internal_config(Relay::Splice, dmz.reverse(), echo.addr(), 2, None);

    let mut internal = Gateway::start(&internal_toml);
    dmz.wait_prepared("echo", 2, STATE_TIMEOUT);
    let logs = || dmz.stderr();
    assert_echo(public, b"first life", logs);
    let stats = wait_state(&dmz, "up");
    assert_eq!(state(&stats).1, "prepared connection parked");
    let metrics = dmz.metrics();
    assert!(
        metrics.contains("sallyport_service_up{service=\"echo\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sallyport_admission_total{service=\"echo\",verdict=\"accept\"} 1\n"),
        "{metrics}"
    );

    // SIGKILL: the kernel closes its parked connections; the DMZ sees them lost.
    internal.kill();
    let stats = wait_state(&dmz, "down");
    assert_eq!(
        state(&stats).1,
        "last prepared connection lost",
        "{stats:#}"
    );
    assert_refused(public, "internal gateway killed");

    let internal = Gateway::start(&internal_toml);
    dmz.wait_prepared("echo", 2, STATE_TIMEOUT);
    assert_eq!(dmz.service("echo"), public);
    assert_echo(public, b"second life", || dmz.stderr());
    let stats = dmz.stats();
    assert_eq!(state(&stats).0, "up", "{stats:#}");
    assert!(
        stats["services"]["echo"]["admission"]["changes"].as_u64() >= Some(3),
        "{stats:#}"
    );
    let log = dmz.stderr();
    assert!(
        log.contains("service admission state changed")
            && log.contains("last prepared connection lost"),
        "{log}"
    );
    internal.stop();
    dmz.stop();
}

#[test]
fn a_burst_larger_than_the_pool_waits_and_is_served() {
    let t = Tunnel::start(Relay::Splice, "10s", 2);
    let clients = 10;
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let public = t.public;
            thread::spawn(move || {
                barrier.wait();
                let payload = format!("client {i} of the burst");
                echo_round_trip(public, payload.as_bytes()).map(|back| back == payload.as_bytes())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join().expect("client thread") {
            Ok(true) => {}
            Ok(false) => panic!("client {i}: echo mismatch\n{}", t.logs()),
            Err(e) => panic!("client {i}: {e}\n{}", t.logs()),
        }
    }
    let stats = t.dmz.stats();
    let echo = &stats["services"]["echo"];
    assert_eq!(echo["admission"]["verdicts"]["accept"], clients as u64);
    assert_eq!(echo["refused"]["no_prepared"], 0, "{stats:#}");
    assert_eq!(state(&stats).0, "up", "{stats:#}");
}

#[test]
fn no_refill_within_the_timeout_goes_down_and_accepted_clients_are_kept() {
    let t = Tunnel::start(Relay::Splice, "500ms", 1);
    // The internal gateway stops refilling (and relaying) but keeps its sockets.
    t.internal.signal(SIGSTOP);
    // Each client takes the parked connection. A refill the internal side sent just before it
    // stopped may still arrive: then the service stays up, and the next client takes that one.
    let mut kept = Vec::new();
    let mut stats = Value::Null;
    for _ in 0..5 {
        kept.push(connect(t.public));
        let down = sallyport_tests::child::poll_every(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || {
                stats = t.dmz.stats();
                state(&stats).0 == "down"
            },
        );
        if down {
            break;
        }
    }
    assert_eq!(
        state(&stats),
        ("down", "no prepared connection within timeout"),
        "{stats:#}\n{}",
        t.logs()
    );
    assert_refused(t.public, "pool used up and not refilled");
    t.internal.signal(SIGCONT);
    // The clients accepted before the change are served once the internal side runs again.
    for mut client in kept {
        client.write_all(b"still here").expect("write");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("read the echo");
        assert_eq!(back, b"still here", "{}", t.logs());
    }
    wait_state(&t.dmz, "up");
    assert_echo(t.public, b"after the refill", || t.logs());
}

#[test]
fn always_accepts_then_resets() {
    let config = dmz_config(Relay::Splice, "300ms", 0, None) + "admission = \"always\"\n";
    let dmz = Gateway::start(&config);
    let mut client = connect(dmz.service("echo"));
    client.write_all(b"anyone there?").expect("write");
    let mut buf = [0u8; 16];
    let err = client
        .read(&mut buf)
        .expect_err("reset after the service's timeout, not data or EOF");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let stats = dmz.wait_stats("one refusal counted", STATE_TIMEOUT, |s| {
        s["services"]["echo"]["refused"]["no_prepared"] == 1
    });
    let a = &stats["services"]["echo"]["admission"];
    assert_eq!(a["state"], "down", "{stats:#}");
    assert_eq!(a["mechanism"], "none (admission = always)", "{stats:#}");
    assert_eq!(a["verdicts"]["accept"], 1, "{stats:#}");
    dmz.stop();
}

#[test]
fn a_shared_websocket_listener_opens_while_any_of_its_services_is_up() {
    // Services on one address routed by path share a listener: it must know its port (port 0
    // gives each service a listener of its own).
    let port = sallyport_tests::free_port();
    let dmz_toml = format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [reverse]\nlisten = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"ws://127.0.0.1:{port}/echo\"\nconnect = \"reverse://echo\"\ntimeout = \"2s\"\n\n\
         [[service]]\nname = \"other\"\naccept = \"ws://127.0.0.1:{port}/other\"\nconnect = \"reverse://other\"\ntimeout = \"2s\"\n"
    );
    let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("start echo");
    let dmz = Gateway::start(&dmz_toml);
    let public = dmz.service("echo");
    assert_eq!(dmz.service("other"), public, "one shared listener");
    assert_refused(public, "both services down");
    let mut internal = Gateway::start(&internal_config(
        Relay::Splice,
        dmz.reverse(),
        echo.addr(),
        1,
        None,
    ));
    dmz.wait_prepared("echo", 1, STATE_TIMEOUT);
    // `echo` is up, `other` is still down: the listener is open for both.
    let stats = dmz.stats();
    assert_eq!(state(&stats).0, "up", "{stats:#}");
    assert_eq!(
        stats["services"]["other"]["admission"]["state"], "down",
        "{stats:#}"
    );
    TcpStream::connect_timeout(&public, IO_TIMEOUT).expect("open while one service is up");
    internal.kill();
    wait_state(&dmz, "down");
    assert_refused(public, "both services down again");
    dmz.stop();
}
