//! TLS for tunnel legs: handshakes run by rustls ([`Handshake`], unbuffered API, no I/O), then
//! an established [`Session`]: the same rustls connection opening and sealing records, with
//! ciphertext kept in per-thread pooled buffers (no buffer per idle session, none allocated per
//! read by us; rustls itself copies each record's plaintext into a `Vec` of its own).
//!
//! This is the kernel-TLS seam: configs allow secret extraction, so an established connection
//! can hand its traffic keys and sequence numbers to the socket (`dangerous_into_kernel_connection`,
//! what `setsockopt(SOL_TLS, TLS_TX/TLS_RX)` takes). This kernel has no `tls` ULP, so that
//! hand-over is not written and rustls does the records in userspace.
//!
//! [`Session`] does no I/O either: callers read socket bytes into [`Session::input_space`], take
//! plaintext with [`Session::read`], queue plaintext with [`Session::write`] and write
//! [`Session::output`] to the socket. The data plane's `Leg` drives it with non-blocking
//! syscalls; the control thread drives it under tokio. It does not own sockets, timers or
//! certificates (see `control::tls`).

pub(crate) mod conn;
mod handshake;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::{Arc, PoisonError, RwLock};

use conn::{with_conn, Conn};
pub use handshake::{Handshake, Pump};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::Error;

/// Most plaintext per record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The longest record on the wire: header, and TLS 1.2's ciphertext limit of 2^14 + 2048.
pub const MAX_RECORD: usize = 5 + MAX_PLAINTEXT + 2048;
/// Ciphertext read per socket read, at most; a buffer also keeps room for a partial record.
const READ_CHUNK: usize = 64 << 10;
/// Size of every pooled buffer: a read's worth plus the longest record.
const BUFFER_LEN: usize = READ_CHUNK + MAX_RECORD;
/// Plaintext accepted while this many sealed bytes wait to be sent.
const WRITE_BACKLOG: usize = 64 << 10;
/// Buffers kept for reuse per thread.
const POOL_MAX: usize = 64;

thread_local! {
    /// Buffers of sessions that ended or went idle on this thread (a worker, or the control
    /// thread), ready for the next one.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_LEN))
}

/// Keeps `buf` for the next session on this thread. Its length is kept too, so a receive buffer
/// taken again needs no zeroing.
fn give_back(buf: Vec<u8>) {
    // Only standard buffers: one grown for an unusual handshake tail is freed, not kept.
    if buf.capacity() < BUFFER_LEN || buf.capacity() > 2 * BUFFER_LEN {
        return;
    }
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    });
}

