//! End-to-end tests of the reverse-connection path: an echo back-end, an internal gateway that
//! dials out, and a DMZ gateway that clients connect to — each gateway the real `sallyport`
//! binary in its own process, every address on loopback port 0.
//!
//! These check what a client and an operator can observe (bytes, resets, `/stats`, `/metrics`);
//! they do not time anything beyond the refusal bound, which is part of the contract.
#![deny(unsafe_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sallyport_tests::{
    bulk_echo, connect, dmz_config, echo_round_trip, free_port, internal_config, Auth, EchoServer,
    Gateway, Relay, Tunnel, STATE_TIMEOUT,
};

const BULK_BYTES: usize = 64 << 20;

fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A round trip that must come back byte for byte; panics with both gateways' logs otherwise.
fn assert_echo(t: &Tunnel, payload: &[u8]) {
    match echo_round_trip(t.public, payload) {
        Ok(back) => assert!(
            back == payload,
            "echo mismatch: sent {} bytes, got {} back\n{}",
            payload.len(),
            back.len(),
            t.logs()
        ),
        Err(e) => panic!(
            "echo round trip of {} bytes failed: {e}\n{}",
            payload.len(),
            t.logs()
        ),
    }
}

/// 64 MiB of random bytes each way through DMZ + internal, compared by sha256.
fn bulk(relay: Relay) {
    let t = Tunnel::start(relay, "2s", 4);
    if let Err(e) = bulk_echo(t.public, BULK_BYTES, 0x5a11_9021) {
        panic!("{relay:?}: {e}\n{}", t.logs());
    }
    // The bytes went through the relay, not around it: the DMZ counted them both ways.
    let want = BULK_BYTES as u64;
    t.dmz
        .wait_stats("bytes both ways >= 64 MiB", STATE_TIMEOUT, |s| {
            s["bytes"]["upstream"].as_u64() >= Some(want)
                && s["bytes"]["downstream"].as_u64() >= Some(want)
        });
}

#[test]
fn bulk_64mib_each_way_splice() {
    bulk(Relay::Splice);
}

#[test]
fn bulk_64mib_each_way_copy() {
    bulk(Relay::Copy);
}

#[test]
fn two_hundred_concurrent_clients() {
    const CLIENTS: usize = 200;
    const SIZE: usize = 32 << 10;
    let t = Tunnel::start(Relay::Splice, "5s", 16);
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (ok, errors, barrier, public) =
                (ok.clone(), errors.clone(), barrier.clone(), t.public);
            thread::spawn(move || {
                let mut payload = vec![0u8; SIZE];
                StdRng::seed_from_u64(i as u64).fill_bytes(&mut payload);
                barrier.wait();
                let result = (|| -> io::Result<()> {
                    let mut s = std::net::TcpStream::connect(public)?;
                    s.set_read_timeout(Some(Duration::from_secs(30)))?;
                    s.set_write_timeout(Some(Duration::from_secs(30)))?;
                    s.write_all(&payload)?;
                    let mut back = vec![0u8; SIZE];
                    s.read_exact(&mut back)?;
                    if back != payload {
                        return Err(io::Error::other("echoed bytes differ"));
                    }
                    Ok(())
                })();
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("client {i}: {e}")),
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread panicked");
    }
    let ok = ok.load(Ordering::Relaxed);
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(
        ok,
        CLIENTS,
        "{} of {CLIENTS} clients failed; first errors: {:?}\nDMZ stats: {:#}\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        t.dmz.stats(),
        t.logs()
    );
}

#[test]
fn client_writes_everything_then_half_closes_then_reads() {
    let t = Tunnel::start(Relay::Splice, "2s", 4);
    let mut payload = vec![0u8; 1 << 20];
    StdRng::seed_from_u64(7).fill_bytes(&mut payload);
    let mut s = connect(t.public);
    s.write_all(&payload)
        .unwrap_or_else(|e| panic!("write 1 MiB: {e}\n{}", t.logs()));
    s.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap_or_else(|e| {
        panic!(
            "read back after half-close: {e} ({} bytes so far)\n{}",
            back.len(),
            t.logs()
        )
    });
    assert_eq!(
        back.len(),
        payload.len(),
        "byte count after half-close\n{}",
        t.logs()
    );
    assert!(back == payload, "echoed bytes differ after half-close");
}

