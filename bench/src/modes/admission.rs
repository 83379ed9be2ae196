//! Admission control's cost, in two modes:
//! - `cps --admission always,ready,policy`: new tunnels per second through sallyport with each
//!   admission setting of the DMZ's service, every run right after its own direct run, and the
//!   ratio to the `always` run (admission off).
//! - `flood`: request/response latency of a served client while a denied source floods the
//!   DMZ's public port with SYNs, against the same client without the flood, on one running
//!   path (sallyport, the DMZ denying the flooding source).
//!
//! Nothing here decides how the gateway enforces a verdict; it measures what the gateway does
//! with the settings it is given.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::common::{document, f1, f2, push_lines, run_compare, Common, Outcome};
use crate::flood::{Flood, FloodResult};
use crate::load::{self, CpsResult, CpsSpec, RrResult, RrSpec};
use crate::procs::{self, Progress};
use crate::report::{self, ratio};
use crate::topology::PathKind;

/// The DMZ service lines of one `--admission` variant.
pub fn variant_lines(variant: &str) -> Result<Vec<String>> {
    Ok(match variant {
        "always" => vec!["admission = \"always\"".to_string()],
        "ready" => vec!["admission = \"ready\"".to_string()],
        // Each per-source verdict alone, then all of them, at work on every SYN and refusing
        // none of the load: a deny list of 1,000 addresses the load never uses, and limits far
        // above what it opens.
        "deny" => vec![ready(), deny_list()],
        "rate" => vec![ready(), rate_limit()],
        "count" => vec![ready(), count_limit()],
        "policy" => vec![ready(), deny_list(), count_limit(), rate_limit()],
        other => bail!("--admission takes {}, got {other}", VARIANTS.join(", ")),
    })
}

/// The `--admission` settings, in the order a full run measures them.
pub const VARIANTS: [&str; 6] = ["always", "ready", "deny", "rate", "count", "policy"];

fn ready() -> String {
    "admission = \"ready\"".to_string()
}

fn deny_list() -> String {
    format!("deny = [{}]", unused_sources(1_000).join(", "))
}

fn count_limit() -> String {
    "max_per_source = 1000000".to_string()
}

fn rate_limit() -> String {
    "rate_per_source = \"1000000/s\"".to_string()
}

/// `n` quoted addresses in 198.18.0.0/15 (RFC 2544 benchmarking), which loopback never uses.
fn unused_sources(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("\"198.18.{}.{}\"", i / 250, 1 + i % 250))
        .collect()
}

