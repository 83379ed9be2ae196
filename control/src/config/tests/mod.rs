//! Tests of the configuration: examples, defaults, every error's key and reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::listeners::overlaps;
use super::units::{format_size, parse_duration, parse_size};
use super::uri::{parse_host_port, parse_listen_addr, parse_listen_uri, Scheme};
use super::*;
use sallyport_dataplane::admission::Admission;

mod admission;
mod rendezvous;
mod tls;
mod websocket;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text)
}

pub(super) fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

pub(super) fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got: {config:?}"),
        Err(e) => e,
    }
}

/// Asserts that `err`'s reason mentions `text`.
#[track_caller]
pub(super) fn assert_reason_has(err: &ConfigError, text: &str) {
    let reason = err.reason.to_string();
    assert!(
        reason.contains(text),
        "reason {reason:?} lacks {text:?} ({err})"
    );
}

/// `user = "internal"`, `password = "change-me"` as the examples set them.
fn example_credentials() -> Credentials {
    Credentials {
        user: "internal".to_string(),
        password: Secret::new("change-me"),
    }
}

pub(super) const DMZ_MIN: &str = r#"
        [reverse]
        listen = "127.0.0.1:1080"
        [[service]]
        name = "echo"
        accept = "tcp://0.0.0.0:9000"
        connect = "reverse://echo"
    "#;

pub(super) const INTERNAL_MIN: &str = r#"
        [[service]]
        name = "echo"
        accept = "reverse://dmz.example.net:1080/echo"
        connect = "tcp://10.0.0.5:7000"
    "#;

pub(super) fn dmz(config: &Config, i: usize) -> &DmzService {
    match &config.services[i].role {
        ServiceRole::Dmz(d) => d,
        other => panic!("expected a DMZ service, got {other:?}"),
    }
}

pub(super) fn internal(config: &Config, i: usize) -> &InternalService {
    match &config.services[i].role {
        ServiceRole::Internal(s) => s,
        other => panic!("expected an internal service, got {other:?}"),
    }
}

#[test]
fn dmz_example_parses_to_expected_values() {
    let path = Path::new("examples/dmz.toml");
    let config = Config::parse(path, include_str!("../../../../examples/dmz.toml")).unwrap();
    let expected = Config {
        path: path.to_path_buf(),
        gateway: GatewayConfig {
            workers: 2,
            admin: Some("127.0.0.1:9901".parse().unwrap()),
            cores: None,
            relay: RelayConfig {
                mode: RelayMode::Splice,
                pipe_size: DEFAULT_PIPE_SIZE,
                buffer_size: DEFAULT_BUFFER_SIZE,
                stream: sallyport_dataplane::StreamOptions {
                    nodelay: true,
                    buffer: None,
                },
                busy_poll: Duration::ZERO,
            },
            ring_setup: RingSetup::DeferTaskrun,
        },
        reverse: Some(ReverseConfig {
            listen: "0.0.0.0:1080".parse().unwrap(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls: None,
            keepalive: sallyport_dataplane::Keepalive {
                idle: DEFAULT_KEEPALIVE,
            },
            unauthenticated: false,
        }),
        services: vec![ServiceConfig {
            name: "echo".to_string(),
            accept: "tcp://0.0.0.0:9000".to_string(),
            connect: "reverse://echo".to_string(),
            role: ServiceRole::Dmz(DmzService {
                listen: "0.0.0.0:9000".parse().unwrap(),
                tls: None,
                ws: None,
                handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                bind_name: "echo".to_string(),
                timeout: Duration::from_secs(2),
                idle_timeout: None,
                credentials: Some(example_credentials()),
                admission: AdmissionConfig::open(Admission::Ready),
            }),
        }],
        rendezvous: None,
        host: None,
    };
    assert_eq!(config, expected);
}

#[test]
fn internal_example_parses_to_expected_values() {
    let path = Path::new("examples/internal.toml");
    let config = Config::parse(path, include_str!("../../../../examples/internal.toml")).unwrap();
    let expected = Config {
        path: path.to_path_buf(),
        gateway: GatewayConfig::default(),
        reverse: None,
        services: vec![ServiceConfig {
            name: "echo".to_string(),
            accept: "reverse://dmz.example.net:1080/echo".to_string(),
            connect: "tcp://10.0.0.5:7000".to_string(),
            role: ServiceRole::Internal(InternalService {
                dmz: HostPort {
                    host: "dmz.example.net".to_string(),
                    port: 1080,
                },
                bind_name: "echo".to_string(),
                target: HostPort {
                    host: "10.0.0.5".to_string(),
                    port: 7000,
                },
                prepared: 4,
                retry_max: Duration::from_secs(1),
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                credentials: Some(example_credentials()),
                tls: None,
                target_tls: None,
                target_ws: None,
                proxy_protocol: None,
                backend_probe: true,
                keepalive: sallyport_dataplane::Keepalive {
                    idle: DEFAULT_KEEPALIVE,
                },
            }),
        }],
        rendezvous: None,
        host: None,
    };
    assert_eq!(config, expected);
}

#[test]
fn examples_load_from_disk() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
            loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    loaded.sort();
    for name in ["dmz.toml", "internal.toml", "vpc-a.toml", "vpc-b.toml"] {
        assert!(loaded.iter().any(|l| l == name), "{name} not in {loaded:?}");
    }
}

