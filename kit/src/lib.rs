//! What sallyport's demo, benchmark and tests share, so that none of them depends on another:
//!
//! - [`backend`]: a blocking TCP echo server (the back-end behind tunnels, the direct baseline);
//! - [`load`]: the bulk, request/response and new-connection load loops (transport-neutral; plain
//!   TCP here, TLS and WebSocket transports in `sallyport-bench`);
//! - [`report`]: fixed-width tables, ratios, HdrHistogram percentile distributions, host facts;
//! - [`date`]: civil dates and ISO 8601 timestamps from days and seconds since the epoch;
//! - [`child`]: waiting for a child's exit or a polled condition with a deadline;
//! - [`certs`] (feature `certs`): the parameters of development CAs and leaves (the product's
//!   `sallyport certs` and the tests' PKI both sign with them);
//! - [`pki`] (feature `pki`): a throw-away test PKI, CAs and leaves as DER and PEM;
//! - [`sys`]: the one module with `unsafe`, safe wrappers around the libc calls the others need.
//!
//! It depends on no crate of this workspace. It has no CLI, topology, peer-tunnel or process
//! orchestration code (that is `sallyport-bench`), so the `sallyport` binary stays small.
#![deny(unsafe_code)]

pub mod backend;
#[cfg(feature = "certs")]
pub mod certs;
pub mod child;
pub mod date;
pub mod load;
#[cfg(feature = "pki")]
pub mod pki;
pub mod report;
pub mod sys;
