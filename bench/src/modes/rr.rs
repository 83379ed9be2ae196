//! `rr` mode: per path, request/response latency percentiles and the ratio to direct (with
//! `--tls`, to tls-direct too), closed or open loop.

use anyhow::Result;
use serde_json::json;

use super::common::{
    client_protocol, document, f2, push_lines, reverse_leg_tls, run_compare, unfinished, Common,
    Outcome,
};
use crate::load::{self, LatencySummary, RrResult, RrSpec};
use crate::procs::Progress;
use crate::report::{self, ratio};
use crate::topology::Running;

fn measure_rr(running: &mut Running, spec: &RrSpec) -> Result<RrResult> {
    let result = match (&running.tls, &running.ws) {
        (Some(tls), _) => load::rr_tls(running.addr, spec, tls)?,
        (None, Some(ws)) => load::rr_ws(running.addr, spec, ws)?,
        (None, None) => load::rr(running.addr, spec)?,
    };
    running.check_alive()?;
    Ok(result)
}

/// `rr`: request/response latency per path (closed loop, or open loop at `spec.rate_per_sec`).
pub fn rr(common: &Common, spec: &RrSpec, progress: &mut Progress) -> Result<Outcome> {
    let what = format!(
        "{} connection(s) x {} requests of {} B, {}",
        spec.connections,
        spec.requests_per_connection,
        spec.size,
        match spec.rate_per_sec {
            None => "closed loop".to_string(),
            Some(rate) =>
                format!("open loop at {rate} requests/s (latency from the intended send time)"),
        }
    );
    let (rows, skipped, mut text) =
        run_compare("rr", &what, common, progress, |r| measure_rr(r, spec))?;
    let tls = common.tls();
    let mut headers = vec!["path"];
    headers.extend(LatencySummary::COLUMNS);
    headers.extend(["p50 x direct", "p99 x direct", "p99.9 x direct"]);
    if tls {
        headers.extend(["p50 x rustls", "p99 x rustls", "p99.9 x rustls"]);
    }
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut histograms = Vec::new();
    let mut short = Vec::new();
    let wanted = spec
        .requests_per_connection
        .saturating_mul(spec.connections as u64);
    for row in &rows {
        let s = row.m.summary();
        let d = row.base().summary();
        if row.m.requests < wanted {
            short.push(row.path.name());
        }
        let t = row.rustls.as_ref().map(RrResult::summary);
        let mut cells = vec![row.path.label().to_string()];
        cells.extend(s.cells());
        cells.extend(
            [
                ratio(s.p50_us, d.p50_us),
                ratio(s.p99_us, d.p99_us),
                ratio(s.p999_us, d.p999_us),
            ]
            .map(f2),
        );
        let x_rustls = t.as_ref().map(|t| {
            [
                ratio(s.p50_us, t.p50_us),
                ratio(s.p99_us, t.p99_us),
                ratio(s.p999_us, t.p999_us),
            ]
        });
        if tls {
            match x_rustls {
                Some(x) => cells.extend(x.map(f2)),
                None => cells.extend(["-", "-", "-"].map(String::from)),
            }
        }
        table_rows.push(cells);
        let mut result = json!({
            "path": row.path,
            "seconds": row.m.seconds,
            "latency": s,
            "client": client_protocol(row.path, tls),
            "direct": d,
            "x_direct": {
                "p50": ratio(s.p50_us, d.p50_us),
                "p99": ratio(s.p99_us, d.p99_us),
                "p999": ratio(s.p999_us, d.p999_us),
            },
        });
        if tls {
            result["tls"] = json!(row.path.speaks_tls());
            result["reverse_leg_tls"] = json!(reverse_leg_tls(row.path));
            result["rustls"] = json!(t);
            result["x_rustls"] = json!(x_rustls.map(|[p50, p99, p999]| json!({
                "p50": p50,
                "p99": p99,
                "p999": p999,
            })));
        }
        results.push(result);
        histograms.push((row.path, row.m.histogram.clone()));
    }
    text.push_str(&report::table(&headers, &table_rows));
    push_lines(&mut text, &skipped);
    text.push_str(
        "\nLatency from sending a request to having its whole reply, in microseconds (HdrHistogram, \
         3 significant digits).\n",
    );
    if tls {
        text.push_str(
            "x rustls: against the rustls direct run just before the path (the same TLS client against \
             the bench's own rustls echo server on loopback). TLS handshakes happen before the clock \
             starts; each request and reply is one TLS record.\n",
        );
    }
    let config = json!({
        "connections": spec.connections,
        "size": spec.size,
        "requests_per_connection": spec.requests_per_connection,
        "rate_per_sec": spec.rate_per_sec,
    });
    let json = document("rr", common, config, spec.time_limit, results, &skipped);
    Ok(Outcome {
        text,
        json,
        histograms,
        incomplete: unfinished(
            "rr stopped at the time limit before every request was sent on",
            &short,
        )
        .filter(|_| spec.rate_per_sec.is_none()),
    })
}
