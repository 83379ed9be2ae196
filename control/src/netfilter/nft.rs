//! The nftables table that judges public clients' SYNs by source: one `inet` table per
//! gateway, built as text ([`ruleset`], pure) and installed in one transaction by piping it to
//! `nft -f -`; its counters read back with `nft -j list table`.
//!
//! Per public listener a chain, entered from the `input` hook only by a SYN (`tcp flags &
//! (syn|ack) == syn`) to the listener's port (and address, when it listens on one): sources in
//! `accept_proxy` return at once (their clients are judged in userspace once the PROXY header
//! is read), then `deny`, `allow` (interval sets), `max_per_source` (a set of the sources at
//! their limit, keyed by the source, an IPv6 source by its /64: the data plane counts live
//! connections and [`Table::set_full`] mirrors its changes, so no connection tracking is
//! needed) and `rate_per_source` (a per-source `limit rate` in a dynamic set with timeouts). A refused SYN is dropped or answered with
//! `reject with tcp reset`, and counted (`counter`, with a comment naming listener and verdict).
//!
//! Ownership: the table's name carries the owning process's pid and start time
//! (`sallyport_<pid>_<start>_<n>`), so [`remove_leftovers`] deletes the tables of processes that
//! are gone (a SIGKILLed gateway's) and never those of a live gateway; [`Table`] deletes its own
//! when dropped. The table never touches other tables or the hook's other chains; its chain's
//! policy is accept.
//!
//! This module does not decide whether the process may install a table (the caller asks
//! `config::kernel_verdicts_permitted`) and speaks no netlink itself: `nft` does.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use sallyport_dataplane::admission::{DenyAction, IpNet, SourcePolicy};

/// Every table a gateway owns starts with this.
pub const TABLE_PREFIX: &str = "sallyport_";
/// The hook priority of the table's chain: before the usual `filter` chains (and an iptables
/// NFQUEUE rule there), so a refused source is never queued.
const PRIORITY: &str = "filter - 5";
/// Most sources each dynamic set (connection counts, rates) holds; a source that finds it full
/// is not limited by the kernel (nftables' own behaviour).
const DYNAMIC_SET_SIZE: u32 = 65535;
/// How long a source's rate state outlives its last SYN.
const RATE_TIMEOUT: &str = "10s";

/// Why talking to `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {nft}: {source}")]
    Spawn { nft: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}` printed JSON this gateway cannot read: {why}")]
    Json { command: String, why: String },
}

/// One public listener as the table sees it.
#[derive(Debug, Clone)]
pub struct Listener<'a> {
    /// The data plane's index of the service (named in rule comments).
    pub index: usize,
    /// The bound address (a real port, never 0).
    pub addr: SocketAddr,
    pub policy: &'a SourcePolicy,
    pub accept_proxy: &'a [IpNet],
}

/// What a counted rule does to a SYN: labels `verdict` of `sallyport_admission_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelVerdict {
    /// Silently dropped (a denied source, `deny_action = "drop"`).
    Drop,
    /// Over `max_per_source` or `rate_per_source`.
    Limit,
    /// Answered with a RST (a denied source, `deny_action = "reject"`).
    Reject,
}

impl KernelVerdict {
    pub const ALL: [KernelVerdict; 3] = [Self::Drop, Self::Limit, Self::Reject];
    pub fn label(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Limit => "limit",
            Self::Reject => "reject",
        }
    }
}

/// Where `nft` is: on `PATH`, else in the sbin directories a non-login shell may miss.
pub fn find_nft() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir: PathBuf| dir.join("nft"))
        .find(|p| p.is_file())
}

/// A fresh table name for this process: pid, start time, and a counter for the second gateway
/// of one process (`sallyport demo`).
pub fn table_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    let start = super::start_time(pid).unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TABLE_PREFIX}{pid}_{start}_{n}")
}

/// The owner a table name names: `(pid, start time)`.
fn owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(TABLE_PREFIX)?.split('_');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

fn action(policy: &SourcePolicy) -> (&'static str, KernelVerdict) {
    match policy.deny_action {
        DenyAction::Drop => ("drop", KernelVerdict::Drop),
        DenyAction::Reject => ("reject with tcp reset", KernelVerdict::Reject),
    }
}

