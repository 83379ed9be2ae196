//! The internal gateway's reverse pools: for each `reverse://` service, keep `prepared`
//! SOCKS5 BIND connections parked at the DMZ, refill one the moment one is used or lost, and
//! back off 100 ms, 200 ms, 400 ms … up to `retry_max` while the DMZ cannot be reached.
//!
//! A parked connection waits here (on the control thread) for the DMZ's second BIND reply.
//! Then the back-end is dialled and both sockets, with any client bytes that arrived in the
//! same read as the reply, are handed to a data-plane worker. If the back-end refuses, the
//! tunnel is reset at once. This module listens on nothing. States: `LIFECYCLE.md`.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sallyport_dataplane::wire::socks5::{self, Command, Host, Method, Parsed};
use sallyport_dataplane::{Dataplane, OwnedConn};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{Credentials, HostPort};
use crate::socks_io;
use crate::stats::{DialResult, InternalStats};

/// First retry delay after a failed dial.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// A parked connection that ends sooner than this after parking counts as a failed dial, so a
/// DMZ that accepts and drops at once is retried with backoff rather than in a tight loop.
const MIN_HEALTHY_PARK: Duration = Duration::from_millis(100);

/// Exponential backoff: 100 ms, 200 ms, 400 ms … capped; reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: BACKOFF_START.min(max),
            max,
        }
    }

    /// The delay to wait now; doubles the following one.
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START.min(self.max);
    }
}

/// One reverse service as the pool sees it.
pub struct ReverseService {
    pub name: String,
    pub dmz: HostPort,
    pub bind_name: String,
    pub target: HostPort,
    pub prepared: usize,
    pub retry_max: Duration,
    pub connect_timeout: Duration,
    pub credentials: Option<Credentials>,
    pub stats: Arc<InternalStats>,
    pub dataplane: Arc<Dataplane>,
}

/// Why a dial did not give a prepared connection.
#[derive(Debug)]
struct DialError {
    result: DialResult,
    detail: String,
}

/// Runs the pool for one service until the task is dropped: `prepared` slots, each dialling,
/// parking, waiting to be paired, handing off, and dialling again.
pub async fn run_pool(service: Rc<ReverseService>) {
    let mut slots = Vec::new();
    for slot in 0..service.prepared {
        let service = Rc::clone(&service);
        slots.push(tokio::task::spawn_local(run_slot(service, slot)));
    }
    for slot in slots {
        let _ = slot.await;
    }
}

