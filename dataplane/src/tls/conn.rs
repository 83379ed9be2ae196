//! rustls' unbuffered connection, client or server, behind one type: [`Conn`] and the
//! [`with_conn!`] macro that runs the same code on either side (their state types differ only in
//! a type parameter), plus the encoding of what rustls wants sent into a caller's buffer.
//!
//! No I/O and no policy: the handshake pump and the session decide what to do with each state.

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, UnbufferedStatus};
use rustls::ProtocolVersion;

use super::TlsError;

/// One rustls connection, either side.
pub(crate) enum Conn {
    Client(UnbufferedClientConnection),
    Server(UnbufferedServerConnection),
}

/// Runs `$body` with `$c` bound to the client or the server connection.
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::tls::conn::Conn::Client($c) => $body,
            $crate::tls::conn::Conn::Server($c) => $body,
        }
    };
}
pub(crate) use with_conn;

impl Conn {
    pub(crate) fn is_handshaking(&self) -> bool {
        with_conn!(self, c => c.is_handshaking())
    }

    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        with_conn!(self, c => c.alpn_protocol())
    }

    pub(crate) fn is_tls13(&self) -> bool {
        with_conn!(self, c => c.protocol_version()) == Some(ProtocolVersion::TLSv1_3)
    }
}

/// Makes `out[end..]` at least `need` bytes long and returns it. A pooled buffer keeps its
/// length, so this zeroes memory only the first time a buffer grows that far.
pub(crate) fn room(out: &mut Vec<u8>, end: usize, need: usize) -> &mut [u8] {
    if out.len() < end + need {
        out.resize(end + need, 0);
    }
    &mut out[end..]
}

/// Encodes the handshake (or alert) record rustls hands out at `out[*end..]`, growing `out`
/// as far as the record needs.
pub(crate) fn encode<Data>(
    encode: &mut EncodeTlsData<'_, Data>,
    out: &mut Vec<u8>,
    end: &mut usize,
) -> Result<(), TlsError> {
    let mut need = 4096;
    loop {
        match encode.encode(room(out, *end, need)) {
            Ok(n) => {
                *end += n;
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(e)) => need = e.required_size,
            Err(e) => return Err(TlsError::Encode(e)),
        }
    }
}

/// Whether rustls failed on a record it could not take apart (a malformed or oversized record,
/// one that did not decrypt, an illegal ChangeCipherSpec). That record is still in the input:
/// shown it again, rustls would fail on it a second time and queue a second fatal alert (which
/// it asserts never happens). Its one alert is the first thing the next turn hands out, so a
/// single turn gets it.
pub(crate) fn failed_on_record(e: &rustls::Error) -> bool {
    use rustls::{Error, PeerMisbehaved};
    matches!(
        e,
        Error::InvalidMessage(_)
            | Error::PeerSentOversizedRecord
            | Error::DecryptError
            | Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec)
    )
}

/// One turn of a failed connection: encodes the alert rustls queued into `out[*end..]`. True
/// while there may be more to encode.
pub(crate) fn alert_turn<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    out: &mut Vec<u8>,
    end: &mut usize,
) -> bool {
    match status.state {
        Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut e, out, end).is_ok(),
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            true
        }
        _ => false,
    }
}
