//! `admission = "verified"` on forwarding services: each client's SYN is held in the kernel
//! (an iptables `NFQUEUE` rule) while the control thread connects to the upstream, and is then
//! answered the way the upstream answered:
//!
//! | upstream                          | verdict on the SYN                  | client sees          |
//! |-----------------------------------|-------------------------------------|----------------------|
//! | accepts                           | accept (the connection is *held*)   | connected            |
//! | refuses (RST)                     | mark + repeat → `REJECT tcp-reset`  | ECONNREFUSED         |
//! | host / network unreachable (ICMP) | mark + repeat → `REJECT icmp-*`     | EHOSTUNREACH / ENETUNREACH |
//! | silent until `connect_timeout`    | drop (retransmits too)              | connect times out    |
//!
//! The upstream connection made during the hold is the one the tunnel uses: it waits in the
//! service's [`HeldUpstreams`] for the worker that accepts the client. Retransmitted SYNs of
//! a client being held get the same verdict (one upstream connect per client); a verdict is
//! remembered for a while so later retransmits get it too.
//!
//! Kernel state: one chain per gateway, `SALLYPORT_<pid>` (`_<n>` for a second gateway in one
//! process), jumped to from the top of `INPUT` (`ip6tables` too for IPv6 listeners), and one
//! queue number. Leftovers of dead gateways (their pid no longer exists) are removed at start;
//! a live gateway's chain is never touched. `--queue-bypass`: while no reader is bound (the
//! gateway is gone, its rules not yet removed), SYNs are accepted unverified (fail-open). A
//! full kernel queue drops new SYNs (the client retries). At most [`MAX_HOLDS`] SYNs are held
//! at once; beyond, they are dropped.
//!
//! This module does not relay, does not decide per-source policy, and uses `iptables` (the
//! Debian package) only at start and stop, never per connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nfq::{Message, Queue, Verdict};
use sallyport_dataplane::admission::{unmapped, Admission, HeldUpstreams};
use sallyport_dataplane::PublicService;
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Most SYNs held (upstream connects in flight) at once; more are dropped (the client
/// retransmits after its RTO).
pub const MAX_HOLDS: usize = 1024;
/// Longest kernel queue; beyond, the kernel drops new SYNs itself.
const KERNEL_QUEUE_LEN: u32 = 4096;
/// Most retransmitted copies of one SYN kept while it is held; more are dropped.
const MAX_COPIES: usize = 4;
/// Most remembered verdicts; beyond, a late retransmit is held (and verified) anew.
const MAX_DECIDED: usize = 16384;
/// How long an accept or refusal is remembered: covers a retransmit after a lost SYN-ACK or
/// RST (initial RTO 1 s) without capturing a later connection from the same port.
const REMEMBER_ANSWER: Duration = Duration::from_secs(3);
/// How long a drop is remembered: the client's retransmits (1, 3, 7, 15 s …) stay unanswered
/// until it gives up, without a new upstream connect each.
const REMEMBER_DROP: Duration = Duration::from_secs(30);
/// A held upstream connection no worker claimed within this (plus the listener's handshake
/// timeout) is closed: the client vanished after its handshake.
const CLAIM_WITHIN: Duration = Duration::from_secs(5);
/// How often held connections and remembered verdicts are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most SYNs read from the queue before the reader lets other control tasks run.
const READ_BATCH: usize = 256;
/// Consecutive read errors after which the reader gives up (and the queue is bypassed).
const MAX_READ_FAILURES: u32 = 1000;
/// Prefix of the chains this module creates.
const CHAIN_PREFIX: &str = "SALLYPORT_";
/// Marks set on a refused SYN before it is repeated into the chain's REJECT rules.
const MARK_RESET: u32 = 0x5a11_0001;
const MARK_HOST: u32 = 0x5a11_0002;
const MARK_NET: u32 = 0x5a11_0003;
/// Bytes of each queued packet copied to the reader: IP and TCP headers.
const COPY_RANGE: u16 = 160;

/// Why verified admission could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("verified admission needs the `{0}` command (Debian package iptables): {1}")]
    Missing(&'static str, std::io::Error),
    #[error("`{cmd} {args}` failed: {stderr}")]
    Command {
        cmd: &'static str,
        args: String,
        stderr: String,
    },
    #[error("cannot open a netfilter queue (needs CAP_NET_ADMIN): {0}")]
    Queue(std::io::Error),
    #[error("no free netfilter queue number near {0}")]
    NoQueue(u16),
    #[error("cannot find the netfilter queue's socket among this process's descriptors")]
    QueueSocket,
    #[error("cannot watch the netfilter queue: {0}")]
    Watch(std::io::Error),
}

/// Verdicts given to one verified service's SYNs, for `/stats`.
#[derive(Debug, Default)]
pub struct VerifiedStats {
    /// Upstream connected: the client's handshake completes.
    pub accept: AtomicU64,
    /// Upstream refused: RST.
    pub reject: AtomicU64,
    /// Upstream host or network unreachable: ICMP.
    pub unreachable: AtomicU64,
    /// Upstream silent until connect_timeout (or another error): no answer.
    pub drop: AtomicU64,
    /// Dropped because [`MAX_HOLDS`] SYNs were already held (or the held map was full).
    pub overload: AtomicU64,
    /// Retransmitted SYNs given the verdict of the first.
    pub retransmit: AtomicU64,
}

/// One verified service as `/stats` shows it.
pub struct VerifiedView {
    pub queue: u16,
    pub stats: Arc<VerifiedStats>,
    pub held: Arc<HeldUpstreams>,
}

impl VerifiedView {
    /// Its SYN verdicts as `sallyport_admission_total` labels: a refusal or an unreachable
    /// upstream is `reject`, silence and overload are `drop`. Accepted SYNs are counted by the
    /// data plane when their client is accepted.
    pub fn verdict_samples(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        [
            ("reject", n(&s.reject) + n(&s.unreachable)),
            ("drop", n(&s.drop) + n(&s.overload)),
        ]
        .into_iter()
    }

    pub fn json(&self) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        json!({
            "mechanism": "nfqueue",
            "queue": self.queue,
            "held": self.held.len(),
            "verdicts": {
                "accept": n(&s.accept),
                "reject": n(&s.reject),
                "unreachable": n(&s.unreachable),
                "drop": n(&s.drop),
                "overload": n(&s.overload),
                "retransmit": n(&s.retransmit),
            },
        })
    }
}

