//! The load loops against the echo back-end and against broken back-ends.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use super::common::*;
use super::*;
use crate::backend::EchoServer;

fn echo() -> EchoServer {
    EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind echo server")
}

#[test]
fn bulk_two_connections_complete() {
    let server = echo();
    let spec = BulkSpec {
        connections: 2,
        bytes_per_connection: 4 * 1024 * 1024,
        write_size: 64 * 1024,
        time_limit: Duration::from_secs(120),
    };
    let result = bulk(server.addr(), &spec).expect("bulk run");
    assert!(result.complete, "{result:?}");
    assert_eq!(result.bytes, 2 * 4 * 1024 * 1024);
    assert!(result.gbytes_per_sec >= 0.0);
    assert_eq!(server.connections(), 2);
}

#[test]
fn bulk_odd_write_size_and_zero_bytes() {
    let server = echo();
    let spec = BulkSpec {
        connections: 3,
        bytes_per_connection: 1_000_003,
        write_size: 4_099,
        time_limit: Duration::from_secs(120),
    };
    let result = bulk(server.addr(), &spec).expect("bulk run");
    assert!(result.complete);
    assert_eq!(result.bytes, 3 * 1_000_003);
    let empty = BulkSpec {
        bytes_per_connection: 0,
        ..spec
    };
    let result = bulk(server.addr(), &empty).expect("empty bulk run");
    assert!(result.complete);
    assert_eq!(result.bytes, 0);
}

#[test]
fn bulk_stops_at_time_limit() {
    let server = echo();
    let spec = BulkSpec {
        connections: 1,
        bytes_per_connection: u64::MAX,
        write_size: 64 * 1024,
        time_limit: Duration::from_millis(300),
    };
    let result = bulk(server.addr(), &spec).expect("bulk run");
    assert!(!result.complete);
}

#[test]
fn bulk_rejects_zero_connections() {
    let spec = BulkSpec {
        connections: 0,
        ..BulkSpec::default()
    };
    let err = bulk(SocketAddr::from(([127, 0, 0, 1], 9)), &spec).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn bulk_detects_a_corrupting_backend() {
    // A backend that flips one byte of everything it echoes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let backend = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        let mut first = true;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if first {
                        buf[n / 2] ^= 0xff;
                        first = false;
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let spec = BulkSpec {
        connections: 1,
        bytes_per_connection: 1 << 20,
        write_size: 16 * 1024,
        time_limit: Duration::from_secs(60),
    };
    let err = bulk(addr, &spec).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("connection 0"), "{err}");
    backend.join().expect("backend thread");
}

#[test]
fn rr_closed_loop_counts_every_request() {
    let server = echo();
    let spec = RrSpec {
        connections: 2,
        size: 64,
        requests_per_connection: 200,
        rate_per_sec: None,
        time_limit: Duration::from_secs(120),
    };
    let result = rr(server.addr(), &spec).expect("rr run");
    assert_eq!(result.requests, 400);
    assert_eq!(result.histogram.len(), 400);
    let summary = result.summary();
    assert!(summary.p50_us <= summary.max_us);
    assert!(summary.p99_us <= summary.p9999_us);
    assert_eq!(summary.requests, 400);
    // Not a speed check: a TCP round trip takes far more than 100 ns, so samples were not clamped.
    assert!(result.histogram.max() > 100, "{}", result.histogram.max());
}

#[test]
fn rr_open_loop_runs() {
    let server = echo();
    let spec = RrSpec {
        connections: 2,
        size: 32,
        requests_per_connection: 50,
        rate_per_sec: Some(2_000.0),
        time_limit: Duration::from_secs(120),
    };
    let result = rr(server.addr(), &spec).expect("open-loop rr run");
    assert_eq!(result.requests, 100);
    assert!(result.percentile_us(50.0) <= result.summary().max_us);
}

#[test]
fn rr_open_loop_stops_at_time_limit() {
    let server = echo();
    let spec = RrSpec {
        connections: 1,
        size: 8,
        requests_per_connection: u64::MAX,
        rate_per_sec: Some(1_000.0),
        time_limit: Duration::from_millis(200),
    };
    let result = rr(server.addr(), &spec).expect("rr run");
    assert!(result.requests < u64::MAX);
}

#[test]
fn rr_short_read_is_an_error_naming_the_connection() {
    // A backend that answers half a reply, then closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let backend = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        s.read_exact(&mut buf).expect("read request");
        s.write_all(&buf[..32]).expect("write half");
    });
    let spec = RrSpec {
        connections: 1,
        requests_per_connection: 10,
        time_limit: Duration::from_secs(60),
        ..RrSpec::default()
    };
    let err = rr(addr, &spec).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert!(err.to_string().contains("connection 0"), "{err}");
    backend.join().expect("backend thread");
}

#[test]
fn rr_rejects_bad_rate() {
    let spec = RrSpec {
        rate_per_sec: Some(0.0),
        ..RrSpec::default()
    };
    let err = rr(SocketAddr::from(([127, 0, 0, 1], 9)), &spec).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn empty_result_percentiles_are_zero() {
    let result = RrResult {
        requests: 0,
        seconds: 0.0,
        histogram: new_histogram(),
    };
    let s = result.summary();
    assert_eq!(s.p50_us, 0.0);
    assert_eq!(s.max_us, 0.0);
    assert_eq!(s.requests_per_sec, 0.0);
}

#[test]
fn cps_counts_every_connection() {
    let server = echo();
    let spec = CpsSpec {
        count: 50,
        concurrency: 3,
        size: 64,
        time_limit: Duration::from_secs(120),
    };
    let result = cps(server.addr(), &spec).expect("cps run");
    assert_eq!(result.completed, 50, "{:?}", result.first_error);
    assert_eq!(result.failed, 0);
    assert_eq!(result.histogram.len(), 50);
    assert_eq!(server.connections(), 50);
    assert!(result.per_sec() > 0.0);
}

#[test]
fn cps_counts_refusals_as_failures() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let spec = CpsSpec {
        count: 5,
        concurrency: 1,
        size: 8,
        time_limit: Duration::from_secs(60),
    };
    let result = cps(addr, &spec).expect("cps run");
    assert_eq!(result.completed, 0);
    assert_eq!(result.failed, 5);
    assert!(result.first_error.expect("error").contains("connection 0"));
}
