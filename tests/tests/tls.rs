//! TLS end to end with the real binary: a DMZ gateway with mutual TLS on its reverse endpoint
//! and a `tls://` public listener, an internal gateway dialling it over TLS, an echo back-end —
//! each gateway a separate `sallyport run` process, every address on loopback port 0.
//! Certificates come from `sallyport certs` (run as a process too); the expired client
//! certificate is signed here by the same CA key with the test PKI (`sallyport_kit::pki`).
//!
//! What a client and an operator can observe is checked: bytes and checksums, `/stats`
//! counters, and the reason each gateway writes to its stderr. Waits poll with a deadline; the
//! only timing assertion is the public handshake timeout's upper bound.
#![deny(unsafe_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sallyport_kit::pki::{self, Ca, Role};
use sallyport_tests::{
    child, connect, counter, forward_config, sys, temp_dir, DevCerts, EchoServer, Gateway, Tunnel,
    IO_TIMEOUT, STATE_TIMEOUT,
};
use sha2::{Digest, Sha256};

const BULK_BYTES: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

/// How long a refused reverse leg is watched: nothing may be parked meanwhile.
const HOLD: Duration = Duration::from_secs(1);

fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A directory written by `sallyport certs --out DIR` ([`DevCerts`]: ca.pem/key, dmz.pem/key,
/// internal.pem/key), with what these tests build from it.
struct Pki {
    certs: DevCerts,
}

impl Pki {
    /// Runs the real `sallyport certs` into a fresh directory.
    fn generate() -> Pki {
        Pki {
            certs: DevCerts::generate(),
        }
    }

    /// Absolute path of `name` in the directory, for a config file.
    fn path(&self, name: &str) -> String {
        self.certs.path(name)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(self.certs.dir().join("ca.pem")).expect("read ca.pem")
        {
            roots.add(cert.expect("parse ca.pem")).expect("add CA root");
        }
        roots
    }

    /// A rustls client that trusts this CA (no client certificate).
    fn client_config(&self) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// `[reverse] tls` of the DMZ: its certificate, client certificates required from this CA.
    fn dmz_reverse_tls(&self) -> String {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}",
            self.path("dmz.pem"),
            self.path("dmz.key"),
            self.path("ca.pem")
        )
    }

    /// Writes a client certificate signed by this CA's key that expired at midnight UTC today
    /// (valid the day before, when the CA was valid too); returns (cert, key) paths.
    fn expired_client(&self) -> (String, String) {
        let read = |name: &str| {
            std::fs::read_to_string(self.certs.dir().join(name))
                .unwrap_or_else(|e| panic!("read {name}: {e}"))
        };
        let ca = Ca::from_pem(&read("ca.pem"), &read("ca.key"));
        let expired = ca.leaf_valid(
            Role::Client,
            "expired internal gateway",
            &["sallyport-internal"],
            -1,
            0,
        );
        let today = pki::today();
        // The certificate chains to the CA and is only expired: a verifier with this CA as the
        // only root accepts it an hour before it expired, and calls it expired now.
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider())
                .build()
                .expect("client verifier");
        let leaf = &expired.cert;
        let before = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(today).expect("after 1970") * 86_400 - 3_600,
        ));
        if let Err(e) = verifier.verify_client_cert(leaf, &[], before) {
            panic!("the test's expired certificate does not chain to the CA: {e}");
        }
        match verifier.verify_client_cert(leaf, &[], UnixTime::now()) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
            )) => {}
            other => panic!("the test's certificate is not expired: {other:?}"),
        }

        expired
            .write(self.certs.dir(), "expired")
            .expect("write expired.pem and expired.key");
        (self.path("expired.pem"), self.path("expired.key"))
    }
}

// ---------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------

