//! Development certificates for `sallyport certs` and the tests: a CA (rcgen) that issues a
//! DMZ server certificate and an internal gateway client certificate, written as PEM files
//! (keys mode 0600), and the config lines that use them. The certificates' parameters come from
//! `sallyport_kit::certs`, the one definition the tests' certificates use too.
//!
//! Not for production: nothing here is a real CA (no revocation, no key protection).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;
use sallyport_kit::certs::{ca_params, key_tag, leaf_params};

use super::text::{io_text, quoted};

// ---------------------------------------------------------------------------------------------
// Development certificates (`sallyport certs`, `sallyport demo --tls`)
// ---------------------------------------------------------------------------------------------

/// Default `sallyport certs --days`: 825 days, the longest lifetime browsers and common TLS
/// clients accept for a leaf certificate, so the files also work beyond sallyport.
pub const DEFAULT_CERT_DAYS: u32 = 825;
/// Longest `--days`: a development CA has no business outliving a century.
pub const MAX_CERT_DAYS: u32 = 36_500;
/// Default `sallyport certs --dmz-name`.
pub const DEFAULT_DMZ_NAME: &str = "localhost";

/// File names written by [`write_dev_certs`].
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const DMZ_CERT: &str = "dmz.pem";
pub const DMZ_KEY: &str = "dmz.key";
pub const INTERNAL_CERT: &str = "internal.pem";
pub const INTERNAL_KEY: &str = "internal.key";

/// What a leaf certificate is for (its extended key usage): `Client` for an internal gateway,
/// `Server` for the DMZ.
pub use sallyport_kit::certs::Role as CertRole;

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"MASKED")
            .finish()
    }
}

/// Why development certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Files that exist and would be overwritten without `--force` (exit 2).
    #[error("refusing to overwrite {}; pass --force to replace them", .0.iter().map(|p| quoted(p)).collect::<Vec<_>>().join(", "))]
    Exists(Vec<PathBuf>),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {}", quoted(.path), io_text(.source))]
    Io { path: PathBuf, source: io::Error },
    /// A bad argument (exit 2).
    #[error("{0}")]
    Usage(String),
}