#[test]
fn defaults_are_applied() {
    let config = parse_ok(DMZ_MIN);
    assert_eq!(config.gateway, GatewayConfig::default());
    assert!((1..=MAX_WORKERS).contains(&config.gateway.workers));
    assert_eq!(config.gateway.admin, None);
    assert_eq!(config.gateway.relay.mode, RelayMode::Splice);
    assert_eq!(config.gateway.relay.pipe_size, 1 << 20);
    assert_eq!(config.gateway.relay.buffer_size, 64 << 10);
    assert_eq!(
        config.reverse.as_ref().unwrap().handshake_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(dmz(&config, 0).timeout, Duration::from_secs(2));
    assert_eq!(dmz(&config, 0).credentials, None);
    assert_eq!(
        dmz(&config, 0).idle_timeout,
        None,
        "idle timeout is off by default"
    );

    let config = parse_ok(INTERNAL_MIN);
    let s = internal(&config, 0);
    assert_eq!(s.prepared, DEFAULT_PREPARED);
    assert_eq!(s.retry_max, DEFAULT_RETRY_MAX);
    assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(config.reverse, None);
}

#[test]
fn explicit_values_are_used() {
    let config = parse_ok(
        r#"
            [gateway]
            workers = 1024
            admin = "[::1]:0"
            relay = "copy"
            pipe_size = "256KiB"
            buffer_size = 1024

            [reverse]
            listen = "[::]:1080"
            handshake_timeout = "750ms"

            [[service]]
            name = "web.v2_a-b"
            accept = "TCP://127.0.0.1:0"
            connect = "reverse://web"
            timeout = "1m 30s"
            idle_timeout = "15m"
            user = "gw"
            password = "hunter2"

            [[service]]
            name = "back"
            accept = "reverse://[2001:db8::1]:1080/back"
            connect = "tcp://backend.internal:8080"
            prepared = 100000
            retry_max = "250ms"
            connect_timeout = "10s"
            user = "gw"
            password = "hunter2"
            "#,
    );
    let g = &config.gateway;
    assert_eq!(g.workers, 1024);
    assert_eq!(g.admin, Some("[::1]:0".parse().unwrap()));
    assert_eq!(g.relay.mode, RelayMode::Copy);
    assert_eq!(g.relay.pipe_size, 256 << 10);
    assert_eq!(g.relay.buffer_size, 1024);
    let r = config.reverse.as_ref().unwrap();
    assert_eq!(r.listen, "[::]:1080".parse().unwrap());
    assert_eq!(r.handshake_timeout, Duration::from_millis(750));

    let d = dmz(&config, 0);
    assert_eq!(d.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(d.bind_name, "web");
    assert_eq!(d.timeout, Duration::from_secs(90));
    assert_eq!(d.idle_timeout, Some(Duration::from_secs(900)));
    let public = config.services[0].role.public_service("web").unwrap();
    assert_eq!(public.idle_timeout, Some(Duration::from_secs(900)));
    let creds = d.credentials.as_ref().unwrap();
    assert_eq!(creds.user, "gw");
    assert_eq!(creds.password.expose(), "hunter2");

    let i = internal(&config, 1);
    assert_eq!(i.dmz.host, "2001:db8::1");
    assert_eq!(i.dmz.to_string(), "[2001:db8::1]:1080");
    assert_eq!(i.bind_name, "back");
    assert_eq!(i.target.to_string(), "backend.internal:8080");
    assert_eq!(i.prepared, 100_000);
    assert_eq!(i.retry_max, Duration::from_millis(250));
    assert_eq!(i.connect_timeout, Duration::from_secs(10));
    assert!(i.credentials.is_some());
}

#[test]
fn secrets_are_masked_in_debug() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "MASKED");
    assert_eq!(secret.expose(), "hunter2");

    let config = parse_ok(&INTERNAL_MIN.replace(
        "connect = ",
        "user = \"gw\"\npassword = \"s3cr3t-pa55\"\nconnect = ",
    ));
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t-pa55"), "{debug}");
    assert!(debug.contains("MASKED"), "{debug}");
    let debug = format!(
        "{:#?}",
        toml::from_str::<RawConfig>("[[service]]\npassword = \"s3cr3t-pa55\"").unwrap()
    );
    assert!(!debug.contains("s3cr3t-pa55"), "{debug}");
}