/// What the verdict on a SYN is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accept,
    Drop,
    /// Repeated with this mark into the chain's REJECT rule for it.
    Refuse(u32),
}

impl Outcome {
    fn remember(self) -> Duration {
        match self {
            Outcome::Drop => REMEMBER_DROP,
            _ => REMEMBER_ANSWER,
        }
    }
}

/// An iptables binary: `iptables` (IPv4) or `ip6tables` (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn cmd(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn run(self, args: &[&str]) -> Result<String, NetfilterError> {
        let out = Command::new(self.cmd())
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| NetfilterError::Missing(self.cmd(), e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NetfilterError::Command {
                cmd: self.cmd(),
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `(REJECT option for MARK_HOST, for MARK_NET)`.
    fn icmp(self) -> (&'static str, &'static str) {
        match self {
            Family::V4 => ("icmp-host-unreachable", "icmp-net-unreachable"),
            Family::V6 => ("icmp6-addr-unreachable", "icmp6-no-route"),
        }
    }

    /// Removes chain `chain` and every jump to it from INPUT; errors are ignored (it may be
    /// half there).
    fn remove_chain(self, chain: &str) {
        while self.run(&["-D", "INPUT", "-j", chain]).is_ok() {}
        let _ = self.run(&["-F", chain]);
        let _ = self.run(&["-X", chain]);
    }

    /// Removes the chains of gateways that are gone (their pid is dead).
    fn remove_leftovers(self) {
        let Ok(rules) = self.run(&["-S"]) else {
            return;
        };
        for line in rules.lines() {
            let Some(chain) = line.strip_prefix("-N ") else {
                continue;
            };
            let Some(pid) = chain_pid(chain) else {
                continue;
            };
            if !super::pid_alive(pid) {
                self.remove_chain(chain);
                tracing::info!(
                    chain,
                    pid,
                    tables = self.cmd(),
                    "removed the verified-admission chain of a gateway that is gone"
                );
            }
        }
    }
}

/// The pid a chain of ours is tagged with: `SALLYPORT_<pid>` or `SALLYPORT_<pid>_<n>`.
fn chain_pid(chain: &str) -> Option<u32> {
    let rest = chain.strip_prefix(CHAIN_PREFIX)?;
    let pid = rest.split('_').next()?;
    pid.parse().ok()
}

/// Gateways started in this process so far (a second one's chain gets a suffix).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A verified service: where its SYNs arrive and where to connect.
struct Held {
    name: String,
    listen: SocketAddr,
    upstream: SocketAddr,
    connect_timeout: Duration,
    claim_within: Duration,
    held: Arc<HeldUpstreams>,
    stats: Arc<VerifiedStats>,
}

/// The installed chain(s): removed when dropped.
pub struct Installed {
    chain: String,
    families: Vec<Family>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for f in &self.families {
            f.remove_chain(&self.chain);
        }
        tracing::info!(chain = %self.chain, "verified admission stopped; its iptables chain removed");
    }
}

