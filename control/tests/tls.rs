//! TLS end to end, in one process on loopback: a DMZ gateway with mutual TLS on its reverse
//! endpoint and a `tls://` public listener, internal gateways with good and bad certificates,
//! an echo back-end, and a rustls client as the public client.
//!
//! Certificates come from the test PKI (`sallyport_kit::pki`), written to a temporary
//! directory per test. Waits poll a condition with a deadline; nothing sleeps to wait.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use common::{internal_config, start_in, DEADLINE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sallyport::gateway::Gateway;
use sallyport_kit::backend::EchoServer;
use sallyport_kit::child;
use sallyport_kit::pki::{Ca, Role};
use serde_json::Value;

/// Everything the control threads log, for checking the reasons they give.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide log capture (gateway threads log through the global subscriber).
fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    })
}

fn logged(text: &str) -> bool {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).contains(text)
}

/// [`common::wait_for`] that shows the newest log lines when it times out.
fn wait_for(what: &str, done: impl FnMut() -> bool) {
    if !child::poll_until(DEADLINE, done) {
        let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        panic!(
            "timed out waiting for {what}; last log lines (newest first):\n{}",
            tail.join("\n")
        );
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A temporary directory with a CA, the DMZ's certificate and several internal identities.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("sallyport-tls-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new();
        let other = Ca::new();
        ca.write(&dir, "ca").unwrap();
        other.write(&dir, "other-ca").unwrap();
        ca.leaf(Role::Server, "dmz", &["localhost", "127.0.0.1"])
            .write(&dir, "dmz")
            .unwrap();
        let client = |ca: &Ca, name: &str, from: i64, until: i64| {
            ca.leaf_valid(Role::Client, name, &["internal"], from, until)
                .write(&dir, name)
                .unwrap();
        };
        client(&ca, "good", -1, 30);
        client(&ca, "expired", -10, -1);
        client(&other, "stranger", -1, 30);
        Pki { dir }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dmz(pki: &Pki) -> Gateway {
    dmz_with(pki, "")
}

/// [`dmz`] with `extra` lines in its service.
fn dmz_with(pki: &Pki, extra: &str) -> Gateway {
    logs();
    let text = r#"
        [gateway]
        workers = 1
        cores = []
        [reverse]
        listen = "127.0.0.1:0"
        handshake_timeout = "2s"
        tls = { cert = "dmz.pem", key = "dmz.key", client_ca = "ca.pem" }
        [[service]]
        name = "echo"
        accept = "tls://127.0.0.1:0"
        tls = { cert = "dmz.pem", key = "dmz.key", alpn = ["echo/1"] }
        connect = "reverse://echo"
        "#;
    start_in(&pki.dir, "dmz.toml", &format!("{text}{extra}\n"))
}

/// An internal gateway for `dmz` whose reverse leg uses `tls` (a TOML inline table or "").
fn internal(pki: &Pki, dmz: &Gateway, echo: SocketAddr, tls: &str) -> Gateway {
    let extra = format!("retry_max = \"200ms\"\n        {tls}");
    let text = internal_config(dmz.reverse_addr.unwrap(), echo, &extra);
    start_in(&pki.dir, "internal.toml", &text)
}

fn stats(g: &Gateway) -> Value {
    g.stats().json()
}

fn tls_failures(dmz: &Gateway) -> u64 {
    stats(dmz)["handshake_failures"]["tls"].as_u64().unwrap()
}

/// A rustls client configuration trusting the roots in `ca`, its client certificate to choose.
fn client_builder(
    ca: &Path,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
}

/// A TLS client connection to `addr` as "localhost" (handshake not started), reads bounded
/// by [`DEADLINE`].
fn tls_connect(
    config: rustls::ClientConfig,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// A public client: TLS to `public` (trusting `ca`, ALPN "echo/1"), 200 kB echoed.
fn tls_echo(ca: &Path, public: SocketAddr, round: u8) {
    let mut config = client_builder(ca).with_no_client_auth();
    config.alpn_protocols = vec![b"echo/1".to_vec()];
    let mut tls = tls_connect(config, public);
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| ((i % 251) as u8).wrapping_add(round))
        .collect();
    tls.write_all(&payload).unwrap();
    let mut got = vec![0u8; payload.len()];
    tls.read_exact(&mut got).unwrap();
    assert!(got == payload, "round {round}: echo differs");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"echo/1"[..]));
}

