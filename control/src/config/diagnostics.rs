//! Diagnostics: the [`ConfigError`] every failure of the configuration becomes (file, key,
//! reason, printed `FILE: KEY: REASON`) with its [`Reason`] (a message, or the typed error of
//! the concern module that found it, printed once: in the text or as `source()`, never both),
//! the [`Check`] that builds them for one file, the labels services get in keys
//! (`service[echo]`, `service[2]`), and locating toml's own syntax and schema errors at a key
//! path (`service[echo].timeout`) or a line and column.
//!
//! It does not decide what is valid: the concern modules do, and report through [`Check::fail`].

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::endpoints::ResolveError;
use super::units::UnitError;
use super::uri::{validate_name, UriError};
use crate::tls::LoadError;

/// A configuration error: the file, the key (`service[echo].accept`) and the reason, whose
/// variant holds the typed error of the module that found it.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: Reason,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
    }
}

impl Error for ConfigError {
    /// What the printed reason does not say: a cause is either in the text or here, never
    /// both, so a printed chain says each once. The typed error itself is [`ConfigError::reason`].
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.reason.source()
    }
}

/// Why a key is wrong: a message, or the typed error of the module that found it (printed as
/// that error prints).
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// A message of the check itself (`must not be empty`, overlapping listeners, ...).
    #[error("{0}")]
    Invalid(String),
    /// A listener the file names cannot be bound (reported by the gateway at start-up).
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: io::Error },
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(io::Error),
    /// A file the key names (a rendezvous key, a NATS certificate) cannot be read.
    #[error("cannot read \"{}\": {error}", path.display())]
    File { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A `tls` or `connect_tls` file (boxed: rustls' errors and two paths are large).
    #[error(transparent)]
    Tls(Box<LoadError>),
    /// toml's syntax or schema error; `message` is what is printed (toml's, maybe with a hint).
    #[error("{message}")]
    Toml {
        message: String,
        error: Box<toml::de::Error>,
    },
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    Uri(#[from] UriError),
}

impl From<LoadError> for Reason {
    fn from(e: LoadError) -> Reason {
        Reason::Tls(Box::new(e))
    }
}

impl From<String> for Reason {
    fn from(message: String) -> Reason {
        Reason::Invalid(message)
    }
}

impl From<&str> for Reason {
    fn from(message: &str) -> Reason {
        Reason::Invalid(message.to_string())
    }
}

/// Builds errors for one file.
pub(super) struct Check {
    pub(super) file: PathBuf,
}

impl Check {
    /// The error of `key`: `reason` is a message or one of the concern modules' typed errors.
    pub(super) fn fail(&self, key: impl Into<String>, reason: impl Into<Reason>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Two keys that go together (`user` and `password`, `cert` and `key`): both set, neither,
    /// or the error of the missing one (`b_missing` when only `a` is set, `a_missing` when only
    /// `b` is).
    pub(super) fn both_or_neither<A, B>(
        &self,
        prefix: &str,
        (a_key, a): (&str, Option<A>),
        (b_key, b): (&str, Option<B>),
        [b_missing, a_missing]: [&str; 2],
    ) -> Result<Option<(A, B)>, ConfigError> {
        match (a, b) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.fail(format!("{prefix}.{b_key}"), b_missing)),
            (None, Some(_)) => Err(self.fail(format!("{prefix}.{a_key}"), a_missing)),
            (Some(a), Some(b)) => Ok(Some((a, b))),
        }
    }

    /// A path from the file: relative ones are relative to the config file's directory.
    pub(super) fn path(&self, written: &str) -> PathBuf {
        match self.file.parent() {
            Some(dir) => dir.join(written),
            None => PathBuf::from(written),
        }
    }
}

/// The label of each service in keys: its name when valid and first of its kind, else its
/// 1-based position.
pub(super) fn service_labels<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut seen: Vec<&str> = Vec::new();
    names
        .enumerate()
        .map(|(i, name)| match name {
            Some(name) if validate_name(name).is_ok() && !seen.contains(&name) => {
                seen.push(name);
                name.to_string()
            }
            _ => (i + 1).to_string(),
        })
        .collect()
}

/// toml's message, with a hint for the commonest slip: `[service]` written for `[[service]]`.
pub(super) fn schema_hint(message: &str) -> String {
    if message.contains("expected a sequence") {
        format!("{message}; write [[service]] (an array of tables), not [service]")
    } else {
        message.to_string()
    }
}

/// `line L, column C` (1-based) of byte offset `pos`.
pub(super) fn line_column(text: &str, pos: usize) -> String {
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Service labels (see [`service_labels`]) from an untyped parse of the file.
pub(super) fn labels_from_table(table: &toml::Table) -> Vec<String> {
    match table.get("service") {
        Some(toml::Value::Array(services)) => service_labels(
            services
                .iter()
                .map(|s| s.get("name").and_then(toml::Value::as_str)),
        ),
        _ => Vec::new(),
    }
}

/// The dotted key path (`service[echo].timeout`) of the key or value at byte offset `pos`,
/// found from the table headers above it and the `key =` on its line. Best effort: good for
/// the flat layout of sallyport files, coarser for inline tables and multi-line values.
pub(super) fn key_path_at(text: &str, pos: usize, labels: &[String]) -> String {
    let before = text.get(..pos).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];

    let mut table: Vec<String> = Vec::new();
    let mut services = 0usize;
    let mut resolve = |header: Header| {
        if header.array && header.path == ["service"] {
            services += 1;
        }
        let mut path = header.path;
        if path.first().is_some_and(|p| p == "service") && services > 0 {
            let label = labels
                .get(services - 1)
                .cloned()
                .unwrap_or_else(|| services.to_string());
            path[0] = format!("service[{label}]");
        }
        path
    };
    for l in text[..line_start].lines() {
        if let Some(header) = parse_header(l) {
            table = resolve(header);
        }
    }
    if let Some(header) = parse_header(line) {
        return resolve(header).join(".");
    }
    if let Some(eq) = line.find('=') {
        table.extend(split_key(&line[..eq]));
    }
    if table.is_empty() {
        "(top level)".to_string()
    } else {
        table.join(".")
    }
}

/// A `[table]` or `[[array]]` header line.
pub(super) struct Header {
    array: bool,
    path: Vec<String>,
}

pub(super) fn parse_header(line: &str) -> Option<Header> {
    let line = line.trim();
    let (array, inner) = if let Some(rest) = line.strip_prefix("[[") {
        (true, rest.split_once("]]")?.0)
    } else {
        (false, line.strip_prefix('[')?.split_once(']')?.0)
    };
    let plausible = !inner.trim().is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"' | '\''));
    plausible.then(|| Header {
        array,
        path: split_key(inner),
    })
}

/// `a . "b" .c` → `["a", "b", "c"]` (no dots inside quoted keys in sallyport files).
pub(super) fn split_key(key: &str) -> Vec<String> {
    key.split('.')
        .map(|part| part.trim().trim_matches(['"', '\'']).to_string())
        .collect()
}