/// A TLS configuration that can be replaced while running (certificates and keys reloaded on
/// SIGHUP): every handshake takes the current one; sessions already established keep theirs.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(config: Arc<T>) -> Arc<Reloadable<T>> {
        Arc::new(Reloadable {
            current: RwLock::new(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// From now on, handshakes use `config`.
    pub fn replace(&self, config: Arc<T>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

impl<T> std::fmt::Debug for Reloadable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloadable(..)")
    }
}

/// Why a TLS leg failed where rustls has no error of its own for it. It reaches callers inside
/// `rustls::Error::Other`, so one error type covers a session's failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("rustls could not encode a TLS record: {0}")]
    Encode(EncodeError),
    #[error("rustls could not encrypt a TLS record: {0}")]
    Encrypt(EncryptError),
    #[error("the TLS handshake failed")]
    HandshakeFailed,
    #[error("unexpected TLS early data")]
    EarlyData,
    #[error("unexpected TLS state {0} after the handshake")]
    UnexpectedState(&'static str),
    #[error("write after close_notify")]
    WriteAfterClose,
    #[error("the transport ended in the middle of a TLS record")]
    TruncatedRecord,
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Error {
        Error::Other(rustls::OtherError(Arc::new(e)))
    }
}

/// What [`Session::read`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// This many plaintext bytes were copied into the caller's buffer.
    Data(usize),
    /// No plaintext until more bytes arrive: read the socket into [`Session::input_space`].
    NeedInput,
    /// The peer's stream is over (close_notify, or the transport ended).
    End,
}

/// What one turn of rustls on received records gave.
enum Turn {
    /// This many plaintext bytes were copied out.
    Data(usize),
    /// Something was done (a record encoded for the peer): ask again.
    Continue,
    /// No whole record left.
    NeedInput,
    /// close_notify arrived.
    Closed,
}

/// An established TLS session and its buffers.
pub struct Session {
    /// rustls, past its handshake: it opens and seals the records.
    conn: Conn,
    /// Received bytes; `rx[rx_start..rx_end]` not yet opened. Empty when idle.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Application data that arrived with the handshake, or the part of a record that did
    /// not fit the caller's buffer: delivered first.
    prefix: Vec<u8>,
    prefix_pos: usize,
    /// Sealed records; `tx[tx_pos..tx_end]` not yet sent. Empty when idle; a pooled buffer
    /// keeps its length, so sealing into it needs no zeroing.
    tx: Vec<u8>,
    tx_pos: usize,
    tx_end: usize,
    /// close_notify received (or, before the handshake ended, seen by rustls).
    peer_closed: bool,
    /// The transport ended: whatever is left unopened is all there will be.
    truncated: bool,
    /// close_notify or a fatal alert was sealed: nothing more is sent.
    close_queued: bool,
    /// The error that ended the session: every later read reports it.
    failed: Option<Error>,
}

impl Session {
    /// A session right after its handshake: `plaintext` arrived with it, `incoming` was received
    /// past it (records not opened yet), `outgoing` is the handshake's tail still to send.
    pub(crate) fn established(
        conn: Conn,
        plaintext: Vec<u8>,
        peer_closed: bool,
        incoming: &[u8],
        outgoing: Vec<u8>,
    ) -> Session {
        let tx_end = outgoing.len();
        let mut session = Session {
            conn,
            rx: Vec::new(),
            rx_start: 0,
            rx_end: 0,
            prefix: plaintext,
            prefix_pos: 0,
            tx: outgoing,
            tx_pos: 0,
            tx_end,
            peer_closed,
            truncated: false,
            close_queued: false,
            failed: None,
        };
        // Records that arrived past the handshake (unless the peer already closed: nothing
        // after its close_notify counts).
        if !incoming.is_empty() && !peer_closed {
            session.rx = take_buffer();
            session
                .rx
                .resize(BUFFER_LEN.max(incoming.len() + MAX_RECORD), 0);
            session.rx[..incoming.len()].copy_from_slice(incoming);
            session.rx_end = incoming.len();
        }
        session
    }

    pub fn is_tls13(&self) -> bool {
        self.conn.is_tls13()
    }

    /// Copies plaintext into `buf`: what came with the handshake, then what records already
    /// received hold, as much as fits (many records per call).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Read, Error> {
        let mut filled = 0;
        if self.prefix_pos < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.prefix_pos);
            buf[..n].copy_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + n]);
            self.prefix_pos += n;
            filled = n;
            if self.prefix_pos == self.prefix.len() {
                self.prefix.clear();
                self.prefix_pos = 0;
            }
        }
        if let Some(e) = &self.failed {
            // A failed session stays failed (after the plaintext before the failure).
            return if filled > 0 {
                Ok(Read::Data(filled))
            } else {
                Err(e.clone())
            };
        }
        filled = match self.open(buf, filled) {
            Ok(filled) => filled,
            Err((e, filled)) => return self.fail(e, filled),
        };
        if self.rx_start == self.rx_end {
            // Nothing buffered: the buffer goes back to the pool until bytes come again, so an
            // established but quiet session holds none.
            self.rx_start = 0;
            self.rx_end = 0;
            if !self.rx.is_empty() {
                give_back(std::mem::take(&mut self.rx));
            }
        }
        if filled == 0 && self.truncated && self.rx_start < self.rx_end {
            return self.fail(TlsError::TruncatedRecord.into(), 0);
        }
        Ok(if filled > 0 {
            Read::Data(filled)
        } else if self.peer_closed || self.truncated {
            Read::End
        } else {
            Read::NeedInput
        })
    }

    /// rustls opens the records in `rx` (one per turn) and hands out each one's plaintext,
    /// copied here into `buf`; what does not fit waits in `prefix`.
    fn open(&mut self, buf: &mut [u8], mut filled: usize) -> Result<usize, (Error, usize)> {
        let conn = &mut self.conn;
        while filled < buf.len() && !self.peer_closed {
            let input = &mut self.rx[self.rx_start..self.rx_end];
            let out = &mut buf[filled..];
            let (discard, turn) = with_conn!(conn, c => read_turn(
                c.process_tls_records(input),
                out,
                &mut self.prefix,
                &mut self.tx,
                &mut self.tx_end,
            ));
            self.rx_start += discard;
            match turn {
                Ok(Turn::Data(n)) => filled += n,
                Ok(Turn::Continue) => {}
                Ok(Turn::NeedInput) => break,
                Ok(Turn::Closed) => self.peer_closed = true,
                Err(e) => return Err((e, filled)),
            }
        }
        Ok(filled)
    }

    /// Records `e` for good and queues the alert that tells the peer (best effort: the caller
    /// sends [`Session::output`] if it can). Plaintext already copied is delivered first.
    fn fail(&mut self, e: Error, filled: usize) -> Result<Read, Error> {
        if self.failed.is_none() {
            self.failed = Some(e.clone());
            if !self.close_queued {
                self.close_queued = true;
                self.ensure_tx();
                // rustls queued the alert itself when it failed (one turn gets it after a
                // record it could not take apart: see `conn::failed_on_record`).
                let turns = if conn::failed_on_record(&e) { 1 } else { 4 };
                with_conn!(&mut self.conn, c => {
                    for _ in 0..turns {
                        let input = &mut self.rx[self.rx_start..self.rx_end];
                        let status = c.process_tls_records(input);
                        self.rx_start += status.discard;
                        if !conn::alert_turn(status, &mut self.tx, &mut self.tx_end) {
                            break;
                        }
                    }
                });
            }
        }
        if filled > 0 {
            Ok(Read::Data(filled))
        } else {
            Err(e)
        }
    }

    /// Where to read socket bytes to; then call [`Session::received`]. Never empty.
    pub fn input_space(&mut self) -> &mut [u8] {
        if self.rx.is_empty() {
            self.rx = take_buffer();
            if self.rx.len() < BUFFER_LEN {
                self.rx.resize(BUFFER_LEN, 0);
            }
        }
        if self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        let end = (self.rx_end + READ_CHUNK).min(self.rx.len());
        &mut self.rx[self.rx_end..end]
    }

    /// `n` bytes were read into [`Session::input_space`].
    pub fn received(&mut self, n: usize) {
        self.rx_end = (self.rx_end + n).min(self.rx.len());
    }

    /// The transport ended: no more records will come. Whole records received before it are
    /// still delivered. Without a close_notify this is taken as the end of the stream, as
    /// plain TCP would be (rustls calls it `UnexpectedEof`; the relay treats both alike); a
    /// record cut short by it is an error.
    pub fn transport_ended(&mut self) {
        self.truncated = true;
    }

    /// Seals as much of `data` as the write backlog allows; returns how much it took (0 when
    /// earlier records are still waiting to be sent).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.close_queued {
            return Err(TlsError::WriteAfterClose.into());
        }
        self.ensure_tx();
        let mut taken = 0;
        while taken < data.len() && self.tx_end - self.tx_pos < WRITE_BACKLOG {
            taken += self.seal(&data[taken..])?;
        }
        Ok(taken)
    }

    /// Seals all of `data`, whatever the backlog (plaintext held back during the handshake).
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.ensure_tx();
        while !data.is_empty() {
            let n = self.seal(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Seals one record's worth of `data` at `tx[tx_end..]`; returns how much it took.
    fn seal(&mut self, data: &[u8]) -> Result<usize, Error> {
        let take = data.len().min(MAX_PLAINTEXT);
        self.send(Some(&data[..take]))?;
        Ok(take)
    }

    /// Has rustls seal `data` (close_notify for `None`) once it has done what comes first
    /// (a key update it owes, records it holds a part of).
    fn send(&mut self, data: Option<&[u8]>) -> Result<(), Error> {
        loop {
            // The records rustls holds a part of stay in view (it keeps their place).
            let input = &mut self.rx[self.rx_start..self.rx_end];
            let (discard, turn) = with_conn!(&mut self.conn, c => write_turn(
                c.process_tls_records(input),
                data,
                &mut self.prefix,
                &mut self.tx,
                &mut self.tx_end,
                &mut self.peer_closed,
            ));
            self.rx_start += discard;
            if turn? {
                return Ok(());
            }
        }
    }

    /// Queues close_notify (once).
    pub fn close(&mut self) -> Result<(), Error> {
        if self.close_queued {
            return Ok(());
        }
        self.close_queued = true;
        self.ensure_tx();
        self.send(None)
    }

    /// Takes a send buffer from the pool if there is none, and moves unsent bytes to its front
    /// so it never grows past the backlog plus a record (a peer reading slowly takes a few bytes
    /// per send).
    fn ensure_tx(&mut self) {
        if self.tx.capacity() == 0 {
            self.tx = take_buffer();
            self.tx_pos = 0;
            self.tx_end = 0;
        }
        if self.tx_pos > 0 {
            self.tx.copy_within(self.tx_pos..self.tx_end, 0);
            self.tx_end -= self.tx_pos;
            self.tx_pos = 0;
        }
    }

    /// Sealed bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        &self.tx[self.tx_pos..self.tx_end]
    }

    /// `n` bytes of [`Session::output`] were written.
    pub fn sent(&mut self, n: usize) {
        self.tx_pos = (self.tx_pos + n).min(self.tx_end);
        if self.tx_pos == self.tx_end {
            // All sent: the buffer goes back to the pool until the next write.
            self.tx_pos = 0;
            self.tx_end = 0;
            give_back(std::mem::take(&mut self.tx));
        }
    }

    /// Returns the buffers to the pool while they hold nothing (a session about to wait a long
    /// time, e.g. a parked prepared connection); the next read or write takes them again.
    pub fn release_idle_buffers(&mut self) {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
            give_back(std::mem::take(&mut self.rx));
        }
        if !self.wants_write() {
            self.tx_pos = 0;
            self.tx_end = 0;
            give_back(std::mem::take(&mut self.tx));
        }
        if self.prefix_pos == self.prefix.len() {
            self.prefix = Vec::new();
            self.prefix_pos = 0;
        }
    }

    pub fn wants_write(&self) -> bool {
        self.tx_pos < self.tx_end
    }

    /// Plaintext or records already received wait to be read: no socket event will announce
    /// them.
    pub fn has_buffered_input(&self) -> bool {
        self.prefix_pos < self.prefix.len() || self.rx_start < self.rx_end
    }
}

