//! The command-line contract: `check` accepts every example and rejects every file in
//! `tests/config/invalid/` with the promised message; `run` on an unbindable port exits 2 naming
//! the key; `--version` and unknown subcommands behave as documented.
//!
//! Only the binary's exit code and output are checked here; no traffic is relayed.
#![deny(unsafe_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sallyport_tests::{child, sallyport_bin, write_config};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
const INVALID: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/invalid");

/// Longest `run` may take to give up on a config it cannot start.
const RUN_FAIL_TIMEOUT: Duration = Duration::from_secs(20);

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {dir}");
    files
}

fn check(path: &Path) -> Output {
    Command::new(sallyport_bin())
        .arg("check")
        .arg("--config")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run sallyport check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_every_example() {
    for path in toml_files(EXAMPLES) {
        let out = check(&path);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "check {} failed:\nstdout:\n{stdout}\nstderr:\n{}",
            path.display(),
            text(&out.stderr)
        );
        let services = fs::read_to_string(&path)
            .expect("read example")
            .lines()
            .filter(|l| l.trim() == "[[service]]")
            .count();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            services,
            "{}: expected one line per service, got:\n{stdout}",
            path.display()
        );
        for line in lines {
            let (name, rest) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: line {line:?} lacks 'name: '", path.display()));
            let (accept, connect) = rest
                .split_once(" -> ")
                .unwrap_or_else(|| panic!("{}: line {line:?} lacks ' -> '", path.display()));
            assert!(
                !name.is_empty() && accept.contains("://") && connect.contains("://"),
                "{}: line {line:?} is not 'name: accept -> connect'",
                path.display()
            );
        }
    }
}

#[test]
fn check_rejects_every_invalid_config() {
    let mut failures = Vec::new();
    for path in toml_files(INVALID) {
        let file_name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let content = fs::read_to_string(&path).expect("read invalid config");
        let Some(expect) = content
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
        else {
            failures.push(format!("{file_name}: first line is not '# expect: ...'"));
            continue;
        };
        let out = check(&path);
        let stderr = text(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{file_name}: exit {:?}, want 2; stdout {:?}; stderr {stderr:?}",
                out.status.code(),
                text(&out.stdout)
            ));
        } else if !stderr.contains(expect) {
            failures.push(format!("{file_name}: stderr lacks {expect:?}: {stderr:?}"));
        } else if !stderr.contains(&file_name) {
            failures.push(format!(
                "{file_name}: stderr does not name the file: {stderr:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} invalid configs misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn run_with_service_port_in_use_exits_2_naming_the_key() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let port = taken.local_addr().expect("local_addr").port();
    let config = format!(
        "[gateway]\nworkers = 2\n\n[reverse]\nlisten = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"echo\"\naccept = \"tcp://127.0.0.1:{port}\"\n\
         connect = \"reverse://echo\"\ntimeout = \"500ms\"\n"
    );
    let path = write_config("port_in_use.toml", &config);
    let mut cmd = Command::new(sallyport_bin());
    cmd.arg("run").arg("--config").arg(&path);
    let out = child::output_within(&mut cmd, RUN_FAIL_TIMEOUT)
        .expect("spawn sallyport run")
        .unwrap_or_else(|out| {
            panic!(
                "run kept going with port {port} taken\nstdout:\n{}\nstderr:\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status with port {port} taken\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("service[echo].accept"),
        "stderr does not name service[echo].accept:\n{stderr}"
    );
    assert!(
        stderr.contains("port_in_use.toml"),
        "stderr does not name the config file:\n{stderr}"
    );
    assert!(
        !text(&out.stdout).lines().any(|l| l == "ready"),
        "printed ready despite failing"
    );
    drop(taken);
    let _ = fs::remove_dir_all(path.parent().expect("temp dir"));
}

#[test]
fn version_prints_and_exits_0() {
    let out = Command::new(sallyport_bin())
        .arg("--version")
        .output()
        .expect("run --version");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "--version: {out:?}");
    assert!(
        stdout.starts_with("sallyport ") && stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {stdout:?}"
    );
}

#[test]
fn unknown_subcommand_exits_2() {
    let out = Command::new(sallyport_bin())
        .arg("frobnicate")
        .output()
        .expect("run an unknown subcommand");
    assert_eq!(out.status.code(), Some(2), "unknown subcommand: {out:?}");
    assert!(
        !out.stderr.is_empty(),
        "no message for an unknown subcommand"
    );
}

#[test]
fn check_warns_of_a_certificate_near_expiry_and_still_accepts_it() {
    let path = write_config(
        "expiring.toml",
        "[reverse]\nlisten = \"127.0.0.1:0\"\n\
         tls = { cert = \"certs/dmz.pem\", key = \"certs/dmz.key\", client_ca = \"certs/ca.pem\" }\n\n\
         [[service]]\nname = \"echo\"\naccept = \"tcp://127.0.0.1:0\"\nconnect = \"reverse://echo\"\n",
    );
    let dir = path.parent().expect("temp dir");
    let certs = Command::new(sallyport_bin())
        .args(["certs", "--days", "5", "--out"])
        .arg(dir.join("certs"))
        .output()
        .expect("run sallyport certs");
    assert!(certs.status.success(), "certs: {}", text(&certs.stderr));
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("warning: ") && l.contains("reverse.tls: certificate"))
        .unwrap_or_else(|| panic!("no expiry warning for reverse.tls:\n{stderr}"));
    assert!(
        warning.contains("expires in 4 days") && warning.contains("expiring.toml"),
        "{warning}"
    );
    let _ = fs::remove_dir_all(dir);
}
