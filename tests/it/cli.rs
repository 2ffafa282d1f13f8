//! The binary: `check`, `--version`, SIGTERM handling, and SIGHUP reloading the config.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_patchgate");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("patchgate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_proxy_toml_and_prints_routes() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("people"), "{stdout}");
    assert!(stdout.contains("/api/people/{id}"), "{stdout}");
    assert!(stdout.contains("everything-else"), "{stdout}");
}

#[test]
fn check_names_the_bad_key_with_line_and_column_and_exits_1() {
    let cases = [
        (
            "unknown.toml",
            "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n",
            "lisen",
            ":3:",
        ),
        (
            "freshness.toml",
            "[[route]]\nname = \"a\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nfreshness = \"sometimes\"\n",
            "freshness",
            ":5:",
        ),
        (
            "size.toml",
            "[server]\nmax_body_bytes = \"lots\"\n",
            "max_body_bytes",
            ":2:",
        ),
        (
            "dup.toml",
            "[[route]]\nname = \"a\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n\n[[route]]\nname = \"a\"\npath = \"/b\"\nupstream = \"http://127.0.0.1:1\"\n",
            "name",
            ":7:",
        ),
        (
            "url.toml",
            "[[route]]\nname = \"a\"\npath = \"/a\"\nupstream = \"ftp://nope\"\n",
            "upstream",
            ":4:",
        ),
        (
            "template.toml",
            "[[route]]\nname = \"a\"\npath = \"/a/{id\"\nupstream = \"http://127.0.0.1:1\"\n",
            "path",
            ":3:",
        ),
        (
            "duration.toml",
            "[server]\nrequest_timeout = \"soon\"\n",
            "request_timeout",
            ":2:",
        ),
    ];
    for (name, text, key, line) in cases {
        let path = write_config(name, text);
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(key), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}{line}")),
            "{name}: expected file:line: in {stderr}"
        );
    }
}

#[test]
fn version_and_help_work() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(concat!("patchgate ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(
        version.contains("built in:") && version.contains("cluster"),
        "{version}"
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("check") && help.contains("demo") && help.contains("--log-format"),
        "{help}"
    );
}

#[tokio::test]
async fn sigterm_stops_the_process_with_exit_0() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let path = write_config("run.toml", &one_route(&upstream.url(), "", ""));
    let mut child = Command::new(BIN)
        .args(["--config"])
        .arg(&path)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no listening line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "patchgate listening" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    assert_eq!(get(addr, "/api/x").await.status, 200);
    let request_line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no request log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "request" {
            break v;
        }
    };
    assert_eq!(request_line["route"], "api");
    assert_eq!(request_line["status"], 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn check_shows_the_cluster_without_its_password_and_requires_password_env() {
    let route = "[[route]]\nname = \"a\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n";
    let direct = write_config(
        "cluster.toml",
        &format!("{route}[cluster]\nredis = \"redis://:hunter2@127.0.0.1:6390/0\"\n"),
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&direct)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("cluster: redis://127.0.0.1:6390/0"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");

    let unset = "PATCHGATE_TEST_SURELY_UNSET_VARIABLE";
    let sentinel = write_config(
        "sentinel.toml",
        &format!(
            "{route}[cluster]\nsentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"m\"\npassword_env = \"{unset}\"\n"
        ),
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&sentinel)
        .env_remove(unset)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster.password_env") && stderr.contains(unset),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing printed as ok");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&sentinel)
        .env(unset, "s3cret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("sentinel master \"m\" via redis://127.0.0.1:26379"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

/// The binary's JSON log lines, read on a thread.
fn follow(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or_default());
        }
    });
    rx
}

/// The first line whose message is `message`, within 10 s.
fn wait_for(rx: &std::sync::mpsc::Receiver<serde_json::Value>, message: &str) -> serde_json::Value {
    loop {
        let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(10)))
            .unwrap_or_else(|_| panic!("no {message:?} log line"));
        if line["message"] == message {
            return line;
        }
    }
}

fn signal(signal: &str, child: &std::process::Child) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_names_keys_that_need_a_restart_and_refuses_a_bad_file_by_line() {
    let (a, b) = (LegacyUpstream::start().await, LegacyUpstream::start().await);
    a.set_doc("/api/x", r#"{"from":"a"}"#);
    b.set_doc("/api/x", r#"{"from":"b"}"#);
    let path = write_config("sighup.toml", &one_route(&a.url(), "", ""));
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = follow(&mut child);
    let addr: std::net::SocketAddr = wait_for(&logs, "patchgate listening")["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(get(addr, "/api/x").await.json()["from"], "a");

    let moved = one_route(&b.url(), "", "").replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&path, &moved).unwrap();
    signal("-HUP", &child);
    let line = wait_for(
        &logs,
        "configuration reloaded; these keys keep their running values until a restart",
    );
    assert_eq!(line["restart_needed"], "server.listen", "{line}");
    assert_eq!(
        get(addr, "/api/x").await.json()["from"],
        "b",
        "still on the old listener"
    );

    let bad = moved.replace("[[route]]\n", "[[route]]\nfreshness = \"sometimes\"\n");
    let row = bad.lines().position(|l| l.starts_with("freshness")).unwrap() + 1;
    std::fs::write(&path, &bad).unwrap();
    signal("-HUP", &child);
    let line = wait_for(
        &logs,
        "configuration reload refused; keeping the configuration in use",
    );
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("sighup.toml:{row}:")) && error.contains("route[0].freshness"),
        "{error}"
    );
    assert_eq!(get(addr, "/api/x").await.json()["from"], "b");

    signal("-TERM", &child);
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert_eq!(status.code(), Some(0));
}