/// `cps --admission LIST`: sallyport's new tunnels per second under each admission setting.
pub fn cps_admission(
    common: &Common,
    spec: &CpsSpec,
    variants: &[String],
    progress: &mut Progress,
) -> Result<Outcome> {
    let what = format!(
        "up to {} connections ({} in parallel, each: connect, one {} B round trip, close) per admission setting, time limit {:.0} s",
        spec.count,
        spec.concurrency,
        spec.size,
        spec.time_limit.as_secs_f64()
    );
    let mut measured: Vec<(String, CpsResult, CpsResult)> = Vec::new();
    let mut text = String::new();
    let mut skipped_all = Vec::new();
    for variant in variants {
        let mut c = common.clone();
        c.paths = vec![PathKind::Sallyport];
        c.gateway.service_extra = variant_lines(variant)?;
        let (rows, skipped, header) = run_compare("cps", &what, &c, progress, |r| {
            let result = load::cps(r.addr, spec)?;
            r.check_alive()?;
            Ok(result)
        })
        .with_context(|| format!("admission {variant}"))?;
        if text.is_empty() {
            text = header;
        }
        skipped_all.extend(skipped);
        let row = rows
            .into_iter()
            .find(|r| r.path == PathKind::Sallyport)
            .context("the sallyport path did not run")?;
        let base = row.base().clone();
        measured.push((variant.clone(), row.m, base));
    }
    let off = measured
        .iter()
        .find(|(v, _, _)| v == "always")
        .map(|(_, m, b)| ratio(m.per_sec(), b.per_sec()));
    let headers = [
        "admission",
        "tunnels",
        "failed",
        "tunnels/s",
        "direct/s",
        "x direct",
        "x always",
        "p50 us",
        "p99 us",
    ];
    let mut table = Vec::new();
    let mut results = Vec::new();
    for (variant, m, base) in &measured {
        let x = ratio(m.per_sec(), base.per_sec());
        let x_off = off.map(|o| ratio(x, o));
        let pct = |r: &CpsResult, p: f64| {
            if r.histogram.is_empty() {
                0.0
            } else {
                r.histogram.value_at_percentile(p) as f64 / 1_000.0
            }
        };
        table.push(vec![
            variant.clone(),
            m.completed.to_string(),
            m.failed.to_string(),
            format!("{:.0}", m.per_sec()),
            format!("{:.0}", base.per_sec()),
            f2(x),
            x_off.map_or("-".to_string(), f2),
            f1(pct(m, 50.0)),
            f1(pct(m, 99.0)),
        ]);
        results.push(json!({
            "admission": variant,
            "service_lines": variant_lines(variant)?,
            "completed": m.completed,
            "failed": m.failed,
            "first_error": m.first_error,
            "tunnels_per_sec": m.per_sec(),
            "direct_per_sec": base.per_sec(),
            "x_direct": x,
            "x_always": x_off,
            "p50_us": pct(m, 50.0),
            "p99_us": pct(m, 99.0),
        }));
    }
    text.push_str(&report::table(&headers, &table));
    push_lines(&mut text, &skipped_all);
    text.push_str(
        "\nx always: this setting's ratio to direct over the always run's (admission off); each run \
         is compared with the direct run taken just before it. deny: ready plus a 1,000-address \
         deny list the load is not in; rate: rate_per_source = 1000000/s; count: max_per_source = \
         1000000; policy: all three. No setting refuses the load, so each verdict is taken on every \
         SYN and nothing else changes.\n",
    );
    let config = json!({
        "count": spec.count,
        "concurrency": spec.concurrency,
        "size": spec.size,
        "admission": variants,
    });
    let json = document(
        "cps",
        common,
        config,
        spec.time_limit,
        results,
        &skipped_all,
    );
    let failed: Vec<&str> = measured
        .iter()
        .filter(|(_, m, _)| m.completed == 0)
        .map(|(v, _, _)| v.as_str())
        .collect();
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: (!failed.is_empty()).then(|| {
            format!(
                "cps: no connection completed with admission {}",
                failed.join(", ")
            )
        }),
    })
}

/// What `flood` is asked to do.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// SYNs per second from the denied source.
    pub rate: u64,
    /// `deny_action` of the DMZ's service for that source.
    pub deny_action: String,
    /// The served client's load, run once without and once during the flood.
    pub rr: RrSpec,
}

