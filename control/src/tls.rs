//! TLS on the control side: certificates and keys read from PEM files into rustls
//! configurations (at start-up, so `sallyport check` catches a bad file), failure reasons an
//! operator can act on, and the development certificates of `sallyport certs` (rcgen).
//!
//! What it does:
//! - [`TlsServer::load`] builds the `rustls::ServerConfig` of the DMZ's reverse endpoint
//!   (`[reverse] tls`) or of a `tls://` public listener, with client certificates required when
//!   `client_ca` is set; [`TlsClient::load`] builds the `rustls::ClientConfig` of an internal
//!   gateway's reverse leg (`tls`) or of its back-end (`connect_tls`). TLS 1.3 and 1.2, the
//!   aws-lc-rs provider's default cipher suites.
//! - [`reason`] / [`io_reason`] turn a rustls error into a short sentence for the log
//!   ("certificate signed by an unknown CA").
//! - [`DevCa`], [`dev_certs`], [`write_dev_certs`]: a development CA with a DMZ server and an
//!   internal client certificate.
//!
//! What it does not do: handshakes (the data plane's `tls` module, driven by `tls_stream` in
//! `dmz`/`internal` and by the workers for public listeners and back-ends), reloading
//! certificates, revocation lists. Key bytes are never formatted: `Debug` shows file paths
//! only.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use sallyport_dataplane::tls::Reloadable;

/// The crypto provider of every configuration: aws-lc-rs (rustls' default), chosen explicitly
/// so a second provider compiled into the workspace can never make the choice ambiguous.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

// ---------------------------------------------------------------------------------------------
// Loaded settings
// ---------------------------------------------------------------------------------------------

/// The server side of a TLS connection: the DMZ's reverse endpoint or a `tls://` listener.
/// Paths are resolved (relative ones against the config file's directory).
#[derive(Clone)]
pub struct TlsServer {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
    /// ALPN protocols offered, in order of preference (public listeners only).
    pub alpn: Vec<String>,
    /// The built configuration; `reload::certificates` replaces what it holds.
    pub config: Arc<Reloadable<ServerConfig>>,
}

impl TlsServer {
    /// Mutual TLS: a client certificate is required.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

/// Compares the settings, not the built configuration.
impl PartialEq for TlsServer {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert
            && self.key == other.key
            && self.client_ca == other.client_ca
            && self.alpn == other.alpn
    }
}

impl Eq for TlsServer {}

/// The client side of a TLS connection: an internal gateway's reverse leg or its back-end.
#[derive(Clone)]
pub struct TlsClient {
    /// CA certificates the server's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain presented to the server, if any.
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name the server's certificate must be valid for (DNS name or IP address).
    pub server_name: ServerName<'static>,
    /// The built configuration; `reload::certificates` replaces what it holds.
    pub config: Arc<Reloadable<ClientConfig>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("server_name", &self.server_name.to_str())
            .finish_non_exhaustive()
    }
}

/// Compares the settings, not the built configuration.
impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
            && self.cert == other.cert
            && self.key == other.key
            && self.server_name == other.server_name
    }
}

impl Eq for TlsClient {}

/// What a server configuration serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// A `tls://` public listener: session resumption on (clients come back).
    Public,
    /// The DMZ's reverse endpoint: no session tickets. A prepared connection is parked right
    /// after the handshake and must stay silent until it is paired; a ticket would be a record
    /// nobody asked for, and internal gateways make few, long-lived connections anyway.
    Reverse,
}

/// The setting of a `tls` table a load error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    Ca,
    Cert,
    ClientCa,
    Key,
}

impl TlsField {
    /// The key's name in the config file.
    pub fn key(self) -> &'static str {
        match self {
            TlsField::Ca => "ca",
            TlsField::Cert => "cert",
            TlsField::ClientCa => "client_ca",
            TlsField::Key => "key",
        }
    }
}

/// A certificate, key or CA file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct LoadError {
    pub field: TlsField,
    pub reason: String,
}

fn load_error(field: TlsField, reason: impl Into<String>) -> LoadError {
    LoadError {
        field,
        reason: reason.into(),
    }
}

impl TlsServer {
    /// Reads `cert`, `key` and `client_ca` and builds the server configuration. Fails when a
    /// file is missing, unreadable or not PEM, or when the key does not match the certificate.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        alpn: &[String],
        role: ServerRole,
    ) -> Result<TlsServer, LoadError> {
        let chain = load_certs(cert, TlsField::Cert)?;
        let private_key = load_key(key)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| load_error(TlsField::Cert, e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let roots = load_roots(ca, TlsField::ClientCa)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| {
                            load_error(TlsField::ClientCa, format!("{}: {e}", quoted(ca)))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|e| identity_error(&e, cert, key))?;
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // The kernel-TLS seam: an established session can give up its traffic keys.
        config.enable_secret_extraction = true;
        if role == ServerRole::Reverse {
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(NoServerSessionStorage {});
        }
        Ok(TlsServer {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
            alpn: alpn.to_vec(),
            config: Reloadable::new(Arc::new(config)),
        })
    }
}