/// One turn of rustls on received records: copies a record's plaintext into `out` (the rest
/// into `carry`), encodes what rustls wants sent into `tx[*tx_end..]`. Returns the bytes of
/// input consumed.
fn read_turn<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    out: &mut [u8],
    carry: &mut Vec<u8>,
    tx: &mut Vec<u8>,
    tx_end: &mut usize,
) -> (usize, Result<Turn, Error>) {
    let UnbufferedStatus { mut discard, state } = status;
    let turn = match state {
        Err(e) => Err(e),
        Ok(ConnectionState::ReadTraffic(mut read)) => match read.next_record() {
            Some(Ok(record)) => {
                discard += record.discard;
                let n = out.len().min(record.payload.len());
                out[..n].copy_from_slice(&record.payload[..n]);
                carry.extend_from_slice(&record.payload[n..]);
                Ok(Turn::Data(n))
            }
            Some(Err(e)) => Err(e),
            None => Ok(Turn::Continue),
        },
        Ok(ConnectionState::EncodeTlsData(mut encode)) => conn::encode(&mut encode, tx, tx_end)
            .map(|()| Turn::Continue)
            .map_err(Error::from),
        // What was encoded goes out, in order, with the session's next records.
        Ok(ConnectionState::TransmitTlsData(transmit)) => {
            transmit.done();
            Ok(Turn::Continue)
        }
        Ok(ConnectionState::WriteTraffic(_)) => Ok(Turn::NeedInput),
        Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Ok(Turn::Closed),
        Ok(ConnectionState::ReadEarlyData(_)) => Err(TlsError::EarlyData.into()),
        Ok(_) => Err(TlsError::UnexpectedState("blocked handshake").into()),
    };
    (discard, turn)
}

