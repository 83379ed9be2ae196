//! Shared helpers for the end-to-end tests: build the real `sallyport` binary once, start it as a
//! child process on loopback, wait for its `ready` line, read its admin endpoint, and write the
//! DMZ / internal configurations the tests use.
//!
//! Every address is bound on port 0 and read back from the gateway's stdout; nothing here uses a
//! fixed port or sleeps to wait for a condition: waits poll a condition with a deadline. It does
//! not test anything by itself and holds no assertions about the product beyond "it started".
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use sallyport_kit::backend::EchoServer;
pub use sallyport_kit::{child, sys};
use serde_json::Value;

/// Longest a gateway may take from spawn to its `ready` line (a shared 2-core machine may be slow).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Default deadline for waits on a gateway's state (pool filled, pool drained, counters moved).
pub const STATE_TIMEOUT: Duration = Duration::from_secs(15);

/// Read/write timeout on every client socket, so a product bug shows as an error, not a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a wait re-reads `/stats`.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long `stop` waits for a clean exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the `sallyport` binary in release mode (once per test process) and returns its path.
pub fn sallyport_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            // Inherited from the test process, it would change the build's fingerprints and
            // make this build and the outer `cargo test` rebuild each other's dependencies.
            .env_remove("CARGO_MANIFEST_DIR")
            .args([
                "build",
                "--release",
                "-p",
                "sallyport",
                "--bin",
                "sallyport",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build for the sallyport binary");
        assert!(
            status.success(),
            "cargo build of sallyport failed: {status}"
        );
        // …/target/release/deps/<test-exe>: the target dir is two levels above the exe's dir.
        let exe = std::env::current_exe().expect("current_exe");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("test executable lives in <target>/<profile>/deps");
        let bin = target.join("release").join("sallyport");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A fresh, empty directory under the system temp dir, unique within this machine.
pub fn temp_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sallyport-e2e-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Writes `text` to `name` in a fresh temp dir and returns the file's path.
pub fn write_config(name: &str, text: &str) -> PathBuf {
    let path = temp_dir().join(name);
    fs::write(&path, text).expect("write config");
    path
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released). Only for the test
/// that must know an address before the gateway that listens on it starts.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A running `sallyport run` child process and the addresses it announced on stdout.
pub struct Gateway {
    child: Child,
    stderr_path: PathBuf,
    dir: PathBuf,
    /// `listening reverse ADDR`, when the config has a `[reverse]` section.
    pub reverse: Option<SocketAddr>,
    /// `listening admin ADDR`, when `[gateway] admin` is set.
    pub admin: Option<SocketAddr>,
    /// `listening service NAME ADDR`, one per public (DMZ) service.
    pub services: HashMap<String, SocketAddr>,
}

impl Gateway {
    /// Writes `config` to a fresh temp dir, runs `sallyport run --config` on it and waits for the
    /// `ready` line. Panics (with the gateway's stderr) if it exits or is not ready in time.
    pub fn start(config: &str) -> Gateway {
        let path = write_config("gateway.toml", config);
        let dir = path
            .parent()
            .expect("config has a parent dir")
            .to_path_buf();
        let stderr_path = dir.join("stderr.log");
        let stderr = fs::File::create(&stderr_path).expect("create stderr log");
        let mut child = Command::new(sallyport_bin())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn sallyport run");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        // Keeps draining stdout after `ready` so a late write never fails; ends at EOF.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });
        let mut gateway = Gateway {
            child,
            stderr_path,
            dir,
            reverse: None,
            admin: None,
            services: HashMap::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines_rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    gateway.kill();
                    panic!(
                        "gateway not ready within {READY_TIMEOUT:?}\nconfig:\n{config}\nstderr:\n{}",
                        gateway.stderr()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = gateway.wait_exit(Duration::from_secs(5));
                    panic!(
                        "gateway exited before ready ({status:?})\nconfig:\n{config}\nstderr:\n{}",
                        gateway.stderr()
                    );
                }
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ready"] => break,
                ["listening", "reverse", addr] => gateway.reverse = Some(parse_addr(addr)),
                ["listening", "admin", addr] => gateway.admin = Some(parse_addr(addr)),
                ["listening", "service", name, addr] => {
                    gateway
                        .services
                        .insert((*name).to_string(), parse_addr(addr));
                }
                _ => panic!("unexpected stdout line from gateway: {line:?}"),
            }
        }
        gateway
    }

    /// The public address of DMZ service `name`.
    pub fn service(&self, name: &str) -> SocketAddr {
        *self
            .services
            .get(name)
            .unwrap_or_else(|| panic!("no public service {name:?} in {:?}", self.services))
    }

    /// The reverse (SOCKS5) endpoint; panics if this gateway has none.
    pub fn reverse(&self) -> SocketAddr {
        self.reverse.expect("gateway has no [reverse] listener")
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_else(|e| format!("<no stderr: {e}>"))
    }

    /// `GET path` on the admin endpoint; returns the body. Panics on a non-200 answer.
    pub fn admin_get(&self, path: &str) -> String {
        let admin = self.admin.expect("gateway has no admin endpoint");
        match http_get(admin, path) {
            Ok(body) => body,
            Err(e) => panic!("GET {path} on {admin}: {e}\nstderr:\n{}", self.stderr()),
        }
    }

    /// `GET /stats`, parsed.
    pub fn stats(&self) -> Value {
        let body = self.admin_get("/stats");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {body:?}"))
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&self) -> String {
        self.admin_get("/metrics")
    }

    /// Polls `/stats` until `cond` holds; returns those stats. Panics with the last stats and the
    /// gateway's stderr when `deadline` passes first.
    pub fn wait_stats(
        &self,
        what: &str,
        deadline: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut stats = Value::Null;
        if child::poll_every(deadline, POLL_INTERVAL, || {
            stats = self.stats();
            cond(&stats)
        }) {
            return stats;
        }
        panic!(
            "timed out after {deadline:?} waiting for {what}\nlast stats: {stats:#}\nstderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until `services.<service>.prepared == n`.
    pub fn wait_prepared(&self, service: &str, n: i64, deadline: Duration) -> Value {
        self.wait_stats(
            &format!("services.{service}.prepared == {n}"),
            deadline,
            |s| s["services"][service]["prepared"].as_i64() == Some(n),
        )
    }

    /// The gateway's process id (e.g. to find kernel state tagged with it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap; the process is gone when this returns.
    pub fn kill(&mut self) {
        child::kill_and_reap(&mut self.child);
    }

    /// Sends `signal` (e.g. `sys::SIGHUP`) to the gateway. `pid` is our own child, not reaped
    /// yet (we hold its `Child`), so it cannot name another process.
    pub fn signal(&self, signal: sys::c_int) {
        if let Err(e) = sys::signal_pid(self.child.id(), signal) {
            panic!("kill({signal}): {e}");
        }
    }

    /// SIGTERM, wait for the exit, and assert it was a clean one (status 0).
    pub fn stop(mut self) {
        self.signal(sys::SIGTERM);
        let status = self.wait_exit(STOP_TIMEOUT);
        match status {
            Some(status) => assert!(
                status.success(),
                "gateway exited with {status} after SIGTERM\nstderr:\n{}",
                self.stderr()
            ),
            None => {
                self.kill();
                panic!(
                    "gateway still running {STOP_TIMEOUT:?} after SIGTERM\nstderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Waits up to `deadline` for the child to exit on its own.
    fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        child::wait_exit(&mut self.child, deadline).ok().flatten()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The counter at `path` (keys from the root) in a `/stats` document; panics naming the path
/// and showing the document when it is missing or not a number.
pub fn counter(stats: &Value, path: &[&str]) -> u64 {
    let mut v = stats;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no counter {} in {stats:#}", path.join(".")))
}

fn parse_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad address {s:?} on gateway stdout: {e}"))
}

/// A minimal HTTP/1.1 GET (Connection: close); returns the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no header end: {text:?}"),
        )
    })?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("non-200 answer: {head:?}")));
    }
    Ok(body.to_string())
}

/// `[gateway] relay`: how a tunnel's bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Copy,
    Splice,
}

