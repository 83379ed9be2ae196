//! sallyport load generators: a blocking TCP echo backend, a bulk-throughput load, a request/response
//! latency load recorded in HdrHistograms, and plain-text reporting helpers.
//!
//! Everything here uses std threads and blocking `std::net` sockets; there is no async runtime. Every
//! load loop is bounded both by a count and by a time limit, and stops by itself.
//!
//! This crate does not start gateways, pin threads, measure CPU time or compare paths by itself; the
//! `sallyport demo` command and the criterion benches drive these pieces side by side and compute ratios.

pub mod backend;
pub mod load;
pub mod report;
