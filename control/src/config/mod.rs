//! Configuration: the TOML file that gives a `sallyport` process its role.
//!
//! What it does: reads one TOML file into [`RawConfig`] (serde, unknown keys rejected, every field
//! optional), then validates it with `Config::try_from(raw)` into a fully populated [`Config`] with
//! every default applied, so the rest of the program never sees an `Option` that means "use the
//! default". Every error is a [`ConfigError`] naming the file, the key and the reason, e.g.
//! `dmz.toml: service[echo].accept: missing port in "dmz.example.net"; expected HOST:PORT`.
//!
//! Certificates and keys named by `tls` and `connect_tls` tables are read here, at parse time
//! (relative paths are relative to the config file's directory), and turned into rustls
//! configurations by [`crate::tls`]; a missing, unreadable or garbled file, or a key that does not
//! match its certificate, is a [`ConfigError`] naming the key:
//! `dmz.toml: reverse.tls.cert: cannot read "dmz.pem": No such file or directory`.
//!
//! Host names of forwarding upstreams (`connect` of a service that is neither DMZ nor internal)
//! are resolved here, once (the first address the resolver gives), so `sallyport check` catches
//! a name that does not resolve; a failure is a [`ConfigError`] naming `service[NAME].connect`.
//!
//! What it does not do: open sockets, resolve the DMZ or back-end names of internal services
//! (those are looked up at each dial, so a moved back-end is followed), or watch the file for
//! changes. A port that cannot be bound is reported by the gateway at start-up, not here.
//!
//! Key paths in messages: `gateway.workers`, `reverse.listen`, `service[echo].accept`. A service is
//! named by its `name` when that name is valid and not a duplicate, otherwise by its position,
//! counting `[[service]]` tables from 1 in file order (`service[2].accept`).
//!
//! Roles are given by the URI schemes of a service:
//! - DMZ service: `accept = "tcp://IP:PORT"`, `"tls://IP:PORT"` (with a `tls` table),
//!   `"ws://IP:PORT/PATH"` or `"wss://IP:PORT/PATH"` (with a `tls` table),
//!   `connect = "reverse://BINDNAME"`;
//! - internal service: `accept = "reverse://HOST:PORT/BINDNAME"` (optional `tls` table: the
//!   reverse leg to the DMZ), `connect = "tcp://HOST:PORT"` or `"tls://HOST:PORT"` (with a
//!   `connect_tls` table);
//! - forwarding service: `accept` as a DMZ service, `connect = "tcp://HOST:PORT"`,
//!   `"tls://HOST:PORT"`, `"ws://HOST:PORT/PATH"` or `"wss://HOST:PORT/PATH"` (`tls` and `wss`
//!   with a `connect_tls` table): each client gets a connection of its own to the upstream. With
//!   `tcp` on one gateway and `ws` on the other this is the virtual private connection.
//!
//! WebSocket listeners (`ws://`, `wss://`) on the same address share one listening socket and are
//! told apart by request path, so they need distinct paths and (for `wss://`) the same `tls`
//! table and `handshake_timeout`.

//!
//! Layout, one concern per module:
//! - `raw`: the serde types ([`RawConfig`]), `deny_unknown_fields`, every field an `Option`;
//! - `defaults`: every `DEFAULT_*`, `MIN_*` and `MAX_*` constant, each with its reason;
//! - `model`: the validated types ([`Config`]); the data plane's own types where the data plane
//!   takes a value as is (`RelayConfig`, `RingSetup`, `PublicWs`, `UpstreamWs`);
//! - `diagnostics`: [`ConfigError`] (file, key, reason), service labels, locating toml errors;
//! - `uri`: schemes, listen addresses, destinations, WebSocket paths, names;
//! - `units`: durations and byte sizes with their ranges;
//! - `tls_files`: `tls` and `connect_tls` tables, read into rustls configurations;
//! - `sections`: `[gateway]` and `[reverse]`;
//! - `services`: one `[[service]]`, its role and the keys of that role;
//! - `endpoints`: a service's public listener and its upstream;
//! - `websocket`: `origins` and `protocols`;
//! - `rendezvous`: `[rendezvous]`, `[host]` and `[[stream]]` (token rendezvous), key files;
//! - `listeners`: checks across the file (bind names, overlapping and shared listeners, what
//!   `[rendezvous]` and `[host]` may be combined with).
//!
//! Where the keys of coming features go (a key is a field of the raw type, a default in
//! `defaults`, and a check in one module; [`Config`] grows the field):
//! - `admission` (per forwarding service: `"verified"`): `RawService`, read in
//!   `services::validate_forward`;
//! - `allow` / `deny` (CIDR lists per public listener): `RawService`, parsed in `uri` (CIDRs),
//!   read in `endpoints::validate_listener`;
//! - `proxy_protocol` (sent to back-ends, received from balancers): `RawService`, read in
//!   `endpoints::validate_listener` (received) and `services::validate_internal` /
//!   `endpoints::validate_upstream` (sent);
//! - `keepalive` (reverse legs, both ends): `RawService` and `RawReverse`, a duration in `units`,
//!   read in `services::validate_internal` and `sections::validate_reverse`;
//! - `drain_timeout` (SIGTERM): `RawGateway`, read in `sections::validate_gateway`;