impl Relay {
    fn as_str(self) -> &'static str {
        match self {
            Relay::Copy => "copy",
            Relay::Splice => "splice",
        }
    }
}

/// RFC 1929 credentials for a service, written as `user` / `password`.
#[derive(Debug, Clone, Copy)]
pub struct Auth<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

fn auth_lines(auth: Option<Auth<'_>>) -> String {
    match auth {
        Some(a) => format!("user = \"{}\"\npassword = \"{}\"\n", a.user, a.password),
        None => String::new(),
    }
}

/// A DMZ config: admin and reverse on port 0, one public service `echo` on port 0 served by
/// prepared connections bound as `echo`. `reverse_port` 0 means any.
pub fn dmz_config(
    relay: Relay,
    timeout: &str,
    reverse_port: u16,
    auth: Option<Auth<'_>>,
) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\nrelay = \"{}\"\n\n\
         [reverse]\nlisten = \"127.0.0.1:{reverse_port}\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"reverse://echo\"\n\
         timeout = \"{timeout}\"\n{}",
        relay.as_str(),
        auth_lines(auth)
    )
}

/// An internal config: service `echo` keeps `prepared` connections parked at `reverse` and
/// connects each one taken to `backend`.
pub fn internal_config(
    relay: Relay,
    reverse: SocketAddr,
    backend: SocketAddr,
    prepared: u32,
    auth: Option<Auth<'_>>,
) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\nrelay = \"{}\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"reverse://{reverse}/echo\"\nconnect = \"tcp://{backend}\"\n\
         prepared = {prepared}\nretry_max = \"200ms\"\n{}",
        relay.as_str(),
        auth_lines(auth)
    )
}

