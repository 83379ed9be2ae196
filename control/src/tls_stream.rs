//! TLS on the control thread's tokio sockets (the reverse leg, both ends), with the data plane's
//! sans-IO TLS: [`handshake`] drives a [`Handshake`] over a `TcpStream`, and [`TlsStream`] reads
//! and writes the SOCKS5 exchange through the established [`Session`]. What goes to a worker
//! afterwards is that session itself ([`TlsStream::into_parts`]), with any records read but not
//! yet opened, so the worker carries on where the control thread stopped.
//!
//! Errors are `io::Error`s wrapping the `rustls::Error`, so [`crate::tls::io_reason`] explains
//! them.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use sallyport_dataplane::tls::{Handshake, Pump, Read, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Bytes of a handshake flight read at once.
const HANDSHAKE_READ_CHUNK: usize = 16 << 10;

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the handshake pump to completion over `tcp`. On failure the alert rustls chose is sent
/// (if the socket takes it) and the error returned.
pub async fn handshake(mut tcp: TcpStream, mut handshake: Handshake) -> io::Result<TlsStream> {
    let mut chunk = vec![0u8; HANDSHAKE_READ_CHUNK];
    let mut read = 0;
    loop {
        match handshake.pump(&chunk[..read]) {
            Pump::Send => {
                tcp.write_all(handshake.outgoing()).await?;
                handshake.sent(handshake.outgoing().len());
                read = 0;
            }
            Pump::NeedInput => {
                read = tcp.read(&mut chunk).await?;
                if read == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Pump::Done => {
                let session = handshake.finish().map_err(tls_io_error)?;
                return Ok(TlsStream { tcp, session });
            }
            Pump::Failed(e) => {
                let _ = tcp.write_all(handshake.outgoing()).await; // The alert, best effort.
                return Err(tls_io_error(e));
            }
        }
    }
}

/// An established TLS session on a tokio socket.
pub struct TlsStream {
    tcp: TcpStream,
    session: Session,
}

impl TlsStream {
    /// The socket and the session, for a hand-off; the session's buffers go back to this
    /// thread's pool when they hold nothing.
    pub fn into_parts(self) -> (TcpStream, Session) {
        let TlsStream { tcp, mut session } = self;
        session.release_idle_buffers();
        (tcp, session)
    }

    /// Writes the session's sealed records.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, self.session.output()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.session.sent(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.session.read(buf.initialize_unfilled()) {
                Ok(Read::Data(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Read::End) => return Poll::Ready(Ok(())),
                Ok(Read::NeedInput) => {}
                Err(e) => return Poll::Ready(Err(tls_io_error(e))),
            }
            let mut input = ReadBuf::new(this.session.input_space());
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut input))?;
            match input.filled().len() {
                0 => this.session.transport_ended(),
                n => this.session.received(n),
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        let n = this.session.write(data).map_err(tls_io_error)?;
        // Start sending; what the socket does not take now goes with the next flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.session.close().map_err(tls_io_error)?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