#[test]
fn describe_lists_one_line_per_service() {
    let config = parse_ok(include_str!("../../../../examples/dmz.toml"));
    assert_eq!(
        config.describe(),
        ["echo: tcp://0.0.0.0:9000 -> reverse://echo"]
    );
    let config = parse_ok(include_str!("../../../../examples/internal.toml"));
    assert_eq!(
        config.describe(),
        ["echo: reverse://dmz.example.net:1080/echo -> tcp://10.0.0.5:7000"]
    );
    let two = format!(
            "{DMZ_MIN}\n[[service]]\nname = \"ssh\"\naccept = \"tcp://127.0.0.1:2222\"\nconnect = \"reverse://ssh\""
        );
    assert_eq!(
        parse_ok(&two).describe(),
        [
            "echo: tcp://0.0.0.0:9000 -> reverse://echo",
            "ssh: tcp://127.0.0.1:2222 -> reverse://ssh"
        ]
    );
}

#[test]
fn every_invalid_config_fails_with_its_expected_message() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/config/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 15, "only {} invalid configs", paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()))
            .trim();
        let err = match Config::load(&path) {
            Ok(_) => panic!(
                "{}: parsed, but should fail with {expect:?}",
                path.display()
            ),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(expect),
            "{}: {err:?} lacks {expect:?}",
            path.display()
        );
        let file_name = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(file_name), "{err:?} lacks the file name");
    }
}

#[test]
fn unreadable_file_names_the_file() {
    let err = Config::load(Path::new("/nonexistent/sallyport.toml")).unwrap_err();
    assert_eq!(err.key, "(file)");
    assert!(err
        .to_string()
        .starts_with("/nonexistent/sallyport.toml: (file): "));
}

#[test]
fn error_display_is_file_key_reason() {
    let err = parse_err(&DMZ_MIN.replace("127.0.0.1:1080", "127.0.0.1"));
    assert_eq!(err.key, "reverse.listen");
    assert_eq!(
        err.to_string(),
        format!("test.toml: reverse.listen: {}", err.reason)
    );
}

#[test]
fn error_reason_is_typed_and_printed_once() {
    use std::error::Error;
    let err = parse_err(&DMZ_MIN.replace("127.0.0.1:1080", "127.0.0.1"));
    assert!(matches!(err.reason, Reason::Uri(_)), "{err:?}");
    // The URI error is the printed reason, so no source() repeats it.
    assert!(err.source().is_none(), "{:?}", err.source());
    // A duration's humantime error is in the text too.
    let err = parse_err(&format!("{DMZ_MIN}\ntimeout = \"2 parsecs\""));
    assert!(matches!(err.reason, Reason::Unit(_)), "{err:?}");
    assert!(err.source().is_none(), "{:?}", err.source());
}

