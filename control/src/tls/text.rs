//! How TLS file errors are worded: a quoted path and an I/O error without its errno suffix.
//! Shared by certificate loading (`mod.rs`) and the development certificates (`certs.rs`).

use std::io;
use std::path::Path;

/// `"path"`, for messages.
pub(crate) fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// An I/O error without the " (os error N)" suffix: `No such file or directory`.
pub(super) fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
