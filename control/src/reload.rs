//! Certificate reload (SIGHUP): the running config file is read again, every TLS setting's
//! certificates, keys and CAs with it, and each TLS setting of the running gateway gets its new
//! configuration; handshakes from then on use it, established sessions keep theirs.
//!
//! All or nothing: if the file no longer loads (a missing or garbled certificate, a key that does
//! not match, any other configuration error) or no longer has a TLS setting the running gateway
//! has, nothing changes and the error names the file, the key and the reason. Only certificates,
//! keys and CAs are reloaded: other changes to the file (listeners, services, timeouts) need a
//! restart, and the reload says so when it sees them.

use crate::config::{Config, ConfigError, ServiceRole};
use crate::tls::{TlsClient, TlsServer};

/// One TLS setting of a config, by its key.
enum Setting<'a> {
    Server(&'a TlsServer),
    Client(&'a TlsClient),
}

/// Every TLS setting of `config`, keyed as configuration errors name them.
fn settings(config: &Config) -> Vec<(String, Setting<'_>)> {
    let mut out = Vec::new();
    if let Some(tls) = config.reverse.as_ref().and_then(|r| r.tls.as_ref()) {
        out.push(("reverse.tls".to_string(), Setting::Server(tls)));
    }
    for s in &config.services {
        let key = |field: &str| format!("service[{}].{field}", s.name);
        match &s.role {
            ServiceRole::Dmz(d) => {
                if let Some(tls) = &d.tls {
                    out.push((key("tls"), Setting::Server(tls)));
                }
            }
            ServiceRole::Forward(f) => {
                if let Some(tls) = &f.tls {
                    out.push((key("tls"), Setting::Server(tls)));
                }
                if let Some(tls) = &f.upstream.tls {
                    out.push((key("connect_tls"), Setting::Client(tls)));
                }
            }
            ServiceRole::Internal(i) => {
                if let Some(tls) = &i.tls {
                    out.push((key("tls"), Setting::Client(tls)));
                }
                if let Some(tls) = &i.target_tls {
                    out.push((key("connect_tls"), Setting::Client(tls)));
                }
            }
        }
    }
    out
}

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// TLS settings that now use the certificates and keys read again.
    pub settings: usize,
    /// The file differs in more than certificates: those changes wait for a restart.
    pub other_changes: bool,
}

/// Reads `running.path` again and hands every TLS setting of `running` its new configuration.
pub fn certificates(running: &Config) -> Result<Reloaded, ConfigError> {
    let fresh = Config::load(&running.path)?;
    let new = settings(&fresh);
    // Check every pair before changing anything.
    let mut pairs = Vec::new();
    for (key, setting) in settings(running) {
        let fresh_setting = new.iter().find(|(k, _)| *k == key).map(|(_, s)| s);
        match (setting, fresh_setting) {
            (Setting::Server(old), Some(Setting::Server(new))) => {
                pairs.push(Pair::Server(old, new))
            }
            (Setting::Client(old), Some(Setting::Client(new))) => {
                pairs.push(Pair::Client(old, new))
            }
            _ => {
                return Err(ConfigError {
                    file: running.path.clone(),
                    key,
                    reason: "not the same TLS setting in the file any more; certificates not \
                             reloaded (a restart applies such a change)"
                        .into(),
                })
            }
        }
    }
    for pair in &pairs {
        match pair {
            Pair::Server(old, new) => old.config.replace(new.config.current()),
            Pair::Client(old, new) => old.config.replace(new.config.current()),
        }
    }
    Ok(Reloaded {
        settings: pairs.len(),
        // `Config` compares TLS settings by file names and options, not the bytes read.
        other_changes: *running != fresh,
    })
}

/// A running TLS setting and the one read again.
enum Pair<'a> {
    Server(&'a TlsServer, &'a TlsServer),
    Client(&'a TlsClient, &'a TlsClient),
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use super::*;
    use crate::tls::tests::temp_dir;
    use crate::tls::{dev_certs, write_dev_certs, DMZ_CERT, DMZ_KEY};

    fn service(dir: &std::path::Path, accept: &str, tls: bool) -> String {
        let tls = if tls {
            format!(
                "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
                dir.join(DMZ_CERT).display(),
                dir.join(DMZ_KEY).display()
            )
        } else {
            String::new()
        };
        format!(
            "[[service]]\nname = \"web\"\naccept = \"{accept}\"\nconnect = \"tcp://127.0.0.1:9\"\n{tls}"
        )
    }

    fn server(config: &Config) -> &TlsServer {
        match &config.services[0].role {
            ServiceRole::Forward(f) => f.tls.as_ref().expect("tls"),
            _ => panic!("not a forwarding service"),
        }
    }

    #[test]
    fn reload_swaps_every_setting_or_none() {
        let dir = temp_dir("reload");
        write_dev_certs(&dir, &dev_certs("localhost", 30).unwrap(), false).unwrap();
        let path = dir.join("gateway.toml");
        fs::write(&path, service(&dir, "tls://127.0.0.1:0", true)).unwrap();
        let running = Config::load(&path).unwrap();
        let before = server(&running).config.current();

        // Same file, new certificate bytes: swapped, nothing else changed.
        write_dev_certs(&dir, &dev_certs("localhost", 30).unwrap(), true).unwrap();
        let r = certificates(&running).unwrap();
        assert_eq!(r.settings, 1);
        assert!(!r.other_changes);
        let after = server(&running).config.current();
        assert!(!Arc::ptr_eq(&before, &after));

        // The setting is gone from the file: an error naming it, and nothing swapped.
        fs::write(&path, service(&dir, "tcp://127.0.0.1:0", false)).unwrap();
        let e = certificates(&running).unwrap_err();
        assert_eq!(e.key, "service[web].tls");
        assert!(Arc::ptr_eq(&after, &server(&running).config.current()));

        // A garbled key: the load error, and nothing swapped.
        fs::write(&path, service(&dir, "tls://127.0.0.1:0", true)).unwrap();
        fs::write(dir.join(DMZ_KEY), "not a key").unwrap();
        let e = certificates(&running).unwrap_err();
        assert_eq!(e.key, "service[web].tls.key");
        assert!(Arc::ptr_eq(&after, &server(&running).config.current()));

        // Other changes are applied to certificates only, and reported.
        write_dev_certs(&dir, &dev_certs("localhost", 30).unwrap(), true).unwrap();
        fs::write(&path, service(&dir, "tls://127.0.0.1:1", true)).unwrap();
        assert!(certificates(&running).unwrap().other_changes);
        let _ = fs::remove_dir_all(&dir);
    }
}
