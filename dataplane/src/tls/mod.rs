//! TLS for tunnel legs: handshakes run by rustls ([`Handshake`], unbuffered API, no I/O), then
//! an established [`Session`] whose records are sealed and opened by our own [`RecordLayer`] in
//! per-thread pooled buffers: no allocation per record or per read.
//!
//! This is the kernel-TLS seam: after the handshake a session is nothing but traffic keys and
//! sequence numbers, exactly what `setsockopt(SOL_TLS, TLS_TX/TLS_RX)` takes. On a kernel with
//! the `tls` ULP a session could be handed to the socket and the leg spliced; this kernel has
//! none, so the record layer does it in userspace.
//!
//! [`Session`] does no I/O either: callers read socket bytes into [`Session::input_space`], take
//! plaintext with [`Session::read`], queue plaintext with [`Session::write`] and write
//! [`Session::output`] to the socket. The data plane's `Leg` drives it with non-blocking
//! syscalls; the control thread drives it under tokio.

pub(crate) mod conn;
mod handshake;
pub mod record;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use conn::{with_conn, Conn};
pub use handshake::{Handshake, Pump};
pub use record::{Opened, RecordLayer};
use rustls::unbuffered::{ConnectionState, EncryptError, UnbufferedStatus};
use rustls::Error;

/// Ciphertext read per socket read, at most; a buffer also keeps room for a partial record.
const READ_CHUNK: usize = 64 << 10;
/// Size of every pooled buffer: a read's worth plus the longest record.
const BUFFER_LEN: usize = READ_CHUNK + record::MAX_RECORD;
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("rustls could not encode a TLS record: {0}")]
    Encode(String),
    #[error("rustls could not encrypt a TLS record: {0}")]
    Encrypt(String),
    #[error("the TLS handshake failed")]
    HandshakeFailed,
    #[error("TLS handshake ended inside a message split across records")]
    HandshakeSplitMessage,
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

/// Who seals and opens the records of an established session.
pub(crate) enum Engine {
    /// Our record layer, with the traffic keys rustls handed over.
    Own(RecordLayer),
    /// rustls' unbuffered connection itself, carried on past its handshake.
    Rustls(Conn),
}

