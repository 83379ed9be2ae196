//! sallyport's data plane: one pinned worker thread per core, each with its own io_uring ring,
//! SO_REUSEPORT listeners for public services, its share of the prepared connections, and the
//! tunnels it relays (splice through a pipe for plain TCP, pooled buffers otherwise).
//!
//! The control thread talks to it only through [`Dataplane`]: it hands over owned sockets
//! ([`OwnedConn`]) and reads merged counters ([`metrics::Snapshot`]). This crate does not parse
//! configuration, negotiate SOCKS on the reverse listener, or log above `info` on the hot path.
//! `wire` holds the sans-IO codecs both planes use.
#![deny(unsafe_code)]

/// Logging that is compiled out of the data plane unless the `verbose-log` feature is on.
#[macro_export]
#[doc(hidden)]
macro_rules! dp_debug {
    ($($arg:tt)*) => {
        #[cfg(feature = "verbose-log")]
        tracing::debug!($($arg)*);
        // Type-checked (so the fields count as used) but never run: the branch is compiled out.
        #[cfg(not(feature = "verbose-log"))]
        if false {
            tracing::debug!($($arg)*);
        }
    };
}

pub mod admission;
pub mod door;
pub mod handoff;
pub mod leg;
pub mod log_limit;
pub mod metrics;
pub mod policy;
pub mod relay;
mod runtime;
mod service;
mod sys;
pub mod tls;
pub mod wire;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use handoff::{
    Link, OwnedConn, PublicIndex, ReverseEvent, ReverseEvents, ReverseIndex, ReverseOutcome, WsLink,
};
use metrics::{Snapshot, WorkerStats};
pub use runtime::{DataplaneConfig, RelayConfig, RelayMode, StartError};
pub use service::{PublicService, PublicTls, PublicWs, TargetTls, Upstream, UpstreamWs};
pub use sys::{
    available_cores, pipe, prepare_stream, set_keepalive, Keepalive, Pipe, RingSetup, StreamOptions,
};
use worker::{Msg, Peer, ReverseHandoff, Worker, WorkerSetup};

/// Capacity of each worker's inbound queue. A full queue refuses the hand-off (the control
/// thread then closes that connection) rather than blocking the control thread.
const QUEUE_DEPTH: usize = 8192;
/// Submission ring entries per worker.
const RING_ENTRIES: u32 = 4096;

/// The running data plane.
pub struct Dataplane {
    peers: Arc<Vec<Peer>>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    addrs: Vec<SocketAddr>,
    services: usize,
    next: AtomicUsize,
    /// Per public service: the userspace per-source verdicts, shared by every worker.
    gates: Vec<Arc<policy::SourceGate>>,
    /// Admission state of every DMZ service, shared with the workers and the door keeper.
    board: Arc<door::Board>,
}

