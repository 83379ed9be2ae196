//! The admin endpoint: `GET /metrics` (Prometheus text) and `GET /stats` (JSON), served on
//! the control thread over plain HTTP/1.1, one request per connection.
//!
//! It does not change anything in the gateway (no reload or drain yet).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::accept_pause::AcceptPause;
use crate::stats::StatsSource;

/// Largest request head we read; anything bigger gets 431.
const MAX_HEAD: usize = 8192;
/// Longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, source: Arc<StatsSource>) {
    let mut pause = AcceptPause::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                pause.reset();
                let source = Arc::clone(&source);
                tokio::task::spawn_local(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &source)).await;
                });
            }
            Err(e) => pause.after("admin", &e).await,
        }
    }
}

/// Reads one request head; Ok(None) when the head is too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<(String, String)>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                return Ok(Some((method, path)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Ok(Some((String::new(), String::new()))),
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(mut stream: TcpStream, source: &StatsSource) -> std::io::Result<()> {
    let (status, content_type, body) = match read_head(&mut stream).await? {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n".to_string(),
        ),
        Some((method, _)) if method.is_empty() => (
            "400 Bad Request",
            "text/plain",
            "malformed request\n".to_string(),
        ),
        Some((method, _)) if method != "GET" => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
        Some((_, path)) => match path.split('?').next().unwrap_or("") {
            "/metrics" => ("200 OK", "text/plain; version=0.0.4", source.prometheus()),
            "/stats" => (
                "200 OK",
                "application/json",
                format!("{:#}\n", source.json()),
            ),
            _ => (
                "404 Not Found",
                "text/plain",
                "try /metrics or /stats\n".to_string(),
            ),
        },
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