mod admission;
mod defaults;
mod diagnostics;
mod endpoints;
mod listeners;
mod model;
mod raw;
mod rendezvous;
mod sections;
mod services;
mod tls_files;
mod units;
mod uri;
mod websocket;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use crate::tls::{Expiry, TlsClient, TlsServer};
pub use admission::kernel_verdicts_permitted;
pub use defaults::*;
pub use diagnostics::{ConfigError, Reason};
pub use endpoints::ResolveError;
pub use model::*;
pub use raw::{
    RawConfig, RawDuration, RawGateway, RawHost, RawRendezvous, RawReverse, RawService, RawSize,
    RawStream, RawStrings, RawTls,
};
pub use sallyport_dataplane::RelayConfig;
pub use sallyport_dataplane::RelayMode;
pub use sallyport_dataplane::RingSetup;
pub use units::UnitError;
pub use uri::UriError;

use diagnostics::{
    key_path_at, labels_from_table, line_column, schema_hint, service_labels, Check,
};
use listeners::{check_rendezvous_roles, cross_check};
use rendezvous::{validate_host, validate_rendezvous};
use sections::{validate_gateway, validate_reverse};
use services::validate_service;

impl Config {
    /// Reads, parses and validates `path`. An unreadable file is reported with key `(file)`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".to_string(),
            reason: Reason::Read(e),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        // Untyped first: separates syntax errors from schema errors, and gives the service names
        // used to label keys when the typed pass fails.
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: e
                .span()
                .map_or_else(|| "(toml)".to_string(), |s| line_column(text, s.start)),
            reason: Reason::Toml {
                message: e.message().trim().to_string(),
                error: Box::new(e),
            },
        })?;
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: e.span().map_or_else(
                || "(toml)".to_string(),
                |s| key_path_at(text, s.start, &labels_from_table(&table)),
            ),
            reason: Reason::Toml {
                message: schema_hint(e.message().trim()),
                error: Box::new(e),
            },
        })?;
        raw.path = path.to_path_buf();
        Config::try_from(raw)
    }

    /// One line per service, "name: accept -> connect" (used by `sallyport check` and the
    /// start-up banner), followed by " (tls)" when the service's reverse leg (DMZ to internal
    /// gateway) runs over TLS, or, for a forwarding service whose upstream is a host name, by
    /// the address it resolved to: " (resolved to 10.0.0.5:80)".
    pub fn describe(&self) -> Vec<String> {
        self.services
            .iter()
            .map(|s| {
                let suffix = match &s.role {
                    ServiceRole::Dmz(_)
                        if self.reverse.as_ref().is_some_and(|r| r.tls.is_some()) =>
                    {
                        " (tls)".to_string()
                    }
                    ServiceRole::Internal(i) if i.tls.is_some() => " (tls)".to_string(),
                    ServiceRole::Forward(f)
                        if f.upstream.target.host.parse::<IpAddr>().is_err() =>
                    {
                        format!(" (resolved to {})", f.upstream.addr)
                    }
                    _ => String::new(),
                };
                format!("{}: {} -> {}{suffix}", s.name, s.accept, s.connect)
            })
            .chain(self.rendezvous.iter().map(|r| {
                format!(
                    "rendezvous: {}TOKEN <-> reverse BIND TOKEN (link_timeout {:?})",
                    r.accept, r.link_timeout
                )
            }))
            .chain(self.host.iter().flat_map(|h| {
                let subject = h.subject();
                h.streams.iter().map(move |s| {
                    format!(
                        "stream {}: {} on command ({}) -> {}",
                        s.name, s.connect, subject, h.dmz
                    )
                })
            }))
            .collect()
    }

    /// Every TLS table of the file by its key (`reverse.tls`, `service[web].connect_tls`, …)
    /// with the earliest expiry among the certificates it loaded.
    pub fn certificate_expiries(&self) -> Vec<(String, Expiry)> {
        fn server(t: &Option<TlsServer>) -> Option<&Expiry> {
            t.as_ref()?.expiry.as_ref()
        }
        fn client(t: &Option<TlsClient>) -> Option<&Expiry> {
            t.as_ref()?.expiry.as_ref()
        }
        let mut tables: Vec<(String, Option<&Expiry>)> = Vec::new();
        if let Some(r) = &self.reverse {
            tables.push(("reverse.tls".into(), server(&r.tls)));
        }
        for s in &self.services {
            let key = |field: &str| format!("service[{}].{field}", s.name);
            match &s.role {
                ServiceRole::Dmz(d) => tables.push((key("tls"), server(&d.tls))),
                ServiceRole::Forward(f) => {
                    tables.push((key("tls"), server(&f.tls)));
                    tables.push((key("connect_tls"), client(&f.upstream.tls)));
                }
                ServiceRole::Internal(i) => {
                    tables.push((key("tls"), client(&i.tls)));
                    tables.push((key("connect_tls"), client(&i.target_tls)));
                }
            }
        }
        if let Some(r) = &self.rendezvous {
            tables.push(("rendezvous.tls".into(), server(&r.tls)));
        }
        if let Some(h) = &self.host {
            tables.push(("host.tls".into(), client(&h.tls)));
        }
        tables
            .into_iter()
            .filter_map(|(key, expiry)| Some((key, expiry?.clone())))
            .collect()
    }

    /// One warning per TLS table with a certificate that expires within `within` of `now`:
    /// `reverse.tls: certificate "certs/dmz.pem" expires in 3 days (2026-12-07T10:00:00Z)`.
    pub fn expiry_warnings(&self, now: SystemTime, within: Duration) -> Vec<String> {
        self.certificate_expiries()
            .into_iter()
            .filter_map(|(key, expiry)| {
                let left = expiry.soon(now, within)?;
                Some(format!(
                    "{}: {key}: certificate {} expires in {} ({}); renew it before then",
                    self.path.display(),
                    crate::tls::text::quoted(&expiry.path),
                    crate::tls::validity::days(left),
                    humantime::format_rfc3339_seconds(expiry.not_after),
                ))
            })
            .collect()
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let check = Check {
            file: raw.path.clone(),
        };
        let gateway = validate_gateway(&check, raw.gateway.unwrap_or_default())?;
        let reverse = raw
            .reverse
            .map(|r| validate_reverse(&check, r))
            .transpose()?;

        let rendezvous = raw
            .rendezvous
            .map(|r| validate_rendezvous(&check, r))
            .transpose()?;
        let raw_streams = raw.stream.unwrap_or_default();
        let host = match raw.host {
            Some(h) => Some(validate_host(&check, h, raw_streams)?),
            None if !raw_streams.is_empty() => {
                return Err(check.fail(
                    "stream",
                    "[[stream]] tables belong to a [host]; add [host] name = \"h1\" dmz = \"reverse://HOST:PORT\" key = \"FILE\"",
                ))
            }
            None => None,
        };
        let raw_services = raw.service.unwrap_or_default();
        if raw_services.is_empty() && rendezvous.is_none() && host.is_none() {
            return Err(check.fail(
                "service",
                "no [[service]] tables; at least one service (or a [rendezvous] or [host]) is required",
            ));
        }
        let prefixes: Vec<String> = service_labels(raw_services.iter().map(|s| s.name.as_deref()))
            .into_iter()
            .map(|label| format!("service[{label}]"))
            .collect();
        let mut services: Vec<ServiceConfig> = Vec::with_capacity(raw_services.len());
        for (raw_service, prefix) in raw_services.into_iter().zip(&prefixes) {
            let service = validate_service(&check, prefix, raw_service)?;
            if let Some(first) = services.iter().position(|s| s.name == service.name) {
                return Err(check.fail(
                    format!("{prefix}.name"),
                    format!(
                        "duplicate service name \"{}\"; already used by {}",
                        service.name, prefixes[first]
                    ),
                ));
            }
            services.push(service);
        }

        cross_check(
            &check,
            &gateway,
            reverse.as_ref(),
            &services,
            &prefixes,
            rendezvous.as_ref(),
        )?;
        check_rendezvous_roles(
            &check,
            reverse.as_ref(),
            &services,
            rendezvous.as_ref(),
            host.as_ref(),
        )?;
        Ok(Config {
            path: raw.path,
            gateway,
            reverse,
            services,
            rendezvous,
            host,
        })
    }
}