/// A development certificate authority.
pub struct DevCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl DevCa {
    /// A self-signed CA valid from yesterday (clock skew) for `days` days. Its name carries a
    /// tag from its public key, so two development CAs never share a name (a certificate of
    /// the other one then fails as "unknown CA", not as a bad signature).
    pub fn new(days: u32) -> Result<DevCa, CertsError> {
        let key = rcgen::KeyPair::generate()?;
        let name = format!("sallyport development CA {}", key_tag(&key));
        let params = ca_params(&name, i64::from(days));
        let cert = params.self_signed(&key)?;
        Ok(DevCa { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key; write it to a 0600 file, never log it.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a leaf certificate for `names` (DNS names or IP addresses, as SANs), valid from
    /// `from_day` to `until_day` (days relative to today; negative values are in the past).
    pub fn issue(
        &self,
        role: CertRole,
        common_name: &str,
        names: &[String],
        from_day: i64,
        until_day: i64,
    ) -> Result<Issued, CertsError> {
        let key = rcgen::KeyPair::generate()?;
        let params = leaf_params(role, common_name, names.to_vec(), from_day, until_day)?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A development CA, a DMZ server certificate and an internal client certificate.
pub struct DevCerts {
    pub ca: Issued,
    pub dmz: Issued,
    pub internal: Issued,
}

impl fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCerts").finish_non_exhaustive()
    }
}

/// Checks a `--dmz-name`: a DNS name or an IP address, as TLS clients match it.
pub fn check_dmz_name(name: &str) -> Result<(), CertsError> {
    let valid = name.parse::<IpAddr>().is_ok()
        || (!name.is_empty()
            && name.is_ascii()
            && ServerName::try_from(name.to_string())
                .is_ok_and(|n| matches!(n, ServerName::DnsName(_))));
    if valid {
        Ok(())
    } else {
        Err(CertsError::Usage(format!(
            "--dmz-name {name:?} is not a DNS name or IP address"
        )))
    }
}

/// The names of the DMZ certificate for `dmz_name`: it, then `localhost`, `127.0.0.1` and
/// `::1` (each once).
pub fn dmz_names(dmz_name: &str) -> Vec<String> {
    let mut names = vec![dmz_name.to_string()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(extra)) {
            names.push(extra.to_string());
        }
    }
    names
}

/// Generates a CA, a DMZ certificate for `dmz_name` (plus `localhost`, `127.0.0.1`, `::1`)
/// and an internal gateway's client certificate, each valid for `days` days.
pub fn dev_certs(dmz_name: &str, days: u32) -> Result<DevCerts, CertsError> {
    check_dmz_name(dmz_name)?;
    if !(1..=MAX_CERT_DAYS).contains(&days) {
        return Err(CertsError::Usage(format!(
            "--days must be between 1 and {MAX_CERT_DAYS}, got {days}"
        )));
    }
    let ca = DevCa::new(days)?;
    let names = dmz_names(dmz_name);
    let until = i64::from(days);
    let dmz = ca.issue(
        CertRole::Server,
        &format!("sallyport DMZ {dmz_name}"),
        &names,
        -1,
        until,
    )?;
    let internal = ca.issue(
        CertRole::Client,
        "sallyport internal gateway",
        &["sallyport-internal".to_string()],
        -1,
        until,
    )?;
    Ok(DevCerts {
        ca: Issued {
            cert_pem: ca.cert_pem(),
            key_pem: ca.key_pem(),
        },
        dmz,
        internal,
    })
}

/// The six files of `certs` under `dir`: (name, contents, is a private key).
fn files(certs: &DevCerts) -> [(&'static str, &str, bool); 6] {
    [
        (CA_CERT, certs.ca.cert_pem.as_str(), false),
        (CA_KEY, certs.ca.key_pem.as_str(), true),
        (DMZ_CERT, certs.dmz.cert_pem.as_str(), false),
        (DMZ_KEY, certs.dmz.key_pem.as_str(), true),
        (INTERNAL_CERT, certs.internal.cert_pem.as_str(), false),
        (INTERNAL_KEY, certs.internal.key_pem.as_str(), true),
    ]
}

/// Writes `certs` into `dir` (created if missing): certificates mode 0644, keys mode 0600.
/// Without `force`, nothing is written when any of the six files exists.
pub fn write_dev_certs(dir: &Path, certs: &DevCerts, force: bool) -> Result<(), CertsError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let files = files(certs);
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .map(|(name, _, _)| dir.join(name))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        if !existing.is_empty() {
            return Err(CertsError::Exists(existing));
        }
    }
    for (name, contents, secret) in files {
        let path = dir.join(name);
        let mode = if secret { 0o600 } else { 0o644 };
        let mut options = fs::OpenOptions::new();
        options.write(true).mode(mode);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut file = options.open(&path).map_err(io_err(&path))?;
        // An existing file keeps its old mode when opened: set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&path))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
    }
    Ok(())
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// The config lines that use the files written into `dir` (ideally absolute).
pub fn config_lines(dir: &Path, dmz_name: &str) -> String {
    let p = |name: &str| toml_path(&dir.join(name));
    let server_name = toml::Value::String(dmz_name.to_string()).to_string();
    format!(
        "# dmz.toml: mutual TLS on the reverse endpoint (internal gateways must present internal.pem)\n\
         [reverse]\n\
         tls = {{ cert = {dmz_cert}, key = {dmz_key}, client_ca = {ca} }}\n\
         \n\
         # dmz.toml, optional: a tls:// public listener with the same certificate\n\
         # accept = \"tls://0.0.0.0:9443\"\n\
         # tls = {{ cert = {dmz_cert}, key = {dmz_key} }}\n\
         \n\
         # internal.toml: in each [[service]] with accept = \"reverse://{host}:PORT/NAME\"\n\
         tls = {{ ca = {ca}, cert = {internal_cert}, key = {internal_key}, server_name = {server_name} }}\n",
        dmz_cert = p(DMZ_CERT),
        dmz_key = p(DMZ_KEY),
        ca = p(CA_CERT),
        internal_cert = p(INTERNAL_CERT),
        internal_key = p(INTERNAL_KEY),
        host = if dmz_name.contains(':') {
            format!("[{dmz_name}]")
        } else {
            dmz_name.to_string()
        },
    )
}