/// A DMZ with mutual TLS on its reverse endpoint and a `tls://` public listener `echo`;
/// `extra` is appended to the service (e.g. `handshake_timeout`).
fn dmz_tls_config(pki: &Pki, extra: &str) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [reverse]\nlisten = \"127.0.0.1:0\"\n{}\n\n\
         [[service]]\nname = \"echo\"\naccept = \"tls://127.0.0.1:0\"\nconnect = \"reverse://echo\"\n\
         timeout = \"5s\"\n{}\n{extra}\n",
        pki.dmz_reverse_tls(),
        pki.certs.listener_tls()
    )
}

/// An internal gateway keeping `prepared` connections at `reverse`, its reverse leg's TLS
/// given as the line `tls`.
fn internal_tls_config(
    reverse: SocketAddr,
    backend: SocketAddr,
    prepared: u32,
    tls: &str,
) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"reverse://{reverse}/echo\"\nconnect = \"tcp://{backend}\"\n\
         prepared = {prepared}\nretry_max = \"200ms\"\n{tls}\n"
    )
}

/// The good reverse-leg TLS of an internal gateway: trusts the CA, presents internal.pem.
fn good_internal_tls(pki: &Pki) -> String {
    format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\", server_name = \"localhost\" }}",
        pki.path("ca.pem"),
        pki.path("internal.pem"),
        pki.path("internal.key")
    )
}

/// Back-end, DMZ (mutual TLS reverse endpoint, `tls://` listener), internal gateway with good
/// certificates; returns once both sides count `prepared` parked connections.
fn tls_tunnel(pki: &Pki, prepared: u32, dmz_extra: &str) -> Tunnel {
    Tunnel::start_configured(
        &dmz_tls_config(pki, dmz_extra),
        |reverse, echo| internal_tls_config(reverse, echo, prepared, &good_internal_tls(pki)),
        prepared,
    )
}

/// `text` without ANSI escape sequences (the gateway colours its log even into a file).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until `gateway`'s stderr (colours removed) has a line containing `text`; returns it.
/// Panics with the stderr otherwise.
fn wait_log(who: &str, gateway: &Gateway, text: &str) -> String {
    let mut log = String::new();
    let mut found = None;
    child::poll_until(STATE_TIMEOUT, || {
        log = strip_ansi(&gateway.stderr());
        found = log.lines().find(|l| l.contains(text)).map(str::to_string);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!("{who} stderr has no line containing {text:?} after {STATE_TIMEOUT:?}:\n{log}")
    })
}

// ---------------------------------------------------------------------------------------------
// Public TLS clients
// ---------------------------------------------------------------------------------------------

fn localhost_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("server name")
}