#[test]
fn client_waiting_before_the_pool_exists_is_paired_at_once() {
    // The DMZ pairs the first prepared connection the moment it parks: the second BIND reply
    // follows the first at once and may reach the internal gateway in the same TLS read.
    let pki = Pki::new("waiting");
    let echo = EchoServer::start(loopback()).unwrap();
    // A client can wait before the pool exists only where the door stays open while down.
    let dmz = dmz_with(&pki, "admission = \"always\"");
    let public = dmz.public[0].1;
    let ca = pki.dir.join("ca.pem");
    let client = std::thread::spawn(move || tls_echo(&ca, public, 7));
    wait_for("the client to wait", || {
        stats(&dmz)["services"]["echo"]["waiting"] == 1
    });
    let internal = internal(
        &pki,
        &dmz,
        echo.addr(),
        "tls = { ca = \"ca.pem\", cert = \"good.pem\", key = \"good.key\" }",
    );
    client.join().unwrap();
    assert!(
        child::poll_until(DEADLINE, || dmz.stats().prepared("echo") == Some(2)),
        "pool did not refill to 2:\nDMZ {:#}\ninternal {:#}",
        dmz.stats().json(),
        internal.stats().json()
    );
    internal.shutdown();
    dmz.shutdown();
}

#[test]
fn mutual_tls_reverse_leg_and_tls_listener_relay() {
    let pki = Pki::new("ok");
    let echo = EchoServer::start(loopback()).unwrap();
    let dmz = dmz(&pki);
    let internal = internal(
        &pki,
        &dmz,
        echo.addr(),
        "tls = { ca = \"ca.pem\", cert = \"good.pem\", key = \"good.key\", server_name = \"localhost\" }",
    );
    wait_for("2 prepared connections over mutual TLS", || {
        dmz.stats().prepared("echo") == Some(2)
    });
    assert_eq!(internal.stats().prepared("echo"), Some(2));

    // A public TLS client through the tls:// listener, twice (the pool refills).
    let public = dmz.public[0].1;
    for round in 0..2 {
        tls_echo(&pki.dir.join("ca.pem"), public, round);
        wait_for("the pool to refill", || {
            dmz.stats().prepared("echo") == Some(2)
        });
    }
    let s = stats(&dmz);
    assert_eq!(s["handshake_failures"]["tls"], 0, "{s}");
    assert_eq!(s["services"]["echo"]["tls_failures"], 0, "{s}");

    // A public client that is not TLS is counted per service, in /stats and /metrics.
    let mut plain = TcpStream::connect(public).unwrap();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = plain.read(&mut [0u8; 64]);
    wait_for("a public TLS failure", || {
        stats(&dmz)["services"]["echo"]["tls_failures"] == 1
    });
    assert!(dmz
        .stats()
        .prometheus()
        .contains("sallyport_public_tls_failures_total{service=\"echo\"} 1\n"));
    internal.shutdown();
    dmz.shutdown();
}