impl Dataplane {
    /// Binds every public listener (one per worker per service, SO_REUSEPORT), then starts the
    /// workers and waits until each has its ring.
    pub fn start(config: DataplaneConfig) -> Result<Dataplane, StartError> {
        let workers = config.workers.max(1);
        // Services on the same non-zero address that all speak WebSocket share one listener
        // and are told apart by request path; every other service has a listener of its own.
        let mut groups: Vec<(SocketAddr, Vec<PublicIndex>)> = Vec::new();
        for (i, service) in config.services.iter().enumerate() {
            let shared = service.ws.is_some() && service.listen.port() != 0;
            match groups.iter_mut().find(|(addr, members)| {
                shared && *addr == service.listen && config.services[members[0].0].ws.is_some()
            }) {
                Some((_, members)) => members.push(PublicIndex(i)),
                None => groups.push((service.listen, vec![PublicIndex(i)])),
            }
        }
        // Admission: DMZ services keep an up/down state; with `admission = "ready"` their
        // listeners are closed while every service on them is down (see `door`).
        let enforced: Vec<bool> = config
            .services
            .iter()
            .map(|s| s.upstream.is_none() && s.admission == admission::Admission::Ready)
            .collect();
        let group_of = |i: usize| groups.iter().position(|(_, m)| m.contains(&PublicIndex(i)));
        let door_specs: Vec<door::DoorSpec> = config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let shared_with_open =
                    group_of(i).is_some_and(|g| groups[g].1.iter().any(|m| !enforced[m.0]));
                let mechanism = if !enforced[i] {
                    door::Mechanism::None
                } else if shared_with_open {
                    door::Mechanism::SharedListener
                } else {
                    door::Mechanism::ListenerClosed
                };
                door::DoorSpec {
                    name: s.name.clone(),
                    timeout: s.upstream.is_none().then_some(s.timeout),
                    mechanism,
                }
            })
            .collect();
        let member_lists: Vec<Vec<PublicIndex>> =
            groups.iter().map(|(_, members)| members.clone()).collect();
        let (board, door_rx) = door::Board::new(&door_specs, &member_lists, &enforced);
        for spec in door_specs
            .iter()
            .filter(|s| s.mechanism != door::Mechanism::None)
        {
            tracing::info!(service = %spec.name, mechanism = spec.mechanism.text(),
                "admission = ready: new clients are refused while the service is down (down until a prepared connection is parked)");
        }
        // listeners[w][g]: worker w's listener for group g. Every one is bound to an explicit
        // port (a port-0 service's is reserved first), so that one that stops listening while
        // its service is down keeps the port. A managed group starts closed: nothing is parked.
        let mut listeners: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = vec![SocketAddr::from(([0, 0, 0, 0], 0)); config.services.len()];
        for (g, (listen, members)) in groups.iter().enumerate() {
            let service = &config.services[members[0].0];
            let listen_err = |source| StartError::Listen {
                service: service.name.clone(),
                addr: *listen,
                source,
            };
            sys::probe_exclusive(*listen).map_err(listen_err)?;
            let (reserved, bound) = sys::reserve_port(*listen).map_err(listen_err)?;
            let open = !board.managed(g);
            for per_worker in listeners.iter_mut() {
                per_worker.push(sys::reuseport_listener(bound, open).map_err(listen_err)?);
            }
            drop(reserved);
            for &m in members {
                addrs[m.0] = bound;
            }
        }
        let groups: Vec<Vec<PublicIndex>> =
            groups.into_iter().map(|(_, members)| members).collect();
        if config.services.iter().any(|s| s.tls.is_some()) {
            // The seam for kTLS is `tls::Session` (traffic keys and sequence numbers); until the
            // hand-over to the kernel is written, say what runs.
            if sys::kernel_tls_available() {
                tracing::info!("kernel TLS is available, but TLS records are sealed and opened in userspace (kTLS offload not implemented)");
            } else {
                tracing::info!("no kernel TLS here (tcp_available_ulp lacks tls): TLS records are sealed and opened in userspace");
            }
        }
        let services = config.services.len();
        let gates: Vec<Arc<policy::SourceGate>> = config
            .services
            .iter()
            .map(|s| policy::SourceGate::new(s.policy.clone(), s.accept_proxy.clone()))
            .collect();
        let mut receivers = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
            let wake = Arc::new(sys::eventfd().map_err(StartError::Ring)?);
            let stats = Arc::new(WorkerStats::new(services));
            peers.push(Peer { tx, wake, stats });
            receivers.push(rx);
        }
        let peers = Arc::new(peers);
        let pinning: Vec<usize> = config.cores.clone().unwrap_or_default();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (id, (rx, listeners)) in receivers.into_iter().zip(listeners).enumerate() {
            let setup = WorkerSetup {
                id,
                rx,
                wake: Arc::clone(&peers[id].wake),
                peers: Arc::clone(&peers),
                stats: Arc::clone(&peers[id].stats),
                listeners,
                groups: groups.clone(),
                board: Arc::clone(&board),
                services: config.services.clone(),
                relay: config.relay,
                reverse_events: config.reverse_events.clone(),
                gates: gates.clone(),
            };
            let ready = ready_tx.clone();
            let ring_setup = config.ring;
            let core = (!pinning.is_empty()).then(|| pinning[id % pinning.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("sallyport-w{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !sys::pin_current_thread(core) {
                            tracing::warn!(
                                worker = id,
                                core,
                                "could not pin the worker to this core; it runs unpinned"
                            );
                        }
                    }
                    // SINGLE_ISSUER: the ring must be created on the thread that submits.
                    let ring = match sys::Ring::with_setup(RING_ENTRIES, ring_setup) {
                        Ok(ring) => ring,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    dp_debug!(core = id, ring = ?ring.setup(), "worker started");
                    if let Err(e) = Worker::new(setup, ring).run() {
                        tracing::error!(core = id, error = %e, "worker stopped on a ring error");
                    }
                })
                .map_err(StartError::Thread)?;
            threads.push(thread);
        }
        drop(ready_tx);
        let wake_peers = Arc::clone(&peers);
        let keeper = door::spawn_keeper(
            Arc::clone(&board),
            door_rx,
            door_specs,
            Box::new(move || {
                for peer in wake_peers.iter() {
                    sys::eventfd_signal(peer.wake_fd());
                }
            }),
        )
        .map_err(StartError::Thread)?;
        threads.push(keeper);
        let dataplane = Dataplane {
            peers,
            threads: std::sync::Mutex::new(threads),
            addrs,
            services,
            next: AtomicUsize::new(0),
            gates,
            board,
        };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(StartError::Ring(e)),
                Err(_) => return Err(StartError::Ring(std::io::Error::other("worker died"))),
            }
        }
        Ok(dataplane)
    }

    /// The bound address of public service `service` (the real port when 0 was asked for).
    pub fn service_addr(&self, service: PublicIndex) -> SocketAddr {
        self.addrs[service.0]
    }

    /// The userspace per-source verdicts of public service `service`: the control side says
    /// through it whether a kernel table judges the service's direct sources, and reads its
    /// counters.
    pub fn source_gate(&self, service: PublicIndex) -> &Arc<policy::SourceGate> {
        &self.gates[service.0]
    }

    pub fn workers(&self) -> usize {
        self.peers.len()
    }

    /// Parks a prepared connection (first BIND reply already sent) for public service
    /// `service` (its index in [`DataplaneConfig::services`]) on the worker that needs it most: one with clients waiting, else the one with
    /// the fewest parked. Gives the connection back when every queue is full.
    pub fn park(&self, service: PublicIndex, conn: OwnedConn) -> Result<(), OwnedConn> {
        let load = |p: &Peer| {
            let s = &p.stats.services[service.0];
            let waiting = s.waiting.load(Ordering::Relaxed);
            let prepared = s.prepared.load(Ordering::Relaxed);
            (waiting <= 0, prepared)
        };
        let mut order: Vec<usize> = (0..self.peers.len()).collect();
        order.sort_by_key(|&i| load(&self.peers[i]));
        let mut msg = Msg::Prepared { service, conn };
        for i in order {
            match self.peers[i].send(msg) {
                Ok(()) => return Ok(()),
                Err(back) => msg = back,
            }
        }
        match msg {
            Msg::Prepared { conn, .. } => Err(conn),
            _ => unreachable!("the message given back is the one sent"),
        }
    }

    /// Internal side: parks a reverse leg of reverse pool `service` (given back in [`ReverseEvent::service`]; `conn.leftover` holds whatever was read
    /// after the first BIND reply) on the next worker in turn. When the DMZ sends the second
    /// reply the worker connects to the back-end (`upstream`: TCP, with TLS and/or a WebSocket
    /// upgrade when set) and relays; the outcome is reported through
    /// [`DataplaneConfig::reverse_events`]. Gives the connection back when every queue is full.
    ///
    /// `public` is the first BIND reply's BND (the DMZ's public address for the service): with
    /// `upstream.proxy_protocol` it is the PROXY header's destination, the second reply's
    /// address its source (`UNKNOWN` / `LOCAL` when either is not an IP).
    pub fn park_reverse(
        &self,
        service: ReverseIndex,
        conn: OwnedConn,
        upstream: Upstream,
        public: Option<SocketAddr>,
    ) -> Result<(), OwnedConn> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = Msg::Reverse(Box::new(ReverseHandoff {
            service,
            conn,
            upstream,
            public,
        }));
        for k in 0..n {
            match self.peers[(start + k) % n].send(msg) {
                Ok(()) => return Ok(()),
                Err(back) => msg = back,
            }
        }
        match msg {
            Msg::Reverse(handoff) => Err(handoff.conn),
            _ => unreachable!("the message given back is the one sent"),
        }
    }

    /// Internal side: closes the parked (unpaired) reverse legs of reverse pool `service` on
    /// every worker, each reported as [`ReverseOutcome::Released`]; legs parked later stay.
    /// Returns how many workers' queues were full (those keep their legs: ask again later).
    pub fn release_reverse(&self, service: ReverseIndex) -> usize {
        self.peers
            .iter()
            .filter(|p| p.send(Msg::ReleaseReverse(service)).is_err())
            .count()
    }

    /// Relays the two connections of `link` as one tunnel on the next worker in turn: the
    /// front is the tunnel's client side, the back its target side (close reasons name them
    /// `client` and `target`). With `link.ws` the front speaks WebSocket as a server whose
    /// upgrade is done: text and binary messages from it are relayed as bytes, bytes towards
    /// it go as binary messages, its pings are answered, it is pinged after `ws.ping` of
    /// silence, and its Close is a FIN towards the back (and the back's FIN a Close towards
    /// it) once every queued byte is delivered. `leftover` bytes go first: the front's to the
    /// back (decoded as frames with `ws`), the back's to the front.
    ///
    /// Counted in the tunnel totals and bytes of [`Dataplane::snapshot`], and in its
    /// `links_active` / `links_total`. Gives the link back when every queue is full.
    pub fn link(&self, link: Link) -> Result<(), Box<Link>> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = Msg::Link(Box::new(link));
        for k in 0..n {
            match self.peers[(start + k) % n].send(msg) {
                Ok(()) => return Ok(()),
                Err(back) => msg = back,
            }
        }
        match msg {
            Msg::Link(link) => Err(link),
            _ => unreachable!("the message given back is the one sent"),
        }
    }

    /// Counters and gauges summed over every worker, with each DMZ service's admission state.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::collect(self.services, self.peers.iter().map(|p| &*p.stats));
        for (i, service) in snap.services.iter_mut().enumerate() {
            service.door = self.board.status(PublicIndex(i));
        }
        snap
    }

    /// Stops every worker (open tunnels and parked connections are closed) and joins them.
    /// Safe to call more than once; later calls find nothing left to stop.
    pub fn shutdown(&self) {
        let threads = match self.threads.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        if threads.is_empty() {
            return;
        }
        self.board.stop();
        for peer in self.peers.iter() {
            // A full queue still gets the message: block briefly rather than leak a worker.
            if peer
                .tx
                .send_timeout(Msg::Shutdown, Duration::from_secs(5))
                .is_ok()
            {
                sys::eventfd_signal(peer.wake_fd());
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Peer {
    fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        let fd: &OwnedFd = &self.wake;
        fd.as_fd()
    }
}
