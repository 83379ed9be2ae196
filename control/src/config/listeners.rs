//! Checks that need the whole file: DMZ services against `[reverse]`, bind names served once,
//! and every address the file listens on (admin, reverse endpoint, public listeners) against
//! the others: overlapping addresses are an error unless they are WebSocket listeners on the
//! identical address with distinct paths and the same TLS and handshake settings (one socket
//! serves them, routed by path).
//!
//! It does not bind anything: a port taken by another process is reported at start-up.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::diagnostics::{Check, ConfigError};
use super::model::{
    GatewayConfig, HostConfig, RendezvousConfig, ReverseConfig, ServiceConfig, ServiceRole,
    WsAccept,
};
use crate::tls::TlsServer;

/// A public listener as the overlap check sees it.
pub(super) struct PublicListener<'a> {
    scheme: &'a str,
    tls: Option<&'a TlsServer>,
    ws: Option<&'a WsAccept>,
    handshake_timeout: Duration,
}

/// An address the file asks to listen on.
pub(super) struct Listening<'a> {
    /// `gateway.admin`, `reverse.listen` or `service[NAME]`.
    owner: String,
    /// The key naming the address.
    key: String,
    addr: SocketAddr,
    public: Option<PublicListener<'a>>,
}

/// Checks that need the whole file: roles vs `[reverse]`, bind names, listener collisions and
/// shared WebSocket ports.
pub(super) fn cross_check(
    check: &Check,
    gateway: &GatewayConfig,
    reverse: Option<&ReverseConfig>,
    services: &[ServiceConfig],
    labels: &[String],
    rendezvous: Option<&RendezvousConfig>,
) -> Result<(), ConfigError> {
    let mut listeners: Vec<Listening<'_>> = Vec::new();
    if let Some(rendezvous) = rendezvous {
        // Its own socket: a service's WebSocket listener on the same address is an overlap.
        listeners.push(Listening {
            owner: "rendezvous.accept".to_string(),
            key: "rendezvous.accept".to_string(),
            addr: rendezvous.listen,
            public: None,
        });
    }
    if let Some(admin) = gateway.admin {
        listeners.push(Listening {
            owner: "gateway.admin".to_string(),
            key: "gateway.admin".to_string(),
            addr: admin,
            public: None,
        });
    }
    if let Some(reverse) = reverse {
        listeners.push(Listening {
            owner: "reverse.listen".to_string(),
            key: "reverse.listen".to_string(),
            addr: reverse.listen,
            public: None,
        });
    }
    let mut bind_names: HashMap<&str, &str> = HashMap::new();
    let mut has_dmz = false;
    for (service, label) in services.iter().zip(labels) {
        let scheme = service.accept.split("://").next().unwrap_or("");
        let (listen, public) = match &service.role {
            ServiceRole::Internal(_) => continue,
            ServiceRole::Forward(f) => (
                f.listen,
                PublicListener {
                    scheme,
                    tls: f.tls.as_ref(),
                    ws: f.ws.as_ref(),
                    handshake_timeout: f.handshake_timeout,
                },
            ),
            ServiceRole::Dmz(dmz) => {
                has_dmz = true;
                if reverse.is_none() {
                    return Err(check.fail(
                        format!("{label}.connect"),
                        format!(
                            "connect = \"{}\" needs a [reverse] section (where internal gateways dial in), \
                             e.g. [reverse] listen = \"0.0.0.0:1080\"",
                            service.connect
                        ),
                    ));
                }
                if let Some(first) = bind_names.insert(&dmz.bind_name, label) {
                    return Err(check.fail(
                        format!("{label}.connect"),
                        format!(
                            "bind name \"{}\" is already served by {first}; each DMZ service needs its own",
                            dmz.bind_name
                        ),
                    ));
                }
                (
                    dmz.listen,
                    PublicListener {
                        scheme,
                        tls: dmz.tls.as_ref(),
                        ws: dmz.ws.as_ref(),
                        handshake_timeout: dmz.handshake_timeout,
                    },
                )
            }
        };
        listeners.push(Listening {
            owner: label.clone(),
            key: format!("{label}.accept"),
            addr: listen,
            public: Some(public),
        });
    }
    if reverse.is_some() && !has_dmz && rendezvous.is_none() {
        return Err(check.fail(
            "reverse",
            "[reverse] is set but no service uses it (connect = \"reverse://NAME\") and there is no [rendezvous]; \
             remove [reverse] or add a DMZ service",
        ));
    }
    for (i, this) in listeners.iter().enumerate() {
        for other in listeners[..i]
            .iter()
            .filter(|o| overlaps(o.addr, this.addr))
        {
            share_port(check, this, other)?;
        }
    }
    if let Some(reverse) = reverse {
        check_reverse_auth(check, reverse, services, labels)?;
    }
    Ok(())
}

/// Secure by default: a reverse endpoint others can reach must authenticate who BINDs there,
/// or any host that reaches it could park "prepared connections" for a service and receive its
/// clients' bytes. Reachable means not on a loopback address; authenticated means mutual TLS
/// (`client_ca`), or `user`/`password` on every DMZ service (token BINDs of a rendezvous carry
/// their own signature). `dangerous_unauthenticated_reverse = true` says an open one is meant.
fn check_reverse_auth(
    check: &Check,
    reverse: &ReverseConfig,
    services: &[ServiceConfig],
    labels: &[String],
) -> Result<(), ConfigError> {
    if reverse.unauthenticated
        || reverse.listen.ip().is_loopback()
        || reverse.tls.as_ref().is_some_and(|t| t.mutual())
    {
        return Ok(());
    }
    let open = services
        .iter()
        .zip(labels)
        .find(|(s, _)| matches!(&s.role, ServiceRole::Dmz(d) if d.credentials.is_none()));
    let Some((_, label)) = open else {
        return Ok(());
    };
    Err(check.fail(
        "reverse.listen",
        format!(
            "{} is reachable from other hosts and authenticates nobody: whoever reaches it can BIND {label} and receive its clients' bytes. \
             Set [reverse] tls = {{ cert, key, client_ca }} (mutual TLS), or user/password on every DMZ service; \
             or, if this endpoint is on a private link on purpose, dangerous_unauthenticated_reverse = true",
            reverse.listen
        ),
    ))
}

