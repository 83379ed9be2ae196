//! Facts read from the host: a process's CPU time and resident memory, kernel socket and slab
//! memory, the open-files limit, and the git commit of the source tree.
//!
//! Everything here reads `/proc` or plain files; it runs no commands. A figure that cannot be read
//! is an `Err` (for measurements) or `None` (for descriptive facts), never a made-up zero.

use std::io;
use std::path::{Path, PathBuf};

use sallyport_kit::sys;

/// Kernel clock ticks per second as `/proc/PID/stat` counts them (`USER_HZ`, 100 on Linux).
pub fn clock_ticks_per_sec() -> f64 {
    sys::clock_ticks().map_or(100.0, |hz| hz as f64)
}

/// CPU seconds (user + system, all threads, plus children it has reaped) spent so far by `pid`.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| bad_data(format!("/proc/{pid}/stat: {stat:?}")))?;
    Ok(ticks as f64 / clock_ticks_per_sec())
}

/// utime + stime + cutime + cstime from `/proc/PID/stat` text. The name in parentheses may hold
/// spaces and parentheses, so fields are counted after the last `)`; utime is field 14.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    // cutime/cstime are signed in the kernel but never negative for reaped children.
    Some(field(14)? + field(15)? + field(16).unwrap_or(0) + field(17).unwrap_or(0))
}

/// Resident set size of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    kib_field(&status, "VmRSS:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| bad_data(format!("/proc/{pid}/status has no VmRSS")))
}

/// `Slab:` of `/proc/meminfo` in bytes: kernel object caches (sockets, files, dentries...).
pub fn slab_bytes() -> io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    kib_field(&meminfo, "Slab:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| bad_data("/proc/meminfo has no Slab".to_string()))
}

/// The `TCP:` line of `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpSockstat {
    /// Sockets allocated (any state, including listeners and TIME_WAIT).
    pub alloc: u64,
    /// Socket buffer memory charged to TCP, in bytes (the kernel reports pages).
    pub mem_bytes: u64,
}

/// Reads the `TCP:` line of `/proc/net/sockstat` (system-wide).
pub fn tcp_sockstat() -> io::Result<TcpSockstat> {
    let text = std::fs::read_to_string("/proc/net/sockstat")?;
    parse_sockstat(&text).ok_or_else(|| bad_data("/proc/net/sockstat has no TCP line".to_string()))
}

fn parse_sockstat(text: &str) -> Option<TcpSockstat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |key: &str| {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.parse::<u64>().ok()
    };
    Some(TcpSockstat {
        alloc: value("alloc")?,
        mem_bytes: value("mem")? * page_size(),
    })
}

fn page_size() -> u64 {
    sys::page_size().unwrap_or(4096)
}

/// `KEY:   N kB` from `/proc` status-style text, in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The open-files limit after [`raise_nofile_limit`]: (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    sys::nofile_limit()
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (what `ulimit -n $(ulimit -Hn)`
/// does); children spawned afterwards inherit it. Returns the new (soft, hard).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = sys::nofile_limit()?;
    if soft < hard {
        sys::set_nofile_limit(hard, hard)?;
    }
    nofile_limit()
}

/// The short (7 hex digits) commit of the git checkout holding `start` or one of its parents,
/// read from `.git` files (HEAD, loose refs, packed-refs; worktrees too). `None` outside a checkout.
pub fn git_commit(start: &Path) -> Option<String> {
    let gitdir = find_gitdir(start)?;
    // A linked worktree keeps its own HEAD but shares refs with the main repository.
    let common = std::fs::read_to_string(gitdir.join("commondir"))
        .ok()
        .map(|c| gitdir.join(c.trim()))
        .unwrap_or_else(|| gitdir.clone());
    let head = std::fs::read_to_string(gitdir.join("HEAD")).ok()?;
    let head = head.trim();
    let full = match head.strip_prefix("ref:") {
        None => head.to_string(),
        Some(name) => {
            let name = name.trim();
            [&gitdir, &common]
                .iter()
                .find_map(|dir| std::fs::read_to_string(dir.join(name)).ok())
                .map(|s| s.trim().to_string())
                .or_else(|| {
                    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
                    packed.lines().find_map(|l| {
                        let (hash, r) = l.split_once(' ')?;
                        (r.trim() == name).then(|| hash.to_string())
                    })
                })?
        }
    };
    let is_hash = full.len() >= 7 && full.chars().all(|c| c.is_ascii_hexdigit());
    is_hash.then(|| full[..7].to_string())
}

fn find_gitdir(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    for dir in start.ancestors() {
        let dotgit = dir.join(".git");
        if dotgit.is_dir() {
            return Some(dotgit);
        }
        if let Ok(text) = std::fs::read_to_string(&dotgit) {
            let target = text.trim().strip_prefix("gitdir:")?.trim().to_string();
            return Some(dir.join(target));
        }
    }
    None
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_name_with_spaces_and_parens() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 3 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(250 + 50 + 7 + 3));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_figures_are_readable() {
        let me = std::process::id();
        assert!(cpu_seconds(me).expect("cpu") >= 0.0);
        assert!(rss_bytes(me).expect("rss") > 0);
        assert!(slab_bytes().expect("slab") > 0);
        let tcp = tcp_sockstat().expect("sockstat");
        assert!(tcp.alloc < u64::MAX);
    }

    #[test]
    fn sockstat_line_is_parsed_in_pages() {
        let text =
            "sockets: used 10\nTCP: inuse 5 orphan 0 tw 2 alloc 9 mem 3\nUDP: inuse 1 mem 0\n";
        let s = parse_sockstat(text).expect("parsed");
        assert_eq!(s.alloc, 9);
        assert_eq!(s.mem_bytes, 3 * page_size());
    }

    #[test]
    fn kib_fields() {
        assert_eq!(
            kib_field("Name:\tx\nVmRSS:\t   1234 kB\n", "VmRSS:"),
            Some(1234)
        );
        assert_eq!(kib_field("Slab: 5 kB", "VmRSS:"), None);
    }

    #[test]
    fn nofile_limit_raise_is_idempotent() {
        let (soft, hard) = raise_nofile_limit().expect("raise");
        assert_eq!(soft, hard);
        assert_eq!(nofile_limit().expect("read"), (soft, hard));
    }

    #[test]
    fn git_commit_reads_loose_and_packed_refs() {
        let dir = std::env::temp_dir().join(format!("sallyport-bench-git-{}", std::process::id()));
        let git = dir.join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).expect("mkdir");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").expect("head");
        std::fs::write(
            git.join("packed-refs"),
            "# pack-refs\n0123456789abcdef0123456789abcdef01234567 refs/heads/main\n",
        )
        .expect("packed");
        assert_eq!(git_commit(&dir.join("sub")).as_deref(), Some("0123456"));
        std::fs::write(
            git.join("refs/heads/main"),
            "fedcba9876543210fedcba9876543210fedcba98\n",
        )
        .expect("loose");
        assert_eq!(git_commit(&dir).as_deref(), Some("fedcba9"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
