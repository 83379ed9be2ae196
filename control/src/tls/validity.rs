//! Certificate validity periods. Every certificate sallyport loads (a chain it presents, a CA
//! it trusts) is checked against the clock: an expired one or one not yet valid is refused at
//! load time, naming the file, the certificate's place in it and the date, so `sallyport
//! check` says what a peer's handshake would only report as "certificate expired". The
//! earliest expiry of each TLS table is kept ([`Expiry`]) for the warning `check` and start-up
//! print when it is near ([`EXPIRY_WARNING`]).
//!
//! It does not verify signatures or names (rustls does, at handshake time), and it does not
//! watch the clock while the gateway runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;

/// A certificate that expires within this long gets a warning from `check` and at start-up.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The earliest expiry among the certificates one TLS table loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub path: PathBuf,
    pub not_after: SystemTime,
}

impl Expiry {
    /// The earlier of two.
    pub fn earliest(a: Option<Expiry>, b: Option<Expiry>) -> Option<Expiry> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.not_after < a.not_after { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// How long until it expires, when that is less than `within`.
    pub fn soon(&self, now: SystemTime, within: Duration) -> Option<Duration> {
        let left = self.not_after.duration_since(now).unwrap_or_default();
        (left < within).then_some(left)
    }
}

/// Why a certificate's validity period refuses it now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    #[error("certificate {index} in {} expired on {} ({} ago): renew it", crate::tls::text::quoted(.path), date(*.not_after), days(*.ago))]
    Expired {
        index: usize,
        path: PathBuf,
        not_after: SystemTime,
        ago: Duration,
    },
    #[error("certificate {index} in {} is not valid before {} (in {}): is the clock or the certificate wrong?", crate::tls::text::quoted(.path), date(*.not_before), days(*.until))]
    NotYetValid {
        index: usize,
        path: PathBuf,
        not_before: SystemTime,
        until: Duration,
    },
}

/// `2026-12-04T10:00:00Z`.
fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// "3 days", "5h 12m": days once there is at least one.
pub fn days(d: Duration) -> String {
    let secs = d.as_secs();
    match secs / 86_400 {
        0 => humantime::format_duration(Duration::from_secs(secs / 60 * 60)).to_string(),
        1 => "1 day".to_string(),
        n => format!("{n} days"),
    }
}

fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Checks every certificate of `certs` (read from `path`, in file order) against `now` and
/// returns the earliest expiry. A certificate x509-parser cannot read is left to rustls, which
/// refuses it with its own reason.
pub fn check(
    path: &Path,
    certs: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<Option<Expiry>, ValidityError> {
    let mut earliest = None;
    for (i, der) in certs.iter().enumerate() {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            continue;
        };
        let validity = cert.validity();
        let not_before = system_time(validity.not_before.timestamp());
        let not_after = system_time(validity.not_after.timestamp());
        if let Ok(ago) = now.duration_since(not_after) {
            return Err(ValidityError::Expired {
                index: i + 1,
                path: path.to_path_buf(),
                not_after,
                ago,
            });
        }
        if let Ok(until) = not_before.duration_since(now) {
            return Err(ValidityError::NotYetValid {
                index: i + 1,
                path: path.to_path_buf(),
                not_before,
                until,
            });
        }
        let this = Expiry {
            path: path.to_path_buf(),
            not_after,
        };
        earliest = Expiry::earliest(earliest, Some(this));
    }
    Ok(earliest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{CertRole, DevCa};
    use rustls::pki_types::pem::PemObject;

    fn der(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn leaf(ca: &DevCa, from_day: i64, until_day: i64) -> Vec<CertificateDer<'static>> {
        let names = ["localhost".to_string()];
        der(&ca
            .issue(CertRole::Server, "t", &names, from_day, until_day)
            .unwrap()
            .cert_pem)
    }

    #[test]
    fn a_valid_certificate_gives_its_expiry() {
        let ca = DevCa::new(30).unwrap();
        let now = SystemTime::now();
        let expiry = check(Path::new("a.pem"), &leaf(&ca, -1, 10), now)
            .unwrap()
            .unwrap();
        let left = expiry.not_after.duration_since(now).unwrap();
        assert!(left > Duration::from_secs(9 * 86_400) && left <= Duration::from_secs(10 * 86_400));
        assert!(expiry.soon(now, EXPIRY_WARNING).is_some());
        assert!(expiry.soon(now, Duration::from_secs(86_400)).is_none());
    }

    #[test]
    fn expired_and_future_certificates_are_refused_with_the_date() {
        let ca = DevCa::new(30).unwrap();
        let now = SystemTime::now();
        let err = check(Path::new("old.pem"), &leaf(&ca, -10, -3), now).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ValidityError::Expired { index: 1, .. }),
            "{text}"
        );
        assert!(
            text.contains("\"old.pem\" expired on") && text.contains("ago): renew it"),
            "{text}"
        );
        let err = check(Path::new("new.pem"), &leaf(&ca, 3, 10), now).unwrap_err();
        assert!(
            matches!(err, ValidityError::NotYetValid { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("is not valid before"), "{err}");
    }

    #[test]
    fn the_earliest_of_a_chain_counts_and_garbage_is_left_to_rustls() {
        let ca = DevCa::new(30).unwrap();
        let mut chain = leaf(&ca, -1, 20);
        chain.extend(leaf(&ca, -1, 5));
        chain.push(CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]));
        let now = SystemTime::now();
        let expiry = check(Path::new("c.pem"), &chain, now).unwrap().unwrap();
        assert!(expiry.not_after.duration_since(now).unwrap() < Duration::from_secs(6 * 86_400));
    }

    #[test]
    fn days_reads_well() {
        assert_eq!(days(Duration::from_secs(3 * 86_400 + 5)), "3 days");
        assert_eq!(days(Duration::from_secs(86_400)), "1 day");
        assert_eq!(days(Duration::from_secs(3 * 3600 + 125)), "3h 2m");
    }
}