async fn run_slot(service: Rc<ReverseService>, slot: usize) {
    let mut backoff = Backoff::new(service.retry_max);
    let mut failing = false;
    loop {
        let parked = match dial(&service).await {
            Ok(parked) => parked,
            Err(e) => {
                service.stats.dialed(e.result);
                let delay = backoff.step();
                // One line when a slot starts failing, not one per retry.
                if !failing && slot == 0 {
                    tracing::warn!(service = %service.name, dmz = %service.dmz, reason = e.result.label(),
                        retry_in = ?delay, "reverse dial failed: {}", e.detail);
                }
                failing = true;
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        service.stats.dialed(DialResult::Parked);
        if failing && slot == 0 {
            tracing::info!(service = %service.name, dmz = %service.dmz, "reverse dial succeeded again; refilling");
        }
        failing = false;
        backoff.reset();
        service.stats.parked.fetch_add(1, Ordering::Relaxed);
        let parked_at = Instant::now();
        let paired = wait_for_client(parked).await;
        service.stats.parked.fetch_sub(1, Ordering::Relaxed);
        match paired {
            Ok((stream, client, leftover)) => {
                service.stats.tunnels.fetch_add(1, Ordering::Relaxed);
                let service = Rc::clone(&service);
                tokio::task::spawn_local(async move {
                    connect_target(&service, stream, client, leftover).await;
                });
            }
            Err(detail) => {
                service.stats.lost.fetch_add(1, Ordering::Relaxed);
                if parked_at.elapsed() < MIN_HEALTHY_PARK {
                    let delay = backoff.step();
                    tracing::debug!(service = %service.name, %detail, "prepared connection dropped at once");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn read_message<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> Parsed<T>,
    what: &str,
) -> Result<T, String> {
    socks_io::read_message(stream, buf, parse, what)
        .await
        .map_err(|e| format!("{e} (from the DMZ)"))
}

/// A connection with the first BIND reply received.
struct Parked {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn rejected(detail: impl Into<String>) -> DialError {
    DialError {
        result: DialResult::Rejected,
        detail: detail.into(),
    }
}

/// Connects to the DMZ, negotiates, sends BIND and waits for the first reply.
async fn dial(service: &ReverseService) -> Result<Parked, DialError> {
    let addr = (service.dmz.host.as_str(), service.dmz.port);
    let connect = tokio::time::timeout(service.connect_timeout, TcpStream::connect(addr)).await;
    let mut stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(DialError {
                result: DialResult::ConnectFailed,
                detail: e.to_string(),
            })
        }
        Err(_) => {
            return Err(DialError {
                result: DialResult::ConnectFailed,
                detail: format!("no answer within {:?}", service.connect_timeout),
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(service.connect_timeout, negotiate(service, &mut stream));
    match handshake.await {
        Ok(Ok(buf)) => Ok(Parked { stream, buf }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(rejected(format!(
            "SOCKS5 negotiation took longer than {:?}",
            service.connect_timeout
        ))),
    }
}

async fn negotiate(service: &ReverseService, stream: &mut TcpStream) -> Result<Vec<u8>, DialError> {
    let creds = service.credentials.as_ref().map(|c| socks5::Credentials {
        user: c.user.as_bytes().to_vec(),
        password: c.password.expose().as_bytes().to_vec(),
    });
    let mut out = Vec::with_capacity(600);
    let method = if creds.is_some() {
        Method::UserPass
    } else {
        Method::NoAuth
    };
    socks5::encode_greeting(&[method], &mut out);
    // Pipelined: the whole request goes out before the method choice comes back, which
    // saves round trips; the server reads it in order.
    if let Some(creds) = &creds {
        socks5::encode_userpass(creds, &mut out).map_err(|e| rejected(e.to_string()))?;
    }
    let host = Host::Domain(service.bind_name.clone());
    socks5::encode_request(Command::Bind, &host, 0, &mut out)
        .map_err(|e| rejected(e.to_string()))?;
    let io = |e: std::io::Error| rejected(format!("write failed: {e}"));
    stream.write_all(&out).await.map_err(io)?;

    let mut buf = Vec::with_capacity(64);
    let chosen = read_message(
        stream,
        &mut buf,
        socks5::parse_method_choice,
        "method choice",
    )
    .await
    .map_err(rejected)?;
    if chosen != method.to_byte() {
        return Err(rejected(format!(
            "DMZ refused authentication method {:#04x} (answered {chosen:#04x})",
            method.to_byte()
        )));
    }
    if creds.is_some() {
        let ok = read_message(
            stream,
            &mut buf,
            socks5::parse_userpass_status,
            "auth status",
        )
        .await
        .map_err(rejected)?;
        if !ok {
            return Err(rejected("DMZ rejected the user/password"));
        }
    }
    let first = read_message(stream, &mut buf, socks5::parse_reply, "first BIND reply")
        .await
        .map_err(rejected)?;
    if first.rep != socks5::rep::SUCCEEDED {
        return Err(rejected(format!(
            "DMZ refused BIND for {:?} (REP {:#04x}{})",
            service.bind_name,
            first.rep,
            if first.rep == socks5::rep::NOT_ALLOWED {
                ": unknown service or not allowed"
            } else {
                ""
            }
        )));
    }
    Ok(buf)
}

/// Waits, parked, for the second BIND reply: a client has been paired. Returns the stream,
/// the client's address and the client bytes that came with the reply.
async fn wait_for_client(parked: Parked) -> Result<(TcpStream, String, Vec<u8>), String> {
    let Parked {
        mut stream,
        mut buf,
    } = parked;
    let second = read_message(
        &mut stream,
        &mut buf,
        socks5::parse_reply,
        "second BIND reply",
    )
    .await?;
    if second.rep != socks5::rep::SUCCEEDED {
        return Err(format!(
            "DMZ sent second BIND reply REP {:#04x}",
            second.rep
        ));
    }
    let client = format!("{}:{}", second.host, second.port);
    Ok((stream, client, buf))
}

/// Dials the back-end for a paired tunnel and hands both legs to a worker.
async fn connect_target(
    service: &ReverseService,
    dmz: TcpStream,
    client: String,
    leftover: Vec<u8>,
) {
    let addr = (service.target.host.as_str(), service.target.port);
    let connected = tokio::time::timeout(service.connect_timeout, TcpStream::connect(addr)).await;
    let target = match connected {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return refuse(service, dmz, &client, &e.to_string()),
        Err(_) => {
            let why = format!("no answer within {:?}", service.connect_timeout);
            return refuse(service, dmz, &client, &why);
        }
    };
    let (Ok(dmz), Ok(target)) = (dmz.into_std(), target.into_std()) else {
        service
            .stats
            .backend_failures
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    if service
        .dataplane
        .relay(OwnedConn::new(dmz, leftover), target)
        .is_err()
    {
        tracing::warn!(service = %service.name, %client, "every worker queue is full; tunnel dropped");
    }
}

/// The back-end could not be reached: reset the tunnel so the DMZ side ends at once.
fn refuse(service: &ReverseService, dmz: TcpStream, client: &str, why: &str) {
    service
        .stats
        .backend_failures
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(service = %service.name, %client, target = %service.target,
        "back-end unreachable ({why}); tunnel reset");
    if let Ok(std) = dmz.into_std() {
        sallyport_dataplane::sys::set_reset_on_close(std::os::fd::AsFd::as_fd(&std));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let steps: Vec<u128> = (0..5).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
        let mut tiny = Backoff::new(Duration::from_millis(50));
        assert_eq!(tiny.step().as_millis(), 50);
    }
}
