//! A throw-away PKI for tests (feature `pki`): certificate authorities, and leaf certificates
//! they sign for a role (server or client), names and a validity window in days relative to
//! today. Each certificate and key is at hand as DER (for in-memory rustls configurations) and
//! as PEM, and can be written to a directory (for config files).
//!
//! Their parameters come from [`crate::certs`], which the product's development CA signs with
//! too. Everything here panics on an rcgen error: it is for tests. Not for production: no
//! revocation, no key protection. It builds no rustls configuration; each test builds the one
//! it is about.

use std::io;
use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::certs::{ca_params, ca_params_named, key_tag, leaf_params};
pub use crate::certs::{today, Role};

/// A certificate authority that signs leaves.
pub struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    /// What rcgen signs with: the CA itself, or (for [`Ca::from_pem`]) one rebuilt with its
    /// subject and key, which is all a signature and the issuer name depend on.
    issuer: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate and its private key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server leaf it signed for `localhost` and `127.0.0.1`: what most TLS tests need.
pub struct Pki {
    pub ca: Ca,
    pub server: Leaf,
}

impl Pki {
    /// A fresh CA and a `localhost` server leaf, both valid from yesterday for 30 days.
    pub fn localhost() -> Pki {
        let ca = Ca::new();
        let server = ca.leaf(Role::Server, "localhost", &["localhost", "127.0.0.1"]);
        Pki { ca, server }
    }
}

impl Ca {
    /// A self-signed CA valid from yesterday (clock skew) for 30 days. Its name carries a tag
    /// from its public key, so two CAs never share a name (a certificate of another one then
    /// fails as "unknown CA", not as a bad signature).
    pub fn new() -> Ca {
        // unwrap (here and below): rcgen fails only on malformed parameters, and these are
        // fixed or come from the test.
        let key = rcgen::KeyPair::generate().unwrap();
        let params = ca_params(&format!("sallyport test CA {}", key_tag(&key)), 30);
        let issuer = params.self_signed(&key).unwrap();
        Ca {
            der: issuer.der().clone(),
            pem: issuer.pem(),
            issuer,
            key,
        }
    }

    /// A CA loaded from its PEM certificate and key (e.g. what `sallyport certs` wrote), to
    /// sign more leaves with. The subject's values must be UTF8String or PrintableString.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Ca {
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("parse CA PEM");
        let key = rcgen::KeyPair::from_pem(key_pem).expect("parse CA key PEM");
        // rcgen (without x509-parser) cannot load a CA certificate: rebuild one with the same
        // subject and key.
        let issuer = ca_params_named(subject_of(&der)).self_signed(&key).unwrap();
        Ca {
            der,
            pem: cert_pem.to_string(),
            issuer,
            key,
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the certificate to `dir/{name}.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> io::Result<()> {
        std::fs::write(dir.join(format!("{name}.pem")), &self.pem)
    }

    /// A leaf for `role` named `common_name` with `names` (DNS names or IP addresses) as
    /// SANs, valid from yesterday for 30 days.
    pub fn leaf(&self, role: Role, common_name: &str, names: &[&str]) -> Leaf {
        self.leaf_valid(role, common_name, names, -1, 30)
    }

    /// [`Ca::leaf`] valid from midnight UTC `from_day` days after today until midnight
    /// `until_day` days after today (negative: in the past; `until_day = 0`: expired at
    /// midnight today).
    pub fn leaf_valid(
        &self,
        role: Role,
        common_name: &str,
        names: &[&str],
        from_day: i64,
        until_day: i64,
    ) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = leaf_params(role, common_name, names, from_day, until_day).unwrap();
        let cert = params.signed_by(&key, &self.issuer, &self.key).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Default for Ca {
    fn default() -> Ca {
        Ca::new()
    }
}

impl Leaf {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `dir/{name}.pem` and `dir/{name}.key`.
    pub fn write(&self, dir: &Path, name: &str) -> io::Result<()> {
        std::fs::write(dir.join(format!("{name}.pem")), &self.cert_pem)?;
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem)
    }
}

/// One DER TLV: (tag, contents, the bytes after it).
fn der(input: &[u8]) -> (u8, &[u8], &[u8]) {
    assert!(input.len() >= 2, "truncated DER");
    let (len, header) = match input[1] {
        l if l < 0x80 => (usize::from(l), 2),
        l @ 0x81..=0x83 => {
            let n = usize::from(l & 0x7f);
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        }
        l => panic!("unsupported DER length byte {l:#04x}"),
    };
    (
        input[0],
        &input[header..header + len],
        &input[header + len..],
    )
}

/// The arcs of a DER-encoded OBJECT IDENTIFIER.
fn oid_arcs(bytes: &[u8]) -> Vec<u64> {
    let mut subs = Vec::new();
    let mut value = 0u64;
    for b in bytes {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            subs.push(value);
            value = 0;
        }
    }
    let first = subs.remove(0);
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    [a, b].into_iter().chain(subs).collect()
}

/// The subject of a DER certificate as an rcgen name (UTF8String and PrintableString values).
fn subject_of(cert: &[u8]) -> rcgen::DistinguishedName {
    let (_, cert, _) = der(cert);
    let (_, tbs, _) = der(cert);
    let mut rest = tbs;
    if rest[0] == 0xa0 {
        rest = der(rest).2; // [0] version
    }
    for _ in 0..4 {
        rest = der(rest).2; // serialNumber, signature, issuer, validity
    }
    let (tag, mut name, _) = der(rest);
    assert_eq!(tag, 0x30, "subject is not a SEQUENCE");
    let mut dn = rcgen::DistinguishedName::new();
    while !name.is_empty() {
        let (tag, mut set, after) = der(name);
        assert_eq!(tag, 0x31, "RDN is not a SET");
        name = after;
        while !set.is_empty() {
            let (_, atv, after) = der(set);
            set = after;
            let (tag, oid, value) = der(atv);
            assert_eq!(tag, 0x06, "attribute type is not an OID");
            let (tag, value, _) = der(value);
            let text = String::from_utf8(value.to_vec()).expect("attribute value is text");
            let value = match tag {
                0x0c => rcgen::DnValue::Utf8String(text),
                0x13 => rcgen::DnValue::PrintableString(
                    text.as_str().try_into().expect("PrintableString"),
                ),
                other => panic!("unsupported string type {other:#04x} in the CA's subject"),
            };
            dn.push(rcgen::DnType::from_oid(&oid_arcs(oid)), value);
        }
    }
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_loaded_from_pem_keeps_its_subject() {
        let ca = Ca::new();
        let loaded = Ca::from_pem(ca.pem(), &ca.key.serialize_pem());
        assert_eq!(loaded.der(), ca.der());
        // The rebuilt issuer has the same subject, so leaves name the CA as their issuer.
        assert_eq!(subject_of(loaded.issuer.der()), subject_of(&ca.der()));
    }

    #[test]
    fn two_cas_have_different_names() {
        assert_ne!(subject_of(&Ca::new().der()), subject_of(&Ca::new().der()));
    }
}
