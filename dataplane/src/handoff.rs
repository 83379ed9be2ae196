//! The owned value that carries a socket from the control thread to a data-plane worker.
//!
//! A socket crosses threads with the bytes already read past the end of its handshake: those
//! bytes belong to the next layer and are delivered first (wire rule 1). This module does no
//! I/O.

use std::net::TcpStream;

/// A connected socket, its TLS session if it has one, and the (plaintext) bytes read from it
/// that no layer has consumed yet.
pub struct OwnedConn {
    pub stream: TcpStream,
    /// Bytes read from `stream` past the last handshake message, in arrival order. For a TLS
    /// connection these are decrypted bytes; records not yet opened stay inside `tls`.
    pub leftover: Vec<u8>,
    /// The established TLS session on `stream`, when the connection speaks TLS.
    pub tls: Option<Box<crate::tls::Session>>,
}

impl OwnedConn {
    pub fn new(stream: TcpStream, leftover: Vec<u8>) -> OwnedConn {
        OwnedConn {
            stream,
            leftover,
            tls: None,
        }
    }

    pub fn with_tls(mut self, tls: crate::tls::Session) -> OwnedConn {
        self.tls = Some(Box::new(tls));
        self
    }
}

impl std::fmt::Debug for OwnedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedConn")
            .field("stream", &self.stream)
            .field("leftover", &self.leftover.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}
