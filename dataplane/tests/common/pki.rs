//! A throw-away PKI for the TLS tests: a CA and one `localhost` certificate it signed, in memory.
//! The data plane's unit tests (`src/tls/tests.rs`) include this file too, so both stand on
//! one definition. It does not write files or build rustls configurations: each test builds
//! the configuration it is about.

use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// The CA's certificate, and the leaf certificate with its key.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// A fresh CA and a `localhost` leaf signed by it.
pub fn pki() -> Pki {
    // unwrap: rcgen fails only on malformed parameters, and these are fixed.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}
