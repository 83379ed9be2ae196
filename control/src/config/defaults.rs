//! Every default and every bound of the configuration, one `const` each with the reason for its
//! value. Validation (the sibling modules) applies them; `sallyport demo` builds its configs from
//! them. Nothing here parses or checks anything.

use std::num::NonZeroUsize;
use std::time::Duration;

use sallyport_dataplane::RelayMode;
use sallyport_dataplane::RingSetup;

/// Default `timeout` of a DMZ service: the longest a client waits for a prepared connection.
/// Refilling a pool takes one round trip to the internal gateway, so two seconds covers a refill
/// over a slow WAN link several times over, yet refuses a client of a dead service while the
/// client is still waiting rather than after it gave up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default `prepared` of an internal service: connections kept parked at the DMZ. Four absorbs a
/// burst of four simultaneous clients while the refill (one round trip each) runs, and costs only
/// four idle sockets per service on each side.
pub const DEFAULT_PREPARED: usize = 4;

/// Default `retry_max` of an internal service: the cap of the reconnect backoff (100 ms, 200 ms,
/// 400 ms, 800 ms, then 1 s). A restarted DMZ is back in service within a second, while a DMZ that
/// stays down costs at most one connection attempt per second.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Default `[reverse] handshake_timeout`: the longest a SOCKS5 negotiation (greeting, optional
/// RFC 1929 authentication, BIND) may take at the DMZ. A live internal gateway needs one or two
/// round trips; five seconds tolerates a congested WAN link while bounding how long a silent or
/// slow-loris peer can hold a socket.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `[gateway] pipe_size` in bytes, for the splice relay. 1 MiB is the Linux default of
/// `/proc/sys/fs/pipe-max-size`, the largest pipe an unprivileged process may request, and 16 times
/// the default 64 KiB pipe, so one splice moves up to 1 MiB on bulk transfers. Larger values need
/// that knob raised (see `tuning.md`).
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;

/// Default `[gateway] buffer_size` in bytes, for the buffered-copy relay (used where splice is
/// not). 64 KiB matches the default pipe capacity, so both relays move similar chunks per call,
/// and keeps a tunnel's two buffers at 128 KiB.
pub const DEFAULT_BUFFER_SIZE: usize = 64 << 10;

/// Default `handshake_timeout` of a `tls://`, `ws://` or `wss://` public listener: the longest a
/// client's TLS handshake plus WebSocket upgrade request may take before it is closed. A real
/// client needs two or three round trips; five seconds covers a slow mobile link while bounding
/// what a silent or slow-loris client can hold.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `ws_max_message`: the largest WebSocket message accepted from a peer; a larger one
/// closes the connection (1009). The payload is a byte stream, so messages only need to be as
/// large as a peer's writes: 16 MiB takes any browser or library default while bounding what a
/// peer can announce. The decoder streams payload, so the limit costs no memory.
pub const DEFAULT_WS_MAX_MESSAGE: usize = 16 << 20;

/// Lower bound of `ws_max_message`: 64 KiB, the largest message a sallyport sends (one frame per
/// write). A smaller limit would make another gateway's frames fail with 1009.
pub const MIN_WS_MAX_MESSAGE: usize = 64 << 10;

/// Upper bound of `ws_max_message`.
pub const MAX_WS_MAX_MESSAGE: usize = 1 << 30;

/// Longest WebSocket path in `accept` or `connect`, in bytes; it must fit the 8 KiB request head.
pub const MAX_WS_PATH_LEN: usize = 1024;

/// Lower bound of `ws_ping`: a keepalive more frequent than this is traffic, not a keepalive
/// (and most likely a slip such as `"30ms"` for `"30s"`).
pub const MIN_WS_PING: Duration = Duration::from_millis(100);

/// Longest ALPN protocol name in bytes (RFC 7301: one length byte).
pub const MAX_ALPN_LEN: usize = 255;