impl TlsClient {
    /// Reads `ca` and the optional client certificate and key, and builds the client
    /// configuration that verifies servers as `server_name`.
    pub fn load(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: ServerName<'static>,
    ) -> Result<TlsClient, LoadError> {
        let roots = load_roots(ca, TlsField::Ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| load_error(TlsField::Ca, e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain = load_certs(cert, TlsField::Cert)?;
                let private_key = load_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| identity_error(&e, cert, key))?
            }
            None => builder.with_no_client_auth(),
        };
        // The kernel-TLS seam: an established session can give up its traffic keys.
        config.enable_secret_extraction = true;
        Ok(TlsClient {
            ca: ca.to_path_buf(),
            cert: identity.map(|(c, _)| c.to_path_buf()),
            key: identity.map(|(_, k)| k.to_path_buf()),
            server_name,
            config: Reloadable::new(Arc::new(config)),
        })
    }
}

/// `"path"`, for messages.
fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// An I/O error without the " (os error N)" suffix: `No such file or directory`.
fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn read_file(path: &Path, field: TlsField) -> Result<Vec<u8>, LoadError> {
    fs::read(path).map_err(|e| {
        load_error(
            field,
            format!("cannot read {}: {}", quoted(path), io_text(&e)),
        )
    })
}

fn pem_error(path: &Path, e: &pem::Error) -> String {
    format!("{} is not valid PEM: {e}", quoted(path))
}

/// Every `CERTIFICATE` block of `path`, in file order.
fn load_certs(path: &Path, field: TlsField) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read_file(path, field)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(field, pem_error(path, &e)))?;
    if certs.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&bytes).is_ok() {
            " (it holds a private key: is this the key file?)"
        } else {
            ""
        };
        return Err(load_error(
            field,
            format!(
                "no certificate (-----BEGIN CERTIFICATE-----) found in {}{hint}",
                quoted(path)
            ),
        ));
    }
    Ok(certs)
}

/// The first private key of `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let bytes = read_file(path, TlsField::Key)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let hint = if CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok()) {
                " (it holds a certificate: is this the certificate file?)"
            } else {
                ""
            };
            Err(load_error(
                TlsField::Key,
                format!(
                    "no private key (PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\") found in {}{hint}",
                    quoted(path)
                ),
            ))
        }
        Err(e) => Err(load_error(TlsField::Key, pem_error(path, &e))),
    }
}

/// The CA certificates of `path` as trust anchors.
fn load_roots(path: &Path, field: TlsField) -> Result<RootCertStore, LoadError> {
    let certs = load_certs(path, field)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            load_error(
                field,
                format!(
                    "certificate {} in {} is not a usable CA certificate: {}",
                    i + 1,
                    quoted(path),
                    reason(&e)
                ),
            )
        })?;
    }
    Ok(roots)
}

/// A certificate/key pair rustls refused: blame the file that is wrong.
fn identity_error(e: &rustls::Error, cert: &Path, key: &Path) -> LoadError {
    match e {
        rustls::Error::InconsistentKeys(_) => load_error(
            TlsField::Key,
            format!(
                "the private key in {} does not match the certificate in {}",
                quoted(key),
                quoted(cert)
            ),
        ),
        rustls::Error::InvalidCertificate(_) => load_error(
            TlsField::Cert,
            format!(
                "the first certificate in {} cannot be used: {}",
                quoted(cert),
                reason(e)
            ),
        ),
        other => load_error(
            TlsField::Key,
            format!("the private key in {} cannot be used: {other}", quoted(key)),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Failure reasons
// ---------------------------------------------------------------------------------------------

/// The rustls error inside an I/O error from a TLS stream, if there is one.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Why a handshake or TLS read failed, for the log.
pub fn io_reason(e: &io::Error) -> String {
    if let Some(inner) = rustls_error(e) {
        return reason(inner);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            "the peer closed the connection during the TLS handshake".to_string()
        }
        _ => io_text(e),
    }
}

/// A rustls error as a sentence an operator can act on.
pub fn reason(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => "client presented no certificate".to_string(),
        E::InvalidCertificate(c) => certificate_reason(c),
        E::AlertReceived(alert) => alert_reason(*alert),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the peer does not speak TLS, or the handshake was corrupted ({e})")
        }
        E::PeerIncompatible(p) => format!("no common TLS parameters with the peer ({p:?})"),
        E::NoApplicationProtocol => "no ALPN protocol in common with the peer".to_string(),
        other => other.to_string(),
    }
}