#[test]
fn unknown_keys_are_located() {
    let err = parse_err(&format!("[gateway]\nworker = 2\n{DMZ_MIN}"));
    assert_eq!(err.key, "gateway.worker");
    assert_reason_has(&err, "unknown field `worker`");

    let err = parse_err(&format!("{DMZ_MIN}\ntiemout = \"2s\""));
    assert_eq!(err.key, "service[echo].tiemout");

    let err = parse_err(&format!("{DMZ_MIN}\n[[service]]\nbogus = 1"));
    assert_eq!(err.key, "service[2].bogus");

    let err = parse_err(&format!("{DMZ_MIN}\n[revers]\nlisten = \"0.0.0.0:1\""));
    assert_eq!(err.key, "revers");

    let err = parse_err(&format!("workers = 2\n{DMZ_MIN}"));
    assert_eq!(err.key, "workers");

    let err = parse_err(&format!("[gateway]\nworkers = \"two\"\n{DMZ_MIN}"));
    assert_eq!(err.key, "gateway.workers");

    let err = parse_err(&format!("{DMZ_MIN}\ntimeout = 2"));
    assert_eq!(err.key, "service[echo].timeout");
    assert_reason_has(&err, "duration string");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err = parse_err("[gateway]\nworkers = = 2\n");
    assert!(err.key.starts_with("line 2, column "), "{}", err.key);
}

#[test]
fn services_are_labelled_by_position_without_a_valid_name() {
    let err = parse_err(&format!(
        "{INTERNAL_MIN}\n[[service]]\naccept = \"tcp://x\""
    ));
    assert_eq!(err.key, "service[2].name");
    let err = parse_err(&format!("{INTERNAL_MIN}\n{INTERNAL_MIN}"));
    assert_eq!(err.key, "service[2].name");
    assert_reason_has(&err, "duplicate");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
    assert!(parse_duration("0s")
        .unwrap_err()
        .to_string()
        .contains("greater than zero"));
    assert!(parse_duration("25h")
        .unwrap_err()
        .to_string()
        .contains("too long"));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("soon")
        .unwrap_err()
        .to_string()
        .contains("invalid duration"));
}

#[test]
fn sizes_parse() {
    let text = |s: &str| parse_size(&RawSize::Text(s.to_string()));
    assert_eq!(parse_size(&RawSize::Bytes(4096)), Ok(4096));
    assert_eq!(text("4096"), Ok(4096));
    assert_eq!(text("4096B"), Ok(4096));
    assert_eq!(text("256KiB"), Ok(256 << 10));
    assert_eq!(text("1MiB"), Ok(1 << 20));
    assert_eq!(text("1 mib"), Ok(1 << 20));
    assert_eq!(text("2GiB"), Ok(2 << 30));
    assert!(text("1MB")
        .unwrap_err()
        .to_string()
        .contains("binary units"));
    assert!(text("1.5MiB").is_err());
    assert!(text("MiB").is_err());
    assert!(text("99999999999999999999")
        .unwrap_err()
        .to_string()
        .contains("too large"));
    assert!(text("16EiB").is_err());
    assert_eq!(format_size(1 << 20), "1 MiB");
    assert_eq!(format_size(1536), "1536 B");

    let gw = |line: &str| parse(&format!("[gateway]\n{line}\n{DMZ_MIN}"));
    assert_eq!(
        gw("pipe_size = 4096").unwrap().gateway.relay.pipe_size,
        4096
    );
    assert_eq!(
        gw("pipe_size = \"256MiB\"")
            .unwrap()
            .gateway
            .relay
            .pipe_size,
        256 << 20
    );
    assert!(gw("pipe_size = 4095").is_err());
    assert!(gw("pipe_size = \"257MiB\"").is_err());
    assert_eq!(
        gw("buffer_size = \"64MiB\"")
            .unwrap()
            .gateway
            .relay
            .buffer_size,
        64 << 20
    );
    assert!(gw("buffer_size = 1023").is_err());
    let err = gw("buffer_size = -1").unwrap_err();
    assert_eq!(err.key, "gateway.buffer_size");
}

