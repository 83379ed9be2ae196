//! TLS tables: certificates generated into a temporary directory by the `sallyport certs`
//! code, loaded, refused where they do not belong, and never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A fresh directory holding `sallyport certs` output (CA, dmz, internal).
pub(super) fn cert_dir(tag: &str) -> PathBuf {
    let dir = crate::tls::tests::temp_dir(&format!("config-{tag}"));
    let certs = crate::tls::dev_certs("dmz.example.net", 30).unwrap();
    crate::tls::write_dev_certs(&dir, &certs, false).unwrap();
    dir
}

/// Parses `text` as if it were `dir/test.toml` (relative paths resolve against `dir`).
pub(super) fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::parse(&dir.join("test.toml"), text)
}

pub(super) const DMZ_TLS: &str = r#"
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

pub(super) const INTERNAL_TLS: &str = r#"
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
        err.reason.to_string(),
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
    assert_reason_has(&err, "garbage.pem");
    let err = parse_in(&dir, &DMZ_TLS.replacen("\"dmz.key\"", "\"junk.txt\"", 1)).unwrap_err();
    assert_eq!(err.key, "reverse.tls.key");
    assert_reason_has(&err, "no private key");
    let err = parse_in(&dir, &DMZ_TLS.replace("\"ca.pem\"", "\"junk.txt\"")).unwrap_err();
    assert_eq!(err.key, "reverse.tls.client_ca");

    // A key that belongs to another certificate.
    let err = parse_in(
        &dir,
        &DMZ_TLS.replacen("\"dmz.key\"", "\"internal.key\"", 1),
    )
    .unwrap_err();
    assert_eq!(err.key, "reverse.tls.key");
    assert_reason_has(&err, "does not match");
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
    assert_reason_has(&err, "does not match");
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
    assert!(
        err.reason.to_string().starts_with("missing"),
        "{}",
        err.reason
    );
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
    assert_reason_has(&err, "unknown field `client_cert`");
    // A wss:// listener speaks HTTP/1.1: ALPN may offer nothing else.
    let err = bad(&DMZ_TLS.replace("accept = \"tls://", "accept = \"wss://"));
    assert_eq!(err.key, "service[echo].tls.alpn");
    assert!(err.reason.to_string().contains("\"h2\""), "{}", err.reason);
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

/// `dir` with a CA valid for 30 days and a DMZ certificate valid from `from_day` to `until_day`.
fn cert_dir_with_dmz(tag: &str, from_day: i64, until_day: i64) -> PathBuf {
    let dir = cert_dir(tag);
    let ca = crate::tls::DevCa::new(30).unwrap();
    let names = crate::tls::dmz_names("dmz.example.net");
    let dmz = ca
        .issue(
            crate::tls::CertRole::Server,
            "dmz",
            &names,
            from_day,
            until_day,
        )
        .unwrap();
    std::fs::write(dir.join("dmz.pem"), dmz.cert_pem).unwrap();
    std::fs::write(dir.join("dmz.key"), dmz.key_pem).unwrap();
    dir
}

#[test]
fn an_expired_or_future_certificate_fails_naming_the_key_and_the_date() {
    let dir = cert_dir_with_dmz("expired", -10, -2);
    let err = parse_in(&dir, DMZ_TLS).unwrap_err();
    assert_eq!(err.key, "reverse.tls.cert", "{err}");
    assert_reason_has(&err, "certificate 1 in");
    assert_reason_has(&err, "dmz.pem\" expired on");
    assert_reason_has(&err, "days ago): renew it");
    let dir = cert_dir_with_dmz("future", 2, 10);
    let err = parse_in(&dir, DMZ_TLS).unwrap_err();
    assert_eq!(err.key, "reverse.tls.cert", "{err}");
    assert_reason_has(&err, "is not valid before");
}

#[test]
fn certificates_near_expiry_are_warned_about_per_table() {
    let dir = cert_dir_with_dmz("soon", -1, 5);
    let config = parse_in(&dir, DMZ_TLS).unwrap();
    let now = std::time::SystemTime::now();
    let warnings = config.expiry_warnings(now, crate::tls::validity::EXPIRY_WARNING);
    // Both tables load dmz.pem; the CA (30 days) is not near.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("test.toml: reverse.tls: certificate"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("dmz.pem\" expires in 4 days"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("service[echo].tls: certificate"),
        "{warnings:?}"
    );
    assert!(config
        .expiry_warnings(now, Duration::from_secs(86_400))
        .is_empty());
    let tables: Vec<String> = config
        .certificate_expiries()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(tables, ["reverse.tls", "service[echo].tls"]);
    let fresh = parse_in(&cert_dir("fresh"), DMZ_TLS).unwrap();
    assert!(fresh
        .expiry_warnings(now, crate::tls::validity::EXPIRY_WARNING)
        .is_empty());
}
