//! The gateway's numbers in one view: the data plane's merged per-worker counters plus the
//! control thread's own (SOCKS handshake failures, reverse dials), rendered as Prometheus text
//! for `GET /metrics` and as JSON for `GET /stats`.
//!
//! [`StatsSource`] is what the admin endpoint reads: the gateway builds it, `admin` serves it.
//!
//! Counters here are written by the control thread only; the view is built on each read.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use std::sync::Arc;

use sallyport_dataplane::door::DoorState;
use sallyport_dataplane::metrics::{
    names, Outcome, RefusalReason, ServiceSnapshot, Snapshot, Verdict,
};
use sallyport_dataplane::{Dataplane, PublicIndex};
use serde_json::{json, Map, Value};

/// Why a SOCKS5 negotiation on the reverse listener ended without a prepared connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    AuthFailed,
    Closed,
    Malformed,
    NoAcceptableMethod,
    QueueFull,
    /// Closed at accept: its source already had `MAX_HANDSHAKES_PER_SOURCE` in flight.
    SourceLimit,
    Timeout,
    /// The TLS handshake failed: no, an untrusted or an expired client certificate, not TLS…
    Tls,
    UnknownService,
    UnsupportedCommand,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 10] = [
        Self::AuthFailed,
        Self::Closed,
        Self::Malformed,
        Self::NoAcceptableMethod,
        Self::QueueFull,
        Self::SourceLimit,
        Self::Timeout,
        Self::Tls,
        Self::UnknownService,
        Self::UnsupportedCommand,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::Closed => "closed",
            Self::Malformed => "malformed",
            Self::NoAcceptableMethod => "no_acceptable_method",
            Self::QueueFull => "queue_full",
            Self::SourceLimit => "source_limit",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::UnknownService => "unknown_service",
            Self::UnsupportedCommand => "unsupported_command",
        }
    }
}

/// Outcome of one reverse dial by an internal gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialResult {
    /// Connected, negotiated, and the first BIND reply arrived: a prepared connection.
    Parked,
    /// The DMZ could not be reached.
    ConnectFailed,
    /// The DMZ answered but the SOCKS negotiation failed or was refused.
    Rejected,
    /// The back-end's name did not resolve; no dial was made.
    TargetUnresolved,
    /// The TLS handshake with the DMZ failed, or the DMZ rejected our certificate.
    TlsFailed,
}

impl DialResult {
    pub const ALL: [DialResult; 5] = [
        Self::ConnectFailed,
        Self::Parked,
        Self::Rejected,
        Self::TargetUnresolved,
        Self::TlsFailed,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::ConnectFailed => "connect_failed",
            Self::Parked => "parked",
            Self::Rejected => "rejected",
            Self::TargetUnresolved => "target_unresolved",
            Self::TlsFailed => "tls_failed",
        }
    }
}

/// Numbers one internal (reverse://) service keeps.
#[derive(Debug, Default)]
pub struct InternalStats {
    /// Prepared connections parked at the DMZ right now.
    pub parked: AtomicI64,
    pub dials: [AtomicU64; 5],
    /// Paired by the DMZ and handed to a worker.
    pub tunnels: AtomicU64,
    /// Paired, but the back-end refused or timed out: the tunnel was closed at once.
    pub backend_failures: AtomicU64,
    /// Parked connections that ended without being paired.
    pub lost: AtomicU64,
    /// The back-end's state (`backend_probe`), shown as `backend` in `/stats`.
    pub backend: crate::backend_probe::BackendHealth,
}

