//! The load generators under one name: `sallyport-kit`'s bulk, request/response and
//! new-connection loops over plain TCP, and the same loops over TLS ([`bulk_tls`], [`rr_tls`])
//! and WebSocket ([`bulk_ws`], [`rr_ws`]) from [`crate::transport`].
//!
//! Nothing is defined here; the loops are in `sallyport_kit::load`, the transports beside this.

pub use sallyport_kit::load::*;

pub use crate::transport::tls::{bulk_tls, rr_tls, TlsTarget};
pub use crate::transport::ws::{bulk_ws, rr_ws, WsTarget, WS_MAX_FRAME};
