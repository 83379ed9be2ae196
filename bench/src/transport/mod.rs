//! Client transports for the `sallyport-kit` load loops beyond plain TCP: [`tls`] (rustls) and
//! [`ws`] (WebSocket with the data plane's codecs). Each connects, completes its handshake and
//! hands the loops a stream or a bulk connection; the loops themselves are not here.

pub mod tls;
pub mod ws;
