//! A minimal client for a gateway's admin endpoint: `GET /stats` over HTTP/1.1 (one request per
//! connection, `Connection: close`), returning the JSON document, and named readers for the
//! counters the benchmark uses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Limit for connecting to, writing to and reading from the admin endpoint.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /stats` from the admin endpoint at `addr`.
pub fn stats(addr: SocketAddr) -> Result<Value> {
    let body = get(addr, "/stats")?;
    serde_json::from_slice(&body).with_context(|| format!("GET http://{addr}/stats: not JSON"))
}

fn get(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let what = || format!("GET http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, ADMIN_TIMEOUT).with_context(what)?;
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(what)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).with_context(what)?;
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("{}: no complete HTTP header in the response", what());
    };
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{}: {status}", what());
    }
    Ok(response[split + 4..].to_vec())
}

/// A counter of a `/stats` document by JSON pointer (e.g. `/services/echo/waited`); 0 when absent.
pub fn counter(stats: &Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Prepared connections of `service` (parked at a DMZ, or kept by an internal gateway).
pub fn prepared(stats: &Value, service: &str) -> u64 {
    counter(stats, &format!("/services/{service}/prepared"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            // Read the whole request head first: closing with unread bytes would reset the
            // connection and could discard the response before the client reads it.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(response.as_bytes()).expect("write");
        });
        addr
    }

    #[test]
    fn reads_stats_json() {
        let body = r#"{"services":{"echo":{"prepared":7,"refused":{"no_prepared":2}}},"prepared_accepted":9}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let addr = serve_once(Box::leak(response.into_boxed_str()));
        let doc = stats(addr).expect("stats");
        assert_eq!(prepared(&doc, "echo"), 7);
        assert_eq!(counter(&doc, "/services/echo/refused/no_prepared"), 2);
        assert_eq!(counter(&doc, "/prepared_accepted"), 9);
        assert_eq!(counter(&doc, "/missing"), 0);
    }

    #[test]
    fn non_200_is_an_error() {
        let addr = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let err = stats(addr).unwrap_err().to_string();
        assert!(err.contains("404"), "{err}");
    }
}
