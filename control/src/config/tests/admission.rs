//! The admission keys: defaults per role, values, and each key refused where it does not apply.

use super::websocket::{forward, one};
use super::*;
use sallyport_dataplane::admission::{Admission, DenyAction};
use sallyport_dataplane::wire::proxy::Version;

#[test]
fn defaults_per_role() {
    let config = one("tcp://127.0.0.1:9000", "reverse://echo", "").unwrap();
    assert_eq!(
        dmz(&config, 0).admission,
        AdmissionConfig::open(Admission::Ready)
    );
    let config = one("tcp://127.0.0.1:9000", "tcp://127.0.0.1:7000", "").unwrap();
    let f = forward(&config, 0);
    assert_eq!(f.admission, AdmissionConfig::open(Admission::Always));
    assert_eq!(f.upstream.proxy_protocol, None);
    let config = parse_ok(INTERNAL_MIN);
    assert!(internal(&config, 0).backend_probe);
    assert_eq!(internal(&config, 0).proxy_protocol, None);
}

#[test]
fn every_key_parses() {
    let config = one(
        "ws://127.0.0.1:9000/x",
        "reverse://echo",
        r#"admission = "always"
allow = ["127.0.0.0/8", "::1"]
deny = ["127.0.0.9"]
deny_action = "drop"
max_per_source = 10
rate_per_source = "50/s"
accept_proxy = ["10.1.0.0/16"]"#,
    )
    .unwrap();
    let a = &dmz(&config, 0).admission;
    assert_eq!(a.mode, Admission::Always);
    let allow: Vec<String> = a.policy.allow.iter().map(|n| n.to_string()).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(a.policy.deny[0].to_string(), "127.0.0.9/32");
    assert_eq!(a.policy.deny_action, DenyAction::Drop);
    assert_eq!(a.policy.max_per_source, Some(10));
    assert_eq!(a.policy.rate_per_source, Some(50));
    assert_eq!(a.accept_proxy[0].to_string(), "10.1.0.0/16");

    let config = one(
        "tcp://127.0.0.1:9000",
        "tcp://127.0.0.1:7000",
        "proxy_protocol = \"v2\"",
    )
    .unwrap();
    assert_eq!(
        forward(&config, 0).upstream.proxy_protocol,
        Some(Version::V2)
    );
    let config = parse_ok(&format!(
        "{INTERNAL_MIN}\nproxy_protocol = \"v1\"\nbackend_probe = false"
    ));
    assert_eq!(internal(&config, 0).proxy_protocol, Some(Version::V1));
    assert!(!internal(&config, 0).backend_probe);
}

#[test]
fn bad_values_name_key_and_reason() {
    let dmz_with = |extra: &str| one("tcp://127.0.0.1:9000", "reverse://echo", extra).unwrap_err();
    let cases = [
        ("admission = \"maybe\"", "service[s].admission", "must be"),
        (
            "admission = \"verified\"",
            "service[s].admission",
            "forwarding services",
        ),
        ("allow = [\"10.0.0.1/8\"]", "service[s].allow", "host bits"),
        ("deny = [\"nowhere\"]", "service[s].deny", "not a network"),
        (
            "deny_action = \"ignore\"",
            "service[s].deny_action",
            "\"reject\"",
        ),
        (
            "max_per_source = 0",
            "service[s].max_per_source",
            "between 1",
        ),
        (
            "rate_per_source = \"5/min\"",
            "service[s].rate_per_source",
            "per second",
        ),
        (
            "accept_proxy = [\"x\"]",
            "service[s].accept_proxy",
            "not a network",
        ),
        (
            "proxy_protocol = \"v2\"",
            "service[s].proxy_protocol",
            "internal service",
        ),
        (
            "backend_probe = false",
            "service[s].backend_probe",
            "internal service",
        ),
    ];
    for (extra, key, text) in cases {
        let err = dmz_with(extra);
        assert_eq!(err.key, key, "{extra}: {err}");
        assert_reason_has(&err, text);
    }
    let err = one(
        "tcp://127.0.0.1:9000",
        "tcp://127.0.0.1:7000",
        "admission = \"ready\"",
    )
    .unwrap_err();
    assert_reason_has(&err, "DMZ services");
    let err = one(
        "tcp://127.0.0.1:9000",
        "ws://127.0.0.1:7000/x",
        "admission = \"verified\"",
    )
    .unwrap_err();
    assert_reason_has(&err, "this connect is ws://");
    let err = one(
        "tcp://127.0.0.1:9000",
        "tcp://127.0.0.1:7000",
        "proxy_protocol = \"v3\"",
    )
    .unwrap_err();
    assert_reason_has(&err, "\"v1\"");
    for extra in [
        "allow = [\"::1\"]",
        "admission = \"always\"",
        "accept_proxy = []",
    ] {
        let err = parse_err(&format!("{INTERNAL_MIN}\n{extra}"));
        assert_reason_has(&err, "public listeners");
    }
}

#[test]
fn verified_needs_the_privilege_it_uses() {
    let result = one(
        "tcp://127.0.0.1:9000",
        "tcp://127.0.0.1:7000",
        "admission = \"verified\"",
    );
    match kernel_verdicts_permitted() {
        Ok(()) => assert_eq!(
            forward(&result.unwrap(), 0).admission.mode,
            Admission::Verified
        ),
        Err(_) => assert_reason_has(&result.unwrap_err(), "CAP_NET_ADMIN"),
    }
}
