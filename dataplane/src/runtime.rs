//! How the data plane runs: the relay settings every worker shares, what
//! [`crate::Dataplane::start`] is given, and why it can fail to start.
//!
//! Plain values; this module starts nothing itself.

use std::net::SocketAddr;
use std::time::Duration;

use crate::handoff::ReverseEvents;
use crate::service::PublicService;
use crate::sys;

/// How a plain tunnel moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// read/send through a pooled userspace buffer.
    Copy,
    /// splice(2) through a per-tunnel pipe: no userspace copy.
    Splice,
}

/// Relay settings shared by every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    pub mode: RelayMode,
    /// Requested pipe capacity per direction (the kernel may grant less).
    pub pipe_size: usize,
    /// Buffer per direction on the buffered-copy path.
    pub buffer_size: usize,
    /// Options set on every relayed socket.
    pub stream: sys::StreamOptions,
    /// After any activity, keep reaping completions without sleeping for this long (zero: off).
    /// Trades CPU for latency; see tuning.md.
    pub busy_poll: Duration,
}

/// What [`Dataplane::start`] needs.
#[derive(Clone)]
pub struct DataplaneConfig {
    pub workers: usize,
    /// Pin worker `i` to core `cores[i % cores.len()]`; `None` or empty: no pinning.
    pub cores: Option<Vec<usize>>,
    pub relay: RelayConfig,
    /// io_uring setup to try first (falls back to simpler ones the kernel supports).
    pub ring: sys::RingSetup,
    pub services: Vec<PublicService>,
    /// Where workers report what became of reverse legs (internal side).
    pub reverse_events: Option<ReverseEvents>,
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service {service}: cannot listen on {addr}: {source}")]
    Listen {
        service: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot set up io_uring: {0} (is kernel.io_uring_disabled set, or RLIMIT_MEMLOCK too low? see tuning.md)"
    )]
    Ring(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
}