/// Which [`Engine`] sessions get: `SALLYPORT_TLS_RECORDS=rustls` picks rustls' own data path,
/// anything else (or nothing) our record layer. Read once per process.
pub(crate) fn rustls_records() -> bool {
    static RUSTLS: OnceLock<bool> = OnceLock::new();
    *RUSTLS.get_or_init(|| {
        std::env::var("SALLYPORT_TLS_RECORDS").is_ok_and(|v| v.eq_ignore_ascii_case("rustls"))
    })
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
    engine: Engine,
    /// Received bytes; `rx[rx_start..rx_end]` not yet opened. Empty when idle.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Plaintext decrypted in place in `rx`, not yet delivered (own record layer).
    plain: Range<usize>,
    /// Application data that arrived with the handshake (or, with rustls, the part of a
    /// record that did not fit the caller's buffer), delivered first.
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
        engine: Engine,
        plaintext: Vec<u8>,
        peer_closed: bool,
        incoming: &[u8],
        outgoing: Vec<u8>,
    ) -> Session {
        let tx_end = outgoing.len();
        let mut session = Session {
            engine,
            rx: Vec::new(),
            rx_start: 0,
            rx_end: 0,
            plain: 0..0,
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
                .resize(BUFFER_LEN.max(incoming.len() + record::MAX_RECORD), 0);
            session.rx[..incoming.len()].copy_from_slice(incoming);
            session.rx_end = incoming.len();
        }
        session
    }

    pub fn is_tls13(&self) -> bool {
        match &self.engine {
            Engine::Own(records) => records.is_tls13(),
            Engine::Rustls(conn) => conn.is_tls13(),
        }
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
        let opened = match self.engine {
            Engine::Own(_) => self.open_own(buf, filled),
            Engine::Rustls(_) => self.open_rustls(buf, filled),
        };
        filled = match opened {
            Ok(filled) => filled,
            Err((e, filled)) => return self.fail(e, filled),
        };
        if self.plain.is_empty() && self.rx_start == self.rx_end {
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

    /// Our record layer: opens records in place in `rx` and copies their plaintext out.
    fn open_own(&mut self, buf: &mut [u8], mut filled: usize) -> Result<usize, (Error, usize)> {
        let Engine::Own(records) = &mut self.engine else {
            return Ok(filled);
        };
        while filled < buf.len() {
            if !self.plain.is_empty() {
                let n = (buf.len() - filled).min(self.plain.len());
                let from = self.plain.start;
                buf[filled..filled + n].copy_from_slice(&self.rx[from..from + n]);
                self.plain.start += n;
                filled += n;
                continue;
            }
            if self.peer_closed {
                break; // Nothing after close_notify (or the end of the transport) counts.
            }
            match records.open(&mut self.rx[self.rx_start..self.rx_end]) {
                Err(e) => return Err((e, filled)),
                Ok(Opened::Incomplete) => break,
                Ok(Opened::Data { len, plaintext }) => {
                    self.plain = self.rx_start + plaintext.start..self.rx_start + plaintext.end;
                    self.rx_start += len;
                }
                // Key updates asked for are answered before our next record (RFC 8446 §4.6.3),
                // so a peer that floods them makes no output here.
                Ok(Opened::Control { len }) => self.rx_start += len,
                Ok(Opened::Closed { len }) => {
                    self.rx_start += len;
                    self.peer_closed = true;
                    break;
                }
            }
        }
        Ok(filled)
    }

    /// rustls: its connection opens the records in `rx` (one per turn) and hands out each
    /// one's plaintext, copied here into `buf`; what does not fit waits in `prefix`.
    fn open_rustls(&mut self, buf: &mut [u8], mut filled: usize) -> Result<usize, (Error, usize)> {
        let Engine::Rustls(conn) = &mut self.engine else {
            return Ok(filled);
        };
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
                match &mut self.engine {
                    Engine::Own(records) => {
                        self.tx.truncate(self.tx_end);
                        records.seal_fatal_alert(&e, &mut self.tx);
                        self.tx_end = self.tx.len();
                    }
                    // rustls queued the alert itself when it failed.
                    Engine::Rustls(conn) => with_conn!(conn, c => {
                        for _ in 0..4 {
                            let input = &mut self.rx[self.rx_start..self.rx_end];
                            let status = c.process_tls_records(input);
                            self.rx_start += status.discard;
                            if !conn::alert_turn(status, &mut self.tx, &mut self.tx_end) {
                                break;
                            }
                        }
                    }),
                }
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
        if self.rx_start > 0 && self.plain.is_empty() {
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
        match &mut self.engine {
            Engine::Own(records) => {
                self.tx.truncate(self.tx_end);
                let taken = records.seal(data, &mut self.tx);
                self.tx_end = self.tx.len();
                taken
            }
            Engine::Rustls(conn) => {
                let take = data.len().min(record::MAX_PLAINTEXT);
                let mut sealed = false;
                while !sealed {
                    // The records rustls holds a part of stay in view (it keeps their place).
                    let input = &mut self.rx[self.rx_start..self.rx_end];
                    let (discard, turn) = with_conn!(conn, c => write_turn(
                        c.process_tls_records(input),
                        Some(&data[..take]),
                        &mut self.prefix,
                        &mut self.tx,
                        &mut self.tx_end,
                        &mut self.peer_closed,
                    ));
                    self.rx_start += discard;
                    sealed = turn?;
                }
                Ok(take)
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
        match &mut self.engine {
            Engine::Own(records) => {
                self.tx.truncate(self.tx_end);
                let sealed = records.seal_close_notify(&mut self.tx);
                self.tx_end = self.tx.len();
                sealed
            }
            Engine::Rustls(conn) => {
                let mut sealed = false;
                while !sealed {
                    // The records rustls holds a part of stay in view (it keeps their place).
                    let input = &mut self.rx[self.rx_start..self.rx_end];
                    let (discard, turn) = with_conn!(conn, c => write_turn(
                        c.process_tls_records(input),
                        None,
                        &mut self.prefix,
                        &mut self.tx,
                        &mut self.tx_end,
                        &mut self.peer_closed,
                    ));
                    self.rx_start += discard;
                    sealed = turn?;
                }
                Ok(())
            }
        }
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
        if self.rx_start == self.rx_end && self.plain.is_empty() {
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
        self.prefix_pos < self.prefix.len() || !self.plain.is_empty() || self.rx_start < self.rx_end
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
    let encrypt_error = |e: EncryptError| Error::from(TlsError::Encrypt(e.to_string()));
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
