//! Admission settings of a public listener, as the data plane takes them: when a service takes
//! new clients at all ([`Admission`]), which sources it takes them from and how many
//! ([`SourcePolicy`]), and which sources must begin with a PROXY protocol header
//! (`accept_proxy`).
//!
//! Plain values and pure functions (a source's key, a static verdict). Where the verdicts are
//! enforced (the kernel, a worker) is not decided here. [`HeldUpstreams`] is the one shared
//! structure: the upstream connections `admission = "verified"` made while it held a SYN, which
//! the worker that accepts that client takes instead of connecting.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use ipnet::IpNet;

/// When a public service takes new clients (`admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Every client is accepted; one that cannot be served is reset (before this key existed,
    /// the only behaviour).
    Always,
    /// A DMZ service takes clients only while it is *up* (it has, or just had, a prepared
    /// connection); while *down*, a new client's SYN is answered with a RST.
    Ready,
    /// A forwarding service holds each client's SYN while it connects upstream, and answers it
    /// the way the upstream answered (accept, RST, or silence).
    Verified,
}

impl Admission {
    /// The spelling in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Admission::Always => "always",
            Admission::Ready => "ready",
            Admission::Verified => "verified",
        }
    }
}

/// How a refused source is answered (`deny_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// A RST to its SYN: `connect()` fails with ECONNREFUSED.
    Reject,
    /// No answer at all: its `connect()` times out.
    Drop,
}

impl DenyAction {
    /// The spelling in the config file.
    pub fn name(self) -> &'static str {
        match self {
            DenyAction::Reject => "reject",
            DenyAction::Drop => "drop",
        }
    }
}

/// Per-source verdicts of one public listener: `allow`, `deny`, `deny_action`,
/// `max_per_source`, `rate_per_source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePolicy {
    /// Sources taken; empty: every source.
    pub allow: Vec<IpNet>,
    /// Sources refused, even when `allow` has them.
    pub deny: Vec<IpNet>,
    /// How a denied source (and one over its limits) is answered.
    pub deny_action: DenyAction,
    /// Most concurrent connections from one source (an IPv4 address, an IPv6 /64).
    pub max_per_source: Option<u32>,
    /// Most new connections per second from one source.
    pub rate_per_source: Option<u32>,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            deny_action: DenyAction::Reject,
            max_per_source: None,
            rate_per_source: None,
        }
    }
}

impl SourcePolicy {
    /// True when the policy refuses nobody: no list and no limit.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.max_per_source.is_none()
            && self.rate_per_source.is_none()
    }

    /// Whether `allow` and `deny` take `source` (limits aside).
    pub fn admits(&self, source: IpAddr) -> bool {
        let source = unmapped(source);
        let allowed = self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&source));
        allowed && !self.deny.iter().any(|n| n.contains(&source))
    }
}

/// The key a source is counted under for `max_per_source` and `rate_per_source`: an IPv4
/// address as is, an IPv6 address as its /64 (one host usually holds a whole /64), an
/// IPv4-mapped IPv6 address as the IPv4 address.
pub fn source_key(source: IpAddr) -> IpAddr {
    match unmapped(source) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; any other address as is.
pub fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `source` is one of `nets` (an `accept_proxy` list).
pub fn listed(nets: &[IpNet], source: IpAddr) -> bool {
    let source = unmapped(source);
    nets.iter().any(|n| n.contains(&source))
}

/// Upstream connections of one verified forwarding service, made while the client's SYN was
/// held (by the control thread's netfilter queue reader), keyed by the client's address and
/// port; the worker that accepts that client takes its connection instead of connecting.
///
/// A mutex, not the workers' lock-free style: it is taken once per held SYN and once per
/// accepted client of a verified service only, never by other services. Entries no worker
/// claims (the client vanished after its handshake) are closed by [`HeldUpstreams::expire`].
#[derive(Debug, Default)]
pub struct HeldUpstreams {
    held: Mutex<HashMap<SocketAddr, (OwnedFd, Instant)>>,
}

impl HeldUpstreams {
    /// Most connections held at once; beyond, [`HeldUpstreams::insert`] gives the socket back.
    pub const MAX: usize = 4096;

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (OwnedFd, Instant)>> {
        // A panic while holding the lock leaves a map that is still consistent (every
        // operation is a single insert or remove).
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `upstream` (connected, non-blocking) for the client at `client`; gives it back
    /// when full. A connection already held for the same client is replaced (and closed).
    pub fn insert(&self, client: SocketAddr, upstream: OwnedFd) -> Result<(), OwnedFd> {
        let mut map = self.map();
        if map.len() >= Self::MAX {
            return Err(upstream);
        }
        map.insert(key(client), (upstream, Instant::now()));
        Ok(())
    }

    /// The connection held for the client at `client`, if any (it is no longer held).
    pub fn take(&self, client: SocketAddr) -> Option<OwnedFd> {
        self.map().remove(&key(client)).map(|(fd, _)| fd)
    }

    /// Closes the connections held longer than `max_age`; returns how many.
    pub fn expire(&self, max_age: Duration) -> usize {
        let now = Instant::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, (_, at)| now.duration_since(*at) < max_age);
        before - map.len()
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client as the packet and the accepted socket both name it (an IPv4 client of a
/// dual-stack listener shows as `::ffff:a.b.c.d` on the socket).
fn key(client: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmapped(client.ip()), client.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn allow_then_deny() {
        let policy = SourcePolicy {
            allow: vec![net("127.0.0.0/8"), net("fd00::/8")],
            deny: vec![net("127.0.0.9/32")],
            ..SourcePolicy::default()
        };
        assert!(policy.admits("127.0.0.1".parse().unwrap()));
        assert!(policy.admits("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!policy.admits("127.0.0.9".parse().unwrap()));
        assert!(!policy.admits("10.0.0.1".parse().unwrap()));
        assert!(policy.admits("fd00::1".parse().unwrap()));
        assert!(!policy.is_open());
        assert!(SourcePolicy::default().is_open());
        assert!(SourcePolicy::default().admits("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn keys_group_an_ipv6_slash_64() {
        let a = source_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = source_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = source_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            source_key("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn held_upstreams_are_taken_once_and_expire() {
        let held = HeldUpstreams::default();
        let fd = || OwnedFd::from(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        held.insert(a, fd()).unwrap();
        assert!(held.take("127.0.0.1:4001".parse().unwrap()).is_none());
        assert!(
            held.take(mapped).is_some(),
            "the mapped form names the same client"
        );
        assert!(held.take(a).is_none());
        held.insert(a, fd()).unwrap();
        assert_eq!(held.expire(Duration::from_secs(60)), 0);
        assert_eq!(held.expire(Duration::ZERO), 1);
        assert!(held.is_empty());
    }
}
