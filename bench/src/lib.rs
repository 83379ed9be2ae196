//! sallyport load generators and the benchmark harness around them.
//!
//! The library half ([`backend`], [`load`], [`report`]) is a blocking TCP echo back-end, bulk,
//! request/response and new-connection loads (HdrHistogram latencies), and plain-text reporting;
//! `sallyport demo` uses it in-process. The harness half ([`procs`], [`topology`], [`admin`],
//! [`host`], [`modes`], [`plot`]) starts real `sallyport run` processes and peer tunnels as
//! children, measures them from `/proc` and their `/stats`, and compares every path with direct
//! loopback measured just before it; the `sallyport-bench` binary drives it.
//!
//! With `--tls`, [`tls`] adds development certificates (from `sallyport certs`), a rustls echo
//! server (the bare-rustls baseline) and the TLS variants of the bulk and request/response loads.
//!
//! Everything uses std threads and blocking `std::net` sockets; there is no async runtime. Every
//! load loop is bounded both by a count and by a time limit, and every child process is stopped on
//! every exit path.

pub mod admin;
pub mod backend;
pub mod host;
pub mod load;
pub mod modes;
pub mod plot;
pub mod procs;
pub mod report;
pub mod tls;
pub mod topology;