/// The flooding source: denied by the DMZ's service in this mode.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// `flood`: a served client's rr latency with and without a SYN flood from a denied source.
pub fn flood(common: &Common, spec: &FloodSpec, progress: &mut Progress) -> Result<Outcome> {
    let what = format!(
        "{} connection(s) x {} requests of {} B, closed loop, without and then during a flood of {} SYN/s from {FLOOD_SOURCE} (deny_action = \"{}\")",
        spec.rr.connections,
        spec.rr.requests_per_connection,
        spec.rr.size,
        spec.rate,
        spec.deny_action,
    );
    let mut c = common.clone();
    c.paths = vec![PathKind::Sallyport];
    c.gateway.service_extra = vec![
        format!("deny = [\"{FLOOD_SOURCE}/32\"]"),
        format!("deny_action = \"{}\"", spec.deny_action),
    ];
    let limit = spec.rr.time_limit + Duration::from_secs(5);
    let (rows, skipped, mut text) = run_compare("flood", &what, &c, progress, |r| {
        let quiet = load::rr(r.addr, &spec.rr)?;
        let IpAddr::V4(ip) = r.addr.ip() else {
            bail!("the public listener is not IPv4: {}", r.addr);
        };
        let flood = Flood::start(
            FLOOD_SOURCE,
            SocketAddrV4::new(ip, r.addr.port()),
            spec.rate,
            limit,
        )?;
        let loud = load::rr(r.addr, &spec.rr);
        let sent = flood.stop()?;
        // The same flood at a port nothing listens on (the kernel answers it, no gateway rule
        // or socket involved): what the flood costs this host's two cores by itself.
        let closed = procs::free_port().context("finding a port nothing listens on")?;
        let closed = SocketAddrV4::new(ip, closed);
        let flood = Flood::start(FLOOD_SOURCE, closed, spec.rate, limit)?;
        let control = load::rr(r.addr, &spec.rr);
        let control_sent = flood.stop()?;
        r.check_alive()?;
        Ok((quiet, loud?, sent, control?, control_sent))
    })?;
    let row = rows
        .iter()
        .find(|r| r.path == PathKind::Sallyport)
        .context("the sallyport path did not run")?;
    let (quiet, loud, sent, control, control_sent): &(
        RrResult,
        RrResult,
        FloodResult,
        RrResult,
        FloodResult,
    ) = &row.m;
    let (q, l, c) = (quiet.summary(), loud.summary(), control.summary());
    let headers = [
        "run",
        "requests",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "p99 x quiet",
        "SYN/s",
    ];
    let table = vec![
        vec![
            "no flood".to_string(),
            quiet.requests.to_string(),
            f1(q.p50_us),
            f1(q.p99_us),
            f1(q.p999_us),
            "1.00".to_string(),
            "0".to_string(),
        ],
        vec![
            "flood".to_string(),
            loud.requests.to_string(),
            f1(l.p50_us),
            f1(l.p99_us),
            f1(l.p999_us),
            f2(ratio(l.p99_us, q.p99_us)),
            format!("{:.0}", sent.per_sec()),
        ],
        vec![
            "flood, closed port".to_string(),
            control.requests.to_string(),
            f1(c.p50_us),
            f1(c.p99_us),
            f1(c.p999_us),
            f2(ratio(c.p99_us, q.p99_us)),
            format!("{:.0}", control_sent.per_sec()),
        ],
    ];
    text.push_str(&report::table(&headers, &table));
    push_lines(&mut text, &skipped);
    text.push_str(&format!(
        "\n{} SYNs sent in {:.1} s from {FLOOD_SOURCE} (raw socket, fresh source port each) to the DMZ's public port, which denies that source; the served client connects from 127.0.0.1. \
         flood, closed port: the same flood at a port nothing listens on, which the kernel answers by itself: the flood's own cost on this host (the sender shares its cores).\n",
        sent.sent, sent.seconds
    ));
    let config = json!({
        "rate": spec.rate,
        "deny_action": spec.deny_action,
        "connections": spec.rr.connections,
        "size": spec.rr.size,
        "requests_per_connection": spec.rr.requests_per_connection,
    });
    let results = vec![json!({
        "quiet": q,
        "flood": l,
        "p99_x_quiet": ratio(l.p99_us, q.p99_us),
        "syn": sent,
        "closed_port_flood": c,
        "closed_port_p99_x_quiet": ratio(c.p99_us, q.p99_us),
        "closed_port_syn": control_sent,
    })];
    let json = document(
        "flood",
        common,
        config,
        spec.rr.time_limit,
        results,
        &skipped,
    );
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_write_the_admission_keys() {
        assert_eq!(variant_lines("always").unwrap(), ["admission = \"always\""]);
        let policy = variant_lines("policy").unwrap();
        assert_eq!(policy[0], "admission = \"ready\"");
        assert_eq!(policy[1].matches("\"198.18.").count(), 1_000);
        assert!(policy[1].contains("\"198.18.3.250\""));
        assert!(variant_lines("verified").is_err());
    }
}