/// What [`install`] sets up: the rules (owned by the gateway), the queue reader (run on the
/// control thread) and the per-service views for `/stats`.
pub struct Verified {
    pub installed: Installed,
    pub reader: Reader,
    pub views: Vec<(String, VerifiedView)>,
}

/// Sets up verified admission for the services with `admission = "verified"` (`bound`: each
/// service's bound address, same order); `None` when there are none.
/// A gateway with no verified service still removes the chains of gateways that are gone, so a
/// service whose `admission = "verified"` was removed from the config does not keep holding SYNs
/// after a SIGKILL. Only when permitted, and only when `nft` shows such a chain: listing with
/// `iptables` itself could create the `filter` table on a host that has none.
fn remove_leftovers_if_any() {
    if crate::config::kernel_verdicts_permitted().is_err() {
        return;
    }
    let Some(nft) = super::nft::find_nft() else {
        return;
    };
    let listed = std::process::Command::new(nft)
        .args(["list", "chains"])
        .stderr(std::process::Stdio::null())
        .output();
    if listed.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(CHAIN_PREFIX)) {
        for family in [Family::V4, Family::V6] {
            family.remove_leftovers();
        }
    }
}

pub fn install(
    services: &[PublicService],
    bound: &[SocketAddr],
) -> Result<Option<Verified>, NetfilterError> {
    let held: Vec<Held> = services
        .iter()
        .zip(bound)
        .filter(|(s, _)| s.admission == Admission::Verified)
        .filter_map(|(s, &listen)| {
            let upstream = s.upstream.as_ref()?;
            let handshake = [
                s.tls.as_ref().map(|t| t.handshake_timeout),
                s.ws.as_ref().map(|w| w.handshake_timeout),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default();
            Some(Held {
                name: s.name.clone(),
                listen,
                upstream: upstream.addr,
                connect_timeout: upstream.connect_timeout,
                claim_within: CLAIM_WITHIN + handshake,
                held: Arc::clone(upstream.held.as_ref()?),
                stats: Arc::default(),
            })
        })
        .collect();
    if held.is_empty() {
        remove_leftovers_if_any();
        return Ok(None);
    }
    let mut families = Vec::new();
    for h in &held {
        for f in families_of(h.listen.ip()) {
            if !families.contains(&f) {
                families.push(f);
            }
        }
    }
    for f in &families {
        f.remove_leftovers();
    }
    let (queue, fd, queue_num) = open_queue()?;
    let pid = std::process::id();
    let chain = match STARTED.fetch_add(1, Ordering::Relaxed) {
        0 => format!("{CHAIN_PREFIX}{pid}"),
        n => format!("{CHAIN_PREFIX}{pid}_{n}"),
    };
    let mut installed = Installed {
        chain: chain.clone(),
        families: Vec::new(),
    };
    for &f in &families {
        // A chain of this name now is a leftover of a dead process that had our pid.
        f.remove_chain(&chain);
        f.run(&["-N", &chain])?;
        installed.families.push(f);
        for h in held
            .iter()
            .filter(|h| families_of(h.listen.ip()).contains(&f))
        {
            add_rules(f, &chain, h.listen, queue_num)?;
        }
        f.run(&["-I", "INPUT", "1", "-j", &chain])?;
    }
    for h in &held {
        tracing::info!(service = %h.name, port = h.listen.port(), queue = queue_num, %chain,
            upstream = %h.upstream, "verified admission active: each SYN is held until the upstream answers (iptables NFQUEUE)");
    }
    let views = held
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                VerifiedView {
                    queue: queue_num,
                    stats: Arc::clone(&h.stats),
                    held: Arc::clone(&h.held),
                },
            )
        })
        .collect();
    Ok(Some(Verified {
        installed,
        reader: Reader {
            queue,
            fd,
            services: held,
        },
        views,
    }))
}

