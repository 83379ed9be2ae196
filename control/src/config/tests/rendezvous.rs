//! `[rendezvous]`, `[host]` and `[[stream]]`: defaults, key files, and every refusal's key.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A directory with a 32-byte key file `k` and a 5-byte one `short`; configs are parsed as if
/// they were in it, so `key = "k"` names the file.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sallyport-config-rdv-{}-{:?}-{}",
            std::process::id(),
            std::thread::current().id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), b"0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::write(dir.join("short"), b"12345").unwrap();
        Dir(dir)
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        Config::parse(&self.0.join("test.toml"), text)
    }

    fn ok(&self, text: &str) -> Config {
        self.parse(text)
            .unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
    }

    fn err(&self, text: &str) -> ConfigError {
        match self.parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DMZ: &str = r#"
    [reverse]
    listen = "127.0.0.1:1080"
    [rendezvous]
    accept = "ws://127.0.0.1:8080/stream/"
    key = "k"
"#;

const HOST: &str = r#"
    [host]
    name = "h1"
    dmz = "reverse://dmz.example.net:1080"
    key = "k"
    [[stream]]
    name = "logs"
    connect = "tcp://127.0.0.1:7000"
"#;

#[test]
fn rendezvous_alone_with_reverse_parses_with_defaults() {
    let dir = Dir::new();
    let config = dir.ok(DMZ);
    assert!(config.services.is_empty());
    let r = config.rendezvous.expect("rendezvous");
    assert_eq!(r.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(r.path, "/stream/");
    assert_eq!(r.link_timeout, Duration::from_secs(10));
    assert_eq!(r.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(r.ws_max_message, DEFAULT_WS_MAX_MESSAGE);
    assert_eq!(r.ws_ping, None);
    assert!(r.tls.is_none());
    assert_eq!(format!("{:?}", r.key), "Key(32 bytes)");
}

#[test]
fn rendezvous_keys_are_read() {
    let dir = Dir::new();
    let config = dir.ok(&format!(
        "{DMZ}link_timeout = \"2s\"\nws_ping = \"20s\"\nws_max_message = \"1MiB\"\norigins = [\"https://app.example.com\"]\nhandshake_timeout = \"1s\"\n"
    ));
    let r = config.rendezvous.unwrap();
    assert_eq!(r.link_timeout, Duration::from_secs(2));
    assert_eq!(r.ws_ping, Some(Duration::from_secs(20)));
    assert_eq!(r.ws_max_message, 1 << 20);
    assert_eq!(r.origins, ["https://app.example.com"]);
    assert_eq!(r.handshake_timeout, Duration::from_secs(1));
}

#[test]
fn rendezvous_refusals_name_their_key() {
    let dir = Dir::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\nkey = \"k\"\n",
            "rendezvous.accept",
            "missing",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"tcp://127.0.0.1:1\"\nkey = \"k\"\n",
            "rendezvous.accept",
            "not a WebSocket listener",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"ws://127.0.0.1:1/stream\"\nkey = \"k\"\n",
            "rendezvous.accept",
            "must end with \"/\"",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"wss://127.0.0.1:1/s/\"\nkey = \"k\"\n",
            "rendezvous.tls",
            "missing",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"ws://127.0.0.1:1/s/\"\n",
            "rendezvous.key",
            "missing",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"ws://127.0.0.1:1/s/\"\nkey = \"short\"\n",
            "rendezvous.key",
            "at least 32 are required",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"ws://127.0.0.1:1/s/\"\nkey = \"nope\"\n",
            "rendezvous.key",
            "cannot read",
        ),
        (
            "[rendezvous]\naccept = \"ws://127.0.0.1:1/s/\"\nkey = \"k\"\n",
            "rendezvous",
            "needs a [reverse] section",
        ),
        (
            "[reverse]\nlisten = \"127.0.0.1:1080\"\n[rendezvous]\naccept = \"ws://127.0.0.1:1080/s/\"\nkey = \"k\"\n",
            "reverse.listen",
            "",
        ),
        (
            &format!("{DMZ}link_timeout = \"0s\"\n"),
            "rendezvous.link_timeout",
            "greater than zero",
        ),
        (
            &format!("{DMZ}ws_ping = \"1ms\"\n"),
            "rendezvous.ws_ping",
            "at least",
        ),
        (
            &format!("{DMZ}colour = \"red\"\n"),
            "rendezvous.colour",
            "unknown field",
        ),
    ];
    for (text, key, reason) in cases {
        let e = dir.err(text);
        assert_eq!(e.key, *key, "{text}: {e}");
        assert_reason_has(&e, reason);
    }
}

#[test]
fn host_parses_with_defaults() {
    let dir = Dir::new();
    let config = dir.ok(HOST);
    let h = config.host.expect("host");
    assert_eq!(h.name, "h1");
    assert_eq!(h.subject(), "sallyport.dial.h1");
    assert_eq!(h.dmz.to_string(), "dmz.example.net:1080");
    assert_eq!(h.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(h.nats, None);
    assert_eq!(h.streams.len(), 1);
    assert_eq!(h.streams[0].name, "logs");
    assert_eq!(h.streams[0].target.to_string(), "127.0.0.1:7000");
}

#[test]
fn host_nats_settings() {
    let dir = Dir::new();
    let config = dir.ok(&HOST.replace(
        "key = \"k\"\n",
        "key = \"k\"\nnats = [\"nats://a:4222\", \"tls://b\"]\nnats_user = \"u\"\nnats_password = \"p\"\n",
    ));
    let nats = config.host.unwrap().nats.unwrap();
    assert_eq!(nats.servers, ["nats://a:4222", "tls://b"]);
    assert_eq!(
        nats.auth,
        NatsAuth::UserPassword {
            user: "u".into(),
            password: Secret::new("p")
        }
    );
    let config = dir.ok(&HOST.replace(
        "key = \"k\"\n",
        "key = \"k\"\nnats = \"nats://a\"\nnats_token = \"t\"\n",
    ));
    assert_eq!(
        config.host.unwrap().nats.unwrap().auth,
        NatsAuth::Token(Secret::new("t"))
    );
}

#[test]
fn host_refusals_name_their_key() {
    let dir = Dir::new();
    let with = |extra: &str| HOST.replace("key = \"k\"\n", &format!("key = \"k\"\n{extra}\n"));
    let cases: Vec<(String, &str, &str)> = vec![
        (
            HOST.replace("name = \"h1\"", "name = \"h.1\""),
            "host.name",
            "not a valid name",
        ),
        (
            HOST.replace("name = \"logs\"", "name = \"a b\""),
            "stream[1].name",
            "not a valid name",
        ),
        (
            HOST.replace("reverse://dmz.example.net:1080", "tcp://dmz:1"),
            "host.dmz",
            "not a reverse endpoint",
        ),
        (
            HOST.replace("reverse://dmz.example.net:1080", "reverse://dmz:1/echo"),
            "host.dmz",
            "no bind name",
        ),
        (
            HOST.replace("tcp://127.0.0.1:7000", "ws://127.0.0.1:7000/"),
            "stream[logs].connect",
            "tcp://HOST:PORT",
        ),
        (
            HOST.replace("key = \"k\"\n", "key = \"short\"\n"),
            "host.key",
            "at least 32",
        ),
        (with("nats = \"http://a\""), "host.nats", "not served"),
        (
            with("nats = \"nats://u:p@a\""),
            "host.nats",
            "credentials go in",
        ),
        (with("nats = []"), "host.nats", "empty list"),
        (
            with("nats_user = \"u\""),
            "host.nats_user",
            "applies only with nats",
        ),
        (
            with("nats = \"nats://a\"\nnats_user = \"u\""),
            "host.nats_password",
            "missing",
        ),
        (
            with(
                "nats = \"nats://a\"\nnats_user = \"u\"\nnats_password = \"p\"\nnats_token = \"t\"",
            ),
            "host.nats_token",
            "not both",
        ),
        (
            with("nats = \"nats://a\"\nnats_tls = { ca = \"missing.pem\" }"),
            "host.nats_tls.ca",
            "cannot read",
        ),
        (
            with("nats = \"nats://a\"\nnats_tls = { server_name = \"x\" }"),
            "host.nats_tls.server_name",
            "not a setting",
        ),
        (
            format!("{HOST}[[stream]]\nname = \"logs\"\nconnect = \"tcp://127.0.0.1:1\"\n"),
            "stream[logs].name",
            "duplicate",
        ),
        (
            HOST.split("[[stream]]").next().unwrap().to_string(),
            "stream",
            "at least one",
        ),
        (
            "[[stream]]\nname = \"logs\"\nconnect = \"tcp://127.0.0.1:1\"\n".into(),
            "stream",
            "belong to a [host]",
        ),
        (
            format!("{HOST}{DMZ}"),
            "reverse",
            "runs as a gateway of its own",
        ),
        (
            format!("{HOST}{INTERNAL_MIN}"),
            "service",
            "runs as a gateway of its own",
        ),
    ];
    for (text, key, reason) in cases {
        let e = dir.err(&text);
        assert_eq!(e.key, key, "{text}: {e}");
        assert_reason_has(&e, reason);
    }
}

#[test]
fn an_empty_file_still_asks_for_a_service() {
    let e = parse_err("");
    assert_eq!(e.key, "service");
    assert_reason_has(&e, "[rendezvous] or [host]");
}

#[test]
fn the_examples_parse() {
    let dir = Dir::new();
    std::fs::copy(dir.0.join("k"), dir.0.join("rendezvous.key")).unwrap();
    let certs = crate::tls::dev_certs("dmz.example.net", 30).unwrap();
    crate::tls::write_dev_certs(&dir.0.join("certs"), &certs, false).unwrap();
    let dmz = dir.ok(include_str!("../../../../examples/rendezvous/dmz.toml"));
    let r = dmz.rendezvous.unwrap();
    assert_eq!(r.path, "/stream/");
    assert!(r.tls.is_some());
    assert!(dmz.reverse.unwrap().tls.unwrap().mutual());
    let host = dir.ok(include_str!("../../../../examples/rendezvous/host.toml"));
    let h = host.host.unwrap();
    assert_eq!(h.streams.len(), 2);
    assert_eq!(h.nats.unwrap().servers.len(), 2);
}

#[test]
fn keepalive_of_reverse_legs() {
    let dir = Dir::new();
    let config = dir.ok(&DMZ.replace(
        "listen = \"127.0.0.1:1080\"",
        "listen = \"127.0.0.1:1080\"\nkeepalive = \"12s\"",
    ));
    assert_eq!(
        config.reverse.unwrap().keepalive.idle,
        Duration::from_secs(12)
    );
    let config = dir.ok(&HOST.replace("key = \"k\"", "key = \"k\"\nkeepalive = \"1m\""));
    assert_eq!(config.host.unwrap().keepalive.idle, Duration::from_secs(60));
    let config = parse_ok(&format!("{INTERNAL_MIN}keepalive = \"45s\"\n"));
    assert_eq!(internal(&config, 0).keepalive.idle, Duration::from_secs(45));
    assert_eq!(
        internal(&parse_ok(INTERNAL_MIN), 0).keepalive.idle,
        DEFAULT_KEEPALIVE
    );
    let e = parse_err(&format!("{INTERNAL_MIN}keepalive = \"500ms\"\n"));
    assert_eq!(e.key, "service[echo].keepalive");
    assert_reason_has(&e, "between 1s and 7200s");
    let e = parse_err(&format!("{DMZ_MIN}keepalive = \"30s\"\n"));
    assert_eq!(e.key, "service[echo].keepalive");
    assert_reason_has(&e, "applies only to internal services");
}
