//! Every orchestrated mode of `sallyport-bench` run end to end with tiny sizes, through the real
//! `sallyport` binary (built once here) and any installed peers. No timing assertions: only that
//! each mode runs, prints its table, writes its files and stops what it started.
#![deny(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sallyport-bench");

/// Builds the `sallyport` binary next to the bench binary once (same profile), and returns it.
fn sallyport() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(BIN).parent().expect("bench binary directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(cargo);
        // Inherited, it would change the build's fingerprints (see tests/src/lib.rs).
        cmd.env_remove("CARGO_MANIFEST_DIR");
        cmd.args(["build", "-p", "sallyport", "--bin", "sallyport"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "building sallyport failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = dir.join("sallyport");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "sallyport-bench-modes-{}-{name}",
        std::process::id()
    ))
}

/// Runs the bench binary (after making sure sallyport is built) and asserts it succeeded.
fn bench(args: &[&str]) -> Output {
    sallyport();
    let out = Command::new(BIN).args(args).output().expect("run bench");
    assert!(
        out.status.success(),
        "sallyport-bench {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the bench binary as it is, for the tests of its refusals.
fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run")
}

/// Runs the bench binary and asserts it exited with `code` and `needle` in its stderr.
fn fails(args: &[&str], code: i32, needle: &str) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{stderr}");
}

/// [`bench`] with `--json` to the scratch file `name`: its stdout and the document.
fn bench_json(name: &str, args: &[&str]) -> (String, serde_json::Value) {
    let json = scratch(name);
    let mut args = args.to_vec();
    args.extend(["--json", json.to_str().expect("utf8 path")]);
    let out = bench(&args);
    (stdout(&out), read_json(&json))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The table line starting with `name` (a path or a count).
fn row<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{text}"))
}

/// The cells of the table line starting with `name`.
fn cells<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    row(text, name).split_whitespace().collect()
}

/// Asserts that the second cell (tunnels, or requests) of each path's row is `count`.
fn assert_counts(text: &str, paths: &[&str], count: &str) {
    for path in paths {
        assert_eq!(cells(text, path).get(1).copied(), Some(count), "{text}");
    }
}

/// Asserts that the HdrHistogram file `{stem}-{path}.hdr` of each path holds 50 values (the
/// requests of the rr tests), and removes it.
fn assert_hdr_per_path(stem: &str, paths: &[&str]) {
    for path in paths {
        let file = scratch(&format!("{stem}-{path}.hdr"));
        let text = std::fs::read_to_string(&file).expect("hdr file per path");
        let _ = std::fs::remove_file(&file);
        assert!(text.contains("Total count    =           50]"), "{text}");
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let doc = serde_json::from_slice(&std::fs::read(path).expect("json file")).expect("valid json");
    let _ = std::fs::remove_file(path);
    doc
}

fn installed_peers() -> Vec<&'static str> {
    ["haproxy", "socat", "rathole"]
        .into_iter()
        .filter(|p| {
            let found = std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()));
            if !found {
                println!("peer {p} not installed (bench/install-peers.sh): its path is not tested");
            }
            found
        })
        .collect()
}