/// The iptables families a listener on `ip` receives SYNs through.
fn families_of(ip: IpAddr) -> Vec<Family> {
    match ip {
        IpAddr::V6(v6) if v6.is_unspecified() => vec![Family::V4, Family::V6],
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => vec![Family::V6],
        _ => vec![Family::V4],
    }
}

/// The rules of one listener: refused SYNs (marked, repeated) are rejected, the others queued.
fn add_rules(f: Family, chain: &str, listen: SocketAddr, queue: u16) -> Result<(), NetfilterError> {
    let port = listen.port().to_string();
    let mut base: Vec<String> = vec!["-A".into(), chain.into()];
    let ip = unmapped(listen.ip());
    if !ip.is_unspecified() && (ip.is_ipv4() == (f == Family::V4)) {
        base.extend(["-d".into(), ip.to_string()]);
    }
    base.extend(["-p", "tcp", "--dport", &port, "--syn"].map(String::from));
    let (host, net) = f.icmp();
    let reject = [
        (MARK_RESET, "tcp-reset"),
        (MARK_HOST, host),
        (MARK_NET, net),
    ];
    for (mark, with) in reject {
        let mark = format!("{mark:#x}");
        let mut args = base.clone();
        args.extend(
            [
                "-m",
                "mark",
                "--mark",
                &mark,
                "-j",
                "REJECT",
                "--reject-with",
                with,
            ]
            .map(String::from),
        );
        f.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let queue = queue.to_string();
    let mut args = base;
    args.extend(["-j", "NFQUEUE", "--queue-num", &queue, "--queue-bypass"].map(String::from));
    f.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(())
}

/// Opening queues one at a time, so the new netlink socket is the one that appeared.
static OPENING: Mutex<()> = Mutex::new(());

/// Opens and binds a netfilter queue with a number no other reader holds; returns it, its
/// socket's descriptor number (nfq does not expose it; found in /proc), and the number.
fn open_queue() -> Result<(Queue, RawFd, u16), NetfilterError> {
    let _one = OPENING.lock().unwrap_or_else(|p| p.into_inner());
    let before = netfilter_sockets();
    let mut queue = Queue::open().map_err(NetfilterError::Queue)?;
    let after = netfilter_sockets();
    let fresh: Vec<RawFd> = after.difference(&before).copied().collect();
    let [fd] = fresh[..] else {
        return Err(NetfilterError::QueueSocket);
    };
    // Spread gateways over the numbers by pid; a number bound by another reader is refused
    // by the kernel (EPERM), so the next is tried.
    let start = 1000 + (std::process::id() % 60000) as u16;
    for k in 0..256u16 {
        let num = start.wrapping_add(k);
        if queue.bind(num).is_err() {
            continue;
        }
        let setup = (|| {
            queue.set_copy_range(num, COPY_RANGE)?;
            queue.set_queue_max_len(num, KERNEL_QUEUE_LEN)?;
            queue.set_fail_open(num, false)
        })();
        setup.map_err(NetfilterError::Queue)?;
        queue.set_nonblocking(true);
        return Ok((queue, fd, num));
    }
    Err(NetfilterError::NoQueue(start))
}

/// Descriptors of this process that are NETLINK_NETFILTER sockets.
fn netfilter_sockets() -> HashSet<RawFd> {
    const NETLINK_NETFILTER: &str = "12";
    let inodes: HashSet<String> = std::fs::read_to_string("/proc/net/netlink")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&NETLINK_NETFILTER)).then(|| cols.last().map(|s| s.to_string()))?
        })
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            inodes.contains(inode).then_some(fd)
        })
        .collect()
}

