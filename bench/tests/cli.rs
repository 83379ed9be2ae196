//! End-to-end checks of the `sallyport-bench` binary: the echo subcommand's ready line, bulk and rr
//! runs against it with JSON and HdrHistogram output, and exit codes. No timing assertions.
#![deny(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use sallyport_kit::backend::EchoServer;

const BIN: &str = env!("CARGO_BIN_EXE_sallyport-bench");

/// Kills the child it owns when dropped, so a failing assertion does not leak it.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sallyport-bench-{}-{name}", std::process::id()))
}

#[test]
fn echo_subcommand_announces_its_address_and_echoes() {
    let mut child = Owned(
        Command::new(BIN)
            .args(["echo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn echo"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .expect("`listening ADDR`")
        .parse()
        .expect("address");
    assert_ne!(addr.port(), 0);
    let out = Command::new(BIN)
        .args([
            "bulk",
            "--target",
            &addr.to_string(),
            "--bytes",
            "100000",
            "--connections",
            "2",
        ])
        .output()
        .expect("run bulk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("200000"));
}

#[test]
fn bulk_writes_json_with_environment() {
    let server = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo server");
    let json = scratch("bulk.json");
    let out = Command::new(BIN)
        .args([
            "bulk",
            "--target",
            &server.addr().to_string(),
            "--bytes",
            "1048576",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run bulk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("target"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json file")).expect("valid json");
    let _ = std::fs::remove_file(&json);
    assert_eq!(doc["kind"], "bulk");
    assert_eq!(doc["result"]["bytes"], 1_048_576);
    assert_eq!(doc["result"]["complete"], true);
    assert!(doc["environment"]["kernel"].is_string());
    assert!(doc["environment"]["cpu"].is_string());
    assert!(doc["environment"]["date_unix"].as_u64().expect("date") > 0);
}

#[test]
fn rr_writes_json_and_percentile_distribution() {
    let server = EchoServer::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("echo server");
    let json = scratch("rr.json");
    let hdr = scratch("rr.hdr");
    let out = Command::new(BIN)
        .args([
            "rr",
            "--target",
            &server.addr().to_string(),
            "--connections",
            "2",
            "--requests",
            "100",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--hdr")
        .arg(&hdr)
        .output()
        .expect("run rr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json file")).expect("valid json");
    let hdr_text = std::fs::read_to_string(&hdr).expect("hdr file");
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&hdr);
    assert_eq!(doc["latency"]["requests"], 200);
    assert!(hdr_text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(
        hdr_text.contains("Total count    =          200]"),
        "{hdr_text}"
    );
}

#[test]
fn exit_codes() {
    let usage = Command::new(BIN)
        .args(["rr", "--size", "0"])
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
    let usage = Command::new(BIN)
        .args(["frobnicate"])
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
    // Nothing listens on a port we bound and released, so the run fails at connect.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let failed = Command::new(BIN)
        .args(["bulk", "--target", &addr.to_string(), "--time-limit", "5"])
        .output()
        .expect("run");
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("connection 0"));
}