fn elements(nets: &[IpNet], v4: bool) -> Vec<String> {
    nets.iter()
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .map(|n| n.to_string())
        .collect()
}

/// The comment of a counted rule: listener index and verdict, read back by [`Table::counters`].
fn comment(index: usize, verdict: KernelVerdict) -> String {
    format!("comment \"{index} {}\"", verdict.label())
}

/// The whole table as `nft -f` input. `listeners` with an open policy and no `accept_proxy`
/// get no rules; the first of several listeners on one address (WebSocket services sharing a
/// port) stands for all of them.
pub fn ruleset(table: &str, owner_comment: &str, listeners: &[Listener<'_>]) -> String {
    let mut sets = String::new();
    let mut chains = String::new();
    let mut jumps = String::new();
    let mut seen: Vec<SocketAddr> = Vec::new();
    for l in listeners {
        if l.policy.is_open() || seen.contains(&l.addr) {
            continue;
        }
        seen.push(l.addr);
        let i = l.index;
        let (v4, v6, daddr) = match l.addr.ip() {
            IpAddr::V4(a) if a.is_unspecified() => (true, false, "meta nfproto ipv4 ".to_string()),
            IpAddr::V4(a) => (true, false, format!("ip daddr {a} ")),
            IpAddr::V6(a) if a.is_unspecified() => (true, true, String::new()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a4) => (true, false, format!("ip daddr {a4} ")),
                None => (false, true, format!("ip6 daddr {a} ")),
            },
        };
        let port = l.addr.port();
        let _ = writeln!(
            jumps,
            "    {daddr}tcp dport {port} tcp flags & (syn|ack) == syn jump l{i}"
        );
        let (act, verdict) = action(l.policy);
        let mut rules = String::new();
        for (is_v4, fam, key_type, saddr, key, tag) in [
            (
                true,
                "ipv4",
                "ipv4_addr",
                "ip saddr",
                "ip saddr".to_string(),
                "4",
            ),
            (
                false,
                "ipv6",
                "ipv6_addr",
                "ip6 saddr",
                "ip6 saddr & ffff:ffff:ffff:ffff::".to_string(),
                "6",
            ),
        ] {
            if !(if is_v4 { v4 } else { v6 }) {
                continue;
            }
            let mut interval_set = |name: &str, nets: &[IpNet]| {
                let elems = elements(nets, is_v4);
                let _ = write!(
                    sets,
                    "  set {name}{tag}_{i} {{ type {key_type}; flags interval; "
                );
                if !elems.is_empty() {
                    let _ = write!(sets, "elements = {{ {} }} ", elems.join(", "));
                }
                let _ = writeln!(sets, "}}");
                elems.len()
            };
            if !l.accept_proxy.is_empty() && interval_set("proxy", l.accept_proxy) > 0 {
                let _ = writeln!(rules, "    {saddr} @proxy{tag}_{i} return");
            }
            if interval_set("deny", &l.policy.deny) > 0 {
                let _ = writeln!(
                    rules,
                    "    {saddr} @deny{tag}_{i} counter {act} {}",
                    comment(i, verdict)
                );
            }
            if !l.policy.allow.is_empty() {
                // An empty set here refuses the whole family: `allow` lists none of it.
                interval_set("allow", &l.policy.allow);
                let _ = writeln!(
                    rules,
                    "    meta nfproto {fam} {saddr} != @allow{tag}_{i} counter {act} {}",
                    comment(i, verdict)
                );
            }
            if l.policy.max_per_source.is_some() {
                let _ = writeln!(sets, "  set full{tag}_{i} {{ type {key_type}; }}");
                let _ = writeln!(
                    rules,
                    "    meta nfproto {fam} {key} @full{tag}_{i} counter {act} {}",
                    comment(i, KernelVerdict::Limit)
                );
            }
            if let Some(rate) = l.policy.rate_per_source {
                let _ = writeln!(
                    sets,
                    "  set rate{tag}_{i} {{ type {key_type}; flags dynamic,timeout; timeout {RATE_TIMEOUT}; size {DYNAMIC_SET_SIZE}; }}"
                );
                let _ = writeln!(
                    rules,
                    "    meta nfproto {fam} update @rate{tag}_{i} {{ {key} limit rate over {rate}/second burst {rate} packets }} counter {act} {}",
                    comment(i, KernelVerdict::Limit)
                );
            }
        }
        let _ = writeln!(chains, "  chain l{i} {{\n{rules}  }}");
    }
    format!(
        "table inet {table} {{\n  comment \"{owner_comment}\"\n{sets}{chains}  chain input {{\n    type filter hook input priority {PRIORITY}; policy accept;\n{jumps}  }}\n}}\n"
    )
}