/// A descriptor number to watch, not owned (the [`Queue`] owns and closes it).
struct Watched(RawFd);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A client's SYN as the queue shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Reads an IPv4 or IPv6 packet carrying a TCP SYN (without ACK); `None` for anything else
/// (truncated, a fragment, another protocol, other flags). Never panics.
pub fn parse_syn(p: &[u8]) -> Option<Syn> {
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let header = p.get(..20)?;
            let fragment = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
            if ihl < 20 || header[9] != 6 || fragment != 0 {
                return None;
            }
            let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
            let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
            (src.into(), dst.into(), p.get(ihl..)?)
        }
        6 => {
            let header = p.get(..40)?;
            let addr = |at: usize| -> Option<Ipv6Addr> {
                let b: [u8; 16] = header.get(at..at + 16)?.try_into().ok()?;
                Some(Ipv6Addr::from(b))
            };
            let (src, dst) = (addr(8)?, addr(24)?);
            let mut next = header[6];
            let mut at = 40;
            // Extension headers before TCP: hop-by-hop, routing, destination options,
            // fragment (only a first fragment with nothing after would do: refused).
            for _ in 0..8 {
                match next {
                    6 => break,
                    0 | 43 | 60 => {
                        let ext = p.get(at..at + 2)?;
                        next = ext[0];
                        at += (usize::from(ext[1]) + 1) * 8;
                    }
                    _ => return None,
                }
            }
            if next != 6 {
                return None;
            }
            (src.into(), dst.into(), p.get(at..)?)
        }
        _ => return None,
    };
    let tcp = tcp.get(..14)?;
    let flags = tcp[13];
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    if flags & (SYN | ACK) != SYN {
        return None;
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    Some(Syn {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    })
}

/// The queue reader: run on the control thread with [`Reader::start`].
pub struct Reader {
    queue: Queue,
    fd: RawFd,
    services: Vec<Held>,
}

/// A held SYN's identity: the client and the service port it called.
type Tuple = (SocketAddr, u16);

/// The reader's state, shared by its tasks on the control thread (never borrowed across an
/// await).
struct State {
    queue: Queue,
    services: Vec<Held>,
    /// SYNs being held: retransmitted copies waiting for the first one's verdict.
    holding: HashMap<Tuple, Vec<Message>>,
    /// Verdicts given, until when they are repeated for a retransmit.
    decided: HashMap<Tuple, (Outcome, Instant)>,
    log: LogLimiter,
}

impl Reader {
    /// Watches the queue on the current (control) runtime; the future reads SYNs and gives
    /// verdicts until dropped.
    pub fn start(self) -> Result<impl std::future::Future<Output = ()>, NetfilterError> {
        // The safe constructor (deprecated in newer tokio, which wants `unsafe` here: this
        // crate forbids it). It is sound as used: the descriptor stays open while registered,
        // because `Watch` drops the registration before its reference to the queue.
        #[allow(deprecated)]
        let watched = AsyncFd::with_interest(Watched(self.fd), Interest::READABLE)
            .map_err(NetfilterError::Watch)?;
        let state = Rc::new(RefCell::new(State {
            queue: self.queue,
            services: self.services,
            holding: HashMap::new(),
            decided: HashMap::new(),
            log: LogLimiter::default(),
        }));
        Ok(Watch { watched, state }.run())
    }
}

/// The queue's registration and the state that owns the queue. Field order matters: the
/// registration is dropped first, while the descriptor is still open.
struct Watch {
    watched: AsyncFd<Watched>,
    state: Rc<RefCell<State>>,
}

impl Watch {
    async fn run(self) {
        let Watch { watched, state } = &self;
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                ready = watched.readable() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            tracing::error!(error = %e, "verified admission: cannot watch the netfilter queue; SYNs are no longer verified");
                            return;
                        }
                    };
                    // Read until the socket is empty (then wait again), a batch at a time so
                    // a flood of SYNs leaves the control thread's other tasks their turn.
                    let mut batch = 0;
                    loop {
                        if batch == READ_BATCH {
                            tokio::task::yield_now().await;
                            break;
                        }
                        batch += 1;
                        let next = state.borrow_mut().queue.recv();
                        match next {
                            Ok(msg) => {
                                failures = 0;
                                on_packet(state, msg);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                guard.clear_ready();
                                break;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                failures += 1;
                                if failures >= MAX_READ_FAILURES {
                                    // Closing the queue (once the holds in flight end) makes
                                    // the rule bypass it: SYNs are accepted unverified.
                                    tracing::error!(error = %e, "verified admission: the netfilter queue keeps failing; it is closed and SYNs are accepted unverified");
                                    return;
                                }
                                let mut st = state.borrow_mut();
                                if let Some(also) = st.log.allow() {
                                    tracing::warn!(error = %e, also, "verified admission: reading the netfilter queue failed");
                                }
                                break;
                            }
                        }
                    }
                }
                _ = sweep.tick() => state.borrow_mut().sweep(),
            }
        }
    }
}

