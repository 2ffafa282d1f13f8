//! The access log of the real binary: the line in both formats, `RUST_LOG=warn`
//! silencing it, and the bounded queue counting what it drops.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_patchgate");

/// The binary in front of `upstream` with an admin listener; its stderr lines arrive on
/// the receiver. The reader stops reading (so the pipe fills) until `gate` is sent to.
struct Running {
    child: Child,
    lines: Receiver<String>,
    gate: Sender<()>,
}

fn start(upstream: &LegacyUpstream, args: &[&str], env: &[(&str, &str)], held: bool) -> Running {
    start_on(upstream, "127.0.0.1:0", args, env, held)
}

fn start_on(
    upstream: &LegacyUpstream,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
    held: bool,
) -> Running {
    let dir = std::env::temp_dir().join(format!("patchgate-accesslog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", args.join("").replace('-', "")));
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let config = one_route(&upstream.url(), "", "").replacen("127.0.0.1:0", listen, 1);
    std::fs::write(&path, format!("{admin}{config}")).unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let (gate, opened) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut seen_admin = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let admin_line = line.contains("admin listening");
            let _ = tx.send(line);
            if held && admin_line && !seen_admin {
                seen_admin = true;
                let _ = opened.recv();
            }
        }
    });
    Running { child, lines, gate }
}

impl Running {
    /// The address logged in the line whose message is `what`.
    fn address(&self, what: &str) -> std::net::SocketAddr {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {what:?} line"));
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == what {
                    return v["addr"].as_str().unwrap().parse().unwrap();
                }
            } else if line.contains(what) {
                let addr = line.rsplit("addr=").next().unwrap();
                return addr.trim().parse().unwrap();
            }
        }
    }

    /// Lines until none came for `quiet`.
    fn drain(&self, quiet: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            out.push(line);
        }
        out
    }

    fn stop(mut self) {
        let _ = self.gate.send(());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request_lines(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.contains("request")).collect()
}

#[tokio::test]
async fn text_line_has_the_documented_fields() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let run = start(&upstream, &[], &[], false);
    let addr = run.address("patchgate listening");
    assert_eq!(get(addr, "/api/x?q=1").await.status, 200);
    assert_eq!(get(addr, "/nowhere").await.status, 404);
    let lines = run.drain(Duration::from_millis(500));
    let requests = request_lines(&lines);
    assert_eq!(requests.len(), 2, "{lines:#?}");
    // `2026-12-02T23:36:37.818627Z  INFO patchgate::layer: request route="api" …`
    let (time, rest) = requests[0]
        .split_once("  INFO patchgate::layer: request ")
        .unwrap();
    assert_eq!(time.len(), 27, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    let fields: Vec<&str> = rest.split(' ').collect();
    assert_eq!(
        &fields[..4],
        ["route=\"api\"", "method=GET", "path=/api/x", "status=200"],
        "{rest}"
    );
    let latency: f64 = fields[4].strip_prefix("latency_ms=").unwrap().parse().unwrap();
    assert!(latency > 0.0 && latency < 10_000.0, "{rest}");
    assert_eq!(fields[5], "cache=\"miss\"", "{rest}");
    assert!(
        requests[1].ends_with(" request route=\"-\" method=GET path=/nowhere status=404")
            || requests[1].contains(" request route=\"-\" method=GET path=/nowhere status=404 "),
        "{}",
        requests[1]
    );
    run.stop();
}

#[tokio::test]
async fn json_line_has_the_documented_fields() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let run = start(&upstream, &["--log-format", "json"], &[], false);
    let addr = run.address("patchgate listening");
    assert_eq!(get(addr, "/api/x").await.status, 200);
    let lines = run.drain(Duration::from_millis(500));
    let requests = request_lines(&lines);
    assert_eq!(requests.len(), 1, "{lines:#?}");
    let v: serde_json::Value = serde_json::from_str(requests[0]).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = [
        "timestamp",
        "level",
        "message",
        "route",
        "method",
        "path",
        "status",
        "latency_ms",
        "cache",
        "target",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "{}", requests[0]);
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "request");
    assert_eq!(v["route"], "api");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/api/x");
    assert_eq!(v["status"], 200);
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["cache"], "miss");
    assert_eq!(v["target"], "patchgate::layer");
    // The key order of the line itself, as tracing's JSON formatter wrote it.
    assert!(requests[0].starts_with("{\"timestamp\":\""), "{}", requests[0]);
    assert!(requests[0].contains("\"level\":\"INFO\",\"message\":\"request\",\"route\":\"api\",\"method\":\"GET\",\"path\":\"/api/x\",\"status\":200,\"latency_ms\":"), "{}", requests[0]);
    assert!(
        requests[0].ends_with(",\"cache\":\"miss\",\"target\":\"patchgate::layer\"}"),
        "{}",
        requests[0]
    );
    run.stop();
}

#[tokio::test]
async fn warn_level_silences_request_lines() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    // `warn` hides the listening line too: a port picked beforehand.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = start_on(&upstream, &addr.to_string(), &[], &[("RUST_LOG", "warn")], false);
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr)
            .is_ok())
        .await,
        "the proxy did not listen on {addr}"
    );
    for _ in 0..3 {
        assert_eq!(get(addr, "/api/x").await.status, 200);
    }
    let lines = run.drain(Duration::from_millis(500));
    assert!(request_lines(&lines).is_empty(), "{lines:#?}");
    run.stop();
}

#[tokio::test]
async fn a_full_queue_drops_lines_and_counts_them() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    // A queue of 4 lines, and nobody reading stderr: the writer blocks on the full pipe.
    let run = start(
        &upstream,
        &["--log-format", "json"],
        &[("PATCHGATE_LOG_QUEUE", "4")],
        true,
    );
    let addr = run.address("patchgate listening");
    let admin = run.address("admin listening");
    const N: u64 = 3000;
    for _ in 0..N {
        // Every answer is logged, whatever its status (a rare 502 when a pooled upstream
        // connection closes under the full suite's load is logged too).
        get(addr, "/api/x").await;
    }
    let dropped_now = dropped(admin).await;
    assert!(dropped_now > 0, "nothing dropped while stderr was not read");
    let _ = run.gate.send(());
    let lines = run.drain(Duration::from_millis(800));
    let logged = request_lines(&lines).len() as u64;
    let dropped_end = dropped(admin).await;
    assert_eq!(logged + dropped_end, N, "logged {logged}, dropped {dropped_end}");
    assert!(logged > 0);
    run.stop();
}

async fn dropped(admin: std::net::SocketAddr) -> u64 {
    let metrics = get(admin, "/metrics").await.text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("patchgate_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no drop counter in {metrics}"))
        .parse()
        .unwrap()
}