#[test]
fn bind_for_unknown_service_gets_rep_02_and_close() {
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "2s", 0, None));
    let mut s = connect(dmz.reverse());
    s.write_all(&[0x05, 0x01, 0x00]).expect("greeting");
    let mut method = [0u8; 2];
    s.read_exact(&mut method)
        .unwrap_or_else(|e| panic!("method selection: {e}\n{}", dmz.stderr()));
    assert_eq!(method, [0x05, 0x00], "method selection");
    let mut bind = vec![0x05, 0x02, 0x00, 0x03, 4];
    bind.extend_from_slice(b"nope");
    bind.extend_from_slice(&[0x00, 0x00]);
    s.write_all(&bind).expect("BIND request");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap_or_else(|e| {
        panic!(
            "reading the reply to BIND nope: {e} (got {reply:02x?})\n{}",
            dmz.stderr()
        )
    });
    assert!(
        reply.len() >= 2 && reply[0] == 0x05 && reply[1] == 0x02,
        "expected a SOCKS5 reply with REP=0x02, got {reply:02x?}"
    );
    dmz.wait_stats(
        "handshake_failures.unknown_service >= 1",
        STATE_TIMEOUT,
        |s| s["handshake_failures"]["unknown_service"].as_u64() >= Some(1),
    );
}

#[test]
fn malformed_socks_is_closed_and_counted() {
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "2s", 0, None));
    let mut s = connect(dmz.reverse());
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "expected a close, got bytes {got:02x?}"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "expected EOF or reset, got {e} after {got:02x?}\n{}",
            dmz.stderr()
        ),
    }
    dmz.wait_stats("handshake_failures.malformed >= 1", STATE_TIMEOUT, |s| {
        s["handshake_failures"]["malformed"].as_u64() >= Some(1)
    });
}

#[test]
fn client_without_prepared_connection_is_reset_after_timeout() {
    // Accept-then-reset is `admission = "always"`; with "ready" (the default) this client would
    // be refused at SYN (tests/tests/admission.rs).
    let config = dmz_config(Relay::Splice, "500ms", 0, None) + "admission = \"always\"\n";
    let dmz = Gateway::start(&config);
    let started = Instant::now();
    let mut s = connect(dmz.service("echo"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    // The write may race the reset; either way the read below decides.
    let _ = s.write_all(b"hello");
    let mut buf = [0u8; 64];
    let result = s.read(&mut buf);
    let elapsed = started.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!(
            "expected ConnectionReset, got {other:?} after {elapsed:?}\n{}",
            dmz.stderr()
        ),
    }
    assert!(
        elapsed >= Duration::from_millis(400),
        "reset after {elapsed:?}, before the 500ms timeout"
    );
    assert!(
        elapsed <= Duration::from_millis(3500),
        "reset only after {elapsed:?} (timeout 500ms)"
    );
    dmz.wait_stats(
        "services.echo.refused.no_prepared >= 1",
        STATE_TIMEOUT,
        |s| s["services"]["echo"]["refused"]["no_prepared"].as_u64() >= Some(1),
    );
}

#[test]
fn dmz_started_after_internal_gateway() {
    let echo = EchoServer::start(localhost0()).expect("start echo");
    let port = free_port();
    let reverse = SocketAddr::from(([127, 0, 0, 1], port));
    let internal = Gateway::start(&internal_config(
        Relay::Splice,
        reverse,
        echo.addr(),
        4,
        None,
    ));
    internal.wait_stats("dials.connect_failed >= 2", STATE_TIMEOUT, |s| {
        s["services"]["echo"]["dials"]["connect_failed"].as_u64() >= Some(2)
    });
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "2s", port, None));
    assert_eq!(dmz.reverse(), reverse);
    dmz.wait_prepared("echo", 4, STATE_TIMEOUT);
    internal.wait_prepared("echo", 4, STATE_TIMEOUT);
    let public = dmz.service("echo");
    let t = Tunnel {
        echo,
        dmz,
        internal,
        public,
    };
    assert_echo(&t, b"late DMZ, early internal");
}

