//! `cps` mode: per path, short-lived connections per second and the pool's refill counters.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::common::{document, f1, f2, push_lines, run_compare, unfinished, Common, Outcome};
use crate::admin;
use crate::load::{self, CpsResult, CpsSpec};
use crate::procs::Progress;
use crate::report::{self, ratio};
use crate::topology::{PathKind, Running, SERVICE};

/// Deltas of the DMZ's `/stats` over a cps run.
#[derive(Debug, Clone, serde::Serialize)]
struct PoolDeltas {
    prepared_accepted: u64,
    waited: u64,
    refused_no_prepared: u64,
    accepted: u64,
}

#[derive(Debug, Clone)]
struct CpsMeasure {
    result: CpsResult,
    pool: Option<PoolDeltas>,
}

fn pool_counters(stats: &Value) -> PoolDeltas {
    let service = |key: &str| admin::counter(stats, &format!("/services/{SERVICE}/{key}"));
    PoolDeltas {
        prepared_accepted: admin::counter(stats, "/prepared_accepted"),
        waited: service("waited"),
        refused_no_prepared: service("refused/no_prepared"),
        accepted: service("accepted"),
    }
}

fn measure_cps(running: &mut Running, spec: &CpsSpec) -> Result<CpsMeasure> {
    let before = running.dmz_stats()?;
    let result = load::cps(running.addr, spec)?;
    let after = running.dmz_stats()?;
    running.check_alive()?;
    let pool = before.zip(after).map(|(b, a)| {
        let (b, a) = (pool_counters(&b), pool_counters(&a));
        PoolDeltas {
            prepared_accepted: a.prepared_accepted.saturating_sub(b.prepared_accepted),
            waited: a.waited.saturating_sub(b.waited),
            refused_no_prepared: a.refused_no_prepared.saturating_sub(b.refused_no_prepared),
            accepted: a.accepted.saturating_sub(b.accepted),
        }
    });
    Ok(CpsMeasure { result, pool })
}

/// `cps`: new tunnels per second (connect, one round trip, close), per path.
pub fn cps(common: &Common, spec: &CpsSpec, progress: &mut Progress) -> Result<Outcome> {
    if common.paths.contains(&PathKind::Ws) {
        bail!("path ws needs the WebSocket load, which bulk and rr have; cps opens plain TCP connections (vpc works)");
    }
    let what = format!(
        "up to {} connections ({} in parallel, each: connect, one {} B round trip, close), time limit {:.0} s",
        spec.count,
        spec.concurrency,
        spec.size,
        spec.time_limit.as_secs_f64()
    );
    let (rows, skipped, mut text) =
        run_compare("cps", &what, common, progress, |r| measure_cps(r, spec))?;
    let headers = [
        "path",
        "tunnels",
        "failed",
        "tunnels/s",
        "direct/s",
        "x direct",
        "p50 us",
        "p99 us",
        "refill/s",
        "waited %",
        "refused",
    ];
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for row in &rows {
        let (m, base) = (&row.m, row.base());
        let r = &m.result;
        let pct = |p: f64| {
            if r.histogram.is_empty() {
                0.0
            } else {
                r.histogram.value_at_percentile(p) as f64 / 1_000.0
            }
        };
        let x = ratio(r.per_sec(), base.result.per_sec());
        let refill = m
            .pool
            .as_ref()
            .map(|p| ratio(p.prepared_accepted as f64, r.seconds));
        let waited = m
            .pool
            .as_ref()
            .map(|p| ratio(p.waited as f64, r.completed as f64));
        table_rows.push(vec![
            row.path.to_string(),
            r.completed.to_string(),
            r.failed.to_string(),
            format!("{:.0}", r.per_sec()),
            format!("{:.0}", base.result.per_sec()),
            f2(x),
            f1(pct(50.0)),
            f1(pct(99.0)),
            refill.map_or("-".to_string(), |v| format!("{v:.0}")),
            waited.map_or("-".to_string(), |v| format!("{:.1}", v * 100.0)),
            m.pool
                .as_ref()
                .map_or("-".to_string(), |p| p.refused_no_prepared.to_string()),
        ]);
        if let Some(e) = &r.first_error {
            notes.push(format!("{}: first failure: {e}", row.path));
        }
        results.push(json!({
            "path": row.path,
            "completed": r.completed,
            "failed": r.failed,
            "first_error": r.first_error,
            "seconds": r.seconds,
            "tunnels_per_sec": r.per_sec(),
            "p50_us": pct(50.0),
            "p99_us": pct(99.0),
            "direct": {
                "completed": base.result.completed,
                "failed": base.result.failed,
                "seconds": base.result.seconds,
                "per_sec": base.result.per_sec(),
            },
            "x_direct": x,
            "dmz_stats_delta": m.pool,
            "refill_per_sec": refill,
            "waited_per_tunnel": waited,
        }));
    }
    text.push_str(&report::table(&headers, &table_rows));
    push_lines(&mut text, &skipped);
    text.push_str(
        "\np50/p99: time from connect to the whole reply. From the DMZ's /stats over the run (sallyport \
         only): refill/s = prepared connections accepted per second; waited % = clients that found no \
         prepared connection at once, per tunnel; refused = clients reset because none came in time.\n",
    );
    for n in notes {
        text.push_str(&n);
        text.push('\n');
    }
    let config = json!({
        "count": spec.count,
        "concurrency": spec.concurrency,
        "size": spec.size,
    });
    let json = document("cps", common, config, spec.time_limit, results, &skipped);
    let incomplete = rows
        .iter()
        .filter(|r| r.m.result.completed == 0)
        .map(|r| r.path.name())
        .collect::<Vec<_>>();
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: unfinished("cps: no connection completed on", &incomplete),
    })
}