#[test]
fn bulk_direct_and_sallyport() {
    let (text, doc) = bench_json(
        "bulk.json",
        &[
            "bulk",
            "--paths",
            "direct,sallyport",
            "--connections",
            "1",
            "--bytes",
            "1048576",
        ],
    );
    assert!(text.contains("1 worker(s) per gateway"), "{text}");
    let sallyport_row = row(&text, "sallyport");
    assert!(sallyport_row.ends_with("yes"), "{sallyport_row}");
    row(&text, "direct");
    assert_eq!(doc["kind"], "bulk");
    let results = doc["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["path"], "sallyport");
    assert_eq!(results[1]["bytes"], 1_048_576);
    assert!(results[1]["gateways"]["dmz"]["cpu_seconds"].is_number());
    assert!(results[1]["gateways"]["internal"]["cpu_seconds"].is_number());
    assert!(results[1]["x_direct"].is_number());
    assert_eq!(doc["environment"]["workers_per_gateway"], 1);
    assert!(doc["environment"]["kernel"].is_string());
    assert!(doc["environment"]["date"].is_string());
    assert!(doc["environment"].get("git_commit").is_some());
}

#[test]
fn rr_writes_json_hdr_per_path_and_plot() {
    let hdr = scratch("rr.hdr");
    let svg = scratch("rr.svg");
    let (text, doc) = bench_json(
        "rr.json",
        &[
            "rr",
            "--paths",
            "direct,sallyport",
            "--connections",
            "1",
            "--requests",
            "50",
            "--hdr",
            hdr.to_str().expect("utf8"),
            "--plot",
            svg.to_str().expect("utf8"),
        ],
    );
    assert_counts(&text, &["sallyport"], "50");
    assert_eq!(doc["results"][1]["latency"]["requests"], 50);
    assert!(doc["results"][1]["x_direct"]["p99"].is_number());
    assert_hdr_per_path("rr", &["direct", "sallyport"]);
    let plot = std::fs::read_to_string(&svg).expect("svg");
    let _ = std::fs::remove_file(&svg);
    assert!(plot.contains("<svg"));
    assert_eq!(plot.matches("<polyline").count(), 2, "{plot}");
    assert!(plot.contains(">sallyport</text>") && plot.contains(">direct</text>"));
}

#[test]
fn bulk_tls_beside_rustls_and_direct() {
    let (text, doc) = bench_json("bulk-tls.json", &["bulk", "--tls", "--bytes", "1048576"]);
    assert!(text.contains("x rustls"), "{text}");
    assert!(text.contains("TLS: the load speaks TLS"), "{text}");
    row(&text, "direct");
    let rustls_row = row(&text, "rustls");
    assert!(rustls_row.starts_with("rustls direct"), "{rustls_row}");
    assert!(rustls_row.ends_with("yes"), "{rustls_row}");
    let sallyport_row = row(&text, "sallyport");
    assert!(sallyport_row.ends_with("yes"), "{sallyport_row}");
    // path, GB/s, direct GB/s, x direct, rustls GB/s, x rustls, front, back, total, complete
    let cells = cells(&text, "sallyport");
    assert_eq!(cells.len(), 10, "{sallyport_row}");
    assert!(cells[4].parse::<f64>().is_ok() && cells[5].parse::<f64>().is_ok());
    assert_eq!(doc["config"]["tls"], true);
    assert!(doc["config"]["gateway"]["tls"].is_object());
    let results = doc["results"].as_array().expect("results");
    let paths: Vec<&str> = results
        .iter()
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["direct", "tls-direct", "mtls", "sallyport"]);
    let tls_direct = &results[1];
    assert_eq!(tls_direct["bytes"], 1_048_576);
    assert!(tls_direct["gateways"]["rustls-echo"]["cpu_seconds"].is_number());
    // mtls: the load is plain, only the reverse leg is TLS; it still carries the rustls ratio.
    let m = &results[2];
    assert_eq!(m["tls"], false);
    assert_eq!(m["reverse_leg_tls"], true);
    assert_eq!(m["bytes"], 1_048_576);
    assert_eq!(m["rustls"]["bytes"], 1_048_576);
    assert!(m["x_rustls"].is_number());
    let mtls_row = row(&text, "mtls");
    assert!(mtls_row.ends_with("yes"), "{mtls_row}");
    let s = &results[3];
    assert_eq!(s["tls"], true);
    assert_eq!(s["bytes"], 1_048_576);
    assert_eq!(s["rustls"]["bytes"], 1_048_576);
    assert!(s["x_rustls"].is_number());
    assert!(s["x_direct"].is_number());
    assert!(s["gateways"]["dmz"]["cpu_seconds"].is_number());
    assert!(s["gateways"]["internal"]["cpu_seconds"].is_number());
    assert_eq!(results[0]["tls"], false);
}

