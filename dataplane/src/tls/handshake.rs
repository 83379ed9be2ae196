//! A TLS handshake without I/O, on rustls' unbuffered API, and the one pump that drives it:
//! the caller feeds what it read to [`Handshake::pump`] and does what the [`Pump`] says (send
//! [`Handshake::outgoing`], read more, finish, or give up). Once done, [`Handshake::finish`]
//! turns the connection into an established [`Session`] with every byte that arrived past the
//! handshake: decrypted application data first (wire rule 1), then records not yet opened.
//!
//! Used by the control thread (reverse legs, under tokio: `control::tls_stream`) and by the
//! workers (public `tls://` listeners, `tls://` back-ends, readiness-driven: `leg`); the same
//! code decides both. It does not read or write sockets, keep time or load certificates.

use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, Error, ServerConfig};

use super::conn::{self, with_conn, Conn};
use super::{Session, TlsError};

/// `config` itself when it allows secret extraction (the kernel-TLS seam: an established
/// connection can then give up its traffic keys), else a copy that does (for rustls'
/// `ServerConfig` and `ClientConfig` alike).
macro_rules! allowing_extraction {
    ($config:expr) => {{
        let config = $config;
        if config.enable_secret_extraction {
            config
        } else {
            let mut copy = (*config).clone();
            copy.enable_secret_extraction = true;
            Arc::new(copy)
        }
    }};
}

/// One TLS handshake in progress.
pub struct Handshake {
    side: Conn,
    /// Received bytes rustls has not consumed yet.
    incoming: Vec<u8>,
    /// How much of `incoming` rustls may see: whole records, one more each time it asks, so
    /// it stops at the handshake's last record and everything after that (data, a key update,
    /// a ticket) is left to the established session's buffers.
    visible: usize,
    /// Bytes to send, in order.
    outgoing: Vec<u8>,
    /// Application data that arrived before the handshake was over.
    plaintext: Vec<u8>,
    done: bool,
    peer_closed: bool,
}

/// What one step of rustls' state machine asked for.
enum Step {
    Continue,
    NeedInput,
    Done,
    PeerClosed,
}

impl Handshake {
    /// The server side. The config must allow secret extraction; if it does not, a copy that
    /// does is made for this handshake (build configs with `enable_secret_extraction = true`).
    pub fn server(config: Arc<ServerConfig>) -> Result<Handshake, Error> {
        let config = allowing_extraction!(config);
        Ok(Handshake::new(Conn::Server(
            UnbufferedServerConnection::new(config)?,
        )))
    }

    /// The client side, verifying the server as `name`. As for [`Handshake::server`], the
    /// config should allow secret extraction.
    pub fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Handshake, Error> {
        let config = allowing_extraction!(config);
        let mut handshake =
            Handshake::new(Conn::Client(UnbufferedClientConnection::new(config, name)?));
        // The ClientHello is ready before anything is received.
        handshake.advance()?;
        Ok(handshake)
    }

    fn new(side: Conn) -> Handshake {
        Handshake {
            side,
            incoming: Vec::new(),
            visible: 0,
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            done: false,
            peer_closed: false,
        }
    }

    /// Appends bytes read from the peer.
    pub fn received(&mut self, bytes: &[u8]) {
        self.incoming.extend_from_slice(bytes);
    }

    /// Bytes to send now.
    pub fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// `n` bytes of [`Handshake::outgoing`] were sent.
    pub fn sent(&mut self, n: usize) {
        self.outgoing.drain(..n.min(self.outgoing.len()));
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn is_handshaking(&self) -> bool {
        self.side.is_handshaking()
    }

    /// The protocol the peers agreed on with ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.side.alpn_protocol()
    }

    /// The handshake pump both drivers run (the workers' non-blocking sockets, the control
    /// thread's tokio ones): takes the bytes just read from the peer (none on the first call
    /// or after a send) and says what the driver does next.
    pub fn pump(&mut self, input: &[u8]) -> Pump {
        self.received(input);
        match self.advance() {
            Err(e) => Pump::Failed(e),
            Ok(_) if !self.outgoing.is_empty() => Pump::Send,
            Ok(true) => Pump::Done,
            Ok(false) => Pump::NeedInput,
        }
    }

