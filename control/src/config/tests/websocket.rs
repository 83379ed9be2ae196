//! WebSocket listeners, forwarding services and shared ports.

use std::path::Path;
use std::time::Duration;

use super::tls::{cert_dir, parse_in};
use super::*;

pub(super) fn forward(config: &Config, i: usize) -> &ForwardService {
    match &config.services[i].role {
        ServiceRole::Forward(f) => f,
        other => panic!("expected a forwarding service, got {other:?}"),
    }
}

/// A file with one `[[service]]` per `(name, accept, connect, extra lines)`.
pub(super) fn services(list: &[(&str, &str, &str, &str)]) -> String {
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

pub(super) fn one(accept: &str, connect: &str, extra: &str) -> Result<Config, ConfigError> {
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
            proxy_protocol: None,
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
        include_str!("../../../../examples/vpc-a.toml"),
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
        include_str!("../../../../examples/vpc-b.toml"),
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
            .to_string()
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
        assert_reason_has(&err, reason);
    }
    // connect = tls:// or wss:// needs connect_tls.
    for connect in ["tls://127.0.0.1:443", "wss://127.0.0.1:443/x"] {
        let err = one("tcp://127.0.0.1:0", connect, "").unwrap_err();
        assert_eq!(err.key, "service[s].connect_tls", "{err}");
        assert!(err.reason.to_string().starts_with("missing"), "{err}");
    }
    // accept = tls:// or wss:// needs the listener's certificate.
    for accept in ["tls://127.0.0.1:0", "wss://127.0.0.1:0/x"] {
        let err = one(accept, "tcp://127.0.0.1:7000", "").unwrap_err();
        assert_eq!(err.key, "service[s].tls", "{err}");
    }
    // Paths belong to WebSocket URIs only.
    let err = one("tcp://127.0.0.1:0", "tcp://127.0.0.1:7000/x", "").unwrap_err();
    assert_eq!(err.key, "service[s].connect");
    assert_reason_has(&err, "unexpected path");
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
            assert_reason_has(&err, "WebSocket legs");
        }
    }
    for extra in ["origins = []", "protocols = []"] {
        let err = one("tcp://127.0.0.1:0", "reverse://s", extra).unwrap_err();
        assert!(err.key.starts_with("service[s]."), "{err}");
        assert_reason_has(&err, "WebSocket listeners");
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
    assert_reason_has(&err, "64 KiB");
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
        assert_reason_has(&err, reason);
    }
    let err = bad(
        ws,
        up,
        "origins = [\"https://a.example\", \"https://a.example\"]",
    );
    assert_reason_has(&err, "twice");
    // protocols: HTTP tokens.
    for protocol in ["", "a b", "a,b", "\\u00e9"] {
        let err = bad(ws, up, &format!("protocols = [\"{protocol}\"]"));
        assert_eq!(err.key, "service[s].protocols", "{protocol:?}");
    }
    assert!(bad(ws, up, "protocols = [\"x\", \"x\"]")
        .reason
        .to_string()
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
        assert_reason_has(&err, reason);
    }
    let long = format!("ws://127.0.0.1:0/{}", "a".repeat(MAX_WS_PATH_LEN));
    assert!(bad(&long, up, "").reason.to_string().contains("limit"));
    let err = bad("tcp://127.0.0.1:0", "ws://127.0.0.1:80/a#b", "");
    assert_eq!(err.key, "service[s].connect");
    // Listen addresses stay IP literals; connect needs a port.
    assert_eq!(bad("ws://localhost:80/x", up, "").key, "service[s].accept");
    let err = bad("tcp://127.0.0.1:0", "ws://127.0.0.1/x", "");
    assert_eq!(err.key, "service[s].connect");
    assert_reason_has(&err, "missing port");
    // Unknown schemes name the ones there are.
    let err = bad("http://127.0.0.1:0", up, "");
    assert_reason_has(&err, "ws://, wss://");
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
        assert_reason_has(&err, reason);
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
    assert_reason_has(&err, "share one listener");
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
    assert_reason_has(&err, "speaks TLS or not");

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
