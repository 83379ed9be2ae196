//! `backend_probe` end to end: the back-end's health travels through the reverse pool. A DMZ,
//! an internal gateway and an echo back-end, each real; the back-end is stopped (its listener
//! closed) and restarted on the same port, or down at start, and the DMZ's `/stats` shows what
//! the internal gateway parked there.
//!
//! Asserts prepared counts and the state in the internal gateway's `/stats`, and how many state
//! change lines it logged; not how a public client of an empty service fails (that is the DMZ's
//! admission, tested with it), and no speed beyond the state waits' deadlines.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sallyport_tests::{
    dmz_config, echo_round_trip, free_port, internal_config, DevCerts, EchoServer, Gateway, Relay,
    STATE_TIMEOUT,
};

const PREPARED: i64 = 4;
/// How long a count is watched to show it stays put (several probes at `retry_max` 200 ms).
const HOLD: Duration = Duration::from_millis(1500);
const DOWN_LINE: &str = "parked connections released, probing";
const UP_LINE: &str = "answers again: parking";

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct Setup {
    dmz: Gateway,
    internal: Gateway,
    public: SocketAddr,
}

impl Setup {
    /// A DMZ, then an internal gateway whose service `echo` keeps [`PREPARED`] connections
    /// parked and connects them to `backend`; `extra` lines go into the internal service.
    fn start(backend: SocketAddr, extra: &str) -> Setup {
        Setup::start_with(&dmz_config(Relay::Splice, "1s", 0, None), |reverse| {
            let config = internal_config(Relay::Splice, reverse, backend, PREPARED as u32, None);
            format!("{config}{extra}\n")
        })
    }

    /// A DMZ running `dmz` (a `[reverse]` section and a service `echo` bound as `echo`), then
    /// an internal gateway running `internal(the DMZ's reverse address)`.
    fn start_with(dmz: &str, internal: impl FnOnce(SocketAddr) -> String) -> Setup {
        let dmz = Gateway::start(dmz);
        let internal = Gateway::start(&internal(dmz.reverse()));
        let public = dmz.service("echo");
        Setup {
            dmz,
            internal,
            public,
        }
    }

