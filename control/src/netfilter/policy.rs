//! Which mechanism enforces each public listener's per-source policy (`allow`, `deny`,
//! `deny_action`, `max_per_source`, `rate_per_source`), chosen once at start, said at start
//! (one line per listener) and in `/stats`, and counted in `sallyport_admission_total`.
//!
//! - With CAP_NET_ADMIN and `nft`: an nftables table ([`super::nft`]) judges SYNs before the
//!   handshake; the data plane judges only addresses read from PROXY headers. Leftover tables
//!   of gateways that are gone are removed first; the table is removed when this is dropped.
//! - Otherwise: the data plane judges each client right after `accept` and resets a refused
//!   one; `deny_action = "drop"` then acts as a reject (an unprivileged process cannot leave a
//!   SYN unanswered once the kernel answered it).
//!
//! The data plane judges in userspace until the table is in place (the listeners are bound
//! first, so their real ports are known), so no client slips through at start.
//!
//! It does not judge anything itself.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sallyport_dataplane::admission::DenyAction;
use sallyport_dataplane::{Dataplane, PublicIndex, PublicService};
use serde_json::{json, Value};

use super::nft::{self, Counted, KernelVerdict, Table};

/// What enforces one service's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mechanism {
    /// No `allow`, `deny` or limit: nothing to enforce.
    Open,
    Kernel {
        table: String,
    },
    Userspace {
        why: String,
        drop_as_reject: bool,
    },
}

impl Mechanism {
    fn describe(&self) -> String {
        match self {
            Mechanism::Open => "none (no allow, deny or limits)".to_string(),
            Mechanism::Kernel { table } => format!("nftables table inet {table}"),
            Mechanism::Userspace {
                why,
                drop_as_reject: true,
            } => format!("userspace ({why}): deny_action drop acts as reject"),
            Mechanism::Userspace { why, .. } => format!("userspace ({why})"),
        }
    }
}

/// The per-source policy of every public listener, as enforced.
pub struct Policy {
    services: Vec<(String, PublicIndex, Mechanism)>,
    table: Arc<Mutex<Option<Table>>>,
    /// Per service index, the sources in the table's set of full sources (`max_per_source`).
    full: Arc<Mutex<HashMap<usize, HashSet<IpAddr>>>>,
    /// The table's counters as last read, and when: reading them runs `nft` (milliseconds, on
    /// the control thread), so `/stats` and `/metrics` reuse a recent reading.
    kernel_counts: Mutex<Option<(Instant, Vec<Counted>)>>,
    dataplane: Arc<Dataplane>,
}

/// How often the data plane's `max_per_source` changes are mirrored into the table.
const MIRROR_EVERY: Duration = Duration::from_millis(5);

/// How long a reading of the table's counters is reused.
const COUNTERS_MAX_AGE: Duration = Duration::from_millis(250);

impl Policy {
    /// Chooses and installs the mechanism for `services` (the data plane's public services,
    /// in index order, bound at `dataplane.service_addr`). Never fails: without a table the
    /// data plane enforces what it can, and the reason is logged.
    pub fn start(services: &[PublicService], dataplane: Arc<Dataplane>) -> Policy {
        let addr = |i: usize| -> SocketAddr { dataplane.service_addr(PublicIndex(i)) };
        let closed: Vec<usize> = (0..services.len())
            .filter(|&i| !services[i].policy.is_open())
            .collect();
        let mut table = None;
        let userspace_why = if closed.is_empty() {
            remove_leftovers_if_permitted();
            String::new()
        } else {
            match install(services, &closed, &addr) {
                Ok(t) => {
                    table = Some(t);
                    String::new()
                }
                Err(why) => why,
            }
        };
        let mut chosen = Vec::new();
        for (i, s) in services.iter().enumerate() {
            let index = PublicIndex(i);
            let mechanism = match &table {
                _ if s.policy.is_open() => Mechanism::Open,
                Some(t) => {
                    dataplane.source_gate(index).set_kernel(true);
                    Mechanism::Kernel {
                        table: t.name().to_string(),
                    }
                }
                None => Mechanism::Userspace {
                    why: userspace_why.clone(),
                    drop_as_reject: s.policy.deny_action == DenyAction::Drop,
                },
            };
            let p = &s.policy;
            if mechanism != Mechanism::Open {
                let line = format!(
                    "per-source policy: {} (allow {}, deny {}, deny_action {}, max_per_source {}, rate_per_source {}{})",
                    mechanism.describe(),
                    p.allow.len(),
                    p.deny.len(),
                    p.deny_action.name(),
                    p.max_per_source.map_or("none".to_string(), |n| n.to_string()),
                    p.rate_per_source.map_or("none".to_string(), |n| format!("{n}/s")),
                    if s.accept_proxy.is_empty() { "" } else { "; accept_proxy sources judged after their PROXY header" },
                );
                // Accept-then-reset is a degraded form of the verdict: say so loudly.
                match &mechanism {
                    Mechanism::Userspace { .. } => {
                        tracing::warn!(service = %s.name, addr = %addr(i), "{line}")
                    }
                    _ => tracing::info!(service = %s.name, addr = %addr(i), "{line}"),
                }
            }
            chosen.push((s.name.clone(), index, mechanism));
        }
        let mirrored: Vec<usize> = chosen
            .iter()
            .zip(services)
            .filter(|((_, _, m), s)| {
                matches!(m, Mechanism::Kernel { .. }) && s.policy.max_per_source.is_some()
            })
            .map(|((_, index, _), _)| index.0)
            .collect();
        let policy = Policy {
            services: chosen,
            table: Arc::new(Mutex::new(table)),
            full: Arc::default(),
            kernel_counts: Mutex::new(None),
            dataplane,
        };
        if !mirrored.is_empty() {
            policy.start_mirror(mirrored);
        }
        policy
    }

