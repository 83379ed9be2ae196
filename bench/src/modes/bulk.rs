//! `bulk` mode: per path, connections each echo a fixed number of bytes; throughput, ratio to
//! direct and the gateways' CPU seconds per GB.

use std::collections::BTreeMap;
use std::thread;

use anyhow::Result;
use serde_json::{json, Value};

use super::common::{
    client_protocol, document, f2, push_lines, reverse_leg_tls, run_compare, unfinished, Common,
    Outcome, CPU_SETTLE,
};
use crate::load::{self, BulkResult, BulkSpec};
use crate::procs::Progress;
use crate::report::{self, ratio};
use crate::topology::Running;

#[derive(Debug, Clone)]
struct BulkMeasure {
    result: BulkResult,
    /// CPU seconds of each gateway process during the load, public-facing first.
    cpu: Vec<(String, f64)>,
}

impl BulkMeasure {
    /// GB that crossed each gateway: every echoed byte crosses it twice (up and down).
    fn gb_crossed(&self) -> f64 {
        2.0 * self.result.bytes as f64 / 1e9
    }

    fn cpu_per_gb(&self, i: usize) -> Option<f64> {
        self.cpu.get(i).map(|(_, c)| ratio(*c, self.gb_crossed()))
    }

    fn total_cpu_per_gb(&self) -> Option<f64> {
        (!self.cpu.is_empty())
            .then(|| ratio(self.cpu.iter().map(|(_, c)| c).sum(), self.gb_crossed()))
    }
}

fn measure_bulk(running: &mut Running, spec: &BulkSpec) -> Result<BulkMeasure> {
    let before = running.cpu_seconds()?;
    let result = match (&running.tls, &running.ws) {
        (Some(tls), _) => load::bulk_tls(running.addr, spec, tls)?,
        (None, Some(ws)) => load::bulk_ws(running.addr, spec, ws)?,
        (None, None) => load::bulk(running.addr, spec)?,
    };
    if !running.procs.is_empty() {
        thread::sleep(CPU_SETTLE);
    }
    let after = running.cpu_seconds()?;
    running.check_alive()?;
    let cpu = running
        .cpu_names()
        .into_iter()
        .zip(before.iter().zip(&after))
        .map(|(name, (b, a))| (name, (a - b).max(0.0)))
        .collect();
    Ok(BulkMeasure { result, cpu })
}

/// `bulk`: `spec.connections` connections each echo `spec.bytes_per_connection` bytes, per path.
pub fn bulk(common: &Common, spec: &BulkSpec, progress: &mut Progress) -> Result<Outcome> {
    let what = format!(
        "{} connection(s) x {} MiB echoed, {} KiB writes",
        spec.connections,
        spec.bytes_per_connection as f64 / (1 << 20) as f64,
        spec.write_size / 1024
    );
    let (rows, skipped, mut text) =
        run_compare("bulk", &what, common, progress, |r| measure_bulk(r, spec))?;
    let tls = common.tls();
    let mut headers = vec!["path", "GB/s", "direct GB/s", "x direct"];
    if tls {
        headers.extend(["rustls GB/s", "x rustls"]);
    }
    headers.extend([
        "front CPU-s/GB",
        "back CPU-s/GB",
        "total CPU-s/GB",
        "complete",
    ]);
    let opt = |v: Option<f64>| v.map_or("-".to_string(), f2);
    let mut table_rows = Vec::new();
    let mut results = Vec::new();
    let mut incomplete = Vec::new();
    for row in &rows {
        let (m, base) = (&row.m, row.base());
        let x = ratio(m.result.gbytes_per_sec, base.result.gbytes_per_sec);
        let x_rustls = row
            .rustls
            .as_ref()
            .map(|r| ratio(m.result.gbytes_per_sec, r.result.gbytes_per_sec));
        let mut cells = vec![
            row.path.label().to_string(),
            f2(m.result.gbytes_per_sec),
            f2(base.result.gbytes_per_sec),
            f2(x),
        ];
        if tls {
            cells.push(opt(row.rustls.as_ref().map(|r| r.result.gbytes_per_sec)));
            cells.push(opt(x_rustls));
        }
        cells.extend([
            opt(m.cpu_per_gb(0)),
            opt(m.cpu_per_gb(1)),
            opt(m.total_cpu_per_gb()),
            if m.result.complete { "yes" } else { "NO" }.to_string(),
        ]);
        table_rows.push(cells);
        let mut runs = vec![(m, row.path.name()), (base, "direct")];
        if let Some(r) = &row.rustls {
            runs.push((r, "tls-direct"));
        }
        for (r, name) in runs {
            if !r.result.complete && !incomplete.iter().any(|n| n == name) {
                incomplete.push(name.to_string());
            }
        }
        let cpu: BTreeMap<&str, Value> = m
            .cpu
            .iter()
            .map(|(n, c)| {
                (
                    n.as_str(),
                    json!({ "cpu_seconds": c, "cpu_s_per_gb": ratio(*c, m.gb_crossed()) }),
                )
            })
            .collect();
        let mut result = json!({
            "path": row.path,
            "bytes": m.result.bytes,
            "seconds": m.result.seconds,
            "gbytes_per_sec": m.result.gbytes_per_sec,
            "complete": m.result.complete,
            "gateways": cpu,
            "cpu_s_per_gb_total": m.total_cpu_per_gb(),
            "client": client_protocol(row.path, tls),
            "direct": base.result,
            "x_direct": x,
        });
        if tls {
            result["tls"] = json!(row.path.speaks_tls());
            result["reverse_leg_tls"] = json!(reverse_leg_tls(row.path));
            result["rustls"] = json!(row.rustls.as_ref().map(|r| &r.result));
            result["x_rustls"] = json!(x_rustls);
        }
        results.push(result);
    }
    text.push_str(&report::table(&headers, &table_rows));
    push_lines(&mut text, &skipped);
    text.push_str(
        "\nGB/s: bytes echoed back per second. CPU-s/GB: user+system CPU seconds of a gateway process \
         (/proc/PID/stat, all its threads and reaped children) per GB crossing it; every echoed byte \
         crosses twice (up and down).\nfront = the public-facing process (sallyport and ws: the DMZ; vpc: \
         gateway A; rathole server, haproxy, socat); back = the inner one (sallyport and ws: the internal \
         gateway; vpc: gateway B; rathole client).\n",
    );
    if tls {
        text.push_str(
            "rustls GB/s, x rustls: the rustls direct run just before the path (the same TLS client \
             against the bench's own rustls echo server on loopback: the bare-rustls baseline). For \
             rustls direct, front = that echo server's connection threads (RUSAGE_THREAD: TLS \
             termination plus echo, per GB crossing it); for sallyport, the DMZ terminates the \
             client's TLS and re-encrypts on the mutual-TLS reverse leg, the internal gateway \
             decrypts and encrypts the reverse leg.\n",
        );
    }
    let config = json!({
        "connections": spec.connections,
        "bytes_per_connection": spec.bytes_per_connection,
        "write_size": spec.write_size,
    });
    let json = document("bulk", common, config, spec.time_limit, results, &skipped);
    incomplete.dedup();
    Ok(Outcome {
        text,
        json,
        histograms: Vec::new(),
        incomplete: unfinished("bulk did not finish within the time limit on", &incomplete),
    })
}
