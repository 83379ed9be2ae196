//! A SYN flood from one IPv4 source, for the `flood` mode: bare TCP SYN segments written
//! through a raw socket (needs root or CAP_NET_RAW) at a fixed rate, each from a fresh source
//! port, none answered by this process. It measures what a gateway's admission control costs the
//! clients it serves while a denied source floods it; it is not a general packet generator.
//!
//! The kernel answers what the gateway's verdict lets through (a SYN-ACK to a source port no
//! socket holds is reset by the kernel itself), so the flood never completes a handshake.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// IPPROTO_RAW: the socket writes whole IPv4 packets (IP_HDRINCL implied).
const IPPROTO_RAW: i32 = 255;

/// SYNs sent per pacing step; the step length follows from the rate.
const BATCH: u64 = 20;

/// A running flood; [`Flood::stop`] ends it and says how many SYNs left.
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<FloodResult>>,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FloodResult {
    pub sent: u64,
    pub seconds: f64,
}

impl FloodResult {
    pub fn per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.sent as f64 / self.seconds
        } else {
            0.0
        }
    }
}

impl Flood {
    /// Starts sending `rate` SYNs per second from `source` to `target` (bounded by `limit`).
    pub fn start(
        source: Ipv4Addr,
        target: SocketAddrV4,
        rate: u64,
        limit: Duration,
    ) -> io::Result<Flood> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("raw socket (needs root or CAP_NET_RAW): {e}"),
                )
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("syn-flood".to_string())
            .spawn(move || send_loop(&socket, source, target, rate.max(1), limit, &flag))?;
        Ok(Flood { stop, thread })
    }

    pub fn stop(self) -> io::Result<FloodResult> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the flood thread panicked"))?
    }
}

fn send_loop(
    socket: &Socket,
    source: Ipv4Addr,
    target: SocketAddrV4,
    rate: u64,
    limit: Duration,
    stop: &AtomicBool,
) -> io::Result<FloodResult> {
    let to = SockAddr::from(SocketAddr::V4(target));
    let step = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut port = 1024u16;
    let mut next = start;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
        for _ in 0..BATCH {
            port = if port == u16::MAX { 1024 } else { port + 1 };
            let packet = syn_packet(source, *target.ip(), port, target.port(), sent as u32);
            socket.send_to(&packet, &to)?;
            sent += 1;
        }
        next += step;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
    }
    Ok(FloodResult {
        sent,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// An IPv4 packet holding one TCP SYN (no options), checksums filled in.
pub fn syn_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45; // version 4, 5 words
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64; // ttl
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = 20;
    p[t..t + 2].copy_from_slice(&sport.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&dport.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 12] = 5 << 4; // data offset
    p[t + 13] = 0x02; // SYN
    p[t + 14..t + 16].copy_from_slice(&65535u16.to_be_bytes());
    // Pseudo-header: addresses, protocol, TCP length.
    let mut pseudo = 0u32;
    for pair in p[12..20].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 6 + 20;
    let tcp_sum = checksum(&p[t..], pseudo);
    p[t + 16..t + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071) of `bytes`, starting from `sum`.
fn checksum(bytes: &[u8], mut sum: u32) -> u16 {
    for pair in bytes.chunks(2) {
        let word = match pair {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let p = syn_packet(
            Ipv4Addr::new(127, 0, 0, 9),
            Ipv4Addr::LOCALHOST,
            40000,
            9000,
            7,
        );
        // A header with its checksum in place sums to 0xffff (checksum 0).
        assert_eq!(checksum(&p[..20], 0), 0);
        let mut pseudo = 0u32;
        for pair in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        assert_eq!(checksum(&p[20..], pseudo + 6 + 20), 0);
        assert_eq!(p[33], 0x02);
    }
}