/// Connects to `addr` with [`IO_TIMEOUT`] on connect, reads and writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set_read_timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set_write_timeout");
    stream.set_nodelay(true).expect("set_nodelay");
    stream
}

/// One echo round trip on a fresh connection: write `payload`, half-close, read until EOF, and
/// return what came back.
pub fn echo_round_trip(addr: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(payload)?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = Vec::with_capacity(payload.len());
    stream.read_to_end(&mut back)?;
    Ok(back)
}

/// The usual tunnel: an echo back-end, a DMZ, and an internal gateway whose pool is full.
pub struct Tunnel {
    pub echo: EchoServer,
    pub dmz: Gateway,
    pub internal: Gateway,
    /// The DMZ's public address of service `echo`.
    pub public: SocketAddr,
}

impl Tunnel {
    /// Starts the back-end, the DMZ, then the internal gateway, and waits until both sides count
    /// `prepared` parked connections.
    pub fn start(relay: Relay, timeout: &str, prepared: u32) -> Tunnel {
        Tunnel::start_configured(
            &dmz_config(relay, timeout, 0, None),
            |reverse, echo| internal_config(relay, reverse, echo, prepared, None),
            prepared,
        )
    }

    /// Starts the back-end, a DMZ running `dmz_config` (a `[reverse]` section and a service
    /// `echo` served by prepared connections bound as `echo`), then an internal gateway running
    /// `internal_config(the DMZ's reverse address, the back-end's address)`, and waits until both
    /// sides count `prepared` parked connections.
    pub fn start_configured(
        dmz_config: &str,
        internal_config: impl FnOnce(SocketAddr, SocketAddr) -> String,
        prepared: u32,
    ) -> Tunnel {
        let echo = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("start echo");
        let dmz = Gateway::start(dmz_config);
        let internal = Gateway::start(&internal_config(dmz.reverse(), echo.addr()));
        let n = i64::from(prepared);
        dmz.wait_prepared("echo", n, STATE_TIMEOUT);
        internal.wait_prepared("echo", n, STATE_TIMEOUT);
        let public = dmz.service("echo");
        Tunnel {
            echo,
            dmz,
            internal,
            public,
        }
    }

    /// Both gateways' stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- DMZ stderr ---\n{}\n--- internal stderr ---\n{}",
            self.dmz.stderr(),
            self.internal.stderr()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket and forwarding services (additions for tests/tests/ws.rs)
// ---------------------------------------------------------------------------------------------

/// A forwarding gateway's config: admin on port 0, one service `name` that relays each client
/// of `accept` over a connection of its own to `connect`; `extra` lines (e.g. `ws_ping`,
/// `tls = { … }`, `connect_tls = { … }`) are appended to the service.
pub fn forward_config(name: &str, accept: &str, connect: &str, extra: &str) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"{name}\"\naccept = \"{accept}\"\nconnect = \"{connect}\"\n{extra}\n"
    )
}

/// A DMZ config like [`dmz_config`] (splice relay, reverse endpoint on port 0) whose public
/// service `echo` listens on `accept` (e.g. `"ws://127.0.0.1:0/echo"`); `extra` lines (e.g.
/// `origins`, `ws_ping`, `tls = { … }`) are appended to the service.
pub fn dmz_config_accept(accept: &str, extra: &str) -> String {
    format!(
        "[gateway]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n\
         [reverse]\nlisten = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"{accept}\"\nconnect = \"reverse://echo\"\n\
         timeout = \"2s\"\n{extra}\n"
    )
}