impl InternalStats {
    pub fn dialed(&self, result: DialResult) {
        let i = DialResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.dials[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters owned by the control thread.
#[derive(Debug, Default)]
pub struct ControlStats {
    pub handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    pub prepared_accepted: AtomicU64,
}

impl ControlStats {
    pub fn failed(&self, why: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|r| *r == why)
            .unwrap_or(0);
        self.handshake_failures[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A service as the stats view names it.
pub enum ServiceView<'a> {
    /// Public service at the DMZ: index into the data plane's services.
    Dmz { name: &'a str, index: PublicIndex },
    /// Forwarding service (its own upstream connection per client): index into the data
    /// plane's services.
    Forward { name: &'a str, index: PublicIndex },
    Internal {
        name: &'a str,
        stats: &'a InternalStats,
    },
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A public service's `admission` object: its verdict counts and, for a DMZ service, its
/// state (up/down, since when, why) and how the state reaches clients.
fn admission_json(s: &ServiceSnapshot) -> Value {
    let verdicts: Map<String, Value> = Verdict::ALL
        .iter()
        .zip(s.admission)
        .map(|(v, n)| (v.label().to_string(), json!(n)))
        .collect();
    let mut out = json!({
        "verdicts": verdicts,
        "note": "SYNs the kernel refuses (a listener closed while down) never reach the gateway and are not counted",
    });
    if let Some(door) = &s.door {
        let since = door
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let for_seconds = door.since.elapsed().map_or(0.0, |d| d.as_secs_f64());
        out["state"] = json!(door.state.label());
        out["since_unix"] = json!(since);
        out["for_seconds"] = json!(for_seconds);
        out["why"] = json!(door.why.text());
        out["mechanism"] = json!(door.mechanism.text());
        out["changes"] = json!(door.changes);
    }
    out
}

/// `GET /stats`: one JSON document.
pub fn to_json(
    services: &[ServiceView<'_>],
    snap: &Snapshot,
    control: &ControlStats,
    workers: usize,
) -> Value {
    let mut per_service = Map::new();
    for s in services {
        let (name, value) = match s {
            ServiceView::Dmz { name, index } => {
                let d = &snap.service(*index);
                let refused: Map<String, Value> = RefusalReason::ALL
                    .iter()
                    .zip(d.refused)
                    .map(|(r, n)| (r.label().to_string(), json!(n)))
                    .collect();
                (
                    *name,
                    json!({
                        "role": "dmz",
                        "prepared": d.prepared,
                        "waiting": d.waiting,
                        "accepted": d.accepted,
                        "waited": d.waited,
                        "refused": refused,
                        "prepared_lost": d.prepared_lost,
                        "prepared_stolen": d.stolen,
                        "tls_failures": d.tls_failures,
                        "proxy_header_failures": d.proxy_header_failures,
                        "ws_rejects": d.ws_rejects,
                        "admission": admission_json(d),
                    }),
                )
            }
            ServiceView::Forward { name, index } => {
                let f = &snap.service(*index);
                (
                    *name,
                    json!({
                        "role": "forward",
                        "accepted": f.accepted,
                        "upstream_failures": f.upstream_failures,
                        "ws_rejects": f.ws_rejects,
                        "tls_failures": f.tls_failures,
                        "proxy_header_failures": f.proxy_header_failures,
                        "admission": admission_json(f),
                    }),
                )
            }
            ServiceView::Internal { name, stats } => {
                let dials: Map<String, Value> = DialResult::ALL
                    .iter()
                    .zip(&stats.dials)
                    .map(|(r, n)| (r.label().to_string(), json!(load(n))))
                    .collect();
                (
                    *name,
                    json!({
                        "role": "internal",
                        "prepared": stats.parked.load(Ordering::Relaxed),
                        "dials": dials,
                        "tunnels": load(&stats.tunnels),
                        "backend_failures": load(&stats.backend_failures),
                        "prepared_lost": load(&stats.lost),
                        "backend": stats.backend.to_json(),
                    }),
                )
            }
        };
        per_service.insert(name.to_string(), value);
    }
    let failures: Map<String, Value> = HandshakeFailure::ALL
        .iter()
        .zip(&control.handshake_failures)
        .map(|(r, n)| (r.label().to_string(), json!(load(n))))
        .collect();
    let closes: Map<String, Value> = Outcome::ALL
        .iter()
        .zip(snap.closes)
        .map(|(r, n)| (r.label().to_string(), json!(n)))
        .collect();
    let close_reasons: Vec<Value> = snap
        .close_reasons
        .iter()
        .map(|(r, n)| {
            json!({
                "reason": r.reason.label(),
                "side": r.side_label(),
                "errno": r.errno.label(),
                "count": n,
            })
        })
        .collect();
    json!({
        "workers": workers,
        "services": per_service,
        "tunnels": {
            "active": snap.tunnels_active,
            "total": snap.tunnels_total,
            "closes": closes,
            "close_reasons": close_reasons,
        },
        "bytes": { "upstream": snap.bytes_upstream, "downstream": snap.bytes_downstream },
        "handshake_failures": failures,
        "prepared_accepted": load(&control.prepared_accepted),
        "splice_fallbacks": snap.splice_fallbacks,
        "accept_pauses": snap.accept_pauses,
    })
}

/// Prometheus text exposition format, one family at a time.
struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            self.out.push_str(&format!("{{{}}}", inner.join(",")));
        }
        self.out.push_str(&format!(" {value}\n"));
    }
}

/// `GET /metrics`.
pub fn to_prometheus(
    services: &[ServiceView<'_>],
    snap: &Snapshot,
    control: &ControlStats,
) -> String {
    to_prometheus_with(services, snap, control, &[])
}

/// [`to_prometheus`], with verdicts counted outside the data plane (the kernel's per-source
/// table, verified admission's SYN verdicts) added to `sallyport_admission_total`:
/// `(service, verdict label, count)`.
pub fn to_prometheus_with(
    services: &[ServiceView<'_>],
    snap: &Snapshot,
    control: &ControlStats,
    outside: &[(String, &'static str, u64)],
) -> String {
    let mut p = Prom { out: String::new() };
    if services
        .iter()
        .any(|s| !matches!(s, ServiceView::Forward { .. }))
    {
        p.family(
            names::PREPARED,
            "gauge",
            "Prepared connections parked, per service.",
        );
    }
    for s in services {
        match s {
            ServiceView::Dmz { name, index } => p.sample(
                names::PREPARED,
                &[("service", name)],
                snap.service(*index).prepared,
            ),
            ServiceView::Internal { name, stats } => p.sample(
                names::PREPARED,
                &[("service", name)],
                stats.parked.load(Ordering::Relaxed),
            ),
            ServiceView::Forward { .. } => {}
        }
    }
    let dmz: Vec<(&str, PublicIndex)> = services
        .iter()
        .filter_map(|s| match s {
            ServiceView::Dmz { name, index } => Some((*name, *index)),
            _ => None,
        })
        .collect();
    // Every service with a public listener: DMZ and forwarding, in file order.
    let public: Vec<(&str, PublicIndex)> = services
        .iter()
        .filter_map(|s| match s {
            ServiceView::Dmz { name, index } | ServiceView::Forward { name, index } => {
                Some((*name, *index))
            }
            ServiceView::Internal { .. } => None,
        })
        .collect();
    let forward: Vec<(&str, PublicIndex)> = services
        .iter()
        .filter_map(|s| match s {
            ServiceView::Forward { name, index } => Some((*name, *index)),
            _ => None,
        })
        .collect();
    if !public.is_empty() {
        p.family(
            names::CLIENTS_ACCEPTED,
            "counter",
            "Public clients accepted.",
        );
        for (name, i) in &public {
            p.sample(
                names::CLIENTS_ACCEPTED,
                &[("service", name)],
                snap.service(*i).accepted,
            );
        }
        p.family(
            names::TLS_FAILURES,
            "counter",
            "Public clients of tls:// and wss:// listeners whose TLS handshake failed or timed out.",
        );
        for (name, i) in &public {
            p.sample(
                names::TLS_FAILURES,
                &[("service", name)],
                snap.service(*i).tls_failures,
            );
        }
        p.family(
            names::PROXY_HEADER_FAILURES,
            "counter",
            "Connections from an accept_proxy source closed for a missing, truncated or malformed \
             PROXY header.",
        );
        for (name, i) in &public {
            p.sample(
                names::PROXY_HEADER_FAILURES,
                &[("service", name)],
                snap.service(*i).proxy_header_failures,
            );
        }
        p.family(
            names::WS_REJECTS,
            "counter",
            "WebSocket upgrade requests answered with an HTTP error (404, 400, 426, 431...), counted \
             on the first service of a shared port.",
        );
        for (name, i) in &public {
            p.sample(
                names::WS_REJECTS,
                &[("service", name)],
                snap.service(*i).ws_rejects,
            );
        }
    }
    if !public.is_empty() {
        p.family(
            names::ADMISSION,
            "counter",
            "Public clients by admission verdict (SYNs the kernel refused while a listener was \
             closed are not seen, so not counted).",
        );
        for (name, i) in &public {
            for (verdict, n) in Verdict::ALL.iter().zip(snap.service(*i).admission) {
                let label = verdict.label();
                let more: u64 = outside
                    .iter()
                    .filter(|(s, v, _)| s == name && *v == label)
                    .map(|(_, _, n)| n)
                    .sum();
                p.sample(
                    names::ADMISSION,
                    &[("service", name), ("verdict", label)],
                    n + more,
                );
            }
        }
    }
    let up: Vec<(&str, bool)> = dmz
        .iter()
        .filter_map(|(name, i)| {
            let door = snap.service(*i).door.as_ref()?;
            Some((*name, door.state == DoorState::Up))
        })
        .collect();
    if !up.is_empty() {
        p.family(
            names::SERVICE_UP,
            "gauge",
            "DMZ services: 1 while up (a prepared connection is parked, or was within the \
             service's timeout), 0 while down.",
        );
        for (name, is_up) in up {
            p.sample(names::SERVICE_UP, &[("service", name)], u8::from(is_up));
        }
    }
    if !forward.is_empty() {
        p.family(
            names::UPSTREAM_FAILURES,
            "counter",
            "Clients of forwarding services reset because the upstream refused or did not answer in time.",
        );
        for (name, i) in &forward {
            p.sample(
                names::UPSTREAM_FAILURES,
                &[("service", name)],
                snap.service(*i).upstream_failures,
            );
        }
    }
    if !dmz.is_empty() {
        p.family(
            names::WAITING_CLIENTS,
            "gauge",
            "Public clients waiting for a prepared connection.",
        );
        for (name, i) in &dmz {
            p.sample(
                names::WAITING_CLIENTS,
                &[("service", name)],
                snap.service(*i).waiting,
            );
        }
        p.family(
            names::CLIENTS_WAITED,
            "counter",
            "Public clients that found no prepared connection on arrival.",
        );
        for (name, i) in &dmz {
            p.sample(
                names::CLIENTS_WAITED,
                &[("service", name)],
                snap.service(*i).waited,
            );
        }
        p.family(
            names::REFUSALS,
            "counter",
            "Public clients reset at the door, by reason.",
        );
        for (name, i) in &dmz {
            for (reason, n) in RefusalReason::ALL.iter().zip(snap.service(*i).refused) {
                p.sample(
                    names::REFUSALS,
                    &[("service", name), ("reason", reason.label())],
                    n,
                );
            }
        }
        p.family(
            names::PREPARED_LOST,
            "counter",
            "Prepared connections that closed or spoke while parked.",
        );
        for (name, i) in &dmz {
            p.sample(
                names::PREPARED_LOST,
                &[("service", name)],
                snap.service(*i).prepared_lost,
            );
        }
        p.family(
            names::PREPARED_STOLEN,
            "counter",
            "Prepared connections moved to another worker that had a client waiting.",
        );
        for (name, i) in &dmz {
            p.sample(
                names::PREPARED_STOLEN,
                &[("service", name)],
                snap.service(*i).stolen,
            );
        }
        p.family(
            names::HANDSHAKE_FAILURES,
            "counter",
            "Negotiations on the reverse listener (TLS handshake, SOCKS5) that failed, by reason.",
        );
        for (reason, n) in HandshakeFailure::ALL
            .iter()
            .zip(&control.handshake_failures)
        {
            p.sample(
                names::HANDSHAKE_FAILURES,
                &[("reason", reason.label())],
                load(n),
            );
        }
    }
    let internal: Vec<(&str, &InternalStats)> = services
        .iter()
        .filter_map(|s| match s {
            ServiceView::Internal { name, stats } => Some((*name, *stats)),
            _ => None,
        })
        .collect();
    if !internal.is_empty() {
        p.family(
            names::RECONNECTS,
            "counter",
            "Reverse dials to the DMZ, by result.",
        );
        for (name, stats) in &internal {
            for (result, n) in DialResult::ALL.iter().zip(&stats.dials) {
                p.sample(
                    names::RECONNECTS,
                    &[("service", name), ("result", result.label())],
                    load(n),
                );
            }
        }
    }
    p.family(names::TUNNELS_ACTIVE, "gauge", "Tunnels relaying now.");
    p.sample(names::TUNNELS_ACTIVE, &[], snap.tunnels_active);
    p.family(names::TUNNELS_TOTAL, "counter", "Tunnels opened.");
    p.sample(names::TUNNELS_TOTAL, &[], snap.tunnels_total);
    p.family(
        names::TUNNEL_CLOSES,
        "counter",
        "Tunnels closed, by reason.",
    );
    for (reason, n) in Outcome::ALL.iter().zip(snap.closes) {
        p.sample(names::TUNNEL_CLOSES, &[("reason", reason.label())], n);
    }
    p.family(
        names::TUNNEL_CLOSE_REASONS,
        "counter",
        "Tunnels closed, by what ended them, on which leg, with which errno (only those seen).",
    );
    for (r, n) in &snap.close_reasons {
        let labels = [
            ("reason", r.reason.label()),
            ("side", r.side_label()),
            ("errno", r.errno.label()),
        ];
        p.sample(names::TUNNEL_CLOSE_REASONS, &labels, n);
    }
    p.family(
        names::BYTES,
        "counter",
        "Bytes relayed, by direction (upstream: toward the back-end).",
    );
    p.sample(
        names::BYTES,
        &[("direction", "upstream")],
        snap.bytes_upstream,
    );
    p.sample(
        names::BYTES,
        &[("direction", "downstream")],
        snap.bytes_downstream,
    );
    p.family(
        names::SPLICE_FALLBACKS,
        "counter",
        "Tunnel directions that fell back to buffered copy (no pipe).",
    );
    p.sample(names::SPLICE_FALLBACKS, &[], snap.splice_fallbacks);
    p.family(
        names::ACCEPT_PAUSES,
        "counter",
        "Listener accepts paused for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
    );
    p.sample(names::ACCEPT_PAUSES, &[], snap.accept_pauses);
    p.out
}

/// A service as the stats know it: DMZ and forwarding services by their index among the data
/// plane's public services.
pub enum ServiceKind {
    Dmz(PublicIndex),
    Forward(PublicIndex),
    Internal(Arc<InternalStats>),
}

/// What `/metrics` and `/stats` read.
pub struct StatsSource {
    services: Vec<(String, ServiceKind)>,
    control: Arc<ControlStats>,
    dataplane: Arc<Dataplane>,
    /// Per-source policy: `services.<name>.policy` and `sallyport_admission_total`.
    policy: Option<Arc<crate::netfilter::policy::Policy>>,
    /// Services with `admission = "verified"`: shown under their `verified` key.
    verified: Vec<(String, crate::netfilter::nfqueue::VerifiedView)>,
}

impl StatsSource {
    /// `services` in file order, with their kind and index.
    pub fn new(
        services: Vec<(String, ServiceKind)>,
        control: Arc<ControlStats>,
        dataplane: Arc<Dataplane>,
    ) -> StatsSource {
        StatsSource {
            services,
            control,
            dataplane,
            policy: None,
            verified: Vec::new(),
        }
    }

    /// Adds each public service's per-source policy (mechanism, verdicts) to the views.
    pub fn with_policy(mut self, policy: Arc<crate::netfilter::policy::Policy>) -> StatsSource {
        self.policy = Some(policy);
        self
    }

    /// Adds the verified-admission view of these services to `/stats`.
    pub fn with_verified(
        mut self,
        verified: Vec<(String, crate::netfilter::nfqueue::VerifiedView)>,
    ) -> StatsSource {
        self.verified = verified;
        self
    }

    fn views(&self) -> Vec<ServiceView<'_>> {
        self.services
            .iter()
            .map(|(name, kind)| match kind {
                ServiceKind::Dmz(index) => ServiceView::Dmz {
                    name,
                    index: *index,
                },
                ServiceKind::Forward(index) => ServiceView::Forward {
                    name,
                    index: *index,
                },
                ServiceKind::Internal(stats) => ServiceView::Internal { name, stats },
            })
            .collect()
    }

    pub fn json(&self) -> Value {
        let snap = self.dataplane.snapshot();
        let mut value = to_json(
            &self.views(),
            &snap,
            &self.control,
            self.dataplane.workers(),
        );
        if let Some(policy) = &self.policy {
            for (name, p) in policy.json() {
                if let Some(service) = value["services"].get_mut(&name) {
                    service["policy"] = p;
                }
            }
        }
        for (name, view) in &self.verified {
            if let Some(service) = value["services"].get_mut(name.as_str()) {
                service["verified"] = view.json();
            }
        }
        value
    }

    pub fn prometheus(&self) -> String {
        let snap = self.dataplane.snapshot();
        let mut outside = self
            .policy
            .as_ref()
            .map(|p| p.prometheus_samples())
            .unwrap_or_default();
        for (name, view) in &self.verified {
            outside.extend(view.verdict_samples().map(|(v, n)| (name.clone(), v, n)));
        }
        to_prometheus_with(&self.views(), &snap, &self.control, &outside)
    }

    /// Prepared connections of `service` right now (parked at this DMZ, or parked by this
    /// internal gateway), if the service exists.
    pub fn prepared(&self, service: &str) -> Option<i64> {
        self.json()["services"][service]["prepared"].as_i64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_dataplane::metrics::ServiceSnapshot;

    #[test]
    fn views_agree() {
        let snap = Snapshot {
            services: vec![ServiceSnapshot {
                prepared: 4,
                refused: [2, 0],
                tls_failures: 5,
                ..Default::default()
            }],
            tunnels_total: 9,
            bytes_upstream: 100,
            ..Default::default()
        };
        let control = ControlStats::default();
        control.failed(HandshakeFailure::UnknownService);
        control.failed(HandshakeFailure::Tls);
        let internal = InternalStats::default();
        internal.parked.store(3, Ordering::Relaxed);
        internal.dialed(DialResult::Parked);
        internal.dialed(DialResult::TlsFailed);
        let views = [
            ServiceView::Dmz {
                name: "echo",
                index: PublicIndex(0),
            },
            ServiceView::Internal {
                name: "db",
                stats: &internal,
            },
        ];
        let j = to_json(&views, &snap, &control, 2);
        assert_eq!(j["services"]["echo"]["prepared"], 4);
        assert_eq!(j["services"]["echo"]["refused"]["no_prepared"], 2);
        assert_eq!(j["services"]["db"]["prepared"], 3);
        assert_eq!(j["services"]["db"]["dials"]["parked"], 1);
        assert_eq!(j["handshake_failures"]["unknown_service"], 1);
        assert_eq!(j["handshake_failures"]["tls"], 1);
        assert_eq!(j["services"]["echo"]["tls_failures"], 5);
        assert_eq!(j["services"]["db"]["dials"]["tls_failed"], 1);
        let text = to_prometheus(&views, &snap, &control);
        assert!(text.contains("sallyport_prepared_connections{service=\"echo\"} 4\n"));
        assert!(text.contains("sallyport_prepared_connections{service=\"db\"} 3\n"));
        assert!(text.contains("sallyport_handshake_failures_total{reason=\"unknown_service\"} 1\n"));
        assert!(
            text.contains("sallyport_refusals_total{service=\"echo\",reason=\"no_prepared\"} 2\n")
        );
        assert!(text.contains("sallyport_tunnels_total 9\n"));
        assert!(text.contains("sallyport_handshake_failures_total{reason=\"tls\"} 1\n"));
        assert!(text.contains("sallyport_public_tls_failures_total{service=\"echo\"} 5\n"));
        assert!(text
            .contains("sallyport_reverse_dials_total{service=\"db\",result=\"tls_failed\"} 1\n"));
    }

    #[test]
    fn dmz_services_show_their_admission_state() {
        use sallyport_dataplane::door::{DoorStatus, Mechanism, Why};
        let snap = Snapshot {
            services: vec![ServiceSnapshot {
                admission: [3, 1, 0, 0, 0],
                door: Some(DoorStatus {
                    state: DoorState::Down,
                    why: Why::LastLost,
                    since: std::time::SystemTime::now(),
                    mechanism: Mechanism::ListenerClosed,
                    changes: 2,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let views = [ServiceView::Dmz {
            name: "echo",
            index: PublicIndex(0),
        }];
        let control = ControlStats::default();
        let j = to_json(&views, &snap, &control, 1);
        let a = &j["services"]["echo"]["admission"];
        assert_eq!(a["state"], "down");
        assert_eq!(a["why"], "last prepared connection lost");
        assert_eq!(a["mechanism"], "listener closed while down");
        assert_eq!(a["changes"], 2);
        assert_eq!(a["verdicts"]["accept"], 3);
        assert_eq!(a["verdicts"]["down"], 1);
        let text = to_prometheus(&views, &snap, &control);
        assert!(
            text.contains("sallyport_service_up{service=\"echo\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("sallyport_admission_total{service=\"echo\",verdict=\"accept\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("sallyport_admission_total{service=\"echo\",verdict=\"down\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn forwarding_services_show_their_own_counters() {
        let snap = Snapshot {
            services: vec![
                ServiceSnapshot {
                    accepted: 7,
                    upstream_failures: 3,
                    ws_rejects: 2,
                    tls_failures: 1,
                    proxy_header_failures: 5,
                    ..Default::default()
                },
                ServiceSnapshot {
                    prepared: 1,
                    ws_rejects: 4,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let control = ControlStats::default();
        let views = [
            ServiceView::Forward {
                name: "vpc",
                index: PublicIndex(0),
            },
            ServiceView::Dmz {
                name: "echo",
                index: PublicIndex(1),
            },
        ];
        let j = to_json(&views, &snap, &control, 1);
        let mut vpc = j["services"]["vpc"].clone();
        assert_eq!(vpc["admission"]["verdicts"]["accept"], 0);
        assert_eq!(
            vpc["admission"]["state"],
            Value::Null,
            "no state for forwarding"
        );
        vpc.as_object_mut().expect("an object").remove("admission");
        assert_eq!(
            vpc,
            json!({"role": "forward", "accepted": 7, "upstream_failures": 3, "ws_rejects": 2, "tls_failures": 1, "proxy_header_failures": 5})
        );
        assert_eq!(j["services"]["echo"]["ws_rejects"], 4);
        assert_eq!(j["services"]["vpc"]["prepared"], Value::Null);
        let text = to_prometheus(&views, &snap, &control);
        assert!(text.contains("sallyport_upstream_failures_total{service=\"vpc\"} 3\n"));
        assert!(text.contains("sallyport_ws_rejects_total{service=\"vpc\"} 2\n"));
        assert!(text.contains("sallyport_proxy_header_failures_total{service=\"vpc\"} 5\n"));
        assert!(text.contains("sallyport_ws_rejects_total{service=\"echo\"} 4\n"));
        assert!(text.contains("sallyport_clients_accepted_total{service=\"vpc\"} 7\n"));
        assert!(text.contains("sallyport_public_tls_failures_total{service=\"vpc\"} 1\n"));
        assert!(!text.contains("sallyport_prepared_connections{service=\"vpc\"}"));
        assert!(!text.contains("sallyport_upstream_failures_total{service=\"echo\"}"));
        assert!(!text.contains("sallyport_waiting_clients{service=\"vpc\"}"));

        // A gateway that only forwards has no prepared-connection families at all.
        let only = [ServiceView::Forward {
            name: "vpc",
            index: PublicIndex(0),
        }];
        let text = to_prometheus(&only, &snap, &control);
        assert!(!text.contains("sallyport_prepared_connections"), "{text}");
        assert!(
            !text.contains("sallyport_handshake_failures_total"),
            "{text}"
        );
        assert!(text.contains("# TYPE sallyport_upstream_failures_total counter\n"));
    }
}