#[test]
fn addresses_parse() {
    assert_eq!(
        parse_host_port("[fe80::1]:7000").unwrap().to_string(),
        "[fe80::1]:7000"
    );
    assert_eq!(parse_host_port("db-1.lan:5432").unwrap().port, 5432);
    assert!(parse_host_port("fe80::1:7000")
        .unwrap_err()
        .to_string()
        .contains("brackets"));
    assert!(parse_host_port("host")
        .unwrap_err()
        .to_string()
        .contains("missing port"));
    assert!(parse_host_port("host:0")
        .unwrap_err()
        .to_string()
        .contains("port 0"));
    assert!(parse_host_port("host:65536")
        .unwrap_err()
        .to_string()
        .contains("invalid port"));
    assert!(parse_host_port("bad host:1").is_err());
    assert!(parse_host_port("[nope]:1").is_err());
    assert!(parse_host_port("[::1]")
        .unwrap_err()
        .to_string()
        .contains("missing port"));
    assert!(parse_listen_addr("localhost:80")
        .unwrap_err()
        .to_string()
        .contains("IP"));
    assert!(parse_listen_addr(":80")
        .unwrap_err()
        .to_string()
        .contains("missing host"));
    assert_eq!(
        parse_listen_addr("0.0.0.0:0"),
        Ok("0.0.0.0:0".parse().unwrap())
    );
    assert!(parse_listen_uri(Scheme::Tcp, "0.0.0.0:80/")
        .unwrap_err()
        .to_string()
        .contains("path"));
}

#[test]
fn listener_overlap() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(overlaps(a("0.0.0.0:80"), a("127.0.0.1:80")));
    assert!(overlaps(a("127.0.0.1:80"), a("127.0.0.1:80")));
    assert!(overlaps(a("[::]:80"), a("127.0.0.1:80")));
    assert!(!overlaps(a("127.0.0.1:80"), a("127.0.0.2:80")));
    assert!(!overlaps(a("0.0.0.0:80"), a("[::1]:80")));
    assert!(!overlaps(a("0.0.0.0:80"), a("0.0.0.0:81")));
    assert!(!overlaps(a("0.0.0.0:0"), a("0.0.0.0:0")));

    // Two services on port 0 are fine; so is the admin port on another address.
    let text = format!(
            "[gateway]\nadmin = \"127.0.0.1:9000\"\n{}\n[[service]]\nname = \"b\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"reverse://b\"",
            DMZ_MIN.replace("0.0.0.0:9000", "127.0.0.1:0")
        );
    parse_ok(&text);
    let err = parse_err(&format!("[gateway]\nadmin = \"127.0.0.1:1080\"\n{DMZ_MIN}"));
    assert_eq!(err.key, "reverse.listen");
}

#[test]
fn mixed_roles_in_one_file() {
    let config = parse_ok(&format!(
        "{DMZ_MIN}\n{}",
        INTERNAL_MIN.replace("\"echo\"", "\"up\"")
    ));
    assert!(matches!(config.services[0].role, ServiceRole::Dmz(_)));
    assert!(matches!(config.services[1].role, ServiceRole::Internal(_)));
}

#[test]
fn a_reachable_reverse_endpoint_must_authenticate() {
    let open = DMZ_MIN.replace("127.0.0.1:1080", "0.0.0.0:1080");
    let err = parse_err(&open);
    assert_eq!(err.key, "reverse.listen");
    assert_reason_has(
        &err,
        "authenticates nobody: whoever reaches it can BIND service[echo]",
    );
    // Each way out: credentials on the service, the explicit flag, a loopback address.
    let with_credentials = open.replace(
        r#"connect = "reverse://echo""#,
        "connect = \"reverse://echo\"\nuser = \"u\"\npassword = \"p\"",
    );
    parse_ok(&with_credentials);
    let flagged = open.replace(
        r#"listen = "0.0.0.0:1080""#,
        "listen = \"0.0.0.0:1080\"\ndangerous_unauthenticated_reverse = true",
    );
    assert!(parse_ok(&flagged).reverse.unwrap().unauthenticated);
    assert!(!parse_ok(DMZ_MIN).reverse.unwrap().unauthenticated);
}
