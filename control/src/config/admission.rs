//! The admission keys of a service: `admission`, `allow`, `deny`, `deny_action`,
//! `max_per_source`, `rate_per_source` and `accept_proxy` on a public listener (DMZ and
//! forwarding services), `proxy_protocol` where a back-end leg starts (internal and forwarding
//! services), `backend_probe` on an internal service. Keys in the wrong role are refused with a
//! message saying where they belong.
//!
//! Whether the process may install kernel verdicts is asked here only for
//! `admission = "verified"`, which has no unprivileged form; the other keys fall back at start.

use std::net::IpAddr;

use sallyport_dataplane::admission::{Admission, DenyAction, IpNet, SourcePolicy};
use sallyport_dataplane::wire::proxy::Version;

use super::defaults::*;
use super::diagnostics::{Check, ConfigError};
use super::endpoints::ListenerOf;
use super::model::AdmissionConfig;
use super::raw::RawService;
use super::services::forbid;
use super::uri::Scheme;

/// A public listener's admission keys. `connect` is the service's connect scheme: `verified`
/// needs a plain or TLS upstream to hold the SYN for.
pub(super) fn validate_admission(
    check: &Check,
    prefix: &str,
    raw: &mut RawService,
    of: ListenerOf,
    connect: Scheme,
) -> Result<AdmissionConfig, ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    let mode =
        match (raw.admission.take().as_deref(), of) {
            (None, ListenerOf::Dmz) => Admission::Ready,
            (None, ListenerOf::Forward) => Admission::Always,
            (Some("always"), _) => Admission::Always,
            (Some("ready"), ListenerOf::Dmz) => Admission::Ready,
            (Some("ready"), ListenerOf::Forward) => return Err(check.fail(
                key("admission"),
                "\"ready\" applies to DMZ services (connect = \"reverse://NAME\"), which are up \
                 while prepared connections are parked; a forwarding service takes \"always\" \
                 (the default) or \"verified\" (hold each SYN until the upstream answered)",
            )),
            (Some("verified"), ListenerOf::Dmz) => return Err(check.fail(
                key("admission"),
                "\"verified\" holds a client's SYN while the gateway connects its upstream, so it \
                 applies to forwarding services (connect = \"tcp://...\" or \"tls://...\"); a DMZ \
                 service takes \"ready\" (the default) or \"always\"",
            )),
            (Some("verified"), ListenerOf::Forward) => {
                if !matches!(connect, Scheme::Tcp | Scheme::Tls) {
                    return Err(check.fail(
                        key("admission"),
                        format!(
                        "\"verified\" applies to forwarding services with connect = \"tcp://...\" \
                         or \"tls://...\"; this connect is {}://",
                        connect.as_str()
                    ),
                    ));
                }
                if let Err(why) = kernel_verdicts_permitted() {
                    return Err(check.fail(
                        key("admission"),
                        format!(
                        "\"verified\" holds each SYN in the kernel (an iptables NFQUEUE rule), \
                         which needs root or CAP_NET_ADMIN: {why}; use \"always\", or run the \
                         gateway with CAP_NET_ADMIN"
                    ),
                    ));
                }
                Admission::Verified
            }
            (Some(other), _) => {
                return Err(check.fail(
                    key("admission"),
                    format!("must be \"ready\", \"always\" or \"verified\", got \"{other}\""),
                ))
            }
        };
    let allow = networks(check, &key("allow"), raw.allow.take())?;
    let deny = networks(check, &key("deny"), raw.deny.take())?;
    let deny_action = match raw.deny_action.take().as_deref() {
        None => DEFAULT_DENY_ACTION,
        Some("reject") => DenyAction::Reject,
        Some("drop") => DenyAction::Drop,
        Some(other) => {
            return Err(check.fail(
                key("deny_action"),
                format!(
                "must be \"reject\" (a RST to the SYN) or \"drop\" (no answer), got \"{other}\""
            ),
            ))
        }
    };
    let max_per_source = match raw.max_per_source.take() {
        None => None,
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=MAX_PER_SOURCE).contains(&n) => Some(n),
            _ => {
                return Err(check.fail(
                    key("max_per_source"),
                    format!("must be between 1 and {MAX_PER_SOURCE}, got {n}"),
                ))
            }
        },
    };
    let rate_per_source = raw
        .rate_per_source
        .take()
        .map(|text| parse_rate(&text).map_err(|why| check.fail(key("rate_per_source"), why)))
        .transpose()?;
    let accept_proxy = networks(check, &key("accept_proxy"), raw.accept_proxy.take())?;
    Ok(AdmissionConfig {
        mode,
        policy: SourcePolicy {
            allow,
            deny,
            deny_action,
            max_per_source,
            rate_per_source,
        },
        accept_proxy,
    })
}