fn certificate_reason(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => "certificate signed by an unknown CA".to_string(),
        C::Expired | C::ExpiredContext { .. } => "certificate expired".to_string(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "certificate not valid yet (check the clocks)".to_string()
        }
        C::NotValidForName => "server name mismatch".to_string(),
        C::NotValidForNameContext { expected, presented } => format!(
            "server name mismatch: expected {:?}, the certificate is for {}",
            expected.to_str(),
            if presented.is_empty() {
                "no name".to_string()
            } else {
                presented.join(", ")
            }
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate not valid for this use (extended key usage: a server certificate used by a client, or the reverse)"
                .to_string()
        }
        C::Revoked => "certificate revoked".to_string(),
        C::BadSignature => {
            "certificate signature does not verify (signed by another CA of the same name?)"
                .to_string()
        }
        C::BadEncoding => "certificate is not valid X.509 (bad encoding)".to_string(),
        other => format!("invalid certificate: {other:?}"),
    }
}

fn alert_reason(alert: AlertDescription) -> String {
    use AlertDescription as A;
    let what = match alert {
        A::UnknownCA => "the peer does not trust our certificate's CA",
        A::BadCertificate => "the peer rejected our certificate",
        A::CertificateExpired => "the peer says our certificate expired",
        A::CertificateRevoked => "the peer says our certificate is revoked",
        A::CertificateUnknown => "the peer rejected our certificate",
        A::UnsupportedCertificate => "the peer does not support our certificate",
        A::CertificateRequired => "the peer requires a client certificate and we sent none",
        A::HandshakeFailure => "the peer refused the handshake",
        A::ProtocolVersion => "no TLS version in common with the peer",
        A::NoApplicationProtocol => "no ALPN protocol in common with the peer",
        A::DecryptError => "the peer could not verify our certificate or handshake signature",
        _ => "the peer ended the handshake",
    };
    format!("{what} (alert {alert:?})")
}

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

/// What a leaf certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// TLS client authentication (an internal gateway).
    Client,
    /// TLS server authentication (the DMZ).
    Server,
}

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

/// Days since 1970-01-01 (UTC) now.
fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