#[test]
fn internal_gateway_killed_and_restarted() {
    let mut t = Tunnel::start(Relay::Splice, "2s", 4);
    assert_echo(&t, b"before the kill");
    t.internal.kill();
    t.dmz.wait_prepared("echo", 0, STATE_TIMEOUT);
    t.internal = Gateway::start(&internal_config(
        Relay::Splice,
        t.dmz.reverse(),
        t.echo.addr(),
        4,
        None,
    ));
    t.dmz.wait_prepared("echo", 4, STATE_TIMEOUT);
    t.internal.wait_prepared("echo", 4, STATE_TIMEOUT);
    assert_echo(&t, b"after the restart");
}

#[test]
fn prepared_count_at_rest_and_after_tunnels() {
    let t = Tunnel::start(Relay::Splice, "2s", 4);
    assert_eq!(t.dmz.stats()["services"]["echo"]["role"], "dmz");
    assert_eq!(t.internal.stats()["services"]["echo"]["role"], "internal");
    for i in 0..20 {
        assert_echo(&t, format!("tunnel {i}").as_bytes());
    }
    t.dmz.wait_prepared("echo", 4, STATE_TIMEOUT);
    t.internal.wait_prepared("echo", 4, STATE_TIMEOUT);
    let dmz_stats = t.dmz.wait_stats("tunnels.active == 0", STATE_TIMEOUT, |s| {
        s["tunnels"]["active"].as_u64() == Some(0)
    });
    assert!(
        dmz_stats["tunnels"]["total"].as_u64() >= Some(20),
        "DMZ counted fewer than 20 tunnels: {dmz_stats:#}"
    );
    let line = "sallyport_prepared_connections{service=\"echo\"} 4\n";
    for (who, gw) in [("DMZ", &t.dmz), ("internal", &t.internal)] {
        let metrics = gw.metrics();
        assert!(
            metrics.contains(line),
            "{who} /metrics lacks {line:?}:\n{metrics}"
        );
    } // SIGTERM stops both cleanly (exit 0), with parked connections and idle pools.
    let Tunnel { dmz, internal, .. } = t;
    internal.stop();
    dmz.stop();
}

#[test]
fn user_password_accepted() {
    let auth = Auth {
        user: "internal",
        password: "s3cret",
    };
    let echo = EchoServer::start(localhost0()).expect("start echo");
    let dmz = Gateway::start(&dmz_config(Relay::Splice, "2s", 0, Some(auth)));
    let internal = Gateway::start(&internal_config(
        Relay::Splice,
        dmz.reverse(),
        echo.addr(),
        4,
        Some(auth),
    ));
    dmz.wait_prepared("echo", 4, STATE_TIMEOUT);
    internal.wait_prepared("echo", 4, STATE_TIMEOUT);
    let public = dmz.service("echo");
    let t = Tunnel {
        echo,
        dmz,
        internal,
        public,
    };
    assert_echo(&t, b"authenticated");
    let failures = t.dmz.stats()["handshake_failures"]["auth_failed"].clone();
    assert_eq!(failures, 0, "auth failures with the right password");
}

#[test]
fn wrong_password_is_refused() {
    let echo = EchoServer::start(localhost0()).expect("start echo");
    let dmz = Gateway::start(&dmz_config(
        Relay::Splice,
        "2s",
        0,
        Some(Auth {
            user: "internal",
            password: "s3cret",
        }),
    ));
    let internal = Gateway::start(&internal_config(
        Relay::Splice,
        dmz.reverse(),
        echo.addr(),
        4,
        Some(Auth {
            user: "internal",
            password: "wrong",
        }),
    ));
    let stats = dmz.wait_stats("handshake_failures.auth_failed >= 3", STATE_TIMEOUT, |s| {
        s["handshake_failures"]["auth_failed"].as_u64() >= Some(3)
    });
    assert_eq!(
        stats["services"]["echo"]["prepared"], 0,
        "DMZ parked connections that failed authentication: {stats:#}"
    );
    let internal_stats = internal.stats();
    assert_eq!(
        internal_stats["services"]["echo"]["prepared"], 0,
        "internal counts parked connections despite a wrong password: {internal_stats:#}"
    );
}