/// An internal service has no public listener: its admission keys belong on the DMZ's service.
pub(super) fn forbid_listener_keys(
    check: &Check,
    prefix: &str,
    raw: &RawService,
) -> Result<(), ConfigError> {
    forbid(
        check,
        prefix,
        &[
            ("admission", raw.admission.is_some()),
            ("allow", raw.allow.is_some()),
            ("deny", raw.deny.is_some()),
            ("deny_action", raw.deny_action.is_some()),
            ("max_per_source", raw.max_per_source.is_some()),
            ("rate_per_source", raw.rate_per_source.is_some()),
            ("accept_proxy", raw.accept_proxy.is_some()),
            ("idle_timeout", raw.idle_timeout.is_some()),
        ],
        |field| {
            format!(
                "{field} applies to public listeners (DMZ and forwarding services); an internal \
                 service listens on nothing; set it on the DMZ's service with this bind name"
            )
        },
    )
}

/// `proxy_protocol` (internal and forwarding services).
pub(super) fn validate_proxy_protocol(
    check: &Check,
    prefix: &str,
    raw: &mut RawService,
) -> Result<Option<Version>, ConfigError> {
    match raw.proxy_protocol.take().as_deref() {
        None => Ok(None),
        Some("v1") => Ok(Some(Version::V1)),
        Some("v2") => Ok(Some(Version::V2)),
        Some(other) => Err(check.fail(
            format!("{prefix}.proxy_protocol"),
            format!("must be \"v1\" (text) or \"v2\" (binary), got \"{other}\""),
        )),
    }
}

/// A DMZ service connects no back-end: `proxy_protocol` and `backend_probe` belong on the
/// internal service.
pub(super) fn forbid_backend_keys(
    check: &Check,
    prefix: &str,
    raw: &RawService,
) -> Result<(), ConfigError> {
    forbid(
        check,
        prefix,
        &[
            ("proxy_protocol", raw.proxy_protocol.is_some()),
            ("backend_probe", raw.backend_probe.is_some()),
        ],
        |field| {
            format!(
                "{field} applies where the back-end is connected: set it on the internal service \
                 (accept = \"reverse://HOST:PORT/NAME\"); a DMZ service hands its clients to \
                 prepared connections"
            )
        },
    )
}

/// A list of CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
fn networks(
    check: &Check,
    key: &str,
    written: Option<Vec<String>>,
) -> Result<Vec<IpNet>, ConfigError> {
    written
        .unwrap_or_default()
        .iter()
        .map(|text| parse_network(text).map_err(|why| check.fail(key, why)))
        .collect()
}

/// One CIDR or address; host bits must be zero, so a slip such as `10.0.0.1/8` is caught.
pub(super) fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = text.parse().map_err(|_| {
        format!("\"{text}\" is not a network: write an address or a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\"")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "\"{text}\" has host bits set; the network is \"{}\"",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `"N/s"`: N new connections per second, 1 ≤ N ≤ [`MAX_RATE_PER_SOURCE`].
pub(super) fn parse_rate(text: &str) -> Result<u32, String> {
    let bad =
        || format!("\"{text}\" is not a rate: write new connections per second, e.g. \"20/s\"");
    let count = text.trim().strip_suffix("/s").ok_or_else(bad)?;
    let n: u32 = count.trim().parse().map_err(|_| bad())?;
    if !(1..=MAX_RATE_PER_SOURCE).contains(&n) {
        return Err(format!(
            "must be between 1/s and {MAX_RATE_PER_SOURCE}/s, got \"{text}\""
        ));
    }
    Ok(n)
}

/// Whether this process may install netfilter rules: `Err` says why not.
pub fn kernel_verdicts_permitted() -> Result<(), String> {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status ({e})"))?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or("/proc/self/status has no CapEff line")?;
    if effective & (1 << CAP_NET_ADMIN) != 0 {
        Ok(())
    } else {
        Err("this process has no CAP_NET_ADMIN".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_rates() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("127.0.0.2").unwrap().to_string(),
            "127.0.0.2/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!(parse_network("ten").unwrap_err().contains("not a network"));
        assert_eq!(parse_rate("20/s"), Ok(20));
        assert!(parse_rate("20").unwrap_err().contains("per second"));
        assert!(parse_rate("0/s").unwrap_err().contains("between"));
    }
}
