//! Load generators that drive a TCP echo path (direct, or through a tunnel) with blocking std sockets.
//!
//! [`bulk`] measures one-way throughput with verified payloads; [`rr`] measures request/response
//! latency into an HdrHistogram, closed loop or open loop at a fixed rate (latency counted from the
//! intended send time, so a stalled path cannot hide its queueing: no coordinated omission);
//! [`cps`] opens short-lived connections (connect, one round trip, close) and counts them per second.
//!
//! The loops are transport-neutral: [`run_bulk`] drives any [`BulkConn`] (a writer and a reader
//! half, or one duplex pump for sessions that cannot be split, such as TLS) and [`run_rr`] any
//! `Read + Write` stream. Plain TCP is here; `sallyport-bench` adds TLS and WebSocket transports
//! on the same loops.
//!
//! Each load is bounded by a count and by a time limit. When the limit passes, a watchdog shuts the
//! sockets down so every thread returns; nothing here waits on a peer forever. These functions do not
//! start servers, pin threads or measure CPU; callers do that around them.

mod bulk;
mod common;
mod cps;
mod rr;

pub use bulk::{
    bulk, run_bulk, BulkConn, BulkResult, BulkSpec, EchoDuplex, EchoReader, EchoWriter, Source,
    Verifier, READ_BUFFER,
};
pub use common::{
    connect_all, deadline_after, named, time_left, DEFAULT_BULK_BYTES, DEFAULT_CONNECTIONS,
    DEFAULT_CPS_CONCURRENCY, DEFAULT_CPS_COUNT, DEFAULT_RR_REQUESTS, DEFAULT_RR_SIZE,
    DEFAULT_TIME_LIMIT, DEFAULT_WRITE_SIZE,
};
pub use cps::{cps, CpsResult, CpsSpec};
pub use rr::{rr, run_rr, LatencySummary, RrResult, RrSpec};

#[cfg(test)]
mod tests;