/// Default `connect_timeout` of an internal or forwarding service: the longest a connect to the
/// back-end (or upstream) may take. The back-end is in the same trusted network, so a connect
/// that takes five seconds is to a dead or filtered host; failing then frees the prepared slot
/// for a fresh attempt, or resets the forwarded client rather than leaving it hanging.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default `[gateway] relay`: splice, which costs no userspace copy for plain TCP tunnels; the
/// data plane falls back to buffered copy per tunnel if a pipe cannot be created.
pub const DEFAULT_RELAY: RelayMode = RelayMode::Splice;

/// Upper bound of `[gateway] workers`.
pub const MAX_WORKERS: usize = 1024;
/// Upper bound of a service's `prepared`.
pub const MAX_PREPARED: usize = 100_000;
/// Lower bound of `[gateway] pipe_size`: one page, the kernel's smallest pipe.
pub const MIN_PIPE_SIZE: usize = 4 << 10;
/// Upper bound of `[gateway] pipe_size`.
pub const MAX_PIPE_SIZE: usize = 256 << 20;
/// Default `[gateway] nodelay`: the relay forwards what it read at once, so Nagle would only
/// delay request/response traffic (see tuning.md).
pub const DEFAULT_NODELAY: bool = true;
/// Default `[gateway] ring_setup`: the cheapest completions on kernels ≥ 6.1 (see tuning.md).
pub const DEFAULT_RING_SETUP: RingSetup = RingSetup::DeferTaskrun;
/// Upper bound of `[gateway] busy_poll`.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(10);
/// Lower bound of `[gateway] socket_buffer`.
pub const MIN_SOCKET_BUFFER: usize = 4 << 10;
/// Upper bound of `[gateway] socket_buffer`.
pub const MAX_SOCKET_BUFFER: usize = 64 << 20;
/// Lower bound of `[gateway] buffer_size`.
pub const MIN_BUFFER_SIZE: usize = 1 << 10;
/// Upper bound of `[gateway] buffer_size`.
pub const MAX_BUFFER_SIZE: usize = 64 << 20;
/// Longest service or bind name in bytes; a bind name travels as a SOCKS5 DOMAINNAME (one length byte).
pub const MAX_NAME_LEN: usize = 255;
/// Longest user name or password in bytes (RFC 1929: one length byte each).
pub const MAX_CREDENTIAL_LEN: usize = 255;
/// Longest accepted duration. Nothing in a gateway waits a day; the bound also keeps
/// `Instant + duration` far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// One worker per core, capped at [`MAX_WORKERS`]; 1 if the core count is unknown.
pub(super) fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// Default `deny_action`: a RST, so a refused client learns at once (as from a closed port);
/// `"drop"` is for sources that should learn nothing.
pub const DEFAULT_DENY_ACTION: sallyport_dataplane::admission::DenyAction =
    sallyport_dataplane::admission::DenyAction::Reject;
/// Upper bound of `max_per_source`.
pub const MAX_PER_SOURCE: u32 = 1_000_000;
/// Upper bound of `rate_per_source` (new connections per second).
pub const MAX_RATE_PER_SOURCE: u32 = 1_000_000;
/// Default `backend_probe` of an internal service: park only while the back-end accepts
/// connections, so a dead back-end reaches public clients as a refused connect.
pub const DEFAULT_BACKEND_PROBE: bool = true;

/// Default `[rendezvous] link_timeout`: how long a browser or a host waits at the DMZ for its
/// partner. A platform publishes the dial command as it hands out the URL, so both arrive within
/// a second or two; ten seconds covers a host's NATS reconnect or a slow browser start while
/// bounding what an abandoned token holds.
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `keepalive` of reverse legs (internal services, `[reverse]`, `[host]`): idle time
/// before the first TCP keepalive probe. NAT gateways and stateful firewalls forget idle flows
/// after 60 s at the shortest common setting (350 s on cloud NAT gateways, hours on others), so
/// a probe every 30 s keeps a parked connection alive through all of them; with a probe every
/// 5 s after that and 3 unanswered, a dead one is noticed within 45 s.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// Lower bound of `keepalive`: probes more often than this are traffic.
pub const MIN_KEEPALIVE: Duration = Duration::from_secs(1);
/// Upper bound of `keepalive`: the kernel's own default idle time.
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(7200);
