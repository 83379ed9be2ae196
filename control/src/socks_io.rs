//! Drives a sans-IO BIND session machine (`sallyport_dataplane::wire::bind`) over a tokio
//! stream (plain TCP, or TLS through `tls_stream`): read into a buffer, feed it to the machine
//! with the time, write what it asks to send, stop where it reaches its next stage or closes.
//! One loop serves the DMZ's server side and the internal gateway's client side. The machine's
//! handshake deadline bounds every read and write.
//!
//! It decides nothing about the protocol's flow (the machines do) and nothing about counters or
//! log lines (callers map [`SessionError`] to their own).

use std::io;
use std::time::Instant;

use sallyport_dataplane::wire::bind::{Action, Message, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes asked for per read. Small on purpose: a parked connection waiting for its second
/// reply keeps this buffer, and bytes past the reply stay in the socket for the worker.
const READ_CHUNK: usize = 64;

/// Why a session driven by [`drive`] did not reach its next stage.
#[derive(Debug, thiserror::Error)]
pub enum SessionError<E> {
    /// The machine closed the session (its refusal, if any, was written first).
    #[error("{0}")]
    Session(E),
    /// EOF before the message the session waited for was complete.
    #[error("peer closed before the SOCKS5 {0} was complete")]
    Closed(Message),
    /// A socket error while reading.
    #[error("read failed during the SOCKS5 {waiting}: {source}")]
    Read { waiting: Message, source: io::Error },
    /// The TLS session failed while reading or writing (a bad record, or an alert from the
    /// peer, e.g. it rejected our certificate after the handshake looked complete on our side):
    /// an `io::Error` wrapping the `rustls::Error`.
    #[error("{}", crate::tls::io_reason(.0))]
    Tls(io::Error),
    /// A socket error while writing, or a write still pending at the deadline.
    #[error("write failed: {0}")]
    Write(io::Error),
}

impl<E> SessionError<E> {
    fn io(e: io::Error, waiting: Option<Message>) -> Self {
        match (crate::tls::rustls_error(&e), waiting) {
            (Some(_), _) => SessionError::Tls(e),
            (None, Some(waiting)) => SessionError::Read { waiting, source: e },
            (None, None) => SessionError::Write(e),
        }
    }
}

/// Runs `session` over `stream` until it reaches its next stage ([`Action::Ready`]) or closes.
/// `buf` holds bytes received and not yet consumed; on success the bytes after the last message
/// the session took are left in it (wire rule 1), for the caller to hand on.
pub async fn drive<S, M>(
    stream: &mut S,
    session: &mut M,
    buf: &mut Vec<u8>,
) -> Result<M::Ready, SessionError<M::Error>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Session,
{
    loop {
        // Taken before `handle`: a refusal's reply is written within the same deadline.
        let deadline = session.poll_timeout();
        let step = session.handle(buf, Instant::now());
        buf.drain(..step.consumed);
        if !step.send.is_empty() {
            // flush: over TLS the records may still sit in the session after write_all.
            let write = async {
                stream.write_all(&step.send).await?;
                stream.flush().await
            };
            match within(deadline, write).await {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(SessionError::io(e, None)),
                None => return Err(timed_out(session)),
            }
        }
        match step.action {
            Action::Ready(ready) => return Ok(ready),
            Action::Close(e) => return Err(SessionError::Session(e)),
            Action::NeedInput => {}
        }
        let waiting = session.expecting().unwrap_or(Message::Greeting);
        buf.reserve(READ_CHUNK);
        match within(session.poll_timeout(), stream.read_buf(buf)).await {
            Some(Ok(0)) => return Err(SessionError::Closed(waiting)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SessionError::io(e, Some(waiting))),
            // The next `handle` sees the deadline passed and closes with the timeout.
            None => {}
        }
    }
}

/// The write did not finish by the deadline: the machine's timeout error when it is still
/// handshaking, else (it had just closed or parked) a timed-out write.
fn timed_out<M: Session>(session: &mut M) -> SessionError<M::Error> {
    match session.handle_timeout(Instant::now()) {
        Some(e) => SessionError::Session(e),
        None => SessionError::Write(io::ErrorKind::TimedOut.into()),
    }
}

/// `io` until `deadline` (`None`: no deadline); `None` if the deadline came first.
async fn within<T>(
    deadline: Option<Instant>,
    io: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), io).await.ok(),
        None => Some(io.await),
    }
}
