//! The owned value that carries a socket from the control thread to a data-plane worker.
//!
//! A socket crosses threads with the bytes already read past the end of its handshake: those
//! bytes belong to the next layer and are delivered first (wire rule 1). This module does no
//! I/O.

use std::net::TcpStream;

/// A connected socket and the bytes read from it that no layer has consumed yet.
#[derive(Debug)]
pub struct OwnedConn {
    pub stream: TcpStream,
    /// Bytes read from `stream` past the last handshake message, in arrival order.
    pub leftover: Vec<u8>,
}

impl OwnedConn {
    pub fn new(stream: TcpStream, leftover: Vec<u8>) -> OwnedConn {
        OwnedConn { stream, leftover }
    }
}
