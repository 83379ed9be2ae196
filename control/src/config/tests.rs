//! Tests of the configuration: examples, defaults, every error's key and reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::listeners::overlaps;
use super::units::{format_size, parse_duration, parse_size};
use super::uri::{parse_host_port, parse_listen_addr, parse_listen_uri, Scheme};
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text)
}

fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got: {config:?}"),
        Err(e) => e,
    }
}

const DMZ_MIN: &str = r#"
        [reverse]
        listen = "0.0.0.0:1080"
        [[service]]
        name = "echo"
        accept = "tcp://0.0.0.0:9000"
        connect = "reverse://echo"
    "#;

const INTERNAL_MIN: &str = r#"
        [[service]]
        name = "echo"
        accept = "reverse://dmz.example.net:1080/echo"
        connect = "tcp://10.0.0.5:7000"
    "#;

fn dmz(config: &Config, i: usize) -> &DmzService {
    match &config.services[i].role {
        ServiceRole::Dmz(d) => d,
        other => panic!("expected a DMZ service, got {other:?}"),
    }
}

fn internal(config: &Config, i: usize) -> &InternalService {
    match &config.services[i].role {
        ServiceRole::Internal(s) => s,
        other => panic!("expected an internal service, got {other:?}"),
    }
}

#[test]
fn dmz_example_parses_to_expected_values() {
    let path = Path::new("examples/dmz.toml");
    let config = Config::parse(path, include_str!("../../../examples/dmz.toml")).unwrap();
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
                stream: sallyport_dataplane::sys::StreamOptions {
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
                credentials: None,
            }),
        }],
    };
    assert_eq!(config, expected);
}

#[test]
fn internal_example_parses_to_expected_values() {
    let path = Path::new("examples/internal.toml");
    let config = Config::parse(path, include_str!("../../../examples/internal.toml")).unwrap();
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
                credentials: None,
                tls: None,
                target_tls: None,
                target_ws: None,
            }),
        }],
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
    let config = parse_ok(include_str!("../../../examples/dmz.toml"));
    assert_eq!(
        config.describe(),
        ["echo: tcp://0.0.0.0:9000 -> reverse://echo"]
    );
    let config = parse_ok(include_str!("../../../examples/internal.toml"));
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
    let err = parse_err(&DMZ_MIN.replace("0.0.0.0:1080", "0.0.0.0"));
    assert_eq!(err.key, "reverse.listen");
    assert_eq!(
        err.to_string(),
        format!("test.toml: reverse.listen: {}", err.reason)
    );
}

#[test]
fn unknown_keys_are_located() {
    let err = parse_err(&format!("[gateway]\nworker = 2\n{DMZ_MIN}"));
    assert_eq!(err.key, "gateway.worker");
    assert!(
        err.reason.contains("unknown field `worker`"),
        "{}",
        err.reason
    );

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
    assert!(err.reason.contains("duration string"), "{}", err.reason);
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
    assert!(err.reason.contains("duplicate"), "{}", err.reason);
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
    assert!(parse_duration("0s")
        .unwrap_err()
        .contains("greater than zero"));
    assert!(parse_duration("25h").unwrap_err().contains("too long"));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("soon")
        .unwrap_err()
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
    assert!(text("1MB").unwrap_err().contains("binary units"));
    assert!(text("1.5MiB").is_err());
    assert!(text("MiB").is_err());
    assert!(text("99999999999999999999")
        .unwrap_err()
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
        .contains("brackets"));
    assert!(parse_host_port("host")
        .unwrap_err()
        .contains("missing port"));
    assert!(parse_host_port("host:0").unwrap_err().contains("port 0"));
    assert!(parse_host_port("host:65536")
        .unwrap_err()
        .contains("invalid port"));
    assert!(parse_host_port("bad host:1").is_err());
    assert!(parse_host_port("[nope]:1").is_err());
    assert!(parse_host_port("[::1]")
        .unwrap_err()
        .contains("missing port"));
    assert!(parse_listen_addr("localhost:80")
        .unwrap_err()
        .contains("IP"));
    assert!(parse_listen_addr(":80")
        .unwrap_err()
        .contains("missing host"));
    assert_eq!(
        parse_listen_addr("0.0.0.0:0"),
        Ok("0.0.0.0:0".parse().unwrap())
    );
    assert!(parse_listen_uri(Scheme::Tcp, "0.0.0.0:80/")
        .unwrap_err()
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

// -----------------------------------------------------------------------------------------
// TLS: certificates generated into a temporary directory by the `sallyport certs` code.
// -----------------------------------------------------------------------------------------

/// A fresh directory holding `sallyport certs` output (CA, dmz, internal).
fn cert_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sallyport-config-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = crate::tls::dev_certs("dmz.example.net", 30).unwrap();
    crate::tls::write_dev_certs(&dir, &certs, false).unwrap();
    dir
}

/// Parses `text` as if it were `dir/test.toml` (relative paths resolve against `dir`).
fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::parse(&dir.join("test.toml"), text)
}

const DMZ_TLS: &str = r#"
        [reverse]
        listen = "127.0.0.1:0"
        tls = { cert = "dmz.pem", key = "dmz.key", client_ca = "ca.pem" }
        [[service]]
        name = "echo"
        accept = "tls://127.0.0.1:0"
        connect = "reverse://echo"
        tls = { cert = "dmz.pem", key = "dmz.key", alpn = ["h2", "http/1.1"] }
        handshake_timeout = "3s"
    "#;

