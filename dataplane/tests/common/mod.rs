//! Helpers shared by the data plane's integration tests: configurations, a socket pair that
//! stands in for a prepared connection, and bounded waiting.
#![allow(dead_code)] // Each test file uses its own subset.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use sallyport_dataplane::admission::{Admission, SourcePolicy};
use sallyport_dataplane::{
    Dataplane, DataplaneConfig, PublicService, RelayConfig, RelayMode, ReverseEvents, RingSetup,
    StreamOptions,
};

/// Small buffers and pipes, so short tests still cross many fills.
pub fn relay(mode: RelayMode) -> RelayConfig {
    RelayConfig {
        mode,
        pipe_size: 256 << 10,
        buffer_size: 16 << 10,
        stream: StreamOptions::default(),
        busy_poll: Duration::ZERO,
    }
}

pub fn config(
    workers: usize,
    mode: RelayMode,
    services: Vec<PublicService>,
    reverse_events: Option<ReverseEvents>,
) -> DataplaneConfig {
    DataplaneConfig {
        workers,
        cores: None,
        relay: relay(mode),
        ring: RingSetup::DeferTaskrun,
        services,
        reverse_events,
    }
}

pub fn start(
    workers: usize,
    mode: RelayMode,
    services: Vec<PublicService>,
    reverse_events: Option<ReverseEvents>,
) -> Dataplane {
    Dataplane::start(config(workers, mode, services, reverse_events)).expect("data plane starts")
}

/// A plain public service on 127.0.0.1:0 served by prepared connections.
pub fn plain_service(name: &str, timeout: Duration) -> PublicService {
    PublicService {
        name: name.to_string(),
        listen: "127.0.0.1:0".parse().expect("address"),
        timeout,
        idle_timeout: None,
        tls: None,
        ws: None,
        upstream: None,
        admission: Admission::Always,
        policy: SourcePolicy::default(),
        accept_proxy: Vec::new(),
    }
}

/// A connected pair: the first end is handed to the data plane (as a prepared connection or
/// a reverse leg), the second plays the other gateway.
pub fn prepared_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (ours, other)
}

/// How long [`wait_until`] waits for a condition.
pub const WAIT: Duration = Duration::from_secs(10);

/// Waits at most [`WAIT`] for `cond` (polled; what it watches sends no message).
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    sallyport_kit::child::wait_until(what, WAIT, cond)
}

/// A back-end reached over plain TCP, or TLS with `tls`: where a reverse leg connects once paired.
pub fn backend(
    addr: std::net::SocketAddr,
    connect_timeout: Duration,
    tls: Option<sallyport_dataplane::TargetTls>,
) -> sallyport_dataplane::Upstream {
    sallyport_dataplane::Upstream {
        addr,
        tls,
        connect_timeout,
        ws: None,
        proxy_protocol: None,
        held: None,
    }
}

/// The error the next read on `stream` ends with, within `limit` (a reset, usually). A reset
/// that arrives before the read timeout is set fails that `setsockopt` already: it is the
/// answer then. Panics if the read returns data or EOF instead.
pub fn read_error(stream: &mut TcpStream, limit: Duration) -> std::io::Error {
    use std::io::Read;
    if let Err(e) = stream.set_read_timeout(Some(limit)) {
        return e;
    }
    let mut buf = [0u8; 8];
    match stream.read(&mut buf) {
        Ok(n) => panic!("expected an error, read {n} bytes"),
        Err(e) => e,
    }
}

/// The error a fresh connection to `addr` ends with within `limit`: a server that resets at
/// once can do so before `connect` has returned here, and then `connect` reports it.
pub fn connect_error(addr: std::net::SocketAddr, limit: Duration) -> std::io::Error {
    match TcpStream::connect(addr) {
        Err(e) => e,
        Ok(mut stream) => read_error(&mut stream, limit),
    }
}
