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

mod handshake;
pub mod record;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Arc, PoisonError, RwLock};

pub use handshake::Handshake;
pub use record::{Opened, RecordLayer};
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

/// An established TLS session and its buffers.
pub struct Session {
    records: RecordLayer,
    /// Received bytes; `rx[rx_start..rx_end]` not yet opened. Empty when idle.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Plaintext decrypted in place in `rx`, not yet delivered.
    plain: Range<usize>,
    /// Application data that arrived with the handshake, delivered first.
    prefix: Vec<u8>,
    prefix_pos: usize,
    /// Sealed records; `tx[tx_pos..]` not yet sent. Empty when idle.
    tx: Vec<u8>,
    tx_pos: usize,
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
        records: RecordLayer,
        plaintext: Vec<u8>,
        peer_closed: bool,
        incoming: &[u8],
        outgoing: Vec<u8>,
    ) -> Session {
        let mut session = Session {
            records,
            rx: Vec::new(),
            rx_start: 0,
            rx_end: 0,
            plain: 0..0,
            prefix: plaintext,
            prefix_pos: 0,
            tx: outgoing,
            tx_pos: 0,
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
        self.records.is_tls13()
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
                self.prefix = Vec::new();
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
            let opened = match self.records.open(&mut self.rx[self.rx_start..self.rx_end]) {
                Ok(opened) => opened,
                Err(e) => return self.fail(e, filled),
            };
            match opened {
                Opened::Incomplete => break,
                Opened::Data { len, plaintext } => {
                    self.plain = self.rx_start + plaintext.start..self.rx_start + plaintext.end;
                    self.rx_start += len;
                }
                // Key updates asked for are answered before our next record (RFC 8446 §4.6.3),
                // so a peer that floods them makes no output here.
                Opened::Control { len } => self.rx_start += len,
                Opened::Closed { len } => {
                    self.rx_start += len;
                    self.peer_closed = true;
                    break;
                }
            }
        }
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
            let e = Error::General("the transport ended in the middle of a TLS record".into());
            return self.fail(e, 0);
        }
        Ok(if filled > 0 {
            Read::Data(filled)
        } else if self.peer_closed || self.truncated {
            Read::End
        } else {
            Read::NeedInput
        })
    }

    /// Records `e` for good and queues the alert that tells the peer (best effort: the caller
    /// sends [`Session::output`] if it can). Plaintext already copied is delivered first.
    fn fail(&mut self, e: Error, filled: usize) -> Result<Read, Error> {
        if self.failed.is_none() {
            self.failed = Some(e.clone());
            if !self.close_queued {
                self.close_queued = true;
                self.ensure_tx();
                self.records.seal_fatal_alert(&e, &mut self.tx);
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
            return Err(Error::General("write after close_notify".into()));
        }
        self.ensure_tx();
        let mut taken = 0;
        while taken < data.len() && self.tx.len() - self.tx_pos < WRITE_BACKLOG {
            taken += self.records.seal(&data[taken..], &mut self.tx)?;
        }
        Ok(taken)
    }

    /// Seals all of `data`, whatever the backlog (plaintext held back during the handshake).
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.ensure_tx();
        while !data.is_empty() {
            let n = self.records.seal(data, &mut self.tx)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Queues close_notify (once).
    pub fn close(&mut self) -> Result<(), Error> {
        if !self.close_queued {
            self.close_queued = true;
            self.ensure_tx();
            self.records.seal_close_notify(&mut self.tx)?;
        }
        Ok(())
    }

    /// Takes a send buffer from the pool if there is none, and moves unsent bytes to its front
    /// so it never grows past the backlog plus a record (a peer reading slowly takes a few bytes
    /// per send).
    fn ensure_tx(&mut self) {
        if self.tx.capacity() == 0 {
            self.tx = take_buffer();
            self.tx.clear();
        }
        if self.tx_pos > 0 {
            self.tx.drain(..self.tx_pos);
            self.tx_pos = 0;
        }
    }

    /// Sealed bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        &self.tx[self.tx_pos..]
    }

    /// `n` bytes of [`Session::output`] were written.
    pub fn sent(&mut self, n: usize) {
        self.tx_pos = (self.tx_pos + n).min(self.tx.len());
        if self.tx_pos == self.tx.len() {
            // All sent: the buffer goes back to the pool until the next write.
            self.tx_pos = 0;
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
            give_back(std::mem::take(&mut self.tx));
        }
        if self.prefix_pos == self.prefix.len() {
            self.prefix = Vec::new();
            self.prefix_pos = 0;
        }
    }

    pub fn wants_write(&self) -> bool {
        self.tx_pos < self.tx.len()
    }

    /// Plaintext or records already received wait to be read: no socket event will announce
    /// them.
    pub fn has_buffered_input(&self) -> bool {
        self.prefix_pos < self.prefix.len() || !self.plain.is_empty() || self.rx_start < self.rx_end
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
            .field("tls13", &self.records.is_tls13())
            .field("buffered_input", &(self.rx_end - self.rx_start))
            .field("pending_output", &(self.tx.len() - self.tx_pos))
            .finish()
    }
}