/// One turn of rustls, to send: seals `data` (close_notify for `None`) at
/// `tx[*tx_end..]` once rustls allows traffic. Ok(true) once sealed, Ok(false) when rustls had
/// something else to do first (encode a key update, hand over plaintext into `carry`, report
/// close_notify in `peer_closed`). Returns the bytes of input consumed.
fn write_turn<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    data: Option<&[u8]>,
    carry: &mut Vec<u8>,
    tx: &mut Vec<u8>,
    tx_end: &mut usize,
    peer_closed: &mut bool,
) -> (usize, Result<bool, Error>) {
    let UnbufferedStatus { mut discard, state } = status;
    let turn = match state {
        // Told to the reader by the flag; sending goes on (a half-close).
        Ok(ConnectionState::PeerClosed) => {
            *peer_closed = true;
            Ok(false)
        }
        Ok(state) => send_state(state, data, carry, tx, tx_end, &mut discard),
        Err(e) => Err(e),
    };
    (discard, turn)
}

fn send_state<Data>(
    state: ConnectionState<'_, '_, Data>,
    data: Option<&[u8]>,
    carry: &mut Vec<u8>,
    tx: &mut Vec<u8>,
    tx_end: &mut usize,
    discard: &mut usize,
) -> Result<bool, Error> {
    let encrypt_error = |e: EncryptError| Error::from(TlsError::Encrypt(e));
    match state {
        ConnectionState::WriteTraffic(mut write) => {
            let mut need = data.map_or(64, |d| d.len() + 64);
            loop {
                let space = conn::room(tx, *tx_end, need);
                let sealed = match data {
                    Some(data) => write.encrypt(data, space),
                    None => write.queue_close_notify(space),
                };
                match sealed {
                    Ok(n) => {
                        *tx_end += n;
                        return Ok(true);
                    }
                    Err(EncryptError::InsufficientSize(e)) => need = e.required_size,
                    Err(e) => return Err(encrypt_error(e)),
                }
            }
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            conn::encode(&mut encode, tx, tx_end)?;
            Ok(false)
        }
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Ok(false)
        }
        ConnectionState::ReadTraffic(mut read) => {
            while let Some(record) = read.next_record() {
                let record = record?;
                *discard += record.discard;
                carry.extend_from_slice(record.payload);
            }
            Ok(false)
        }
        ConnectionState::Closed => Err(TlsError::WriteAfterClose.into()),
        _ => Err(TlsError::UnexpectedState("not ready to send").into()),
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.rx));
        give_back(std::mem::take(&mut self.tx));
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tls13", &self.is_tls13())
            .field("buffered_input", &(self.rx_end - self.rx_start))
            .field("pending_output", &(self.tx_end - self.tx_pos))
            .finish()
    }
}