#[test]
fn bad_reverse_legs_are_refused_counted_logged_and_never_parked() {
    let pki = Pki::new("bad");
    let echo = EchoServer::start(loopback()).unwrap();
    let dmz = dmz(&pki);
    // First (the DMZ's refusal log lines are rate-limited per second), an expired certificate:
    // the internal gateway will not load one (the reason names the key, the file and the
    // date), so another client presents it; the DMZ refuses it too.
    let text = internal_config(
        dmz.reverse_addr.unwrap(),
        echo.addr(),
        "tls = { ca = \"ca.pem\", cert = \"expired.pem\", key = \"expired.key\" }",
    );
    let refusal = sallyport::config::Config::parse(&pki.dir.join("internal.toml"), &text)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        refusal.contains("service[echo].tls.cert") && refusal.contains("expired on"),
        "{refusal}"
    );
    let before = tls_failures(&dmz);
    present_client_certificate(&pki, dmz.reverse_addr.unwrap(), "expired");
    wait_for("DMZ TLS failures to grow (expired)", || {
        tls_failures(&dmz) > before
    });
    wait_for("DMZ log line \"certificate expired\"", || {
        logged("reverse: TLS handshake failed: certificate expired")
    });
    assert_eq!(stats(&dmz)["prepared_accepted"], 0);
    // (reverse-leg tls table, DMZ's reason, internal gateway's reason)
    let cases = [
        (
            "tls = { ca = \"ca.pem\" }".to_string(),
            "client presented no certificate",
            "the peer requires a client certificate and we sent none",
        ),
        (
            // Signed by a CA that is not (or no longer: revoked by removal) in client_ca.
            "tls = { ca = \"ca.pem\", cert = \"stranger.pem\", key = \"stranger.key\" }".to_string(),
            "certificate signed by an unknown CA",
            "the peer does not trust our certificate's CA",
        ),
        (
            // The internal gateway does not trust the DMZ's CA.
            "tls = { ca = \"other-ca.pem\", cert = \"good.pem\", key = \"good.key\" }".to_string(),
            "the peer does not trust our certificate's CA",
            "certificate signed by an unknown CA",
        ),
        (
            "tls = { ca = \"ca.pem\", cert = \"good.pem\", key = \"good.key\", server_name = \"wrong.example\" }"
                .to_string(),
            "the peer rejected our certificate (alert BadCertificate)",
            "server name mismatch: expected \"wrong.example\"",
        ),
        (
            // No TLS at all toward a TLS endpoint.
            String::new(),
            "the peer does not speak TLS",
            "the DMZ answered with TLS",
        ),
    ];
    for (tls, dmz_reason, internal_reason) in &cases {
        let before = tls_failures(&dmz);
        let internal = internal(&pki, &dmz, echo.addr(), tls);
        wait_for(&format!("DMZ TLS failures to grow ({tls})"), || {
            tls_failures(&dmz) > before
        });
        wait_for(&format!("internal dial failure ({tls})"), || {
            let dials = &stats(&internal)["services"]["echo"]["dials"];
            dials["tls_failed"].as_u64().unwrap() + dials["rejected"].as_u64().unwrap() > 0
        });
        wait_for(&format!("DMZ log line {dmz_reason:?}"), || {
            logged(&format!("reverse: TLS handshake failed: {dmz_reason}"))
        });
        wait_for(&format!("internal log line {internal_reason:?}"), || {
            logged(internal_reason)
        });
        let s = stats(&dmz);
        assert_eq!(s["services"]["echo"]["prepared"], 0, "{tls}: {s}");
        assert_eq!(s["prepared_accepted"], 0, "{tls}: {s}");
        assert_eq!(internal.stats().prepared("echo"), Some(0), "{tls}");
        internal.shutdown();
    }
    assert!(dmz
        .stats()
        .prometheus()
        .contains("sallyport_handshake_failures_total{reason=\"tls\"} "));
    dmz.shutdown();
}

/// A TLS client to the reverse endpoint `reverse` presenting `pki`'s identity `name` (its
/// `.pem` chain and `.key`), reading until the DMZ closes or refuses.
fn present_client_certificate(pki: &Pki, reverse: SocketAddr, name: &str) {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.dir.join(format!("{name}.pem")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.dir.join(format!("{name}.key"))).unwrap();
    let config = client_builder(&pki.dir.join("ca.pem"))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let mut tls = tls_connect(config, reverse);
    // TLS 1.3: the client's certificate is judged after the client's handshake ends, so the
    // refusal arrives on the first read.
    let _ = tls.write_all(&[5, 1, 0]);
    let read = tls.read(&mut [0u8; 16]);
    assert!(
        !matches!(read, Ok(n) if n > 0),
        "the DMZ answered: {read:?}"
    );
}

#[test]
fn tls_handshake_that_never_completes_times_out() {
    let pki = Pki::new("slow");
    let dmz = dmz(&pki);
    // Connect and say nothing: the handshake timeout (2s) closes it.
    let mut silent = TcpStream::connect(dmz.reverse_addr.unwrap()).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let n = silent.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "the DMZ closes a silent peer");
    wait_for("a handshake timeout", || {
        stats(&dmz)["handshake_failures"]["timeout"] == 1
    });
    assert!(logged("no complete TLS handshake within 2s"));
    dmz.shutdown();
}