impl Tunnel {
    /// Like [`Tunnel::start`], with the DMZ's config given (see [`dmz_config_accept`]): it must
    /// have a `[reverse]` section and a service `echo` served by prepared connections bound as
    /// `echo`. The internal gateway keeps `prepared` of them parked (splice relay).
    pub fn start_with_dmz(dmz_config: &str, prepared: u32) -> Tunnel {
        Tunnel::start_configured(
            dmz_config,
            |reverse, echo| internal_config(Relay::Splice, reverse, echo, prepared, None),
            prepared,
        )
    }
}

/// A directory written by the real `sallyport certs --out DIR`: `ca.pem`/`ca.key`,
/// `dmz.pem`/`dmz.key` (server certificate for `localhost`, `127.0.0.1`, `::1`) and
/// `internal.pem`/`internal.key`. Removed on drop unless a test panicked.
pub struct DevCerts {
    root: PathBuf,
    dir: PathBuf,
}

impl DevCerts {
    /// Runs `sallyport certs --out DIR` into a fresh temp dir; panics with its output on failure.
    pub fn generate() -> DevCerts {
        let root = temp_dir();
        let dir = root.join("certs");
        let out = Command::new(sallyport_bin())
            .arg("certs")
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("run sallyport certs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sallyport certs failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("tls = {"),
            "sallyport certs printed no config lines:\n{stdout}"
        );
        DevCerts { root, dir }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Absolute path of `name` (e.g. `"ca.pem"`) in the directory; panics if it is missing.
    pub fn path(&self, name: &str) -> String {
        let path = self.dir.join(name);
        assert!(path.is_file(), "no {}", path.display());
        path.display().to_string()
    }

    /// `tls = { cert, key }` of a `tls://` or `wss://` listener presenting `dmz.pem`.
    pub fn listener_tls(&self) -> String {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            self.path("dmz.pem"),
            self.path("dmz.key")
        )
    }

    /// `connect_tls = { ca, server_name = "localhost" }` of a `tls://` or `wss://` connect that
    /// verifies `dmz.pem` against this CA.
    pub fn connect_tls(&self) -> String {
        format!(
            "connect_tls = {{ ca = \"{}\", server_name = \"localhost\" }}",
            self.path("ca.pem")
        )
    }
}

impl Drop for DevCerts {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Sends `total` bytes (a whole number of MiB) of seeded random data to an echo path at `addr`
/// in 1 MiB writes from a thread of its own, half-closes after the last one, and reads the echo
/// to EOF at the same time. `Ok` when exactly `total` bytes came back with the sha256 of what was
/// sent; otherwise a description of what went wrong (I/O error, byte count, checksum).
pub fn bulk_echo(addr: SocketAddr, total: usize, seed: u64) -> Result<(), String> {
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};
    use sha2::{Digest, Sha256};
    const CHUNK: usize = 1 << 20;

    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    for r in [
        stream.set_read_timeout(Some(IO_TIMEOUT)),
        stream.set_write_timeout(Some(IO_TIMEOUT)),
    ] {
        r.map_err(|e| format!("socket options: {e}"))?;
    }
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("clone stream: {e}"))?;
    let send = thread::spawn(move || -> io::Result<Vec<u8>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut hash = Sha256::new();
        let mut chunk = vec![0u8; CHUNK];
        for _ in 0..total / CHUNK {
            rng.fill_bytes(&mut chunk);
            hash.update(&chunk);
            writer.write_all(&chunk)?;
        }
        writer.shutdown(Shutdown::Write)?;
        Ok(hash.finalize().to_vec())
    });
    let mut reader = stream;
    let mut hash = Sha256::new();
    let mut received = 0usize;
    let mut buf = vec![0u8; CHUNK];
    let read_result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                hash.update(&buf[..n]);
                received += n;
            }
            Err(e) => break Err(e),
        }
    };
    if read_result.is_err() {
        // Unblock a writer stuck on a full window so the join below returns.
        let _ = reader.shutdown(Shutdown::Both);
    }
    let sent = send
        .join()
        .map_err(|_| "writer thread panicked".to_string())?;
    if let Err(e) = read_result {
        return Err(format!(
            "read failed after {received} of {total} bytes: {e}"
        ));
    }
    let sent = sent.map_err(|e| format!("writing {total} bytes failed: {e}"))?;
    if received != total {
        return Err(format!("wrong byte count back: {received}, sent {total}"));
    }
    if hash.finalize().to_vec() != sent {
        return Err(format!(
            "sha256 of the {total} echoed bytes differs from what was sent"
        ));
    }
    Ok(())
}
