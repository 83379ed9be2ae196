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

/// Room reserved in the buffer before each read (a read fills whatever room the buffer has,
/// so it may take more). Small on purpose: the SOCKS5 messages are short. Bytes read past the
/// message the session took stay in the buffer and go to the worker as leftover.
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use sallyport_dataplane::wire::bind::client::{BindClient, ClientError, Progress};
    use sallyport_dataplane::wire::bind::server::{BindServer, Park, ServerError, Service};
    use sallyport_dataplane::wire::socks5::{self, Credentials};
    use tokio::io::AsyncWriteExt;

    use super::*;

    struct Svc(&'static str, Option<Credentials>);

    impl Service for Svc {
        fn bind_name(&self) -> &str {
            self.0
        }
        fn public(&self) -> SocketAddr {
            SocketAddr::from(([192, 0, 2, 1], 9000))
        }
        fn credentials(&self) -> Option<&Credentials> {
            self.1.as_ref()
        }
    }

    fn creds() -> Credentials {
        Credentials {
            user: b"internal".to_vec(),
            password: b"hunter2".to_vec(),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// A client and a server machine, each driven over one end of an in-memory pipe so small
    /// that most messages cross it in pieces (but wide enough for the server's method choice
    /// and auth status together, which it writes while the client still writes its pipelined
    /// requests, as a socket buffer takes them).
    async fn converse(
        services: &[Svc],
        bind_name: &str,
        creds: Option<&Credentials>,
        after_park: &[u8],
    ) -> (
        Result<Park, SessionError<ServerError>>,
        Result<(Progress, Vec<u8>), SessionError<ClientError>>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(4);
        let mut server = BindServer::new(services, soon());
        let mut client = BindClient::new(bind_name, creds, soon()).expect("fits");
        let serve = async {
            let mut buf = Vec::new();
            let parked = drive(&mut a, &mut server, &mut buf).await;
            if parked.is_ok() {
                assert!(buf.is_empty(), "a client sends nothing after BIND");
                a.write_all(after_park).await.expect("write");
            }
            parked
        };
        let dial = async {
            let mut buf = Vec::new();
            let parked = drive(&mut b, &mut client, &mut buf).await;
            if parked.is_ok() {
                // What the DMZ sent after the first reply is the parked leg's, in `buf` or
                // still in the pipe.
                while buf.len() < after_park.len() {
                    buf.reserve(READ_CHUNK);
                    b.read_buf(&mut buf).await.expect("read");
                }
            }
            parked.map(|p| (p, buf))
        };
        tokio::join!(serve, dial)
    }

    #[test]
    fn both_machines_park_over_a_narrow_pipe() {
        let services = [Svc("echo", None), Svc("vault", Some(creds()))];
        let second = SocketAddr::from(([198, 51, 100, 23], 50123));
        let mut reply = Vec::new();
        socks5::encode_reply(socks5::rep::SUCCEEDED, second, &mut reply);
        for (index, name, c) in [(0, "echo", None), (1, "vault", Some(creds()))] {
            let (server, client) = block_on(converse(&services, name, c.as_ref(), &reply));
            let park = server.expect("server parks");
            assert_eq!(park.service, index, "{name}");
            assert_eq!(park.public, services[index].public());
            let (progress, leftover) = client.expect("client parks");
            assert_eq!(progress, Progress::Parked, "{name}");
            assert_eq!(
                leftover, reply,
                "{name}: the second reply is the parked leg's"
            );
        }
    }

    #[test]
    fn a_refusal_is_written_before_both_sides_close() {
        let services = [Svc("echo", None)];
        let (server, client) = block_on(converse(&services, "nope", None, b""));
        assert!(
            matches!(server, Err(SessionError::Session(ServerError::UnknownService(ref n))) if n == "nope"),
            "{server:?}"
        );
        assert!(
            matches!(
                client,
                Err(SessionError::Session(ClientError::BindRefused {
                    rep: 2,
                    ..
                }))
            ),
            "{client:?}"
        );
    }

    #[test]
    fn a_silent_peer_times_out_at_the_machines_deadline() {
        let services = [Svc("echo", None)];
        let started = Instant::now();
        let (mut a, _b) = tokio::io::duplex(64);
        let deadline = started + Duration::from_millis(50);
        let mut server = BindServer::new(&services, deadline);
        let result = block_on(drive(&mut a, &mut server, &mut Vec::new()));
        assert!(
            matches!(
                result,
                Err(SessionError::Session(ServerError::Timeout {
                    waiting: Message::Greeting
                }))
            ),
            "{result:?}"
        );
        assert!(Instant::now() >= deadline);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "woke at the deadline"
        );
    }

    #[test]
    fn eof_mid_message_names_the_message() {
        let services = [Svc("echo", None)];
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut server = BindServer::new(&services, soon());
        let result = block_on(async {
            b.write_all(&[5, 1]).await.expect("write");
            drop(b);
            drive(&mut a, &mut server, &mut Vec::new()).await
        });
        let e = result.expect_err("EOF");
        assert!(
            matches!(e, SessionError::Closed(Message::Greeting)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "peer closed before the SOCKS5 greeting was complete"
        );
    }
}