impl State {
    fn sweep(&mut self) {
        let now = Instant::now();
        self.decided.retain(|_, (_, until)| *until > now);
        for s in &self.services {
            let closed = s.held.expire(s.claim_within);
            if closed > 0 {
                tracing::info!(service = %s.name, closed, "verified admission: upstream connections no client claimed were closed");
            }
        }
    }

    fn verdict(&mut self, mut msg: Message, outcome: Outcome) {
        match outcome {
            Outcome::Accept => msg.set_verdict(Verdict::Accept),
            Outcome::Drop => msg.set_verdict(Verdict::Drop),
            Outcome::Refuse(mark) => {
                msg.set_nfmark(mark);
                msg.set_verdict(Verdict::Repeat);
            }
        }
        if let Err(e) = self.queue.verdict(msg) {
            if let Some(also) = self.log.allow() {
                tracing::warn!(error = %e, also, "verified admission: a verdict could not be given");
            }
        }
    }
}

/// A SYN from the queue: answered from memory, added to a hold in progress, or held.
fn on_packet(state: &Rc<RefCell<State>>, msg: Message) {
    let mut guard = state.borrow_mut();
    let st: &mut State = &mut guard;
    let Some(syn) = parse_syn(msg.get_payload()) else {
        // Matched our rule but is no plain SYN we can read: let the kernel handle it.
        return st.verdict(msg, Outcome::Accept);
    };
    let dst_ip = unmapped(syn.dst.ip());
    let Some(service) = st.services.iter().find(|s| {
        let ip = unmapped(s.listen.ip());
        s.listen.port() == syn.dst.port() && (ip.is_unspecified() || ip == dst_ip)
    }) else {
        return st.verdict(msg, Outcome::Accept);
    };
    let stats = Arc::clone(&service.stats);
    let tuple: Tuple = (
        SocketAddr::new(unmapped(syn.src.ip()), syn.src.port()),
        syn.dst.port(),
    );
    if let Some(&(outcome, until)) = st.decided.get(&tuple) {
        if until > Instant::now() {
            stats.retransmit.fetch_add(1, Ordering::Relaxed);
            return st.verdict(msg, outcome);
        }
    }
    if let Some(copies) = st.holding.get_mut(&tuple) {
        stats.retransmit.fetch_add(1, Ordering::Relaxed);
        if copies.len() < MAX_COPIES {
            copies.push(msg);
            return;
        }
        return st.verdict(msg, Outcome::Drop);
    }
    if st.holding.len() >= MAX_HOLDS {
        stats.overload.fetch_add(1, Ordering::Relaxed);
        if let Some(also) = st.log.allow() {
            tracing::warn!(
                also,
                "verified admission: {MAX_HOLDS} SYNs already held; new SYNs dropped"
            );
        }
        return st.verdict(msg, Outcome::Drop);
    }
    st.holding.insert(tuple, Vec::new());
    let hold = Hold {
        name: service.name.clone(),
        upstream: service.upstream,
        timeout: service.connect_timeout,
        held: Arc::clone(&service.held),
        stats,
    };
    drop(guard);
    tokio::task::spawn_local(hold.run(Rc::clone(state), tuple, msg));
}

/// One held SYN's upstream connect.
struct Hold {
    name: String,
    upstream: SocketAddr,
    timeout: Duration,
    held: Arc<HeldUpstreams>,
    stats: Arc<VerifiedStats>,
}