    /// The DMZ's service is down (admission = "ready", the default) and a public client's
    /// connect is refused: the dead back-end reached the client as ECONNREFUSED.
    fn assert_refused_at_the_door(&self) {
        sallyport_kit::child::wait_until("the DMZ's service is down", STATE_TIMEOUT, || {
            self.dmz.stats()["services"]["echo"]["admission"]["state"] == "down"
        });
        // The keeper publishes "down", then wakes the workers that shut the listeners: a
        // connect accepted in between is retried for a moment.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match std::net::TcpStream::connect(self.public) {
                Err(e) => {
                    return assert_eq!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused,
                        "{e}\n{}",
                        self.logs()
                    )
                }
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(_) => panic!(
                    "a client was accepted by a service whose back-end is down\n{}",
                    self.logs()
                ),
            }
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- DMZ stderr ---\n{}\n--- internal stderr ---\n{}",
            self.dmz.stderr(),
            self.internal.stderr()
        )
    }

    fn dmz_prepared(&self) -> i64 {
        self.dmz.stats()["services"]["echo"]["prepared"]
            .as_i64()
            .unwrap_or_else(|| panic!("no services.echo.prepared\n{}", self.logs()))
    }

    fn backend_state(&self) -> String {
        self.internal.stats()["services"]["echo"]["backend"]["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no services.echo.backend.state\n{}", self.logs()))
            .to_string()
    }

    fn wait_backend(&self, state: &str) {
        self.internal.wait_stats(
            &format!("services.echo.backend.state == {state:?}"),
            STATE_TIMEOUT,
            |s| s["services"]["echo"]["backend"]["state"] == state,
        );
    }

    /// Both sides count `n` parked connections.
    fn wait_parked(&self, n: i64) {
        self.dmz.wait_prepared("echo", n, STATE_TIMEOUT);
        self.internal.wait_prepared("echo", n, STATE_TIMEOUT);
    }

    /// The DMZ's prepared count stays `n` for [`HOLD`].
    fn assert_dmz_prepared_stays(&self, n: i64, why: &str) {
        let end = Instant::now() + HOLD;
        while Instant::now() < end {
            let now = self.dmz_prepared();
            assert_eq!(now, n, "{why}: DMZ prepared count moved\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_echo(&self) {
        let payload = b"through the pool again".to_vec();
        match echo_round_trip(self.public, &payload) {
            Ok(back) => assert_eq!(back, payload, "echo differs\n{}", self.logs()),
            Err(e) => panic!("echo round trip failed: {e}\n{}", self.logs()),
        }
    }

    /// One public client whose tunnel cannot reach the back-end: it must not get its bytes back
    /// (how it fails is not asserted).
    fn client_fails(&self) {
        let payload = b"nobody home".to_vec();
        if let Ok(back) = echo_round_trip(self.public, &payload) {
            assert_ne!(
                back,
                payload,
                "echo came back with the back-end stopped\n{}",
                self.logs()
            );
        }
    }

    fn internal_lines(&self, needle: &str) -> usize {
        self.internal
            .stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[test]
fn stopped_back_end_empties_the_pool_and_restarted_refills_it() {
    let echo = EchoServer::start(localhost(0)).expect("start echo");
    let backend = echo.addr();
    let t = Setup::start(backend, "");
    t.wait_parked(PREPARED);
    t.wait_backend("up");
    t.assert_echo();

    drop(echo); // The listener is closed when this returns: connects are refused.
    t.client_fails();
    t.dmz.wait_prepared("echo", 0, STATE_TIMEOUT);
    t.internal.wait_prepared("echo", 0, STATE_TIMEOUT);
    assert_eq!(t.backend_state(), "down", "{}", t.logs());
    let reason = t.internal.stats()["services"]["echo"]["backend"]["reason"].clone();
    assert_eq!(reason, "refused", "{}", t.logs());
    t.assert_dmz_prepared_stays(0, "back-end stopped");
    t.assert_refused_at_the_door();
    assert_eq!(
        t.internal_lines(DOWN_LINE),
        1,
        "one line per state change\n{}",
        t.logs()
    );
    assert_eq!(t.internal_lines(UP_LINE), 0, "{}", t.logs());

    let _echo = EchoServer::start(backend).expect("restart echo on the same port");
    t.wait_parked(PREPARED);
    t.wait_backend("up");
    t.assert_echo();
    assert_eq!(t.internal_lines(DOWN_LINE), 1, "{}", t.logs());
    assert_eq!(t.internal_lines(UP_LINE), 1, "{}", t.logs());
    // The DMZ saw the released connections as lost, not as used.
    let dmz = t.dmz.stats();
    assert!(
        dmz["services"]["echo"]["prepared_lost"].as_u64() >= Some(PREPARED as u64 - 1),
        "{dmz:#}\n{}",
        t.logs()
    );
}

#[test]
fn back_end_down_at_start_parks_nothing_until_it_answers() {
    let backend = localhost(free_port());
    let t = Setup::start(backend, "");
    t.wait_backend("down");
    t.assert_dmz_prepared_stays(0, "back-end down at start");
    t.assert_refused_at_the_door();
    let internal = t.internal.stats();
    assert_eq!(
        internal["services"]["echo"]["dials"]["parked"].as_u64(),
        Some(0),
        "no dial while the back-end is down\n{internal:#}"
    );
    assert_eq!(
        t.internal_lines("parking nothing until it answers"),
        1,
        "{}",
        t.logs()
    );

    let _echo = EchoServer::start(backend).expect("start echo late");
    t.wait_parked(PREPARED);
    t.wait_backend("up");
    t.assert_echo();
}

#[test]
fn probe_off_parks_regardless_of_the_back_end() {
    let echo = EchoServer::start(localhost(0)).expect("start echo");
    let t = Setup::start(echo.addr(), "backend_probe = false");
    t.wait_parked(PREPARED);
    assert_eq!(t.backend_state(), "unchecked", "{}", t.logs());

    drop(echo);
    t.client_fails();
    t.internal
        .wait_stats("backend_failures >= 1", STATE_TIMEOUT, |s| {
            s["services"]["echo"]["backend_failures"].as_u64() >= Some(1)
        });
    // The used connection is replaced; nothing is released.
    t.dmz.wait_prepared("echo", PREPARED, STATE_TIMEOUT);
    t.assert_dmz_prepared_stays(PREPARED, "backend_probe = false");
    assert_eq!(t.internal_lines(DOWN_LINE), 0, "{}", t.logs());
}

/// Reverse legs with mutual TLS: released legs end with close_notify and FIN, which the DMZ
/// counts as lost like a plain close; the pool refills over TLS when the back-end returns.
#[test]
fn tls_reverse_legs_are_released_and_refilled() {
    let certs = DevCerts::generate();
    let echo = EchoServer::start(localhost(0)).expect("start echo");
    let backend = echo.addr();
    let dmz = format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [reverse]\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}\n\n\
         [[service]]\nname = \"echo\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"reverse://echo\"\n\
         timeout = \"1s\"\n",
        certs.path("dmz.pem"),
        certs.path("dmz.key"),
        certs.path("ca.pem")
    );
    let t = Setup::start_with(&dmz, |reverse| {
        format!(
            "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
             [[service]]\nname = \"echo\"\naccept = \"reverse://{reverse}/echo\"\n\
             connect = \"tcp://{backend}\"\nprepared = {PREPARED}\nretry_max = \"200ms\"\n\
             tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\", server_name = \"localhost\" }}\n",
            certs.path("ca.pem"),
            certs.path("internal.pem"),
            certs.path("internal.key")
        )
    });
    t.wait_parked(PREPARED);
    t.assert_echo();

    drop(echo);
    t.client_fails();
    t.dmz.wait_prepared("echo", 0, STATE_TIMEOUT);
    t.internal.wait_prepared("echo", 0, STATE_TIMEOUT);
    t.assert_dmz_prepared_stays(0, "back-end stopped (TLS reverse legs)");

    let _echo = EchoServer::start(backend).expect("restart echo on the same port");
    t.wait_parked(PREPARED);
    t.assert_echo();
    assert_eq!(t.internal_lines(DOWN_LINE), 1, "{}", t.logs());
}