const INTERNAL_TLS: &str = r#"
        [[service]]
        name = "echo"
        accept = "reverse://dmz.example.net:1080/echo"
        connect = "tls://backend.internal:8443"
        tls = { ca = "ca.pem", cert = "internal.pem", key = "internal.key" }
        connect_tls = { ca = "ca.pem", server_name = "10.0.0.5" }
    "#;

#[test]
fn tls_configs_parse() {
    let dir = cert_dir("ok");
    let config = parse_in(&dir, DMZ_TLS).unwrap_or_else(|e| panic!("{e}"));
    let reverse_tls = config.reverse.as_ref().unwrap().tls.as_ref().unwrap();
    assert_eq!(reverse_tls.cert, dir.join("dmz.pem"));
    assert_eq!(reverse_tls.client_ca, Some(dir.join("ca.pem")));
    assert!(reverse_tls.mutual());
    assert_eq!(reverse_tls.config.current().send_tls13_tickets, 0);
    let d = dmz(&config, 0);
    let public = d.tls.as_ref().unwrap();
    assert_eq!(public.alpn, ["h2", "http/1.1"]);
    assert_eq!(
        public.config.current().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert!(!public.mutual());
    assert_eq!(d.handshake_timeout, Duration::from_secs(3));
    assert_eq!(
        config.describe(),
        ["echo: tls://127.0.0.1:0 -> reverse://echo (tls)"]
    );

    let config = parse_in(&dir, INTERNAL_TLS).unwrap_or_else(|e| panic!("{e}"));
    let i = internal(&config, 0);
    let tls = i.tls.as_ref().unwrap();
    // server_name defaults to the DMZ host of the URI.
    assert_eq!(tls.server_name.to_str(), "dmz.example.net");
    assert_eq!(tls.cert, Some(dir.join("internal.pem")));
    let target_tls = i.target_tls.as_ref().unwrap();
    assert_eq!(target_tls.server_name.to_str(), "10.0.0.5");
    assert_eq!(target_tls.cert, None);
    assert_eq!(i.target.to_string(), "backend.internal:8443");
    assert_eq!(
        config.describe(),
        ["echo: reverse://dmz.example.net:1080/echo -> tls://backend.internal:8443 (tls)"]
    );

    // Absolute paths are used as written; connect_tls server_name defaults to the host.
    let mut abs = INTERNAL_TLS.replace(", server_name = \"10.0.0.5\"", "");
    for name in ["ca.pem", "internal.pem", "internal.key"] {
        abs = abs.replace(&format!("\"{name}\""), &format!("{:?}", dir.join(name)));
    }
    let config = Config::parse(Path::new("elsewhere/test.toml"), &abs).unwrap();
    let i = internal(&config, 0);
    assert_eq!(i.tls.as_ref().unwrap().ca, dir.join("ca.pem"));
    assert_eq!(
        i.target_tls.as_ref().unwrap().server_name.to_str(),
        "backend.internal"
    );
    // Without a client certificate (a DMZ without client_ca).
    let config = parse_in(
        &dir,
        &INTERNAL_MIN.replace(
            "connect = ",
            "tls = { ca = \"ca.pem\", server_name = \"127.0.0.1\" }\nconnect = ",
        ),
    )
    .unwrap();
    let tls = internal(&config, 0).tls.as_ref().unwrap();
    assert_eq!((tls.cert.as_ref(), tls.key.as_ref()), (None, None));
    assert_eq!(tls.server_name.to_str(), "127.0.0.1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_file_errors_name_the_key() {
    let dir = cert_dir("files");
    let err = parse_in(&dir, &DMZ_TLS.replacen("\"dmz.pem\"", "\"nope.pem\"", 1)).unwrap_err();
    assert_eq!(err.key, "reverse.tls.cert");
    assert_eq!(
        err.reason,
        format!(
            "cannot read \"{}\": No such file or directory",
            dir.join("nope.pem").display()
        )
    );
    // Relative to the config file's directory: "dmz.toml: ... \"dmz.pem\"".
    let err = Config::parse(
        Path::new("dmz.toml"),
        &DMZ_TLS.replacen("\"dmz.pem\"", "\"does-not-exist.pem\"", 1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dmz.toml: reverse.tls.cert: cannot read \"does-not-exist.pem\": No such file or directory"
    );

    std::fs::write(
        dir.join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\n!!!\n",
    )
    .unwrap();
    std::fs::write(dir.join("junk.txt"), "not pem at all\n").unwrap();
    let err = parse_in(&dir, &DMZ_TLS.replacen("\"dmz.pem\"", "\"garbage.pem\"", 1)).unwrap_err();
    assert_eq!(err.key, "reverse.tls.cert");
    assert!(err.reason.contains("garbage.pem"), "{}", err.reason);
    let err = parse_in(&dir, &DMZ_TLS.replacen("\"dmz.key\"", "\"junk.txt\"", 1)).unwrap_err();
    assert_eq!(err.key, "reverse.tls.key");
    assert!(err.reason.contains("no private key"), "{}", err.reason);
    let err = parse_in(&dir, &DMZ_TLS.replace("\"ca.pem\"", "\"junk.txt\"")).unwrap_err();
    assert_eq!(err.key, "reverse.tls.client_ca");

    // A key that belongs to another certificate.
    let err = parse_in(
        &dir,
        &DMZ_TLS.replacen("\"dmz.key\"", "\"internal.key\"", 1),
    )
    .unwrap_err();
    assert_eq!(err.key, "reverse.tls.key");
    assert!(err.reason.contains("does not match"), "{}", err.reason);
    let service_tls = DMZ_TLS.replace(
        "tls = { cert = \"dmz.pem\", key = \"dmz.key\", alpn",
        "tls = { cert = \"dmz.pem\", key = \"ca.key\", alpn",
    );
    let err = parse_in(&dir, &service_tls).unwrap_err();
    assert_eq!(err.key, "service[echo].tls.key");
    let err = parse_in(
        &dir,
        &INTERNAL_TLS.replace("\"internal.key\"", "\"dmz.key\""),
    )
    .unwrap_err();
    assert_eq!(err.key, "service[echo].tls.key");
    assert!(err.reason.contains("does not match"), "{}", err.reason);
    let err = parse_in(
        &dir,
        &INTERNAL_TLS.replace(
            "connect_tls = { ca = \"ca.pem\"",
            "connect_tls = { ca = \"no.pem\"",
        ),
    )
    .unwrap_err();
    assert_eq!(err.key, "service[echo].connect_tls.ca");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_tables_must_fit_the_scheme_and_role() {
    let dir = cert_dir("shape");
    let service_tls_line =
        "\n        tls = { cert = \"dmz.pem\", key = \"dmz.key\", alpn = [\"h2\", \"http/1.1\"] }";
    let connect_tls_line =
        "\n        connect_tls = { ca = \"ca.pem\", server_name = \"10.0.0.5\" }";
    let cases = [
        // accept = tls:// without a tls table.
        (DMZ_TLS.replace(service_tls_line, ""), "service[echo].tls"),
        // A tls table on a tcp:// listener.
        (
            DMZ_TLS.replace("accept = \"tls://", "accept = \"tcp://"),
            "service[echo].tls",
        ),
        // connect_tls without connect = tls://.
        (
            INTERNAL_TLS.replace("connect = \"tls://", "connect = \"tcp://"),
            "service[echo].connect_tls",
        ),
        // connect = tls:// without connect_tls.
        (
            INTERNAL_TLS.replace(connect_tls_line, ""),
            "service[echo].connect_tls",
        ),
    ];
    for (text, key) in &cases {
        let err = parse_in(&dir, text).unwrap_err();
        assert_eq!(&err.key, key, "{err}");
    }
    let plain_dmz = DMZ_TLS
        .replace("accept = \"tls://", "accept = \"tcp://")
        .replace(service_tls_line, "");
    assert_eq!(
        parse_in(&dir, &plain_dmz).unwrap_err().key,
        "service[echo].handshake_timeout"
    );
    let err = parse_in(
        &dir,
        &INTERNAL_TLS.replace("connect_tls", "handshake_timeout = \"1s\"\nconnect_tls"),
    )
    .unwrap_err();
    assert_eq!(err.key, "service[echo].handshake_timeout");

    let bad = |text: &str| parse_in(&dir, text).unwrap_err();
    // Keys that belong elsewhere.
    let err = bad(&DMZ_TLS.replace("client_ca = \"ca.pem\"", "alpn = [\"h2\"]"));
    assert_eq!(err.key, "reverse.tls.alpn");
    let err = bad(&DMZ_TLS.replace("client_ca = \"ca.pem\"", "ca = \"ca.pem\""));
    assert_eq!(err.key, "reverse.tls.ca");
    let err = bad(&INTERNAL_TLS.replace(
        "key = \"internal.key\"",
        "key = \"internal.key\", client_ca = \"ca.pem\"",
    ));
    assert_eq!(err.key, "service[echo].tls.client_ca");
    // Required keys and pairs.
    let err = bad(&DMZ_TLS.replace("key = \"dmz.key\", client_ca", "client_ca"));
    assert_eq!(err.key, "reverse.tls.key");
    assert!(err.reason.starts_with("missing"), "{}", err.reason);
    let err = bad(&INTERNAL_TLS.replace(", key = \"internal.key\"", ""));
    assert_eq!(err.key, "service[echo].tls.key");
    let err = bad(&INTERNAL_TLS.replace("ca = \"ca.pem\", cert", "cert"));
    assert_eq!(err.key, "service[echo].tls.ca");
    let err =
        bad(&INTERNAL_TLS.replace("server_name = \"10.0.0.5\"", "server_name = \"not a name\""));
    assert_eq!(err.key, "service[echo].connect_tls.server_name");
    let err = bad(&DMZ_TLS.replace("\"h2\", ", "\"\", "));
    assert_eq!(err.key, "service[echo].tls.alpn");
    let err = bad(&DMZ_TLS.replace(
        "cert = \"dmz.pem\", key = \"dmz.key\", client_ca",
        "cert = \"\", key = \"dmz.key\", client_ca",
    ));
    assert_eq!(err.key, "reverse.tls.cert");
    // Unknown keys are schema errors.
    let err = bad(&DMZ_TLS.replace("client_ca =", "client_cert ="));
    assert_eq!(err.key, "reverse.tls");
    assert!(
        err.reason.contains("unknown field `client_cert`"),
        "{}",
        err.reason
    );
    // A wss:// listener speaks HTTP/1.1: ALPN may offer nothing else.
    let err = bad(&DMZ_TLS.replace("accept = \"tls://", "accept = \"wss://"));
    assert_eq!(err.key, "service[echo].tls.alpn");
    assert!(err.reason.contains("\"h2\""), "{}", err.reason);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_debug_shows_paths_never_keys() {
    let dir = cert_dir("debug");
    let text = format!(
        "{DMZ_TLS}\nuser = \"gw\"\npassword = \"s3cr3t-pa55\"\n{}",
        INTERNAL_TLS.replace("\"echo\"", "\"up\"")
    );
    let config = parse_in(&dir, &text).unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{config:?} {config:#?}");
    for key in ["dmz.key", "internal.key"] {
        let pem = std::fs::read_to_string(dir.join(key)).unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line), "{key} material in Debug output");
        }
    }
    assert!(!debug.contains("PRIVATE KEY"));
    assert!(!debug.contains("s3cr3t-pa55"));
    assert!(debug.contains("MASKED"));
    assert!(debug.contains("dmz.key"), "the key's path is shown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_examples_load_with_generated_certs() {
    // examples/tls/*.toml name certs/… next to them; `sallyport certs --out
    // examples/tls/certs` makes them. Here the certs go to a temp dir and the examples are
    // copied beside them.
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tls"));
    let dir = std::env::temp_dir().join(format!("sallyport-tls-examples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = crate::tls::dev_certs("localhost", 30).unwrap();
    crate::tls::write_dev_certs(&dir.join("certs"), &certs, false).unwrap();
    let mut loaded = 0;
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let copy = dir.join(path.file_name().unwrap());
        std::fs::copy(&path, &copy).unwrap();
        let config = Config::load(&copy).unwrap_or_else(|e| panic!("{e}"));
        // Every service has TLS somewhere: on the reverse leg (" (tls)") or, for a
        // forwarding service, on its listener or its upstream.
        for (service, line) in config.services.iter().zip(config.describe()) {
            let tls = match &service.role {
                ServiceRole::Forward(f) => f.tls.is_some() || f.upstream.tls.is_some(),
                _ => line.ends_with(" (tls)"),
            };
            assert!(tls, "{}: {line}", path.display());
        }
        loaded += 1;
    }
    assert!(loaded >= 4, "only {loaded} TLS examples");

    // The encrypted virtual private connection: A speaks wss:// to B's wss:// listener.
    let a = Config::load(&dir.join("vpc-a.toml")).unwrap();
    let ServiceRole::Forward(a) = &a.services[0].role else {
        panic!("vpc-a is a forwarding service");
    };
    let up = &a.upstream;
    assert_eq!(up.addr, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(up.tls.as_ref().unwrap().server_name.to_str(), "127.0.0.1");
    assert_eq!(up.ws.as_ref().unwrap().path, "/vpc");
    let b = Config::load(&dir.join("vpc-b.toml")).unwrap();
    let ServiceRole::Forward(b) = &b.services[0].role else {
        panic!("vpc-b is a forwarding service");
    };
    assert!(b.tls.is_some());
    assert_eq!(b.ws.as_ref().unwrap().path, "/vpc");
    assert_eq!(b.listen.port(), up.addr.port());
    let _ = std::fs::remove_dir_all(&dir);
}

// -----------------------------------------------------------------------------------------
// WebSocket listeners and forwarding services
// -----------------------------------------------------------------------------------------

fn forward(config: &Config, i: usize) -> &ForwardService {
    match &config.services[i].role {
        ServiceRole::Forward(f) => f,
        other => panic!("expected a forwarding service, got {other:?}"),
    }
}

/// A file with one `[[service]]` per `(name, accept, connect, extra lines)`.
fn services(list: &[(&str, &str, &str, &str)]) -> String {
    let mut text = String::new();
    if list
        .iter()
        .any(|(_, _, connect, _)| connect.starts_with("reverse://"))
    {
        text.push_str("[reverse]\nlisten = \"127.0.0.1:1080\"\n");
    }
    for (name, accept, connect, extra) in list {
        text.push_str(&format!(
                "[[service]]\nname = \"{name}\"\naccept = \"{accept}\"\nconnect = \"{connect}\"\n{extra}\n"
            ));
    }
    text
}

fn one(accept: &str, connect: &str, extra: &str) -> Result<Config, ConfigError> {
    parse(&services(&[("s", accept, connect, extra)]))
}

#[test]
fn ws_dmz_service_parses_with_defaults_and_options() {
    let config = one("ws://127.0.0.1:8080/echo", "reverse://echo", "").unwrap();
    let d = dmz(&config, 0);
    assert_eq!(d.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(d.tls, None);
    assert_eq!(d.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(
        d.ws,
        Some(Handoff(sallyport_dataplane::PublicWs {
            path: "/echo".to_string(),
            origins: Vec::new(),
            protocols: Vec::new(),
            max_message: DEFAULT_WS_MAX_MESSAGE,
            ping: None,
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }))
    );
    assert_eq!(DEFAULT_WS_MAX_MESSAGE, 16 << 20);
    assert_eq!(
        config.describe(),
        ["s: ws://127.0.0.1:8080/echo -> reverse://echo"]
    );

    let config = one(
        "WS://[::1]:8080/a/b.c",
        "reverse://echo",
        r#"
            origins = ["https://app.example.com", "http://localhost:3000", "null"]
            protocols = ["binary", "v2.tunnel"]
            ws_ping = "30s"
            ws_max_message = "1MiB"
            handshake_timeout = "750ms"
            timeout = "3s"
            "#,
    )
    .unwrap();
    let d = dmz(&config, 0);
    let ws = d.ws.as_ref().unwrap();
    assert_eq!(ws.path, "/a/b.c");
    assert_eq!(
        ws.origins,
        ["https://app.example.com", "http://localhost:3000", "null"]
    );
    assert_eq!(ws.protocols, ["binary", "v2.tunnel"]);
    assert_eq!(ws.ping, Some(Duration::from_secs(30)));
    assert_eq!(ws.max_message, 1 << 20);
    assert_eq!(d.handshake_timeout, Duration::from_millis(750));
    assert_eq!(d.timeout, Duration::from_secs(3));

    // No path, or a bare '/', is the root path.
    for accept in ["ws://127.0.0.1:8080", "ws://127.0.0.1:8080/"] {
        let config = one(accept, "reverse://echo", "").unwrap();
        assert_eq!(dmz(&config, 0).ws.as_ref().unwrap().path, "/");
    }
}

#[test]
fn forwarding_tcp_to_tcp_is_a_plain_proxy() {
    let config = one("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000", "").unwrap();
    assert_eq!(config.reverse, None);
    let f = forward(&config, 0);
    assert_eq!(f.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!((f.tls.as_ref(), f.ws.as_ref()), (None, None));
    assert_eq!(
        f.upstream,
        UpstreamConfig {
            target: HostPort {
                host: "127.0.0.1".to_string(),
                port: 7000
            },
            addr: "127.0.0.1:7000".parse().unwrap(),
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ws: None,
        }
    );
    assert_eq!(
        config.describe(),
        ["s: tcp://127.0.0.1:0 -> tcp://127.0.0.1:7000"]
    );
    let config = one(
        "tcp://127.0.0.1:0",
        "tcp://[::1]:7000",
        "connect_timeout = \"250ms\"",
    )
    .unwrap();
    let up = &forward(&config, 0).upstream;
    assert_eq!(up.addr, "[::1]:7000".parse().unwrap());
    assert_eq!(up.connect_timeout, Duration::from_millis(250));
}

#[test]
fn forwarding_over_websocket_both_ways() {
    // Gateway A of a VPC: TCP in, WebSocket out.
    let config = one(
        "tcp://127.0.0.1:50505",
        "ws://127.0.0.1:8080/vpc",
        "ws_ping = \"30s\"\nws_max_message = \"64KiB\"",
    )
    .unwrap();
    let f = forward(&config, 0);
    assert_eq!(f.ws, None);
    let up = &f.upstream;
    assert_eq!(up.addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        up.ws,
        Some(Handoff(sallyport_dataplane::UpstreamWs {
            host: "127.0.0.1:8080".to_string(),
            path: "/vpc".to_string(),
            max_message: 64 << 10,
            ping: Some(Duration::from_secs(30)),
        }))
    );
    // The Host header is HOST:PORT as written; the path may carry a query; default path /.
    let config = one("tcp://127.0.0.1:0", "ws://[::1]:80/t?k=v&x=1", "").unwrap();
    let ws = forward(&config, 0).upstream.ws.clone().unwrap();
    assert_eq!(
        (ws.host.as_str(), ws.path.as_str()),
        ("[::1]:80", "/t?k=v&x=1")
    );
    assert_eq!(ws.max_message, DEFAULT_WS_MAX_MESSAGE);
    let config = one("tcp://127.0.0.1:0", "ws://localhost:80", "").unwrap();
    let f = forward(&config, 0);
    assert_eq!(f.upstream.ws.as_ref().unwrap().host, "localhost:80");
    assert_eq!(f.upstream.ws.as_ref().unwrap().path, "/");
    assert!(f.upstream.addr.ip().is_loopback());
    assert_eq!(
        config.describe(),
        [format!(
            "s: tcp://127.0.0.1:0 -> ws://localhost:80 (resolved to {})",
            f.upstream.addr
        )]
    );

    // Gateway B: WebSocket in, TCP out; ws_ping applies to the listener then.
    let config = one(
        "ws://127.0.0.1:8080/vpc",
        "tcp://127.0.0.1:7000",
        "ws_ping = \"10s\"\nprotocols = [\"tunnel\"]",
    )
    .unwrap();
    let f = forward(&config, 0);
    let ws = f.ws.as_ref().unwrap();
    assert_eq!(
        (ws.path.as_str(), ws.ping),
        ("/vpc", Some(Duration::from_secs(10)))
    );
    assert_eq!(ws.protocols, ["tunnel"]);
    assert_eq!(f.upstream.ws, None);
    assert_eq!(f.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);

    // WebSocket on both sides: the options apply to both legs.
    let config = one(
        "ws://127.0.0.1:8080/in",
        "ws://127.0.0.1:9090/out",
        "ws_ping = \"5s\"",
    )
    .unwrap();
    let f = forward(&config, 0);
    assert_eq!(f.ws.as_ref().unwrap().ping, Some(Duration::from_secs(5)));
    assert_eq!(
        f.upstream.ws.as_ref().unwrap().ping,
        Some(Duration::from_secs(5))
    );
}

#[test]
fn vpc_examples_parse_to_expected_values() {
    let a = Config::parse(
        Path::new("examples/vpc-a.toml"),
        include_str!("../../../examples/vpc-a.toml"),
    )
    .unwrap();
    let f = forward(&a, 0);
    assert_eq!(f.listen, "127.0.0.1:50505".parse().unwrap());
    assert_eq!(f.upstream.addr, "127.0.0.1:8080".parse().unwrap());
    let ws = f.upstream.ws.as_ref().unwrap();
    assert_eq!(
        (ws.host.as_str(), ws.path.as_str()),
        ("127.0.0.1:8080", "/vpc")
    );
    assert_eq!(ws.ping, Some(Duration::from_secs(30)));
    assert_eq!(
        a.describe(),
        ["vpc: tcp://127.0.0.1:50505 -> ws://127.0.0.1:8080/vpc"]
    );
    let b = Config::parse(
        Path::new("examples/vpc-b.toml"),
        include_str!("../../../examples/vpc-b.toml"),
    )
    .unwrap();
    let f = forward(&b, 0);
    assert_eq!(f.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(f.ws.as_ref().unwrap().path, "/vpc");
    assert_eq!(f.upstream.addr, "127.0.0.1:7000".parse().unwrap());
    // B's second service shares the port, told apart by path.
    assert_eq!(forward(&b, 1).listen, f.listen);
    assert_eq!(forward(&b, 1).ws.as_ref().unwrap().path, "/ssh");
    assert_eq!(
        b.describe(),
        [
            "vpc: ws://127.0.0.1:8080/vpc -> tcp://127.0.0.1:7000",
            "ssh: ws://127.0.0.1:8080/ssh -> tcp://127.0.0.1:22"
        ]
    );
}

#[test]
fn forwarding_upstream_must_resolve() {
    let err = one("tcp://127.0.0.1:0", "tcp://nonexistent.invalid:80", "").unwrap_err();
    assert_eq!(err.key, "service[s].connect");
    assert!(
        err.reason
            .contains("cannot resolve upstream \"nonexistent.invalid\""),
        "{}",
        err.reason
    );
    let err = one("tcp://127.0.0.1:0", "ws://nonexistent.invalid:80/x", "").unwrap_err();
    assert_eq!(err.key, "service[s].connect");
    // Internal services resolve at each dial, not at load time.
    parse_ok(&INTERNAL_MIN.replace("10.0.0.5", "nonexistent.invalid"));
}

#[test]
fn forwarding_rejects_keys_of_other_roles() {
    let cases = [
        ("prepared = 4", "service[s].prepared", "internal services"),
        (
            "retry_max = \"1s\"",
            "service[s].retry_max",
            "internal services",
        ),
        ("timeout = \"2s\"", "service[s].timeout", "connect_timeout"),
        (
            "user = \"gw\"\npassword = \"pw\"",
            "service[s].user",
            "no reverse leg",
        ),
        (
            "handshake_timeout = \"1s\"",
            "service[s].handshake_timeout",
            "tcp://",
        ),
        (
            "origins = [\"https://a.example\"]",
            "service[s].origins",
            "WebSocket listeners",
        ),
        (
            "protocols = [\"x\"]",
            "service[s].protocols",
            "WebSocket listeners",
        ),
        (
            "connect_tls = { ca = \"ca.pem\" }",
            "service[s].connect_tls",
            "applies only to",
        ),
        (
            "tls = { cert = \"a.pem\", key = \"a.key\" }",
            "service[s].tls",
            "forwarding service",
        ),
    ];
    for (extra, key, reason) in cases {
        let err = one("tcp://127.0.0.1:0", "ws://127.0.0.1:8080/x", extra).unwrap_err();
        assert_eq!(err.key, key, "{extra}: {err}");
        assert!(err.reason.contains(reason), "{extra}: {err}");
    }
    // connect = tls:// or wss:// needs connect_tls.
    for connect in ["tls://127.0.0.1:443", "wss://127.0.0.1:443/x"] {
        let err = one("tcp://127.0.0.1:0", connect, "").unwrap_err();
        assert_eq!(err.key, "service[s].connect_tls", "{err}");
        assert!(err.reason.starts_with("missing"), "{err}");
    }
    // accept = tls:// or wss:// needs the listener's certificate.
    for accept in ["tls://127.0.0.1:0", "wss://127.0.0.1:0/x"] {
        let err = one(accept, "tcp://127.0.0.1:7000", "").unwrap_err();
        assert_eq!(err.key, "service[s].tls", "{err}");
    }
    // Paths belong to WebSocket URIs only.
    let err = one("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000/x", "").unwrap_err();
    assert_eq!(err.key, "service[s].connect");
    assert!(err.reason.contains("unexpected path"), "{err}");
}

#[test]
fn websocket_keys_need_a_websocket_leg() {
    for (accept, connect) in [
        ("tcp://127.0.0.1:0", "reverse://s"),
        ("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000"),
        ("reverse://127.0.0.1:1080/s", "tcp://127.0.0.1:7000"),
    ] {
        for (extra, key) in [
            ("ws_ping = \"30s\"", "service[s].ws_ping"),
            ("ws_max_message = \"1MiB\"", "service[s].ws_max_message"),
        ] {
            let err = one(accept, connect, extra).unwrap_err();
            assert_eq!(err.key, key, "{accept} {extra}: {err}");
            assert!(err.reason.contains("WebSocket legs"), "{err}");
        }
    }
    for extra in ["origins = []", "protocols = []"] {
        let err = one("tcp://127.0.0.1:0", "reverse://s", extra).unwrap_err();
        assert!(err.key.starts_with("service[s]."), "{err}");
        assert!(err.reason.contains("WebSocket listeners"), "{err}");
    }
    // On a DMZ service, the internal-only keys stay errors.
    let err = one(
        "ws://127.0.0.1:0/x",
        "reverse://s",
        "connect_timeout = \"1s\"",
    )
    .unwrap_err();
    assert_eq!(err.key, "service[s].connect_timeout");
}

#[test]
fn internal_services_connect_over_websocket() {
    let config = one(
        "reverse://127.0.0.1:1080/s",
        "ws://10.0.0.5:80/tunnel?x=1",
        "ws_ping = \"20s\"\nws_max_message = \"1MiB\"",
    )
    .unwrap();
    let i = internal(&config, 0);
    let ws = i.target_ws.as_ref().expect("target_ws");
    assert_eq!(ws.host, "10.0.0.5:80");
    assert_eq!(ws.path, "/tunnel?x=1");
    assert_eq!(ws.ping, Some(Duration::from_secs(20)));
    assert_eq!(ws.max_message, 1 << 20);
    assert!(i.target_tls.is_none());
    // wss:// needs connect_tls, like a forwarding service's.
    let err = one("reverse://127.0.0.1:1080/s", "wss://10.0.0.5:443/", "").unwrap_err();
    assert_eq!(err.key, "service[s].connect_tls");
    // Listener-only keys stay refused.
    let err = one(
        "reverse://127.0.0.1:1080/s",
        "ws://10.0.0.5:80/",
        "origins = [\"https://a.example\"]",
    )
    .unwrap_err();
    assert_eq!(err.key, "service[s].origins");
}

#[test]
fn websocket_values_are_checked() {
    let bad = |accept: &str, connect: &str, extra: &str| one(accept, connect, extra).unwrap_err();
    let ws = "ws://127.0.0.1:0/x";
    let up = "tcp://127.0.0.1:7000";
    // ws_max_message: 64 KiB ..= 1 GiB.
    let err = bad(ws, up, "ws_max_message = 65535");
    assert_eq!(err.key, "service[s].ws_max_message");
    assert!(err.reason.contains("64 KiB"), "{err}");
    assert!(one(ws, up, "ws_max_message = 65536").is_ok());
    assert!(one(ws, up, "ws_max_message = \"1GiB\"").is_ok());
    assert_eq!(
        bad(ws, up, "ws_max_message = \"2GiB\"").key,
        "service[s].ws_max_message"
    );
    // ws_ping: a duration of at least 100ms.
    let err = bad(ws, up, "ws_ping = \"30ms\"");
    assert_eq!(err.key, "service[s].ws_ping");
    assert!(one(ws, up, "ws_ping = \"100ms\"").is_ok());
    assert_eq!(bad(ws, up, "ws_ping = \"0s\"").key, "service[s].ws_ping");
    assert_eq!(bad(ws, up, "ws_ping = 30").key, "service[s].ws_ping");
    // origins: serialized origins, as browsers send them.
    for (origin, reason) in [
        ("https://a.example/", "no path"),
        ("https://A.example", "lower case"),
        ("a.example", "SCHEME://HOST"),
        ("https://", "SCHEME://HOST"),
        ("https://a b", "without spaces"),
    ] {
        let err = bad(ws, up, &format!("origins = [\"{origin}\"]"));
        assert_eq!(err.key, "service[s].origins", "{origin}");
        assert!(err.reason.contains(reason), "{origin}: {err}");
    }
    let err = bad(
        ws,
        up,
        "origins = [\"https://a.example\", \"https://a.example\"]",
    );
    assert!(err.reason.contains("twice"), "{err}");
    // protocols: HTTP tokens.
    for protocol in ["", "a b", "a,b", "\\u00e9"] {
        let err = bad(ws, up, &format!("protocols = [\"{protocol}\"]"));
        assert_eq!(err.key, "service[s].protocols", "{protocol:?}");
    }
    assert!(bad(ws, up, "protocols = [\"x\", \"x\"]")
        .reason
        .contains("twice"));
    // Paths: as sent on the wire, no fragment; no query on a listener (routing ignores it).
    for (accept, reason) in [
        ("ws://127.0.0.1:0/a?b=1", "query string"),
        ("ws://127.0.0.1:0/a#b", "fragment"),
        ("ws://127.0.0.1:0/a b", "invalid character"),
        ("ws://127.0.0.1:0/\\u00e9", "percent-encoded"),
    ] {
        let err = bad(accept, up, "");
        assert_eq!(err.key, "service[s].accept", "{accept}");
        assert!(err.reason.contains(reason), "{accept}: {err}");
    }
    let long = format!("ws://127.0.0.1:0/{}", "a".repeat(MAX_WS_PATH_LEN));
    assert!(bad(&long, up, "").reason.contains("limit"));
    let err = bad("tcp://127.0.0.1:0", "ws://127.0.0.1:80/a#b", "");
    assert_eq!(err.key, "service[s].connect");
    // Listen addresses stay IP literals; connect needs a port.
    assert_eq!(bad("ws://localhost:80/x", up, "").key, "service[s].accept");
    let err = bad("tcp://127.0.0.1:0", "ws://127.0.0.1/x", "");
    assert_eq!(err.key, "service[s].connect");
    assert!(err.reason.contains("missing port"), "{err}");
    // Unknown schemes name the ones there are.
    let err = bad("http://127.0.0.1:0", up, "");
    assert!(err.reason.contains("ws://, wss://"), "{err}");
}

#[test]
fn websocket_services_share_a_port_by_path() {
    // Two DMZ services and a forwarding one on one address, distinct paths: fine.
    let config = parse(&services(&[
        ("a", "ws://127.0.0.1:8080/a", "reverse://a", ""),
        (
            "b",
            "ws://127.0.0.1:8080/b",
            "reverse://b",
            "ws_ping = \"5s\"",
        ),
        ("c", "ws://127.0.0.1:8080/", "tcp://127.0.0.1:7000", ""),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.services.len(), 3);
    // Port 0 never shares (each gets its own ephemeral port), so equal paths are fine there.
    parse(&services(&[
        ("a", "ws://127.0.0.1:0/x", "reverse://a", ""),
        ("b", "ws://127.0.0.1:0/x", "reverse://b", ""),
    ]))
    .unwrap();

    let cases = [
        // The same path twice.
        (
            vec![
                ("a", "ws://127.0.0.1:8080/x", "reverse://a", ""),
                ("b", "ws://127.0.0.1:8080/x", "tcp://127.0.0.1:7000", ""),
            ],
            "service[b].accept",
            "path \"/x\" on 127.0.0.1:8080 is already served by service[a]",
        ),
        // A WebSocket listener and a plain one.
        (
            vec![
                ("a", "tcp://127.0.0.1:8080", "reverse://a", ""),
                ("b", "ws://127.0.0.1:8080/x", "reverse://b", ""),
            ],
            "service[b].accept",
            "shares its port only with other WebSocket services",
        ),
        // Two plain listeners (forwarding and DMZ).
        (
            vec![
                ("a", "tcp://127.0.0.1:8080", "tcp://127.0.0.1:7000", ""),
                ("b", "tcp://0.0.0.0:8080", "reverse://b", ""),
            ],
            "service[b].accept",
            "address 0.0.0.0:8080 overlaps 127.0.0.1:8080, already used by service[a]",
        ),
        // Overlapping but not identical addresses.
        (
            vec![
                ("a", "ws://0.0.0.0:8080/a", "reverse://a", ""),
                ("b", "ws://127.0.0.1:8080/b", "reverse://b", ""),
            ],
            "service[b].accept",
            "identical address",
        ),
        // One handshake limit per listener.
        (
            vec![
                ("a", "ws://127.0.0.1:8080/a", "reverse://a", ""),
                (
                    "b",
                    "ws://127.0.0.1:8080/b",
                    "reverse://b",
                    "handshake_timeout = \"1s\"",
                ),
            ],
            "service[b].handshake_timeout",
            "share one listener",
        ),
    ];
    for (list, key, reason) in cases {
        let err = parse(&services(&list)).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains(reason), "{err}");
    }
    // The admin endpoint never shares.
    let err = parse(&format!(
        "[gateway]\nadmin = \"127.0.0.1:8080\"\n{}",
        services(&[("a", "ws://127.0.0.1:8080/a", "tcp://127.0.0.1:7000", "")])
    ))
    .unwrap_err();
    assert_eq!(err.key, "service[a].accept");
}

#[test]
fn wss_listeners_and_upstreams() {
    let dir = cert_dir("wss");
    let tls = "tls = { cert = \"dmz.pem\", key = \"dmz.key\" }";
    let parse_here = |list: &[(&str, &str, &str, &str)]| parse_in(&dir, &services(list));

    // A wss:// DMZ service and a wss:// forwarding service share one port and certificate.
    let config = parse_here(&[
        ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
        (
            "b",
            "wss://127.0.0.1:8443/b",
            "tcp://127.0.0.1:7000",
            &format!("{tls}\nhandshake_timeout = \"5s\""),
        ),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let a = dmz(&config, 0);
    assert_eq!(a.tls.as_ref().unwrap().cert, dir.join("dmz.pem"));
    assert_eq!(a.ws.as_ref().unwrap().path, "/a");
    assert!(forward(&config, 1).tls.is_some());
    // ALPN on wss:// may only offer HTTP/1.1.
    parse_here(&[(
        "a",
        "wss://127.0.0.1:8443/a",
        "reverse://a",
        "tls = { cert = \"dmz.pem\", key = \"dmz.key\", alpn = [\"http/1.1\"] }",
    )])
    .unwrap();

    // Sharing a wss:// port needs the same tls table.
    let err = parse_here(&[
        ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
        (
            "b",
            "wss://127.0.0.1:8443/b",
            "reverse://b",
            "tls = { cert = \"internal.pem\", key = \"internal.key\" }",
        ),
    ])
    .unwrap_err();
    assert_eq!(err.key, "service[b].tls.cert", "{err}");
    assert!(err.reason.contains("share one listener"), "{err}");
    let err = parse_here(&[
        ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
        (
            "b",
            "wss://127.0.0.1:8443/b",
            "reverse://b",
            "tls = { cert = \"dmz.pem\", key = \"dmz.key\", client_ca = \"ca.pem\" }",
        ),
    ])
    .unwrap_err();
    assert_eq!(err.key, "service[b].tls.client_ca", "{err}");
    // ws:// and wss:// cannot share a port.
    let err = parse_here(&[
        ("a", "wss://127.0.0.1:8443/a", "reverse://a", tls),
        ("b", "ws://127.0.0.1:8443/b", "reverse://b", ""),
    ])
    .unwrap_err();
    assert_eq!(err.key, "service[b].accept", "{err}");
    assert!(err.reason.contains("speaks TLS or not"), "{err}");

    // A wss:// upstream: connect_tls verifies it (server_name defaults to the host).
    let config = parse_here(&[(
        "vpc",
        "tcp://127.0.0.1:0",
        "wss://127.0.0.1:8443/vpc",
        "connect_tls = { ca = \"ca.pem\" }\nws_ping = \"1s\"",
    )])
    .unwrap();
    let up = &forward(&config, 0).upstream;
    assert_eq!(up.tls.as_ref().unwrap().server_name.to_str(), "127.0.0.1");
    assert_eq!(up.ws.as_ref().unwrap().host, "127.0.0.1:8443");
    assert_eq!(up.ws.as_ref().unwrap().ping, Some(Duration::from_secs(1)));
    // And a tls:// upstream.
    let config = parse_here(&[(
        "t",
        "tls://127.0.0.1:0",
        "tls://127.0.0.1:8443",
        &format!("{tls}\nconnect_tls = {{ ca = \"ca.pem\", server_name = \"localhost\" }}"),
    )])
    .unwrap();
    let f = forward(&config, 0);
    assert!(f.tls.is_some() && f.ws.is_none() && f.upstream.ws.is_none());
    assert_eq!(
        f.upstream.tls.as_ref().unwrap().server_name.to_str(),
        "localhost"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
