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
//! - [`DevCa`], [`dev_certs`], [`write_dev_certs`] (in `certs`): a development CA with a DMZ
//!   server and an internal client certificate, for `sallyport certs`.
//!
//! What it does not do: handshakes (the data plane's `tls` module, driven by `tls_stream` in
//! `dmz`/`internal` and by the workers for public listeners and back-ends), reloading
//! certificates, revocation lists. Key bytes are never formatted: `Debug` shows file paths
//! only.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use sallyport_dataplane::tls::Reloadable;
use sallyport_dataplane::TargetTls;

mod certs;
pub(crate) mod text;
pub mod validity;
pub use certs::*;
use text::{io_text, quoted};
pub use validity::Expiry;

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
    /// The earliest expiry among `cert` and `client_ca` (when loaded).
    pub expiry: Option<Expiry>,
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
    /// The earliest expiry among `ca` and `cert`.
    pub expiry: Option<Expiry>,
}

impl TlsClient {
    /// The data plane's handle of this client: the built configuration and the name to verify.
    pub fn target(&self) -> TargetTls {
        TargetTls {
            config: Arc::clone(&self.config),
            server_name: self.server_name.clone(),
        }
    }
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

/// A certificate, key or CA file that cannot be used: the key it is named by, and why
/// ([`LoadReason`] holds the I/O, PEM or rustls error; its text says it, or, where the text
/// does not, [`source`](std::error::Error::source) gives it).
#[derive(Debug)]
pub struct LoadError {
    pub field: TlsField,
    pub reason: LoadReason,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reason.fmt(f)
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.reason)
    }
}

/// Why a certificate, key or CA file cannot be used, with the error that said so.
#[derive(Debug, thiserror::Error)]
pub enum LoadReason {
    /// Certificate `index` (1-based) of a CA file is not a trust anchor.
    #[error("certificate {index} in {} is not a usable CA certificate: {}", quoted(.path), reason(.error))]
    CaCertificate {
        index: usize,
        path: PathBuf,
        error: rustls::Error,
    },
    #[error("the first certificate in {} cannot be used: {}", quoted(.cert), reason(.error))]
    Certificate { cert: PathBuf, error: rustls::Error },
    /// The client CA file cannot verify client certificates.
    #[error("{}: {error}", quoted(.path))]
    ClientVerifier {
        path: PathBuf,
        error: rustls::server::VerifierBuilderError,
    },
    #[error("the private key in {} cannot be used: {error}", quoted(.key))]
    Key { key: PathBuf, error: rustls::Error },
    #[error("the private key in {} does not match the certificate in {}", quoted(.key), quoted(.cert))]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    /// `key_inside`: the file holds a private key instead (a hint that the files are swapped).
    #[error("no certificate (-----BEGIN CERTIFICATE-----) found in {}{}", quoted(.path), if *.key_inside { " (it holds a private key: is this the key file?)" } else { "" })]
    NoCertificate { path: PathBuf, key_inside: bool },
    /// `cert_inside`: the file holds a certificate instead.
    #[error("no private key (PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\") found in {}{}", quoted(.path), if *.cert_inside { " (it holds a certificate: is this the certificate file?)" } else { "" })]
    NoKey { path: PathBuf, cert_inside: bool },
    #[error("{} is not valid PEM: {error}", quoted(.path))]
    Pem { path: PathBuf, error: pem::Error },
    /// The provider offers no protocol version rustls accepts.
    #[error("{0}")]
    Protocols(rustls::Error),
    #[error("cannot read {}: {}", quoted(.path), io_text(.error))]
    Read { path: PathBuf, error: io::Error },
    /// A certificate outside its validity period.
    #[error(transparent)]
    Validity(#[from] validity::ValidityError),
}

fn load_error(field: TlsField, reason: LoadReason) -> LoadError {
    LoadError { field, reason }
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
        let (chain, mut expiry) = load_certs(cert, TlsField::Cert)?;
        let private_key = load_key(key)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| load_error(TlsField::Cert, LoadReason::Protocols(e)))?;
        let builder = match client_ca {
            Some(ca) => {
                let (roots, ca_expiry) = load_roots(ca, TlsField::ClientCa)?;
                expiry = Expiry::earliest(expiry, ca_expiry);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|error| {
                            load_error(
                                TlsField::ClientCa,
                                LoadReason::ClientVerifier {
                                    path: ca.to_path_buf(),
                                    error,
                                },
                            )
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|e| identity_error(e, cert, key))?;
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
            expiry,
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
        let (roots, mut expiry) = load_roots(ca, TlsField::Ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| load_error(TlsField::Ca, LoadReason::Protocols(e)))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let (chain, cert_expiry) = load_certs(cert, TlsField::Cert)?;
                expiry = Expiry::earliest(expiry, cert_expiry);
                let private_key = load_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| identity_error(e, cert, key))?
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
            expiry,
        })
    }
}

