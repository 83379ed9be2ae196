//! Client transports for the `sallyport-kit` load loops beyond plain TCP: [`tls`] (rustls) and
//! [`ws`] (WebSocket with the data plane's codecs). Each connects, completes its handshake and
//! hands the loops a stream or a bulk connection; the loops themselves are not here.

pub mod tls;
pub mod ws;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sallyport_kit::load::{connect_all, time_left};

/// [`connect_all`], then `handshake` on each connection (its number, its socket and the time
/// left until `deadline`) in turn; `what` and `why` name a handshake the time limit cut off.
fn connect_all_then<T>(
    addr: SocketAddr,
    connections: usize,
    deadline: Instant,
    nodelay: bool,
    what: &str,
    why: &str,
    mut handshake: impl FnMut(usize, TcpStream, Duration) -> io::Result<T>,
) -> io::Result<Vec<T>> {
    let streams = connect_all(addr, connections, deadline, nodelay)?;
    let mut conns = Vec::with_capacity(streams.len());
    for (conn, sock) in streams.into_iter().enumerate() {
        let left = time_left(deadline, conn, what, why)?;
        conns.push(handshake(conn, sock, left)?);
    }
    Ok(conns)
}