    /// A thread that moves the data plane's `max_per_source` changes of services `indices`
    /// into the table's sets of full sources, until the table is removed.
    fn start_mirror(&self, indices: Vec<usize>) {
        let (table, full, dataplane) = (
            Arc::clone(&self.table),
            Arc::clone(&self.full),
            Arc::clone(&self.dataplane),
        );
        let spawned = std::thread::Builder::new()
            .name("sallyport-policy".to_string())
            .spawn(move || loop {
                std::thread::sleep(MIRROR_EVERY);
                let guard = table.lock().unwrap_or_else(|p| p.into_inner());
                let Some(table) = guard.as_ref() else {
                    return; // Removed: the data plane judges in userspace now.
                };
                let mut full = full.lock().unwrap_or_else(|p| p.into_inner());
                for &i in &indices {
                    let present = full.entry(i).or_default();
                    let changes = dataplane.source_gate(PublicIndex(i)).take_full_changes();
                    let batch = net_changes(present, changes);
                    if let Err(e) = table.set_full(i, &batch) {
                        tracing::warn!(error = %e, "cannot update the table's full sources; those over max_per_source are reset after accept");
                    } else {
                        for (key, on) in batch {
                            if on {
                                present.insert(key);
                            } else {
                                present.remove(&key);
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the max_per_source mirror; those over the limit are reset after accept");
        }
    }

    /// The table, if one is installed.
    pub fn table_name(&self) -> Option<String> {
        self.lock().as_ref().map(|t| t.name().to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Table>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes the table (if any); the data plane judges in userspace from then on. Called
    /// when the gateway stops; safe to call twice.
    pub fn remove(&self) {
        if let Some(table) = self.lock().take() {
            for (_, index, _) in &self.services {
                self.dataplane.source_gate(*index).set_kernel(false);
            }
            table.remove();
        }
    }

    /// Verdicts per service index: `[(verdict label, count)]`, kernel and userspace summed.
    fn verdicts(&self) -> Vec<Vec<(&'static str, u64)>> {
        let kernel = self.kernel_counts();
        self.services
            .iter()
            .map(|(_, index, _)| {
                let user = self.dataplane.source_gate(*index).counts();
                KernelVerdict::ALL
                    .iter()
                    .map(|v| {
                        let k: u64 = kernel
                            .iter()
                            .filter(|c| c.index == index.0 && c.verdict == *v)
                            .map(|c| c.packets)
                            .sum();
                        let u = match v {
                            KernelVerdict::Reject => user.rejected,
                            KernelVerdict::Limit => user.limited,
                            KernelVerdict::Drop => 0,
                        };
                        (v.label(), k + u)
                    })
                    .collect()
            })
            .collect()
    }

    /// The table's counters, read at most every [`COUNTERS_MAX_AGE`]; none without a table.
    fn kernel_counts(&self) -> Vec<Counted> {
        let table = self.lock();
        let Some(table) = table.as_ref() else {
            return Vec::new();
        };
        let mut cache = self.kernel_counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, counts)) = cache.as_ref() {
            if at.elapsed() < COUNTERS_MAX_AGE {
                return counts.clone();
            }
        }
        match table.counters() {
            Ok(counts) => {
                *cache = Some((Instant::now(), counts.clone()));
                counts
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the nftables counters");
                cache.as_ref().map(|(_, c)| c.clone()).unwrap_or_default()
            }
        }
    }

    /// Sources of service `index` the table refuses for `max_per_source` right now.
    fn full_sources(&self, index: usize) -> usize {
        let full = self.full.lock().unwrap_or_else(|p| p.into_inner());
        full.get(&index).map_or(0, HashSet::len)
    }

    /// `services.<name>.policy` of `/stats`, per service name.
    pub fn json(&self) -> Vec<(String, Value)> {
        let verdicts = self.verdicts();
        self.services
            .iter()
            .zip(verdicts)
            .map(|((name, index, mechanism), counts)| {
                let counts: serde_json::Map<String, Value> = counts
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), json!(n)))
                    .collect();
                let user = self.dataplane.source_gate(*index).counts();
                (
                    name.clone(),
                    json!({
                        "mechanism": mechanism.describe(),
                        "verdicts": counts,
                        "untracked": user.untracked,
                        "full_sources": self.full_sources(index.0),
                    }),
                )
            })
            .collect()
    }

    /// `sallyport_admission_total{service,verdict}` samples for the verdicts of this module
    /// (reject, drop, limit), without the family header.
    pub fn prometheus_samples(&self) -> Vec<(String, &'static str, u64)> {
        let verdicts = self.verdicts();
        self.services
            .iter()
            .zip(verdicts)
            .filter(|((_, _, m), _)| *m != Mechanism::Open)
            .flat_map(|((name, _, _), counts)| {
                counts.into_iter().map(move |(v, n)| (name.clone(), v, n))
            })
            .collect()
    }
}

/// What to add to (`true`) and delete from (`false`) a set holding `present`, for `changes`
/// in order: a source's last change decides, and nothing already so is repeated (nft refuses a
/// batch that adds a present element or deletes an absent one).
fn net_changes(
    present: &HashSet<IpAddr>,
    changes: Vec<sallyport_dataplane::policy::FullChange>,
) -> Vec<(IpAddr, bool)> {
    let mut last: HashMap<IpAddr, bool> = HashMap::new();
    let mut order = Vec::new();
    for c in changes {
        if last.insert(c.key, c.full).is_none() {
            order.push(c.key);
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let full = last[&key];
            (full != present.contains(&key)).then_some((key, full))
        })
        .collect()
}

impl Drop for Policy {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A gateway with no per-source policy still removes the tables of gateways that are gone, so
/// a policy removed from the config does not keep refusing clients after a SIGKILL.
fn remove_leftovers_if_permitted() {
    if crate::config::kernel_verdicts_permitted().is_err() {
        return;
    }
    let Some(nft) = nft::find_nft() else {
        return;
    };
    match nft::remove_leftovers(&nft) {
        Ok(removed) => log_removed(removed),
        Err(e) => tracing::debug!(error = %e, "could not look for leftover nftables tables"),
    }
}

fn log_removed(removed: Vec<String>) {
    for name in removed {
        tracing::info!(table = %name, "removed the nftables table of a gateway that is gone");
    }
}

/// Removes leftovers and installs this gateway's table; `Err` says why the data plane judges
/// instead.
fn install(
    services: &[PublicService],
    closed: &[usize],
    addr: &dyn Fn(usize) -> SocketAddr,
) -> Result<Table, String> {
    crate::config::kernel_verdicts_permitted()?;
    let nft = nft::find_nft().ok_or("no nft binary (install the nftables package)".to_string())?;
    match nft::remove_leftovers(&nft) {
        Ok(removed) => log_removed(removed),
        Err(e) => return Err(format!("nftables unusable: {e}")),
    }
    let listeners: Vec<nft::Listener<'_>> = closed
        .iter()
        .map(|&i| nft::Listener {
            index: i,
            addr: addr(i),
            policy: &services[i].policy,
            accept_proxy: &services[i].accept_proxy,
        })
        .collect();
    let name = nft::table_name();
    let owner = format!(
        "sallyport pid={} (removed when it stops, or by the next gateway once it is gone)",
        std::process::id()
    );
    let text = nft::ruleset(&name, &owner, &listeners);
    let started = std::time::Instant::now();
    let table = Table::install(&nft, &name, &text)
        .map_err(|e| format!("nftables table not installed: {e}"))?;
    tracing::info!(table = %name, listeners = listeners.len(), took_ms = started.elapsed().as_millis() as u64,
        "nftables table installed: per-source verdicts are taken at SYN");
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_dataplane::policy::FullChange;

    #[test]
    fn the_last_change_of_a_source_decides_and_nothing_is_repeated() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let present: HashSet<IpAddr> = [ip("10.0.0.1")].into();
        let changes = [
            ("10.0.0.2", true),
            ("10.0.0.1", false),
            ("10.0.0.3", true),
            ("10.0.0.3", false),
            ("10.0.0.2", false),
            ("10.0.0.2", true),
            ("10.0.0.1", true),
        ]
        .map(|(key, full)| FullChange { key: ip(key), full });
        assert_eq!(
            net_changes(&present, changes.to_vec()),
            [(ip("10.0.0.2"), true)],
            "10.0.0.1 ends present (as it was), 10.0.0.3 ends absent (as it was)"
        );
    }
}
