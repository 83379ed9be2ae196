//! Sans-IO wire codecs: pure functions and state machines over byte slices.
//!
//! Every decoder here is incremental: it reports "need more bytes", a parsed value together with
//! the number of bytes it consumed (the rest of the input belongs to the next layer and must be
//! handed on, never dropped), or a malformed-input error. Nothing in this module performs I/O,
//! reads a clock, touches the environment or panics on peer bytes; sockets, timeouts and metrics
//! belong to the callers. [`bind`] holds the SOCKS5 BIND session as two state machines (server
//! and client) over the [`socks5`] codec; the caller feeds them bytes and the time.

pub mod bind;
pub mod http;
pub mod proxy;
pub mod socks5;
pub mod token;
pub mod ws;

#[cfg(test)]
mod test_util;
