//! What the control plane's integration tests share: starting a gateway from config text, the
//! internal gateway that serves a DMZ's `reverse://` service `echo`, and bounded waiting.
#![allow(dead_code)] // Each test file uses its own subset.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sallyport::config::Config;
use sallyport::gateway::Gateway;

/// How long a test waits for a condition, a read or a handshake.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Starts a gateway from `text`, parsed as if it were the file `dir/name` (relative paths in it
/// are relative to `dir`).
pub fn start_in(dir: &Path, name: &str, text: &str) -> Gateway {
    let config = Config::parse(&dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// Config of an internal gateway with one service `echo`: two prepared connections to the
/// DMZ's reverse endpoint `reverse`, each relayed to `echo` once paired; `extra` adds keys to
/// the service (its `tls` table, a `retry_max`).
pub fn internal_config(reverse: SocketAddr, echo: SocketAddr, extra: &str) -> String {
    format!(
        r#"
        [gateway]
        workers = 1
        cores = []
        [[service]]
        name = "echo"
        accept = "reverse://{reverse}/echo"
        connect = "tcp://{echo}"
        prepared = 2
        {extra}
        "#
    )
}

/// Waits at most [`DEADLINE`] for `done` (polled; what it watches sends no message).
pub fn wait_for(what: &str, done: impl FnMut() -> bool) {
    sallyport_kit::child::wait_until(what, DEADLINE, done)
}