/// Year, month, day of the day `days` after 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// Sets `params` valid from midnight UTC `from` days after today until midnight `until` days
/// after today (negative: in the past).
fn set_validity(params: &mut rcgen::CertificateParams, from: i64, until: i64) {
    let midnight = |offset: i64| {
        let (y, m, d) = civil_from_days(today() + offset);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = midnight(from);
    params.not_after = midnight(until);
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
        let tag: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("sallyport development CA {tag}"),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, -1, i64::from(days));
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
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match role {
            CertRole::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            CertRole::Server => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, from_day, until_day);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sallyport-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
    }

    #[test]
    fn dev_certs_load_as_server_and_client() {
        let dir = temp_dir("certs");
        let certs = dev_certs("dmz.example.net", 30).unwrap();
        write_dev_certs(&dir, &certs, false).unwrap();
        for name in [CA_KEY, DMZ_KEY, INTERNAL_KEY] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert_eq!(
            fs::metadata(dir.join(CA_CERT))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        let server = TlsServer::load(
            &dir.join(DMZ_CERT),
            &dir.join(DMZ_KEY),
            Some(&dir.join(CA_CERT)),
            &[],
            ServerRole::Reverse,
        )
        .unwrap();
        assert!(server.mutual());
        assert_eq!(server.config.current().send_tls13_tickets, 0);
        let client = TlsClient::load(
            &dir.join(CA_CERT),
            Some((&dir.join(INTERNAL_CERT), &dir.join(INTERNAL_KEY))),
            ServerName::try_from("dmz.example.net").unwrap(),
        )
        .unwrap();
        assert!(client
            .config
            .current()
            .client_auth_cert_resolver
            .has_certs());

        // Refuses to overwrite, names the files; --force replaces them.
        let err = write_dev_certs(&dir, &certs, false).unwrap_err();
        assert!(
            matches!(&err, CertsError::Exists(p) if p.len() == 6),
            "{err}"
        );
        assert!(err.to_string().contains("--force"), "{err}");
        fs::set_permissions(dir.join(DMZ_KEY), fs::Permissions::from_mode(0o644)).unwrap();
        write_dev_certs(&dir, &dev_certs("localhost", 1).unwrap(), true).unwrap();
        let mode = fs::metadata(dir.join(DMZ_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_cert_arguments_are_checked() {
        assert!(matches!(
            dev_certs("bad name", 1),
            Err(CertsError::Usage(_))
        ));
        assert!(matches!(dev_certs("", 1), Err(CertsError::Usage(_))));
        assert!(matches!(
            dev_certs("localhost", 0),
            Err(CertsError::Usage(_))
        ));
        assert!(matches!(
            dev_certs("localhost", MAX_CERT_DAYS + 1),
            Err(CertsError::Usage(_))
        ));
        check_dmz_name("10.0.0.1").unwrap();
        check_dmz_name("::1").unwrap();
        check_dmz_name("dmz-1.example.net").unwrap();
    }

    #[test]
    fn load_errors_name_the_field_and_file() {
        let dir = temp_dir("tls-load");
        let certs = dev_certs("localhost", 5).unwrap();
        write_dev_certs(&dir, &certs, false).unwrap();
        let missing = dir.join("nope.pem");
        let err = TlsServer::load(&missing, &dir.join(DMZ_KEY), None, &[], ServerRole::Public)
            .unwrap_err();
        assert_eq!(err.field, TlsField::Cert);
        assert_eq!(
            err.reason,
            format!(
                "cannot read \"{}\": No such file or directory",
                missing.display()
            )
        );

        let garbage = dir.join("garbage.pem");
        fs::write(&garbage, "hello, I am not PEM\n").unwrap();
        let err = TlsServer::load(&garbage, &dir.join(DMZ_KEY), None, &[], ServerRole::Public)
            .unwrap_err();
        assert_eq!(err.field, TlsField::Cert);
        assert!(err.reason.contains("no certificate"), "{}", err.reason);
        let err = TlsServer::load(&dir.join(DMZ_CERT), &garbage, None, &[], ServerRole::Public)
            .unwrap_err();
        assert_eq!(err.field, TlsField::Key);
        assert!(err.reason.contains("no private key"), "{}", err.reason);
        // Swapped files get a hint.
        let err = TlsServer::load(
            &dir.join(DMZ_KEY),
            &dir.join(DMZ_CERT),
            None,
            &[],
            ServerRole::Public,
        )
        .unwrap_err();
        assert!(
            err.reason.contains("is this the key file?"),
            "{}",
            err.reason
        );

        let err = TlsServer::load(
            &dir.join(DMZ_CERT),
            &dir.join(INTERNAL_KEY),
            None,
            &[],
            ServerRole::Public,
        )
        .unwrap_err();
        assert_eq!(err.field, TlsField::Key);
        assert!(err.reason.contains("does not match"), "{}", err.reason);

        let err = TlsClient::load(
            &dir.join(CA_CERT),
            Some((&dir.join(INTERNAL_CERT), &dir.join(DMZ_KEY))),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.field, TlsField::Key);
        assert!(err.reason.contains("does not match"), "{}", err.reason);

        let err = TlsServer::load(
            &dir.join(DMZ_CERT),
            &dir.join(DMZ_KEY),
            Some(&garbage),
            &[],
            ServerRole::Reverse,
        )
        .unwrap_err();
        assert_eq!(err.field, TlsField::ClientCa);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_never_shows_key_material() {
        let dir = temp_dir("tls-debug");
        let certs = dev_certs("localhost", 5).unwrap();
        write_dev_certs(&dir, &certs, false).unwrap();
        let server = TlsServer::load(
            &dir.join(DMZ_CERT),
            &dir.join(DMZ_KEY),
            None,
            &["h2".to_string()],
            ServerRole::Public,
        )
        .unwrap();
        let client = TlsClient::load(
            &dir.join(CA_CERT),
            Some((&dir.join(INTERNAL_CERT), &dir.join(INTERNAL_KEY))),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let body = |pem: &str| pem.lines().nth(1).unwrap().to_string();
        for debug in [
            format!("{server:?}"),
            format!("{client:?}"),
            format!("{:?}", certs.dmz),
            format!("{certs:?}"),
        ] {
            for key in [
                &certs.dmz.key_pem,
                &certs.internal.key_pem,
                &certs.ca.key_pem,
            ] {
                assert!(!debug.contains(&body(key)), "{debug}");
            }
            assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        }
        assert!(format!("{server:?}").contains("dmz.key"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_lines_quote_paths() {
        let text = config_lines(Path::new("/etc/sp certs"), "dmz.example.net");
        assert!(text.contains("cert = \"/etc/sp certs/dmz.pem\""), "{text}");
        assert!(text.contains("server_name = \"dmz.example.net\""), "{text}");
        assert!(
            text.contains("reverse://dmz.example.net:PORT/NAME"),
            "{text}"
        );
    }
}
