//! Certificate parameters (feature `certs`): what a development CA and the leaves it signs
//! are made of (names, key usages, validity in whole days relative to today), for rcgen to
//! sign. The product's `sallyport certs` and the tests' PKI (`pki`, feature `pki`) build from
//! these, so they issue the same kind of certificate.
//!
//! It generates no key and signs nothing; it does not panic.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::date::civil_ymd;

/// What a leaf certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// TLS client authentication.
    Client,
    /// TLS server authentication.
    Server,
}

/// A tag from `key`'s public key (8 hex digits), for a CA name no other CA shares.
pub fn key_tag(key: &rcgen::KeyPair) -> String {
    key.public_key_raw()
        .iter()
        .skip(1)
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A CA named `common_name`, valid from yesterday (clock skew) for `days` days.
pub fn ca_params(common_name: &str, days: i64) -> rcgen::CertificateParams {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    let mut params = ca_params_named(dn);
    set_validity(&mut params, -1, days);
    params
}

/// A leaf for `role` named `common_name` with `names` (DNS names or IP addresses) as SANs,
/// valid from midnight UTC `from_day` days after today until midnight `until_day` days after
/// today (negative: in the past). Fails on a name rcgen cannot encode.
pub fn leaf_params(
    role: Role,
    common_name: &str,
    names: Vec<String>,
    from_day: i64,
    until_day: i64,
) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        Role::Server => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, from_day, until_day);
    Ok(params)
}

/// A CA's parameters for the subject `dn` (no validity set).
pub(crate) fn ca_params_named(dn: rcgen::DistinguishedName) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Days since 1970-01-01 (UTC) now.
pub fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

fn set_validity(params: &mut rcgen::CertificateParams, from: i64, until: i64) {
    let midnight = |offset: i64| {
        let (y, m, d) = civil_ymd(today() + offset);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = midnight(from);
    params.not_after = midnight(until);
}
