//! TLS for `bulk --tls` and `rr --tls`: the development certificates (made by `sallyport certs`),
//! the client configuration the load generator uses, and a rustls echo server, the bare-rustls
//! baseline of the `tls-direct` path.
//!
//! - [`TlsSetup::generate`] runs `sallyport certs --out DIR` in a scratch directory and loads
//!   `ca.pem` (trusted by the load, as `localhost`) and `dmz.pem`/`dmz.key` (served by
//!   [`TlsEchoServer`]). The sallyport gateways read the same files (see
//!   [`crate::topology::GatewayOptions`]).
//! - [`TlsEchoServer`]: one thread per connection, each a non-blocking loop around one rustls
//!   session that echoes what it decrypts (TLS half-close: close_notify, then `SHUT_WR`). It adds
//!   each connection thread's CPU time (`RUSAGE_THREAD`) to a counter, so `bulk` can show what a
//!   bare TLS termination costs per GB. It is kit's echo server accept loop with this
//!   per-connection loop.
//!
//! The socket <-> rustls plumbing it shares with the TLS load generators is in
//! [`crate::transport::tls`].
//!
//! rustls with the aws-lc-rs provider and its defaults (TLS 1.3 and 1.2), as in the gateways.

use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::backend::EchoServer;
use crate::procs::Scratch;
use crate::transport::tls::{
    handshake, pump_in, pump_out, wait, Inbound, TlsTarget, TLS_BUFFER_LIMIT,
};

/// The name the development DMZ certificate is valid for (`sallyport certs` default).
pub const SERVER_NAME: &str = "localhost";
/// Bytes read from the socket per `read` by the echo server.
const WIRE_BUFFER: usize = 256 << 10;
/// Longest a server-side handshake may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Longest an idle connection thread sleeps in `poll` before looking at the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// aws-lc-rs, chosen explicitly (as in the gateways) so no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// The files `sallyport certs --out DIR` writes.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub dmz_cert: PathBuf,
    pub dmz_key: PathBuf,
    pub internal_cert: PathBuf,
    pub internal_key: PathBuf,
}

impl CertFiles {
    fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            dmz_cert: dir.join("dmz.pem"),
            dmz_key: dir.join("dmz.key"),
            internal_cert: dir.join("internal.pem"),
            internal_key: dir.join("internal.key"),
        }
    }
}

/// Certificates for one `--tls` run, and the configurations built from them. The directory is
/// removed when this is dropped (and by the signal handler).
pub struct TlsSetup {
    pub files: CertFiles,
    /// What the load generator uses: trusts `ca.pem`, verifies `localhost`.
    pub client: TlsTarget,
    /// What the `tls-direct` echo server serves: `dmz.pem`/`dmz.key`, no client certificate.
    pub server: Arc<ServerConfig>,
    _scratch: Scratch,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Runs `SALLYPORT certs --out DIR` in a fresh scratch directory and loads the result.
    pub fn generate(sallyport: &Path) -> Result<TlsSetup> {
        let scratch = Scratch::new().context("creating a scratch directory for certificates")?;
        let dir = scratch.path().join("certs");
        let out = Command::new(sallyport)
            .arg("certs")
            .arg("--out")
            .arg(&dir)
            .output()
            .with_context(|| format!("running {} certs", sallyport.display()))?;
        if !out.status.success() {
            bail!(
                "{} certs --out {} failed ({}): {}",
                sallyport.display(),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let files = CertFiles::in_dir(&dir);
        let client = client_target(&files.ca, SERVER_NAME)?;
        let server = server_config(&files.dmz_cert, &files.dmz_key)?;
        Ok(TlsSetup {
            files,
            client,
            server,
            _scratch: scratch,
        })
    }
}

/// A client configuration trusting the CA certificates in `ca` and verifying `server_name`.
pub fn client_target(ca: &Path, server_name: &str) -> Result<TlsTarget> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("adding {} as a trusted CA", ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("server name {server_name:?}"))?;
    Ok(TlsTarget {
        config: Arc::new(config),
        server_name,
    })
}

/// A server configuration presenting `cert` (chain, leaf first) with `key`; no client auth.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key")?;
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// The rustls echo server

/// A TLS echo server (rustls) on background threads until dropped: `sallyport-kit`'s
/// [`EchoServer`] accept loop with a rustls session per connection.
pub struct TlsEchoServer {
    server: EchoServer,
    /// CPU time of finished connection threads, nanoseconds.
    cpu_nanos: Arc<AtomicU64>,
}

impl fmt::Debug for TlsEchoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsEchoServer")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl TlsEchoServer {
    /// Binds `bind` (port 0 for an ephemeral port) and serves `config`.
    pub fn start(bind: SocketAddr, config: Arc<ServerConfig>) -> io::Result<TlsEchoServer> {
        let cpu_nanos = Arc::new(AtomicU64::new(0));
        let cpu = Arc::clone(&cpu_nanos);
        let server = EchoServer::start_with(bind, "tls-echo", move |sock, stop| {
            let mut counted = false;
            // Errors end the connection; the client reports what it saw.
            let _ = serve(sock, Arc::clone(&config), stop, &cpu, &mut counted);
            if !counted {
                add_cpu(&cpu);
            }
        })?;
        Ok(TlsEchoServer { server, cpu_nanos })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// CPU seconds (user + system) of the connection threads that have finished echoing. A
    /// connection's time is added before its close_notify is sent, so it is counted by the time
    /// the client sees the end of the stream.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_nanos.load(Ordering::SeqCst) as f64 / 1e9
    }
}

fn add_cpu(cpu_nanos: &AtomicU64) {
    let nanos = u64::try_from(sallyport_kit::sys::thread_cpu().as_nanos()).unwrap_or(u64::MAX);
    cpu_nanos.fetch_add(nanos, Ordering::SeqCst);
}