/// What token rendezvous may be combined with: a `[rendezvous]` needs `[reverse]` (hosts BIND
/// there); a `[host]` listens on nothing and runs alone (no `[reverse]`, `[rendezvous]` or
/// `[[service]]`), so its reverse legs are the only ones the gateway parks.
pub(super) fn check_rendezvous_roles(
    check: &Check,
    reverse: Option<&ReverseConfig>,
    services: &[ServiceConfig],
    rendezvous: Option<&RendezvousConfig>,
    host: Option<&HostConfig>,
) -> Result<(), ConfigError> {
    if rendezvous.is_some() && reverse.is_none() {
        return Err(check.fail(
            "rendezvous",
            "[rendezvous] needs a [reverse] section: hosts BIND with their token there, e.g. [reverse] listen = \"0.0.0.0:1080\"",
        ));
    }
    if host.is_none() {
        return Ok(());
    }
    let alone = "a [host] runs as a gateway of its own (it listens on nothing and dials on command); run this in another process";
    if reverse.is_some() {
        return Err(check.fail("reverse", format!("[reverse] with [host]: {alone}")));
    }
    if rendezvous.is_some() {
        return Err(check.fail("rendezvous", format!("[rendezvous] with [host]: {alone}")));
    }
    if !services.is_empty() {
        return Err(check.fail("service", format!("[[service]] with [host]: {alone}")));
    }
    Ok(())
}

/// Two listeners on overlapping addresses: an error, unless both are WebSocket listeners on the
/// identical address that the data plane can serve from one socket (told apart by path).
pub(super) fn share_port(
    check: &Check,
    this: &Listening<'_>,
    other: &Listening<'_>,
) -> Result<(), ConfigError> {
    let (addr, other_addr, owner) = (this.addr, other.addr, &other.owner);
    let overlap = format!("address {addr} overlaps {other_addr}, already used by {owner}");
    let (Some(a), Some(b)) = (&this.public, &other.public) else {
        return Err(check.fail(this.key.clone(), overlap));
    };
    let (Some(a_ws), Some(b_ws)) = (a.ws, b.ws) else {
        let hint = if a.ws.is_some() || b.ws.is_some() {
            " (a ws:// or wss:// listener shares its port only with other WebSocket services, told apart by path)"
        } else {
            ""
        };
        return Err(check.fail(this.key.clone(), format!("{overlap}{hint}")));
    };
    if addr != other_addr {
        return Err(check.fail(
            this.key.clone(),
            format!(
                "{overlap}; WebSocket services share a port only when they name the identical address \
                 (write {other_addr} in both)"
            ),
        ));
    }
    if a.tls.is_some() != b.tls.is_some() {
        return Err(check.fail(
            this.key.clone(),
            format!(
                "{}:// cannot share {addr} with {owner}, which is {}://: one listener either speaks TLS or not",
                a.scheme, b.scheme
            ),
        ));
    }
    if a_ws.path == b_ws.path {
        return Err(check.fail(
            this.key.clone(),
            format!(
                "path \"{}\" on {addr} is already served by {owner}; WebSocket services sharing an \
                 address need distinct paths",
                a_ws.path
            ),
        ));
    }
    if let (Some(a_tls), Some(b_tls)) = (a.tls, b.tls) {
        let show = |p: &Option<PathBuf>| {
            p.as_ref().map_or("none".to_string(), |p| {
                format!("{:?}", p.display().to_string())
            })
        };
        let differs = [
            (
                "cert",
                a_tls.cert != b_tls.cert,
                format!("{:?}", b_tls.cert.display().to_string()),
            ),
            (
                "key",
                a_tls.key != b_tls.key,
                format!("{:?}", b_tls.key.display().to_string()),
            ),
            (
                "client_ca",
                a_tls.client_ca != b_tls.client_ca,
                show(&b_tls.client_ca),
            ),
            (
                "alpn",
                a_tls.alpn != b_tls.alpn,
                format!("{:?}", b_tls.alpn),
            ),
        ];
        if let Some((field, _, theirs)) = differs.into_iter().find(|(_, differs, _)| *differs) {
            return Err(check.fail(
                format!("{}.tls.{field}", this.owner),
                format!(
                    "services sharing wss://{addr} share one listener and its TLS settings; {field} \
                     differs from {owner}'s ({theirs}); use the same tls table"
                ),
            ));
        }
    }
    if a.handshake_timeout != b.handshake_timeout {
        return Err(check.fail(
            format!("{}.handshake_timeout", this.owner),
            format!(
                "services sharing {addr} share one listener and its handshake limit; {owner} has {:?}, \
                 this one {:?}; set the same value (or leave both at the default)",
                b.handshake_timeout, a.handshake_timeout
            ),
        ));
    }
    Ok(())
}

/// Whether two listen addresses would take the same connections. Port 0 (ephemeral) never does.
/// The data plane binds with SO_REUSEPORT, so such a pair would bind without error and silently
/// share or steal each other's clients.
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (a, b) = (a.ip(), b.ip());
    let dual_stack_any = |ip: IpAddr| ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    a == b
        || dual_stack_any(a)
        || dual_stack_any(b)
        || (a.is_ipv4() == b.is_ipv4() && (a.is_unspecified() || b.is_unspecified()))
}