fn read_file(path: &Path, field: TlsField) -> Result<Vec<u8>, LoadError> {
    fs::read(path).map_err(|error| {
        let path = path.to_path_buf();
        load_error(field, LoadReason::Read { path, error })
    })
}

fn pem_error(path: &Path, error: pem::Error) -> LoadReason {
    let path = path.to_path_buf();
    LoadReason::Pem { path, error }
}

/// Every `CERTIFICATE` block of `path`, in file order, each within its validity period; and
/// the earliest expiry among them.
fn load_certs(
    path: &Path,
    field: TlsField,
) -> Result<(Vec<CertificateDer<'static>>, Option<Expiry>), LoadError> {
    let bytes = read_file(path, field)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(field, pem_error(path, e)))?;
    if certs.is_empty() {
        let key_inside = PrivateKeyDer::from_pem_slice(&bytes).is_ok();
        let path = path.to_path_buf();
        return Err(load_error(
            field,
            LoadReason::NoCertificate { path, key_inside },
        ));
    }
    let expiry = validity::check(path, &certs, std::time::SystemTime::now())
        .map_err(|e| load_error(field, e.into()))?;
    Ok((certs, expiry))
}

/// The first private key of `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let bytes = read_file(path, TlsField::Key)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let cert_inside = CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok());
            let path = path.to_path_buf();
            Err(load_error(
                TlsField::Key,
                LoadReason::NoKey { path, cert_inside },
            ))
        }
        Err(e) => Err(load_error(TlsField::Key, pem_error(path, e))),
    }
}

/// The CA certificates of `path` as trust anchors.
fn load_roots(path: &Path, field: TlsField) -> Result<(RootCertStore, Option<Expiry>), LoadError> {
    let (certs, expiry) = load_certs(path, field)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|error| {
            let reason = LoadReason::CaCertificate {
                index: i + 1,
                path: path.to_path_buf(),
                error,
            };
            load_error(field, reason)
        })?;
    }
    Ok((roots, expiry))
}

/// A certificate/key pair rustls refused: blame the file that is wrong.
fn identity_error(source: rustls::Error, cert: &Path, key: &Path) -> LoadError {
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    match source {
        rustls::Error::InconsistentKeys(_) => {
            load_error(TlsField::Key, LoadReason::KeyMismatch { cert, key, source })
        }
        rustls::Error::InvalidCertificate(_) => load_error(
            TlsField::Cert,
            LoadReason::Certificate {
                cert,
                error: source,
            },
        ),
        source => load_error(TlsField::Key, LoadReason::Key { key, error: source }),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
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
            err.reason.to_string(),
            format!(
                "cannot read \"{}\": No such file or directory",
                missing.display()
            )
        );
        // The I/O error is held typed and printed once: in the text, so not again as source().
        assert!(
            matches!(&err.reason, LoadReason::Read { error, .. } if error.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(std::error::Error::source(&err).is_none());

        let garbage = dir.join("garbage.pem");
        fs::write(&garbage, "hello, I am not PEM\n").unwrap();
        let err = TlsServer::load(&garbage, &dir.join(DMZ_KEY), None, &[], ServerRole::Public)
            .unwrap_err();
        assert_eq!(err.field, TlsField::Cert);
        assert!(
            err.reason.to_string().contains("no certificate"),
            "{}",
            err.reason
        );
        let err = TlsServer::load(&dir.join(DMZ_CERT), &garbage, None, &[], ServerRole::Public)
            .unwrap_err();
        assert_eq!(err.field, TlsField::Key);
        assert!(
            err.reason.to_string().contains("no private key"),
            "{}",
            err.reason
        );
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
            err.reason.to_string().contains("is this the key file?"),
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
        assert!(
            err.reason.to_string().contains("does not match"),
            "{}",
            err.reason
        );
        // The text does not say rustls' error, so source() gives it.
        let source = std::error::Error::source(&err).expect("rustls' error is the source");
        assert!(
            source.downcast_ref::<rustls::Error>().is_some(),
            "{source:?}"
        );

        let err = TlsClient::load(
            &dir.join(CA_CERT),
            Some((&dir.join(INTERNAL_CERT), &dir.join(DMZ_KEY))),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.field, TlsField::Key);
        assert!(
            err.reason.to_string().contains("does not match"),
            "{}",
            err.reason
        );

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