/// A TLS client on a fresh connection to `addr`, handshake not started.
fn tls_client(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> StreamOwned<ClientConnection, TcpStream> {
    let conn = ClientConnection::new(Arc::clone(config), localhost_name()).expect("client conn");
    StreamOwned::new(conn, connect(addr))
}

/// One TLS echo round trip on a fresh connection: write `payload`, close_notify and half-close,
/// read until close_notify; returns what came back.
fn tls_echo(config: &Arc<ClientConfig>, addr: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut tls = tls_client(config, addr);
    tls.write_all(payload)?;
    tls.conn.send_close_notify();
    tls.flush()?;
    tls.sock.shutdown(Shutdown::Write)?;
    let mut back = Vec::with_capacity(payload.len());
    tls.read_to_end(&mut back)?;
    Ok(back)
}

fn assert_tls_echo(t: &Tunnel, config: &Arc<ClientConfig>, payload: &[u8]) {
    match tls_echo(config, t.public, payload) {
        Ok(back) => assert!(
            back == payload,
            "TLS echo mismatch: sent {} bytes, got {} back\n{}",
            payload.len(),
            back.len(),
            t.logs()
        ),
        Err(e) => panic!(
            "TLS echo of {} bytes failed: {e}\n{}",
            payload.len(),
            t.logs()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Good certificates
// ---------------------------------------------------------------------------------------------

#[test]
fn mutual_tls_pool_fills_and_echoes_through_tls_listener() {
    let pki = Pki::generate();
    let t = tls_tunnel(&pki, 4, "");
    let config = pki.client_config();
    for i in 0..3 {
        assert_tls_echo(&t, &config, format!("mutual TLS round {i}").as_bytes());
    }
    t.dmz.wait_prepared("echo", 4, STATE_TIMEOUT);
    t.internal.wait_prepared("echo", 4, STATE_TIMEOUT);
    let dmz = t.dmz.stats();
    assert_eq!(counter(&dmz, &["handshake_failures", "tls"]), 0, "{dmz:#}");
    assert_eq!(
        counter(&dmz, &["services", "echo", "tls_failures"]),
        0,
        "{dmz:#}"
    );
    assert!(counter(&dmz, &["tunnels", "total"]) >= 3, "{dmz:#}");
    let internal = t.internal.stats();
    assert_eq!(
        counter(&internal, &["services", "echo", "dials", "tls_failed"]),
        0,
        "{internal:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Bad reverse legs
// ---------------------------------------------------------------------------------------------

/// An internal gateway whose reverse leg uses `tls` must be refused: the DMZ counts
/// `handshake_failures.tls` and logs `dmz_log`, the internal gateway counts `dials.tls_failed`
/// (and logs `internal_log`), and nothing is parked on either side for [`HOLD`] and beyond.
///
/// When the DMZ rejects the client certificate, the internal gateway's reason is not pinned:
/// under TLS 1.3 its handshake completes first and the DMZ's alert arrives on the next read
/// (a write racing the DMZ's close may see a reset instead), and it logs only the first
/// failure of a streak. Its reasons are asserted where it decides itself (the DMZ's
/// certificate).
fn refused(pki: &Pki, tls: &str, dmz_log: &str, internal_log: &str) {
    let echo = EchoServer::start(localhost0()).expect("start echo");
    let dmz = Gateway::start(&dmz_tls_config(pki, ""));
    let internal = Gateway::start(&internal_tls_config(dmz.reverse(), echo.addr(), 4, tls));
    let first = dmz.wait_stats("handshake_failures.tls >= 1", STATE_TIMEOUT, |s| {
        s["handshake_failures"]["tls"].as_u64() >= Some(1)
    });
    let first = counter(&first, &["handshake_failures", "tls"]);
    internal.wait_stats("services.echo.dials.tls_failed >= 1", STATE_TIMEOUT, |s| {
        s["services"]["echo"]["dials"]["tls_failed"].as_u64() >= Some(1)
    });
    // Nothing parked, on either side, for a while (the internal gateway keeps retrying).
    let end = Instant::now() + HOLD;
    while Instant::now() < end {
        let d = dmz.stats();
        let parked = counter(&d, &["services", "echo", "prepared"]);
        let accepted = counter(&d, &["prepared_accepted"]);
        let tunnels = counter(&d, &["tunnels", "total"]);
        assert!(
            parked == 0 && accepted == 0 && tunnels == 0,
            "DMZ parked a refused leg ({tls}): prepared {parked}, prepared_accepted {accepted}, \
             tunnels {tunnels}\n{d:#}\nDMZ stderr:\n{}",
            dmz.stderr()
        );
        let i = internal.stats();
        assert_eq!(
            i["services"]["echo"]["prepared"].as_i64(),
            Some(0),
            "internal gateway counts a parked leg ({tls}): {i:#}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // It keeps being refused: the counter grows past its first value.
    dmz.wait_stats("handshake_failures.tls to grow", STATE_TIMEOUT, |s| {
        s["handshake_failures"]["tls"].as_u64() > Some(first)
    });
    let line = wait_log(
        "DMZ",
        &dmz,
        &format!("reverse: TLS handshake failed: {dmz_log}"),
    );
    assert!(
        line.contains("reason=\"tls\""),
        "DMZ line lacks the reason label: {line}"
    );
    let internal_line = wait_log("internal", &internal, internal_log);
    eprintln!("DMZ: {line}\ninternal: {internal_line}");
}

#[test]
fn reverse_leg_without_client_certificate_is_refused() {
    let pki = Pki::generate();
    let tls = format!(
        "tls = {{ ca = \"{}\", server_name = \"localhost\" }}",
        pki.path("ca.pem")
    );
    refused(
        &pki,
        &tls,
        "client presented no certificate",
        "reverse dial failed",
    );
}

#[test]
fn reverse_leg_with_client_certificate_of_another_ca_is_refused() {
    let pki = Pki::generate();
    let other = Pki::generate();
    // Trusts the right CA for the DMZ, but presents a certificate of a second `certs` run.
    let tls = format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\", server_name = \"localhost\" }}",
        pki.path("ca.pem"),
        other.path("internal.pem"),
        other.path("internal.key")
    );
    refused(
        &pki,
        &tls,
        "certificate signed by an unknown CA",
        "reverse dial failed",
    );
}

#[test]
fn reverse_leg_to_dmz_of_another_ca_is_refused() {
    let pki = Pki::generate();
    let other = Pki::generate();
    // Every file from a second `certs` run: the internal gateway does not trust the DMZ.
    let tls = format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\", server_name = \"localhost\" }}",
        other.path("ca.pem"),
        other.path("internal.pem"),
        other.path("internal.key")
    );
    refused(
        &pki,
        &tls,
        "the peer does not trust our certificate's CA",
        "TLS handshake with the DMZ failed: certificate signed by an unknown CA",
    );
}

#[test]
fn reverse_leg_with_expired_client_certificate_is_refused() {
    let pki = Pki::generate();
    let (cert, key) = pki.expired_client();
    let tls = format!(
        "tls = {{ ca = \"{}\", cert = \"{cert}\", key = \"{key}\", server_name = \"localhost\" }}",
        pki.path("ca.pem")
    );
    let dmz = Gateway::start(&dmz_tls_config(&pki, ""));
    // The internal gateway will not start with it: the reason names the key, file and date.
    let dir = temp_dir();
    let path = dir.join("internal.toml");
    std::fs::write(
        &path,
        internal_tls_config(dmz.reverse(), dmz.reverse(), 1, &tls),
    )
    .expect("write internal.toml");
    let out = Command::new(sallyport_tests::sallyport_bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run sallyport");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("service[echo].tls.cert") && stderr.contains("expired on"),
        "{stderr}"
    );
    // The DMZ refuses it from any other client that presents it.
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .expect("read expired.pem")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("read expired.key");
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(pki.roots())
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    let mut leg = tls_client(&Arc::new(config), dmz.reverse());
    // TLS 1.3 judges the client's certificate after the client's handshake ends: the refusal
    // arrives on the first read.
    let _ = leg.write_all(&[5, 1, 0]);
    let read = leg.read(&mut [0u8; 16]);
    assert!(
        !matches!(read, Ok(n) if n > 0),
        "the DMZ answered: {read:?}"
    );
    let line = wait_log(
        "DMZ",
        &dmz,
        "reverse: TLS handshake failed: certificate expired",
    );
    assert!(line.contains("reason=\"tls\""), "{line}");
    assert_eq!(counter(&dmz.stats(), &["prepared_accepted"]), 0);
}

#[test]
fn reverse_leg_with_wrong_server_name_is_refused() {
    let pki = Pki::generate();
    let tls = format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\", server_name = \"not-the-dmz\" }}",
        pki.path("ca.pem"),
        pki.path("internal.pem"),
        pki.path("internal.key")
    );
    refused(
        &pki,
        &tls,
        "the peer rejected our certificate",
        "TLS handshake with the DMZ failed: server name mismatch: expected \"not-the-dmz\"",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Bulk
// ---------------------------------------------------------------------------------------------

/// Writes 64 MiB of seeded random bytes through the shared session, then close_notify and a
/// half-close; returns their sha256. The lock is held to encrypt, never across socket I/O.
fn bulk_write(conn: &Mutex<ClientConnection>, mut sock: TcpStream) -> io::Result<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x7150_5a11);
    let mut hash = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut records = Vec::with_capacity(CHUNK + 4096);
    let lock = || conn.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..BULK_BYTES / CHUNK {
        rng.fill_bytes(&mut chunk);
        hash.update(&chunk);
        let mut off = 0;
        while off < chunk.len() {
            records.clear();
            {
                let mut c = lock();
                off += c.writer().write(&chunk[off..])?;
                while c.wants_write() {
                    c.write_tls(&mut records)?;
                }
            }
            if records.is_empty() {
                return Err(io::Error::other("rustls accepted no plaintext"));
            }
            sock.write_all(&records)?;
        }
    }
    records.clear();
    {
        let mut c = lock();
        c.send_close_notify();
        while c.wants_write() {
            c.write_tls(&mut records)?;
        }
    }
    sock.write_all(&records)?;
    sock.shutdown(Shutdown::Write)?;
    Ok(hash.finalize().to_vec())
}

/// Reads and decrypts until the peer's close_notify; returns (bytes, sha256). A TCP close
/// without close_notify is an error (a truncation the client could not tell from the end).
fn bulk_read(
    conn: &Mutex<ClientConnection>,
    mut sock: TcpStream,
) -> (usize, Vec<u8>, io::Result<()>) {
    let mut hash = Sha256::new();
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    let mut plain = vec![0u8; 256 << 10];
    let result = (|| -> io::Result<()> {
        loop {
            let n = sock.read(&mut buf)?;
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut input = &buf[..n];
            loop {
                if !input.is_empty() || n == 0 {
                    c.read_tls(&mut input)?;
                }
                c.process_new_packets().map_err(io::Error::other)?;
                loop {
                    match c.reader().read(&mut plain) {
                        Ok(0) => return Ok(()), // close_notify
                        Ok(k) => {
                            hash.update(&plain[..k]);
                            received += k;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
            if n == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "TCP closed without close_notify",
                ));
            }
        }
    })();
    (received, hash.finalize().to_vec(), result)
}

#[test]
fn bulk_64mib_each_way_over_tls_reverse_leg_and_tls_listener() {
    let pki = Pki::generate();
    let t = tls_tunnel(&pki, 4, "");
    let mut tls = tls_client(&pki.client_config(), t.public);
    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
        panic!("public TLS handshake: {e}\n{}", t.logs());
    }
    let StreamOwned { conn, sock } = tls;
    let conn = Arc::new(Mutex::new(conn));
    let writer_sock = sock.try_clone().expect("clone socket");
    let writer_conn = Arc::clone(&conn);
    let send = thread::spawn(move || bulk_write(&writer_conn, writer_sock));
    let (received, got, read_result) = bulk_read(&conn, sock);
    let sent = match send.join().expect("writer thread panicked") {
        Ok(h) => h,
        Err(e) => panic!(
            "writing {BULK_BYTES} bytes over TLS failed: {e}\n{}",
            t.logs()
        ),
    };
    if let Err(e) = read_result {
        panic!(
            "read failed after {received} of {BULK_BYTES} bytes: {e}\n{}",
            t.logs()
        );
    }
    assert_eq!(received, BULK_BYTES, "wrong byte count back\n{}", t.logs());
    assert!(
        got == sent,
        "sha256 of the echoed stream differs from what was sent\n{}",
        t.logs()
    );
    let want = BULK_BYTES as u64;
    t.dmz
        .wait_stats("bytes both ways >= 64 MiB", STATE_TIMEOUT, |s| {
            s["bytes"]["upstream"].as_u64() >= Some(want)
                && s["bytes"]["downstream"].as_u64() >= Some(want)
        });
}

// ---------------------------------------------------------------------------------------------
// 4. Third-party clients
// ---------------------------------------------------------------------------------------------

/// Whether `tool` can be run at all (`tool arg` exits, whatever its status).
fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Reads `n` bytes from `from` in a thread; gives up after `deadline`.
fn read_n_within(
    mut from: impl Read + Send + 'static,
    n: usize,
    deadline: Duration,
) -> Result<Vec<u8>, String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let result = loop {
            if got.len() >= n {
                break Ok(());
            }
            match from.read(&mut buf) {
                Ok(0) => break Err("EOF".to_string()),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) => break Err(e.to_string()),
            }
        };
        let _ = tx.send((got, result));
    });
    match rx.recv_timeout(deadline) {
        Ok((got, Ok(()))) => Ok(got),
        Ok((got, Err(e))) => Err(format!(
            "{e} after {} bytes: {:?}",
            got.len(),
            String::from_utf8_lossy(&got)
        )),
        Err(_) => Err(format!("nothing complete within {deadline:?}")),
    }
}

#[test]
fn openssl_s_client_handshake_and_echo_through_tls_listener() {
    if !have("openssl", "version") {
        eprintln!("SKIPPED: openssl is not installed; the third-party s_client check did not run");
        return;
    }
    let pki = Pki::generate();
    let t = tls_tunnel(&pki, 2, "");
    let payload = b"hello from openssl s_client through sallyport\n";
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(t.public.to_string())
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(pki.path("ca.pem"))
        .args(["-verify_return_error", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let stderr_text = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    stdin.write_all(payload).expect("write to s_client's stdin");
    stdin.flush().expect("flush s_client's stdin");
    let result = read_n_within(stdout, payload.len(), IO_TIMEOUT);
    // -quiet implies -ign_eof: s_client stays until killed; our own child, by its handle.
    let _ = child.kill();
    let status = child.wait().expect("reap s_client");
    drop(stdin);
    let stderr_text = stderr_text.join().unwrap_or_default();
    match result {
        Ok(back) => assert!(
            back == payload,
            "s_client got {:?} back, sent {:?}\ns_client stderr:\n{stderr_text}",
            String::from_utf8_lossy(&back),
            String::from_utf8_lossy(payload)
        ),
        Err(e) => panic!(
            "s_client echo failed: {e} (s_client {status})\ns_client stderr:\n{stderr_text}\n{}",
            t.logs()
        ),
    }
    let s = t.dmz.stats();
    assert_eq!(
        counter(&s, &["services", "echo", "tls_failures"]),
        0,
        "{s:#}"
    );
}

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
payload = b"hello from python ssl through sallyport"
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        print(s.version())
        print(got.decode())
        sys.exit(0 if got == payload else 1)
"#;

#[test]
fn python_ssl_handshake_and_echo_through_tls_listener() {
    if !have("python3", "--version") {
        eprintln!(
            "SKIPPED: python3 is not installed; the third-party ssl-module check did not run"
        );
        return;
    }
    let pki = Pki::generate();
    let t = tls_tunnel(&pki, 2, "");
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(t.public.ip().to_string())
        .arg(t.public.port().to_string())
        .arg(pki.path("ca.pem"));
    let output = child::output_within(&mut cmd, IO_TIMEOUT)
        .expect("spawn python3")
        .unwrap_or_else(|_| {
            panic!(
                "python3 client still running after {IO_TIMEOUT:?}\n{}",
                t.logs()
            )
        });
    let status = output.status;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success() && stdout.contains("hello from python ssl through sallyport"),
        "python3 ssl client failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        t.logs()
    );
    assert!(
        stdout.starts_with("TLSv1."),
        "no TLS version printed: {stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Application data in the same segment as the client Finished
// ---------------------------------------------------------------------------------------------

/// Drives a TLS 1.3 client handshake by hand with `early` already queued as plaintext, and
/// sends the client Finished and the first application records (and, with `close`, the
/// close_notify and FIN) in one write: the server reads them together.
fn coalesced_client(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    early: &[u8],
    close: bool,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let mut conn =
        ClientConnection::new(Arc::clone(config), localhost_name()).map_err(io::Error::other)?;
    // Before the handshake rustls holds plaintext back and encrypts it after the Finished.
    conn.writer().write_all(early)?;
    let mut sock = connect(addr);
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    sock.write_all(&out)?; // ClientHello
    let mut buf = vec![0u8; 64 << 10];
    while conn.is_handshaking() {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed during the handshake",
            ));
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            conn.read_tls(&mut input)?;
            conn.process_new_packets().map_err(io::Error::other)?;
        }
    }
    if close {
        conn.send_close_notify();
    }
    out.clear();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    if out.len() <= early.len() {
        return Err(io::Error::other(format!(
            "expected Finished + application data, rustls had {} bytes to send",
            out.len()
        )));
    }
    sock.write_all(&out)?; // Finished + application data (+ close_notify) in one write
    if close {
        sock.shutdown(Shutdown::Write)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

#[test]
fn application_data_coalesced_with_client_finished_is_delivered() {
    let pki = Pki::generate();
    let t = tls_tunnel(&pki, 4, "");
    let config = pki.client_config();
    let mut payload = vec![0u8; 3000];
    StdRng::seed_from_u64(5).fill_bytes(&mut payload);

    // Finished + data in one segment; the echo comes back on the open session.
    let mut tls = coalesced_client(&config, t.public, &payload, false)
        .unwrap_or_else(|e| panic!("coalesced handshake: {e}\n{}", t.logs()));
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3),
        "expected TLS 1.3"
    );
    let mut back = vec![0u8; payload.len()];
    if let Err(e) = tls.read_exact(&mut back) {
        panic!(
            "echo of the bytes sent with the client Finished: {e}\n{}",
            t.logs()
        );
    }
    assert!(back == payload, "echo of the coalesced bytes differs");
    // The session goes on normally afterwards.
    tls.write_all(b"and more").expect("second write");
    let mut more = [0u8; 8];
    tls.read_exact(&mut more)
        .unwrap_or_else(|e| panic!("second echo: {e}\n{}", t.logs()));
    assert_eq!(&more, b"and more");
    drop(tls);

    // Finished + data + close_notify + FIN in one segment: everything echoed, then the end.
    let mut tls = coalesced_client(&config, t.public, &payload, true)
        .unwrap_or_else(|e| panic!("coalesced handshake with close: {e}\n{}", t.logs()));
    let mut back = Vec::new();
    if let Err(e) = tls.read_to_end(&mut back) {
        panic!(
            "reading the echo after Finished + data + close_notify + FIN: {e} ({} bytes)\n{}",
            back.len(),
            t.logs()
        );
    }
    assert_eq!(back.len(), payload.len(), "byte count\n{}", t.logs());
    assert!(back == payload, "echo differs");
    let s = t.dmz.stats();
    assert_eq!(
        counter(&s, &["services", "echo", "tls_failures"]),
        0,
        "{s:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A stalled public handshake
// ---------------------------------------------------------------------------------------------

#[test]
fn stalled_public_tls_handshake_times_out_without_affecting_others() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    // Well below the 5s default, so a listener that ignored its handshake_timeout would fail.
    const MARGIN: Duration = Duration::from_millis(2500);
    let pki = Pki::generate();
    let t = tls_tunnel(&pki, 4, "handshake_timeout = \"500ms\"");
    let config = pki.client_config();
    // Several, so each worker (SO_REUSEPORT spreads them) most likely holds one: two say
    // nothing, two send the first byte of a TLS record and stop.
    let stalled: Vec<(TcpStream, Instant)> = (0..4)
        .map(|i| {
            let mut s = connect(t.public);
            if i % 2 == 1 {
                s.write_all(&[0x16]).expect("one byte of a ClientHello");
            }
            (s, Instant::now())
        })
        .collect();
    // Meanwhile good clients complete echoes until every stalled one has been closed.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let public = t.public;
    let good = thread::spawn(move || -> Result<usize, String> {
        let mut rounds = 0usize;
        loop {
            let payload = format!("good client {rounds}");
            match tls_echo(&config, public, payload.as_bytes()) {
                Ok(back) if back == payload.as_bytes() => rounds += 1,
                Ok(back) => {
                    return Err(format!(
                        "round {rounds}: sent {payload:?}, got {:?}",
                        String::from_utf8_lossy(&back)
                    ))
                }
                Err(e) => return Err(format!("round {rounds}: {e}")),
            }
            // Done when told so, or when the test thread is gone (it panicked); else the next
            // round 20 ms on.
            if !matches!(
                done_rx.recv_timeout(Duration::from_millis(20)),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return Ok(rounds);
            }
        }
    });
    for (i, (mut s, opened)) in stalled.into_iter().enumerate() {
        s.set_read_timeout(Some(TIMEOUT + MARGIN))
            .expect("set_read_timeout");
        let mut buf = [0u8; 256];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break "EOF",
                Ok(_) => continue, // an alert, if any: read on to the close
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
                Err(e) => panic!(
                    "stalled client {i}: expected a close, got {e} after {:?}\n{}",
                    opened.elapsed(),
                    t.logs()
                ),
            }
        };
        let elapsed = opened.elapsed();
        assert!(
            elapsed <= TIMEOUT + MARGIN,
            "stalled client {i} closed ({end}) only after {elapsed:?} (handshake_timeout {TIMEOUT:?})"
        );
    }
    let _ = done_tx.send(());
    let rounds = match good.join().expect("good client thread panicked") {
        Ok(n) => n,
        Err(e) => panic!(
            "a good TLS client failed during the stall: {e}\n{}",
            t.logs()
        ),
    };
    assert!(rounds >= 1);
    let s = t
        .dmz
        .wait_stats("services.echo.tls_failures >= 4", STATE_TIMEOUT, |s| {
            s["services"]["echo"]["tls_failures"].as_u64() >= Some(4)
        });
    assert_eq!(
        counter(&s, &["services", "echo", "tls_failures"]),
        4,
        "only the stalled clients fail ({rounds} good rounds): {s:#}"
    );
    wait_log(
        "DMZ",
        &t.dmz,
        "handshake with a public client failed: handshake timed out",
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate reload
// ---------------------------------------------------------------------------------------------

/// SIGHUP re-reads the certificate and key files: new handshakes present the new certificate,
/// and a reload that cannot read them changes nothing and says which key failed.
#[test]
fn sighup_reloads_certificates_for_new_handshakes() {
    let first = Pki::generate();
    let second = Pki::generate();
    let dir = temp_dir();
    let (cert, key) = (dir.join("listener.pem"), dir.join("listener.key"));
    let install = |pki: &Pki| {
        std::fs::copy(pki.path("dmz.pem"), &cert).expect("copy cert");
        std::fs::copy(pki.path("dmz.key"), &key).expect("copy key");
    };
    install(&first);
    let echo = EchoServer::start(localhost0()).expect("echo");
    let gateway = Gateway::start(&forward_config(
        "secure",
        "tls://127.0.0.1:0",
        &format!("tcp://{}", echo.addr()),
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    ));
    let addr = gateway.service("secure");
    let payload = b"certificates change, tunnels stay";
    let echoes = |pki: &Pki| tls_echo(&pki.client_config(), addr, payload).ok();
    assert_eq!(echoes(&first).as_deref(), Some(&payload[..]));
    assert!(
        echoes(&second).is_none(),
        "the second CA is not trusted yet"
    );

    // A connection made before the reload keeps working after it.
    let mut before = tls_client(&first.client_config(), addr);
    before.write_all(b"old").expect("write before reload");
    let mut got = [0u8; 3];
    before.read_exact(&mut got).expect("echo before reload");

    install(&second);
    gateway.signal(sys::SIGHUP);
    wait_log("gateway", &gateway, "certificates and keys reloaded");
    assert_eq!(echoes(&second).as_deref(), Some(&payload[..]));
    assert!(echoes(&first).is_none(), "the old certificate is gone");
    before.write_all(b"new").expect("write after reload");
    before.read_exact(&mut got).expect("echo after reload");
    assert_eq!(&got, b"new");

    // A key that cannot be read: the running certificates stay, the log names the key.
    std::fs::write(&key, "not a key").expect("garble key");
    gateway.signal(sys::SIGHUP);
    let line = wait_log("gateway", &gateway, "certificate reload failed");
    assert!(line.contains("service[secure].tls"), "{line}");
    assert_eq!(echoes(&second).as_deref(), Some(&payload[..]));
    gateway.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