/// Echoes one connection: decrypt, queue, encrypt back; half-close when the client's stream ends.
fn serve(
    mut sock: TcpStream,
    config: Arc<ServerConfig>,
    stop: &AtomicBool,
    cpu_nanos: &AtomicU64,
    counted: &mut bool,
) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let server = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::Connection::Server(server);
    tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    handshake(&mut tls, &mut sock, HANDSHAKE_LIMIT)?;
    sock.set_nonblocking(true)?;
    let mut wire = vec![0u8; WIRE_BUFFER];
    let mut plain = vec![0u8; WIRE_BUFFER];
    let mut pending: Vec<u8> = Vec::with_capacity(2 * WIRE_BUFFER);
    let mut pending_pos = 0usize;
    let mut peer_done = false;
    let mut close_queued = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut progress = false;
        while pending_pos < pending.len() {
            let k = tls.writer().write(&pending[pending_pos..])?;
            if k == 0 {
                break;
            }
            pending_pos += k;
            progress = true;
        }
        if pending_pos == pending.len() {
            pending.clear();
            pending_pos = 0;
        }
        if peer_done && pending.is_empty() && !close_queued {
            add_cpu(cpu_nanos);
            *counted = true;
            tls.send_close_notify();
            close_queued = true;
        }
        let (wrote, drained) = pump_out(&mut tls, &sock)?;
        progress |= wrote;
        if close_queued && drained {
            let _ = sock.shutdown(Shutdown::Write);
            return Ok(());
        }
        let want_read = pending.is_empty() && !peer_done;
        if want_read {
            match pump_in(&mut tls, &sock, &mut wire, &mut plain, |chunk| {
                pending.extend_from_slice(chunk);
                Ok(())
            })? {
                Inbound::Idle => {}
                Inbound::Data => progress = true,
                Inbound::End => {
                    peer_done = true;
                    progress = true;
                }
            }
        }
        if !progress {
            wait(&sock, want_read, tls.wants_write(), IDLE_POLL)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A throwaway CA + localhost certificate, written where `client_target`/`server_config` read.
    fn certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        std::fs::create_dir_all(dir).expect("dir");
        let paths = (dir.join("ca.pem"), dir.join("s.pem"), dir.join("s.key"));
        std::fs::write(&paths.0, ca.pem()).expect("ca.pem");
        std::fs::write(&paths.1, cert.pem()).expect("s.pem");
        std::fs::write(&paths.2, key.serialize_pem()).expect("s.key");
        paths
    }

    #[test]
    fn tls_echo_round_trips_and_counts_cpu() {
        let scratch = Scratch::new().expect("scratch");
        let (ca, cert, key) = certs(scratch.path());
        let server = TlsEchoServer::start(
            loopback(),
            server_config(&cert, &key).expect("server config"),
        )
        .expect("start");
        let target = client_target(&ca, SERVER_NAME).expect("client");
        let spec = crate::load::BulkSpec {
            connections: 2,
            bytes_per_connection: 3_000_007,
            write_size: 10_001,
            time_limit: Duration::from_secs(60),
        };
        let r = crate::load::bulk_tls(server.addr(), &spec, &target).expect("bulk_tls");
        assert!(r.complete);
        assert_eq!(r.bytes, 2 * 3_000_007);
        assert_eq!(server.connections(), 2);
        assert!(server.cpu_seconds() > 0.0);
        let rr = crate::load::RrSpec {
            connections: 2,
            requests_per_connection: 100,
            time_limit: Duration::from_secs(60),
            ..crate::load::RrSpec::default()
        };
        let r = crate::load::rr_tls(server.addr(), &rr, &target).expect("rr_tls");
        assert_eq!(r.requests, 200);
    }

    #[test]
    fn request_riding_with_the_clients_finished_is_echoed() {
        // The client's Finished and its first request leave in one write, so the server's
        // handshake read decrypts the request too: it must come out before the next socket read.
        let scratch = Scratch::new().expect("scratch");
        let (ca, cert, key) = certs(scratch.path());
        let server = TlsEchoServer::start(
            loopback(),
            server_config(&cert, &key).expect("server config"),
        )
        .expect("start");
        let target = client_target(&ca, SERVER_NAME).expect("client");
        let mut sock = TcpStream::connect(server.addr()).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut client =
            rustls::ClientConnection::new(target.config, target.server_name).expect("client");
        while client.is_handshaking() {
            while client.wants_write() {
                client.write_tls(&mut sock).expect("write hello");
            }
            if client.is_handshaking() && client.read_tls(&mut sock).expect("read") > 0 {
                client.process_new_packets().expect("process");
            }
        }
        client.writer().write_all(b"ping").expect("request");
        let mut queued = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut queued).expect("queue");
        }
        sock.write_all(&queued).expect("finished + request");
        let mut stream = rustls::StreamOwned::new(client, sock);
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).expect("reply");
        assert_eq!(&reply, b"ping");
    }

    #[test]
    fn wrong_name_fails_the_handshake() {
        let scratch = Scratch::new().expect("scratch");
        let (ca, cert, key) = certs(scratch.path());
        let server = TlsEchoServer::start(
            loopback(),
            server_config(&cert, &key).expect("server config"),
        )
        .expect("start");
        let target = client_target(&ca, "not-localhost").expect("client");
        let rr = crate::load::RrSpec {
            requests_per_connection: 1,
            time_limit: Duration::from_secs(20),
            ..crate::load::RrSpec::default()
        };
        let err = crate::load::rr_tls(server.addr(), &rr, &target).unwrap_err();
        assert!(err.to_string().contains("connection 0"), "{err}");
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    }
}