    /// Runs rustls on what was received: Ok(true) once the handshake is complete (send
    /// [`Handshake::outgoing`] still), Ok(false) when it needs more bytes from the peer. On an
    /// error, the alert rustls wants the peer to see is in [`Handshake::outgoing`].
    pub fn advance(&mut self) -> Result<bool, Error> {
        while !self.done {
            match self.step() {
                Ok(Step::Continue) => {}
                Ok(Step::NeedInput) if self.reveal_record() => {}
                Ok(Step::NeedInput) => return Ok(false),
                // A TLS 1.3 server may send data after its own Finished, before the client's:
                // the handshake is over only when rustls says so.
                Ok(Step::Done) if self.is_handshaking() => {
                    if !self.reveal_record() {
                        return Ok(false);
                    }
                }
                Ok(Step::Done) => self.done = true,
                Ok(Step::PeerClosed) => self.peer_closed = true,
                Err(e) => {
                    self.queue_alerts(&e);
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// After a failure rustls still hands out the alert it queued: encode it for the peer
    /// (one turn only after a record it could not take apart: see `conn::failed_on_record`).
    fn queue_alerts(&mut self, error: &Error) {
        let turns = if conn::failed_on_record(error) { 1 } else { 4 };
        for _ in 0..turns {
            if !matches!(self.step(), Ok(Step::Continue)) {
                return;
            }
        }
    }

    /// One turn of rustls' state machine on the records it may see.
    fn step(&mut self) -> Result<Step, Error> {
        let visible = &mut self.incoming[..self.visible];
        let (discard, step) = with_conn!(&mut self.side, c => handle(
            c.process_tls_records(visible),
            &mut self.outgoing,
            &mut self.plaintext,
        ));
        let discard = discard.min(self.visible);
        self.incoming.drain(..discard);
        self.visible -= discard;
        step
    }

    /// Lets rustls see the next whole record: false when none has arrived yet. Bytes that are
    /// not a TLS record header are all shown at once, so rustls rejects them at once.
    fn reveal_record(&mut self) -> bool {
        let rest = &self.incoming[self.visible..];
        let Some(&[content_type, major, _, hi, lo]) = rest.get(..5) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if !(20..=24).contains(&content_type) || major != 3 || len > super::MAX_RECORD {
            let all = self.incoming.len();
            let more = all > self.visible;
            self.visible = all;
            return more;
        }
        if rest.len() < 5 + len {
            return false;
        }
        self.visible += 5 + len;
        true
    }

    /// The established session, with every byte that came past the handshake. Call once
    /// [`Handshake::advance`] returned Ok(true).
    pub fn finish(self) -> Result<Session, Error> {
        if !self.done {
            return Err(Error::HandshakeNotComplete);
        }
        // rustls carries on with the records; what it saw but kept (part of a message) is
        // part of what comes next, in place.
        Ok(Session::established(
            self.side,
            self.plaintext,
            self.peer_closed,
            &self.incoming,
            self.outgoing,
        ))
    }
}

/// What a handshake driver does after [`Handshake::pump`].
#[derive(Debug)]
pub enum Pump {
    /// Write [`Handshake::outgoing`] to the peer (report it with [`Handshake::sent`]), then
    /// pump again with no input.
    Send,
    /// Read from the peer and pump what arrived.
    NeedInput,
    /// The handshake is complete: [`Handshake::finish`] gives the session, with the bytes that
    /// came past it.
    Done,
    /// The handshake failed; the alert for the peer, if any, is in [`Handshake::outgoing`]
    /// (send it if the socket takes it).
    Failed(Error),
}

/// Handles one state rustls reported: encodes handshake records into `outgoing`, collects early
/// application data into `plaintext`. Returns the bytes to discard from the input.
fn handle<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    outgoing: &mut Vec<u8>,
    plaintext: &mut Vec<u8>,
) -> (usize, Result<Step, Error>) {
    let UnbufferedStatus { mut discard, state } = status;
    let state = match state {
        Ok(state) => state,
        Err(e) => return (discard, Err(e)),
    };
    let step = match state {
        ConnectionState::EncodeTlsData(mut encode) => {
            let mut end = outgoing.len();
            let encoded = conn::encode(&mut encode, outgoing, &mut end);
            outgoing.truncate(end);
            encoded.map(|()| Step::Continue).map_err(Error::from)
        }
        // Everything encoded goes out, in order, before the caller waits for input again.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Ok(Step::Continue)
        }
        ConnectionState::BlockedHandshake => Ok(Step::NeedInput),
        ConnectionState::WriteTraffic(_) => Ok(Step::Done),
        ConnectionState::ReadTraffic(mut read) => loop {
            match read.next_record() {
                Some(Ok(record)) => {
                    discard += record.discard;
                    plaintext.extend_from_slice(record.payload);
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(Step::Continue),
            }
        },
        // Servers here accept no 0-RTT data (rustls' default max_early_data_size is 0).
        ConnectionState::ReadEarlyData(_) => Err(TlsError::EarlyData.into()),
        ConnectionState::PeerClosed => Ok(Step::PeerClosed),
        ConnectionState::Closed => Ok(Step::Done),
        _ => Err(TlsError::UnexpectedState("in the handshake").into()),
    };
    (discard, step)
}
