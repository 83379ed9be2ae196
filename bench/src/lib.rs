//! sallyport's benchmark harness: it starts real `sallyport run` processes and peer tunnels as
//! children, drives load through them and compares every path with direct loopback measured
//! just before it; the `sallyport-bench` binary (the CLI, `main.rs`) drives it.
//!
//! - Generators: [`load`], the `sallyport-kit` loops (bulk, request/response, new connections)
//!   over plain TCP and over the [`transport`]s (TLS, WebSocket); [`backend`] and [`report`]
//!   are kit's echo server and reporting, re-exported.
//! - Topology: [`topology`] (paths, gateway configs, peers), [`procs`] (children, scratch
//!   directories), [`admin`] (the gateways' `/stats`), [`tls`] (development certificates and the
//!   bare-rustls echo server).
//! - Measurement and output: [`modes`] (one module per mode), [`host`] (`/proc`, limits),
//!   [`plot`] (latency SVG).
//!
//! Everything uses std threads and blocking `std::net` sockets; there is no async runtime. Every
//! load loop is bounded both by a count and by a time limit, and every child process is stopped on
//! every exit path. There is no `unsafe` here: libc calls go through `sallyport_kit::sys`.
#![deny(unsafe_code)]

pub use sallyport_kit::{backend, report};

pub mod admin;
pub mod flood;
pub mod host;
pub mod load;
pub mod modes;
pub mod plot;
pub mod procs;
pub mod tls;
pub mod topology;
pub mod transport;
