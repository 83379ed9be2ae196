//! TLS files: the `tls` and `connect_tls` tables of the file, checked for the keys that belong
//! where they are (server: `cert`, `key`, `client_ca`, `alpn` on public listeners; client: `ca`,
//! `cert`, `key`, `server_name`), their paths resolved against the config file's directory, and
//! the files read and built into rustls configurations by [`crate::tls`]. A file that cannot be
//! used is a [`ConfigError`] naming the key of that file (`reverse.tls.cert`).
//!
//! It does not decide whether a service has TLS at all (its URI scheme does, in `services`).

use std::path::PathBuf;

use rustls::pki_types::ServerName;

use super::defaults::MAX_ALPN_LEN;
use super::diagnostics::{Check, ConfigError};
use super::model::HostPort;
use super::raw::RawTls;
use super::uri::Scheme;
use crate::tls::{ServerRole as TlsServerRole, TlsClient, TlsServer};

/// A required path key of a `tls` table: present and not empty.
pub(super) fn tls_path(
    check: &Check,
    prefix: &str,
    field: &str,
    value: Option<String>,
    example: &str,
) -> Result<PathBuf, ConfigError> {
    match value.as_deref() {
        None => Err(check.fail(
            format!("{prefix}.{field}"),
            format!("missing; e.g. {prefix} = {{ {example} }}"),
        )),
        Some("") => Err(check.fail(format!("{prefix}.{field}"), "must not be empty")),
        Some(path) => Ok(check.path(path)),
    }
}

/// Rejects keys of a `tls` table that do not belong where it is.
pub(super) fn tls_allowed(
    check: &Check,
    prefix: &str,
    raw: &RawTls,
    allowed: &[&str],
    what: &str,
) -> Result<(), ConfigError> {
    if let Some(field) = raw.present().into_iter().find(|f| !allowed.contains(f)) {
        return Err(check.fail(
            format!("{prefix}.{field}"),
            format!(
                "not a setting of {what} (allowed: {}); remove the key",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `[reverse] tls` or a `tls://` listener's `tls`: reads the files and builds the rustls server.
pub(super) fn validate_tls_server(
    check: &Check,
    prefix: &str,
    raw: RawTls,
    role: TlsServerRole,
) -> Result<TlsServer, ConfigError> {
    let (allowed, what): (&[&str], &str) = match role {
        TlsServerRole::Reverse => (
            &["cert", "key", "client_ca"],
            "the reverse endpoint's TLS (ALPN applies to tls:// public listeners only)",
        ),
        TlsServerRole::Public => (
            &["cert", "key", "client_ca", "alpn"],
            "a tls:// listener (ca and server_name are client settings of internal services)",
        ),
    };
    tls_allowed(check, prefix, &raw, allowed, what)?;
    let example = "cert = \"dmz.pem\", key = \"dmz.key\"";
    let cert = tls_path(check, prefix, "cert", raw.cert, example)?;
    let key = tls_path(check, prefix, "key", raw.key, example)?;
    let client_ca = match raw.client_ca {
        None => None,
        Some(ca) => Some(tls_path(check, prefix, "client_ca", Some(ca), example)?),
    };
    let alpn = raw.alpn.unwrap_or_default();
    for protocol in &alpn {
        if !(1..=MAX_ALPN_LEN).contains(&protocol.len()) {
            return Err(check.fail(
                format!("{prefix}.alpn"),
                format!(
                    "protocol names are 1 to {MAX_ALPN_LEN} bytes (RFC 7301), got {:?}",
                    protocol
                ),
            ));
        }
    }
    TlsServer::load(&cert, &key, client_ca.as_deref(), &alpn, role)
        .map_err(|e| check.fail(format!("{prefix}.{}", e.field.key()), e))
}

/// An internal service's `tls` (reverse leg) or `connect_tls` (back-end): reads the files and
/// builds the rustls client. `server_name` defaults to `default_host`.
pub(super) fn validate_tls_client(
    check: &Check,
    prefix: &str,
    raw: RawTls,
    default_host: &str,
    what: &str,
) -> Result<TlsClient, ConfigError> {
    tls_allowed(
        check,
        prefix,
        &raw,
        &["ca", "cert", "key", "server_name"],
        what,
    )?;
    let example = "ca = \"ca.pem\", cert = \"internal.pem\", key = \"internal.key\"";
    let ca = tls_path(check, prefix, "ca", raw.ca, example)?;
    let identity = match check.both_or_neither(
        prefix,
        ("cert", raw.cert),
        ("key", raw.key),
        [
            "missing; cert is set, so the key of that certificate is needed too (set both or neither)",
            "missing; key is set, so its certificate is needed too (set both or neither)",
        ],
    )? {
        None => None,
        Some((cert, key)) => Some((
            tls_path(check, prefix, "cert", Some(cert), example)?,
            tls_path(check, prefix, "key", Some(key), example)?,
        )),
    };
    let name = raw.server_name.unwrap_or_else(|| default_host.to_string());
    let server_name = ServerName::try_from(name.clone())
        .ok()
        .filter(|_| !name.is_empty() && name.is_ascii())
        .ok_or_else(|| {
            check.fail(
                format!("{prefix}.server_name"),
                format!("\"{name}\" is not a DNS name or IP address"),
            )
        })?;
    TlsClient::load(
        &ca,
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        server_name,
    )
    .map_err(|e| check.fail(format!("{prefix}.{}", e.field.key()), e))
}

/// URI schemes this build serves.
/// `connect_tls`: required with `connect = "tls://…"` or `"wss://…"`, refused otherwise.
pub(super) fn validate_connect_tls(
    check: &Check,
    prefix: &str,
    scheme: Scheme,
    connect: &str,
    raw: Option<RawTls>,
    target: &HostPort,
    hint: &str,
) -> Result<Option<TlsClient>, ConfigError> {
    let key = format!("{prefix}.connect_tls");
    match (scheme.is_tls(), raw) {
        (true, Some(t)) => Ok(Some(validate_tls_client(
            check,
            &key,
            t,
            &target.host,
            "connect_tls (TLS to the back-end or upstream)",
        )?)),
        (true, None) => Err(check.fail(
            key,
            format!(
                "missing; connect = \"{connect}\" needs the back-end's CA, e.g. \
                 connect_tls = {{ ca = \"backend-ca.pem\" }} (server_name defaults to \"{}\")",
                target.host
            ),
        )),
        (false, Some(_)) => Err(check.fail(
            key,
            format!(
                "connect_tls applies only to connect = \"tls://HOST:PORT\" or \"wss://HOST:PORT/PATH\"; \
                 this connect is {}://; use tls:// (or wss://) or remove connect_tls{hint}",
                scheme.as_str()
            ),
        )),
        (false, None) => Ok(None),
    }
}