#[test]
fn rr_tls_beside_rustls_and_direct() {
    let hdr = scratch("rr-tls.hdr");
    let (text, doc) = bench_json(
        "rr-tls.json",
        &[
            "rr",
            "--tls",
            "--requests",
            "50",
            "--hdr",
            hdr.to_str().expect("utf8"),
        ],
    );
    assert!(text.contains("p99 x rustls"), "{text}");
    assert_counts(&text, &["sallyport"], "50");
    assert_eq!(cells(&text, "rustls")[2], "50", "{text}");
    assert_eq!(doc["config"]["tls"], true);
    let s = &doc["results"][3];
    assert_eq!(s["path"], "sallyport");
    assert_eq!(s["latency"]["requests"], 50);
    assert_eq!(s["rustls"]["requests"], 50);
    assert!(s["x_rustls"]["p99"].is_number());
    assert_eq!(doc["results"][2]["path"], "mtls");
    assert_eq!(doc["results"][2]["latency"]["requests"], 50);
    assert_hdr_per_path("rr-tls", &["direct", "tls-direct", "mtls", "sallyport"]);
}

#[test]
fn tls_paths_are_checked() {
    sallyport();
    for paths in ["direct,tls-direct", "direct,mtls"] {
        fails(
            &["bulk", "--paths", paths, "--bytes", "1024"],
            1,
            "needs --tls",
        );
    }
    fails(
        &["rr", "--tls", "--paths", "direct,socat", "--requests", "5"],
        1,
        "without TLS",
    );
    let out = run(&["rr", "--tls", "--target", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    // tls-direct alone: certificates, the in-process rustls echo server, and nothing else.
    let out = bench(&["bulk", "--tls", "--paths", "tls-direct", "--bytes", "65536"]);
    assert!(row(&stdout(&out), "rustls").ends_with("yes"));
}

#[test]
fn bulk_and_rr_over_websocket_and_vpc() {
    let (text, doc) = bench_json(
        "bulk-ws.json",
        &[
            "bulk",
            "--paths",
            "direct,ws,vpc",
            "--bytes",
            "1048576",
            "--write-size",
            "65536",
        ],
    );
    assert!(
        text.contains("ws: the DMZ's public listener is ws://"),
        "{text}"
    );
    row(&text, "direct");
    for path in ["ws", "vpc"] {
        let r = row(&text, path);
        assert!(r.ends_with("yes"), "{r}");
        // path, GB/s, direct GB/s, x direct, front, back, total, complete
        assert_eq!(r.split_whitespace().count(), 8, "{r}");
    }
    let results = doc["results"].as_array().expect("results");
    let paths: Vec<&str> = results
        .iter()
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["direct", "ws", "vpc"]);
    let (ws, vpc) = (&results[1], &results[2]);
    assert_eq!(ws["bytes"], 1_048_576);
    assert_eq!(ws["client"], "websocket");
    assert!(ws["gateways"]["dmz"]["cpu_seconds"].is_number());
    assert!(ws["gateways"]["internal"]["cpu_seconds"].is_number());
    assert_eq!(vpc["bytes"], 1_048_576);
    assert_eq!(vpc["client"], "tcp");
    assert!(vpc["gateways"]["vpc-a"]["cpu_seconds"].is_number());
    assert!(vpc["gateways"]["vpc-b"]["cpu_seconds"].is_number());
    assert!(vpc["x_direct"].is_number());

    let out = bench(&["rr", "--paths", "ws,vpc", "--requests", "50"]);
    let text = stdout(&out);
    assert_counts(&text, &["ws", "vpc"], "50");
    assert!(cells(&text, "ws").len() == 12, "{text}");
}

#[test]
fn websocket_paths_are_checked() {
    sallyport();
    fails(
        &["bulk", "--tls", "--paths", "direct,ws", "--bytes", "1024"],
        1,
        "without TLS",
    );
    fails(&["cps", "--paths", "ws", "--count", "5"], 1, "WebSocket");
}

#[test]
fn cps_reports_tunnels_and_pool_counters() {
    let (text, doc) = bench_json(
        "cps.json",
        &[
            "cps",
            "--paths",
            "direct,sallyport",
            "--count",
            "30",
            "--concurrency",
            "2",
        ],
    );
    let cells = cells(&text, "sallyport");
    assert_eq!(cells[1], "30", "{text}");
    assert_eq!(cells[2], "0", "{text}");
    let s = &doc["results"][1];
    assert_eq!(s["completed"], 30);
    // Every tunnel used one prepared connection, refilled after it.
    assert!(
        s["dmz_stats_delta"]["prepared_accepted"]
            .as_u64()
            .expect("delta")
            >= 1
    );
    assert!(s["refill_per_sec"].is_number());
    assert!(s["waited_per_tunnel"].is_number());
    assert!(doc["results"][0]["dmz_stats_delta"].is_null());
}

#[test]
fn fleet_one_pair() {
    let (text, doc) = bench_json("fleet1.json", &["fleet", "--count", "200"]);
    assert_counts(&text, &["200"], "1");
    let r = &doc["results"][0];
    assert_eq!(r["pairs"], 1);
    assert!(r["fill_seconds"].as_f64().expect("fill") > 0.0);
    assert!(r["rss"]["dmz_total_bytes"].as_u64().expect("rss") > 0);
    assert!(r["kernel"]["slab_bytes_per_conn"].is_number());
    assert_eq!(r["per_pair"][0]["prepared"], 200);
}

#[test]
fn fleet_over_mutual_tls() {
    let (text, doc) = bench_json("fleet-tls.json", &["fleet", "--tls", "--count", "100"]);
    assert!(text.contains("over mutual TLS"), "{text}");
    assert_eq!(doc["config"]["tls"], true);
    assert_eq!(doc["results"][0]["per_pair"][0]["prepared"], 100);
}

#[test]
fn fleet_two_pairs_when_per_process_is_capped() {
    let (text, doc) = bench_json(
        "fleet2.json",
        &["fleet", "--count", "200", "--per-process", "100"],
    );
    assert_counts(&text, &["200"], "2");
    let per_pair = doc["results"][0]["per_pair"].as_array().expect("pairs");
    assert_eq!(per_pair.len(), 2);
    assert!(per_pair.iter().all(|p| p["prepared"] == 100));
}

#[test]
fn fleet_refuses_more_per_process_than_open_files_allow() {
    sallyport();
    fails(
        &["fleet", "--count", "10", "--per-process", "10000000"],
        1,
        "open files",
    );
}

#[test]
fn peers_when_installed() {
    let peers = installed_peers();
    if peers.is_empty() {
        println!("no peer installed: skipping");
        return;
    }
    let list = format!("direct,{}", peers.join(","));
    let out = bench(&["bulk", "--paths", &list, "--bytes", "1048576"]);
    let text = stdout(&out);
    for p in &peers {
        assert!(row(&text, p).ends_with("yes"), "{text}");
    }
    let out = bench(&["rr", "--paths", &list, "--requests", "50"]);
    assert_counts(&stdout(&out), &peers, "50");
    let out = bench(&["cps", "--paths", &list, "--count", "30"]);
    assert_counts(&stdout(&out), &peers, "30");
}

#[test]
fn missing_sallyport_binary_is_a_clear_error() {
    fails(
        &[
            "bulk",
            "--paths",
            "sallyport",
            "--sallyport",
            "/nonexistent/sallyport",
        ],
        1,
        "/nonexistent/sallyport",
    );
}

/// Child process ids of `pid`, from `/proc/*/stat`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Gone, or a zombie nobody reaped yet (it no longer runs).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[test]
fn interrupt_stops_every_child() {
    sallyport();
    let mut child = Command::new(BIN)
        .args([
            "rr",
            "--paths",
            "direct,sallyport",
            "--requests",
            "100000000",
            "--time-limit",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bench");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // The baseline run starts once both gateways are up and the pool is full.
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("bench ended early: {seen:?}"))
            .expect("stderr line");
        let baseline = line.contains("direct (baseline");
        seen.push(line);
        if baseline {
            break;
        }
    }
    let gateways = children(pid);
    assert!(
        gateways.len() >= 2,
        "expected DMZ and internal children, got {gateways:?}"
    );
    sallyport_kit::sys::signal_pid(pid, sallyport_kit::sys::SIGINT).expect("SIGINT the bench");
    let status = sallyport_kit::child::wait_exit(&mut child, Duration::from_secs(20))
        .expect("wait")
        .expect("bench did not exit after SIGINT");
    assert_eq!(status.code(), Some(130));
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("sallyport-bench-{pid}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
    assert!(
        sallyport_kit::child::poll_until(Duration::from_secs(10), || gateways
            .iter()
            .all(|&g| is_dead(g))),
        "children left running: {gateways:?}"
    );
}
