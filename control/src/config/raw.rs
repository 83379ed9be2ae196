//! The file as written ([`RawConfig`]): serde types with `deny_unknown_fields` and every field
//! an `Option`, so a missing key and a key set to its default are told apart, and unknown keys
//! are schema errors located by `diagnostics`. Sizes and durations stay text here
//! ([`RawSize`], [`RawDuration`]) and are parsed in `units`.
//!
//! A new key is a field here; nothing here checks values or applies defaults.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

use super::model::Secret;

/// The file as written: unknown keys rejected, nothing defaulted or checked yet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Set by [`Config::parse`]; not a key of the file.
    #[serde(skip)]
    pub path: PathBuf,
    pub gateway: Option<RawGateway>,
    pub reverse: Option<RawReverse>,
    pub service: Option<Vec<RawService>>,
    pub rendezvous: Option<RawRendezvous>,
    pub host: Option<RawHost>,
    pub stream: Option<Vec<RawStream>>,
}

/// `[rendezvous]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRendezvous {
    pub accept: Option<String>,
    /// A path to the key file, never the key itself.
    pub key: Option<String>,
    pub link_timeout: Option<RawDuration>,
    pub handshake_timeout: Option<RawDuration>,
    pub tls: Option<RawTls>,
    pub origins: Option<Vec<String>>,
    pub ws_ping: Option<RawDuration>,
    pub ws_max_message: Option<RawSize>,
}

/// `[host]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub name: Option<String>,
    pub dmz: Option<String>,
    pub tls: Option<RawTls>,
    /// A path to the key file, never the key itself.
    pub key: Option<String>,
    pub connect_timeout: Option<RawDuration>,
    /// TCP keepalive idle time on the reverse legs.
    pub keepalive: Option<RawDuration>,
    pub nats: Option<RawStrings>,
    pub nats_user: Option<String>,
    pub nats_password: Option<Secret>,
    pub nats_token: Option<Secret>,
    pub nats_tls: Option<RawTls>,
}

/// `[[stream]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: Option<String>,
    pub connect: Option<String>,
}

/// One string or a list of them (`nats = "nats://a:4222"` or `nats = ["nats://a", "nats://b"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawStrings {
    One(String),
    Many(Vec<String>),
}

impl RawStrings {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            RawStrings::One(s) => vec![s],
            RawStrings::Many(v) => v,
        }
    }
}

/// `[gateway]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub workers: Option<i64>,
    pub admin: Option<String>,
    pub relay: Option<String>,
    pub pipe_size: Option<RawSize>,
    pub buffer_size: Option<RawSize>,
    pub cores: Option<Vec<i64>>,
    pub nodelay: Option<bool>,
    pub socket_buffer: Option<RawSize>,
    pub ring_setup: Option<String>,
    pub busy_poll: Option<RawDuration>,
}

/// `[reverse]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReverse {
    pub listen: Option<String>,
    pub handshake_timeout: Option<RawDuration>,
    pub tls: Option<RawTls>,
    /// TCP keepalive idle time on the prepared connections internal gateways park here.
    pub keepalive: Option<RawDuration>,
    /// A non-loopback endpoint that authenticates nobody is meant (a private link).
    pub dangerous_unauthenticated_reverse: Option<bool>,
}

/// `[[service]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Option<String>,
    pub accept: Option<String>,
    pub connect: Option<String>,
    pub timeout: Option<RawDuration>,
    pub prepared: Option<i64>,
    pub retry_max: Option<RawDuration>,
    pub connect_timeout: Option<RawDuration>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// DMZ: the `tls://` listener's certificate; internal: the reverse leg to the DMZ.
    pub tls: Option<RawTls>,
    /// Internal, `connect = "tls://…"`: TLS to the back-end.
    pub connect_tls: Option<RawTls>,
    /// `accept = "tls://…"`, `"ws://…"`, `"wss://…"`: longest a public client's TLS handshake
    /// plus WebSocket upgrade may take.
    pub handshake_timeout: Option<RawDuration>,
    /// `ws://`, `wss://` (either side): keepalive interval.
    pub ws_ping: Option<RawDuration>,
    /// `ws://`, `wss://` (either side): largest message accepted.
    pub ws_max_message: Option<RawSize>,
    /// `accept = "ws://…"`, `"wss://…"`: allowed `Origin` values.
    pub origins: Option<Vec<String>>,
    /// `accept = "ws://…"`, `"wss://…"`: accepted subprotocols.
    pub protocols: Option<Vec<String>>,
    /// Public listeners: `"ready"`, `"always"` or `"verified"`.
    pub admission: Option<String>,
    /// Public listeners: sources taken (CIDR or address).
    pub allow: Option<Vec<String>>,
    /// Public listeners: sources refused (CIDR or address).
    pub deny: Option<Vec<String>>,
    /// Public listeners: `"reject"` or `"drop"`.
    pub deny_action: Option<String>,
    /// Public listeners: most concurrent connections per source.
    pub max_per_source: Option<i64>,
    /// Public listeners: most new connections per source, `"N/s"`.
    pub rate_per_source: Option<String>,
    /// Public listeners: sources whose connections begin with a PROXY header.
    pub accept_proxy: Option<Vec<String>>,
    /// Internal and forwarding services: `"v1"` or `"v2"`.
    pub proxy_protocol: Option<String>,
    /// Internal services: park only while the back-end accepts connections.
    pub backend_probe: Option<bool>,
    /// Internal services: TCP keepalive idle time on the reverse legs.
    pub keepalive: Option<RawDuration>,
    /// Public listeners: close a tunnel that moves no byte either way for this long.
    pub idle_timeout: Option<RawDuration>,
}

/// A `tls` or `connect_tls` table as written. Which keys are valid depends on where it is
/// (checked in validation): servers take `cert`, `key`, `client_ca` (and `alpn` on a public
/// listener); clients take `ca`, `cert`, `key`, `server_name`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    /// A path, never the key itself.
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub ca: Option<String>,
    pub server_name: Option<String>,
}

impl RawTls {
    /// The keys present, in a fixed order.
    pub(super) fn present(&self) -> Vec<&'static str> {
        [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("client_ca", self.client_ca.is_some()),
            ("alpn", self.alpn.is_some()),
            ("ca", self.ca.is_some()),
            ("server_name", self.server_name.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect()
    }
}

/// A byte size as written: an integer, or a string such as `"1MiB"`, `"256KiB"`, `"4096"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size in bytes: an integer or a string such as \"1MiB\" or \"256KiB\"",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration as written (`"100ms"`, `"2s"`); parsed with `humantime` in validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"100ms\" or \"2s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------