impl Hold {
    async fn run(self, state: Rc<RefCell<State>>, tuple: Tuple, msg: Message) {
        let connect = tokio::net::TcpStream::connect(self.upstream);
        let (outcome, why) = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(stream)) => match stream.into_std() {
                Ok(stream) => match self.held.insert(tuple.0, OwnedFd::from(stream)) {
                    Ok(()) => (Outcome::Accept, None),
                    Err(_) => {
                        self.stats.overload.fetch_add(1, Ordering::Relaxed);
                        (Outcome::Drop, Some("too many held connections".to_string()))
                    }
                },
                Err(e) => (Outcome::Drop, Some(e.to_string())),
            },
            Ok(Err(e)) => {
                let outcome = match e.raw_os_error() {
                    Some(errno::ECONNREFUSED | errno::ECONNRESET) => Outcome::Refuse(MARK_RESET),
                    Some(errno::EHOSTUNREACH) => Outcome::Refuse(MARK_HOST),
                    Some(errno::ENETUNREACH) => Outcome::Refuse(MARK_NET),
                    _ => Outcome::Drop,
                };
                (outcome, Some(e.to_string()))
            }
            Err(_) => (
                Outcome::Drop,
                Some("no answer within connect_timeout".to_string()),
            ),
        };
        let counter = match (outcome, &why) {
            (Outcome::Accept, _) => Some(&self.stats.accept),
            (Outcome::Refuse(MARK_RESET), _) => Some(&self.stats.reject),
            (Outcome::Refuse(_), _) => Some(&self.stats.unreachable),
            (Outcome::Drop, Some(w)) if w == "too many held connections" => None,
            (Outcome::Drop, _) => Some(&self.stats.drop),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let mut st = state.borrow_mut();
        if let Some(why) = why {
            if let Some(also) = st.log.allow() {
                let answer = match outcome {
                    Outcome::Accept => "accepted",
                    Outcome::Drop => "dropped (no answer)",
                    Outcome::Refuse(MARK_RESET) => "refused (RST)",
                    Outcome::Refuse(_) => "refused (ICMP unreachable)",
                };
                tracing::info!(service = %self.name, client = %tuple.0, also,
                    "verified admission: upstream {}: {why}; client's SYN {answer}", self.upstream);
            }
        }
        let copies = st.holding.remove(&tuple).unwrap_or_default();
        if st.decided.len() < MAX_DECIDED {
            st.decided
                .insert(tuple, (outcome, Instant::now() + outcome.remember()));
        }
        st.verdict(msg, outcome);
        for copy in copies {
            st.verdict(copy, outcome);
        }
    }
}

/// Linux errno values (std has no constants; this crate has no libc).
mod errno {
    pub const ECONNRESET: i32 = 104;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
    pub const ENETUNREACH: i32 = 101;
}

/// One log line per second at most, counting the ones held back (peers cause these).
#[derive(Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_syn(flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[127, 0, 0, 1]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&8080u16.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        p
    }

    fn v6_syn(ext: bool) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = if ext { 60 } else { 6 };
        p[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        if ext {
            p.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        }
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&5555u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        tcp[13] = 0x02;
        p.extend_from_slice(&tcp);
        p
    }

    #[test]
    fn reads_ipv4_and_ipv6_syns() {
        let syn = parse_syn(&v4_syn(0x02)).unwrap();
        assert_eq!(syn.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(syn.dst, "127.0.0.1:8080".parse().unwrap());
        assert!(parse_syn(&v4_syn(0x12)).is_none(), "SYN-ACK");
        assert!(parse_syn(&v4_syn(0x10)).is_none(), "ACK");
        for ext in [false, true] {
            let syn = parse_syn(&v6_syn(ext)).unwrap();
            assert_eq!(syn.src, "[2001:db8::1]:5555".parse().unwrap());
            assert_eq!(syn.dst, "[::1]:443".parse().unwrap());
        }
        let mut frag = v4_syn(0x02);
        frag[7] = 1;
        assert!(parse_syn(&frag).is_none(), "a later fragment");
        let mut udp = v4_syn(0x02);
        udp[9] = 17;
        assert!(parse_syn(&udp).is_none());
    }

    #[test]
    fn odd_bytes_never_panic() {
        for packet in [v4_syn(0x02), v6_syn(true), v6_syn(false)] {
            for len in 0..packet.len() {
                let _ = parse_syn(&packet[..len]);
                for b in [0x00, 0x0f, 0x41, 0x4f, 0x60, 0xff] {
                    let mut odd = packet[..len].to_vec();
                    if let Some(x) = odd.get_mut(len / 2) {
                        *x = b;
                    }
                    let _ = parse_syn(&odd);
                }
            }
        }
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            let len = (seed % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = parse_syn(&bytes);
        }
    }

    #[test]
    fn chain_names_carry_the_pid() {
        assert_eq!(chain_pid("SALLYPORT_1234"), Some(1234));
        assert_eq!(chain_pid("SALLYPORT_1234_2"), Some(1234));
        assert_eq!(chain_pid("SALLYPORT_x"), None);
        assert_eq!(chain_pid("DOCKER"), None);
    }
}