fn run(nft: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let command = format!("{} {}", nft.display(), args.join(" "));
    let mut child = Command::new(nft)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            nft: nft.display().to_string(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as nft's own failure below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NftError::Spawn {
        nft: nft.display().to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(NftError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(command: &str, text: &str) -> Result<Vec<serde_json::Value>, NftError> {
    let bad = |why: String| NftError::Json {
        command: command.to_string(),
        why,
    };
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    match doc.get("nftables").and_then(|v| v.as_array()) {
        Some(items) => Ok(items.clone()),
        None => Err(bad("no \"nftables\" array".to_string())),
    }
}

/// Deletes the `sallyport_*` inet tables whose owner is gone (or whose pid now names another
/// process); returns the names deleted. A live gateway's table, this process's included, is
/// left alone; a name this module did not make is never touched.
pub fn remove_leftovers(nft: &Path) -> Result<Vec<String>, NftError> {
    let listing = run(nft, &["list", "tables", "inet"], None)?;
    let mut removed = Vec::new();
    for line in listing.lines() {
        let Some(name) = line.trim().strip_prefix("table inet ") else {
            continue;
        };
        let Some((pid, start)) = owner(name) else {
            continue;
        };
        let alive = super::pid_alive(pid) && super::start_time(pid) == Some(start);
        if alive {
            continue;
        }
        match run(nft, &["delete", "table", "inet", name], None) {
            Ok(_) => removed.push(name.to_string()),
            // Another gateway starting at the same moment may have deleted it first.
            Err(e) => tracing::debug!(table = name, error = %e, "leftover table not deleted"),
        }
    }
    Ok(removed)
}

/// A table this gateway installed; deleted when dropped.
#[derive(Debug)]
pub struct Table {
    name: String,
    nft: PathBuf,
}

/// One counted rule's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub index: usize,
    pub verdict: KernelVerdict,
    pub packets: u64,
}

impl Table {
    /// Installs `ruleset` (a whole `table inet NAME { … }`) in one `nft -f -` transaction.
    pub fn install(nft: &Path, name: &str, ruleset: &str) -> Result<Table, NftError> {
        run(nft, &["-f", "-"], Some(ruleset))?;
        Ok(Table {
            name: name.to_string(),
            nft: nft.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SYNs each counted rule refused so far.
    pub fn counters(&self) -> Result<Vec<Counted>, NftError> {
        let command = format!("nft -j list table inet {}", self.name);
        let text = run(
            &self.nft,
            &["-j", "list", "table", "inet", &self.name],
            None,
        )?;
        Ok(parse_counters(&json(&command, &text)?))
    }

    /// Mirrors sources of listener `index` reaching (`full`) or leaving `max_per_source` into
    /// its sets of full sources, in one transaction. `changes` must follow the set's contents
    /// (no add of a present key, no delete of an absent one): nft refuses the whole batch then.
    pub fn set_full(&self, index: usize, changes: &[(IpAddr, bool)]) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = String::new();
        for (key, full) in changes {
            let verb = if *full { "add" } else { "delete" };
            let tag = if key.is_ipv4() { "4" } else { "6" };
            let _ = writeln!(
                batch,
                "{verb} element inet {} full{tag}_{index} {{ {key} }}",
                self.name
            );
        }
        run(&self.nft, &["-f", "-"], Some(&batch)).map(|_| ())
    }

    /// Deletes the table now (also what dropping it does).
    pub fn remove(self) {}
}

impl Drop for Table {
    fn drop(&mut self) {
        match run(&self.nft, &["delete", "table", "inet", &self.name], None) {
            Ok(_) => tracing::info!(table = %self.name, "nftables table removed"),
            Err(e) => {
                tracing::warn!(table = %self.name, error = %e, "cannot remove the nftables table; the next gateway to start removes it")
            }
        }
    }
}

fn parse_counters(items: &[serde_json::Value]) -> Vec<Counted> {
    let mut out = Vec::new();
    for item in items {
        let rule = &item["rule"];
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        let Some((index, verdict)) = comment.split_once(' ') else {
            continue;
        };
        let (Ok(index), Some(verdict)) = (
            index.parse::<usize>(),
            KernelVerdict::ALL
                .into_iter()
                .find(|v| v.label() == verdict),
        ) else {
            continue;
        };
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e["counter"]["packets"].as_u64())
            .unwrap_or(0);
        out.push(Counted {
            index,
            verdict,
            packets,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SourcePolicy {
        SourcePolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            deny: vec![
                "127.0.0.9/32".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            deny_action: DenyAction::Drop,
            max_per_source: Some(2),
            rate_per_source: Some(5),
        }
    }

    #[test]
    fn ruleset_names_each_listener_and_family() {
        let p = policy();
        let open = SourcePolicy::default();
        let proxies: Vec<IpNet> = vec!["10.0.0.1/32".parse().unwrap()];
        let listeners = [
            Listener {
                index: 0,
                addr: "127.0.0.1:4000".parse().unwrap(),
                policy: &p,
                accept_proxy: &proxies,
            },
            Listener {
                index: 1,
                addr: "[::]:4001".parse().unwrap(),
                policy: &p,
                accept_proxy: &[],
            },
            Listener {
                index: 2,
                addr: "0.0.0.0:4002".parse().unwrap(),
                policy: &open,
                accept_proxy: &[],
            },
        ];
        let text = ruleset("sallyport_1_2_0", "sallyport pid=1", &listeners);
        assert!(text.starts_with("table inet sallyport_1_2_0 {\n"), "{text}");
        assert!(
            text.contains("ip daddr 127.0.0.1 tcp dport 4000 tcp flags & (syn|ack) == syn jump l0")
        );
        assert!(text.contains("    tcp dport 4001 tcp flags & (syn|ack) == syn jump l1"));
        assert!(!text.contains("4002"), "{text}");
        assert!(text.contains("ip saddr @proxy4_0 return"));
        assert!(text.contains("ip saddr @deny4_0 counter drop comment \"0 drop\""));
        assert!(
            !text.contains("deny6_0"),
            "a v4 listener has no v6 rules: {text}"
        );
        assert!(text.contains("ip6 saddr @deny6_1 counter drop"));
        assert!(
            text.contains("ip6 saddr & ffff:ffff:ffff:ffff:: @full6_"),
            "{text}"
        );
        assert!(!text.contains("ct count"), "no connection tracking: {text}");
        assert!(text.contains("limit rate over 5/second burst 5 packets"));
        // The v6 allow set of listener 1 is empty: every v6 source is refused.
        assert!(text.contains("set allow6_1 { type ipv6_addr; flags interval; }"));
        assert!(text.contains("meta nfproto ipv6 ip6 saddr != @allow6_1"));
    }

    #[test]
    fn owners_and_counters_read_back() {
        assert_eq!(owner("sallyport_123_456_0"), Some((123, 456)));
        assert_eq!(owner("sallyport_x"), None);
        assert_eq!(owner("other_1_2_0"), None);
        let name = table_name();
        assert_eq!(owner(&name).map(|o| o.0), Some(std::process::id()));
        let items: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"metainfo": {}}, {"rule": {"comment": "3 limit", "expr": [{"match": {}}, {"counter": {"packets": 7, "bytes": 420}}]}},
                {"rule": {"comment": "unrelated", "expr": []}}, {"rule": {"expr": []}}]"#,
        )
        .unwrap();
        assert_eq!(
            parse_counters(&items),
            vec![Counted {
                index: 3,
                verdict: KernelVerdict::Limit,
                packets: 7
            }]
        );
    }
}
