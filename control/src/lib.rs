//! sallyport's control side: configuration, the gateway assembly (data plane + control
//! thread), the SOCKS5 reverse endpoint (DMZ), the reverse pools (internal gateway), TLS
//! settings and development certificates (`tls`), certificate reload (`reload`), the admin
//! endpoint, and the `demo` topology. The `sallyport` binary is a thin CLI over it.
//!
//! No `unsafe` here: every system call goes through the data plane (its private `sys` tree) or std.
#![forbid(unsafe_code)]

pub mod accept_pause;
pub mod admin;
pub mod backend_probe;
pub mod config;
pub mod demo;
pub mod dmz;
pub mod gateway;
pub mod internal;
pub mod netfilter;
pub mod reload;
pub mod socks_io;
pub mod stats;
pub mod tls;
pub mod tls_stream;
