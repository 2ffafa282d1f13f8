//! TLS on both sides and HTTP/2 from clients: the HTTPS listener (ALPN h2 and http/1.1),
//! https upstreams verified per origin, start-up errors, the write path over h2, and
//! certificate reload (in process and by SIGHUP to the binary).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, Version};
use patchgate::{Config, Proxy};
use rustls::pki_types::CertificateDer;

use crate::support::tls::*;
use crate::support::*;

const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");

/// A CA, a leaf for localhost and its files, for the proxy's listener.
struct ListenerPki {
    ca: TestCa,
    leaf: Leaf,
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl ListenerPki {
    fn new(tag: &str) -> ListenerPki {
        let ca = TestCa::new("listener CA");
        let leaf = ca.leaf("patchgate one");
        let dir = scratch_dir(tag);
        let (cert, key) = leaf.write(&dir);
        ListenerPki {
            ca,
            leaf,
            dir,
            cert,
            key,
        }
    }

    fn server_tls(&self) -> String {
        server_tls(&self.cert, &self.key)
    }

    fn ca(&self) -> CertificateDer<'static> {
        self.ca.der()
    }
}

fn ca_file_line(path: &Path) -> String {
    format!("ca_file = {:?}", path.display().to_string())
}

#[tokio::test]
async fn the_https_listener_answers_http1_and_h2_chosen_by_alpn() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"tls":true}"#);
    let pki = ListenerPki::new("alpn");
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", &pki.server_tls())).await;
    let cases: [(&[&[u8]], Version); 4] = [
        (&[HTTP11], Version::HTTP_11),
        (&[H2], Version::HTTP_2),
        (&[H2, HTTP11], Version::HTTP_2),
        (&[], Version::HTTP_11),
    ];
    for (alpn, version) in cases {
        let mut conn = HttpsConn::connect(proxy.addr, &pki.ca(), alpn).await;
        assert_eq!(conn.version, version, "ALPN offer {alpn:?}");
        assert_eq!(conn.peer_cert, pki.leaf.der);
        for _ in 0..2 {
            let got = conn.send("GET", "/api/x", &[], "").await;
            assert_eq!(got.status, 200, "{version:?}: {}", got.text());
            assert_eq!(got.text(), r#"{"tls":true}"#);
            assert!(got.header("etag").is_some(), "{version:?}");
        }
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 8);
    for request in seen {
        assert_eq!(request.headers.get("x-forwarded-proto").unwrap(), "https");
    }
}

#[tokio::test]
async fn an_https_upstream_is_verified_with_the_routes_ca_file_and_gets_its_host_as_sni() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/people/1", r#"{"id":1,"name":"Ada"}"#);
    let ca = TestCa::new("upstream CA");
    let front = TlsFront::start(upstream.addr(), &ca.leaf("upstream")).await;
    let ca_file = ca.write(&scratch_dir("upstream-ca"), "ca.pem");
    let proxy = TestProxy::start(&one_route(&front.url(), &ca_file_line(&ca_file), "")).await;

    let got = get(proxy.addr, "/api/people/1").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), r#"{"id":1,"name":"Ada"}"#);
    let patched = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH],
        r#"{"name":"Grace"}"#,
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        upstream.doc("/api/people/1").unwrap(),
        r#"{"id":1,"name":"Grace"}"#
    );
    let writes = upstream.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::PUT);
    let host = format!("localhost:{}", front.url().rsplit(':').next().unwrap());
    assert_eq!(writes[0].headers.get("host").unwrap(), host.as_str());
    let names = front.server_names();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.as_deref() == Some("localhost")),
        "{names:?}"
    );
}

#[tokio::test]
async fn an_upstream_certificate_that_does_not_verify_gets_502_naming_tls() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let real = TestCa::new("real upstream CA");
    let other = TestCa::new("some other CA");
    let dir = scratch_dir("wrong-ca");
    let other_file = other.write(&dir, "other.pem");
    let real_file = real.write(&dir, "real.pem");
    let trusted_front = TlsFront::start(upstream.addr(), &real.leaf("upstream")).await;
    let misnamed_front = TlsFront::start(
        upstream.addr(),
        &real.leaf_for("misnamed", &["elsewhere.example"]),
    )
    .await;
    let cases = [
        (
            "another CA's ca_file",
            trusted_front.url(),
            ca_file_line(&other_file),
            "UnknownIssuer",
        ),
        (
            "webpki roots only",
            trusted_front.url(),
            String::new(),
            "UnknownIssuer",
        ),
        (
            "a certificate for another name",
            misnamed_front.url(),
            ca_file_line(&real_file),
            "not valid for name",
        ),
    ];
    for (name, url, extra, reason) in cases {
        let proxy = TestProxy::start(&one_route(&url, &extra, "")).await;
        for (method, headers, body) in [("GET", vec![], ""), ("PATCH", vec![MERGE_PATCH], "{}")] {
            let got = send(proxy.addr, method, "/api/x", &headers, body).await;
            assert_eq!(got.status, 502, "{name}, {method}: {}", got.text());
            assert_eq!(got.header("content-type"), Some("application/problem+json"));
            let problem = got.json();
            assert_eq!(problem["status"], 502);
            assert!(
                problem["type"].as_str().unwrap().ends_with("/upstream-tls"),
                "{name}: {problem}"
            );
            // The reason is the upstream's own words: logged, not sent to the client.
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("TLS verification"), "{name}: {detail}");
            assert!(!detail.contains(reason), "{name}: {detail}");
        }
    }
    assert!(upstream.requests().is_empty(), "nothing got through");
}

#[tokio::test]
async fn a_ca_file_is_trusted_only_for_the_upstream_of_its_own_route() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/a/x", r#"{"route":"a"}"#);
    upstream.set_doc("/b/x", r#"{"route":"b"}"#);
    let ca = TestCa::new("private CA");
    let ca_file = ca.write(&scratch_dir("per-route"), "ca.pem");
    let front_a = TlsFront::start(upstream.addr(), &ca.leaf("a")).await;
    let front_b = TlsFront::start(upstream.addr(), &ca.leaf("b")).await;
    let toml = format!(
        r#"
[[route]]
name = "a"
path = "/a/{{*rest}}"
upstream = "{}"
{}

[[route]]
name = "b"
path = "/b/{{*rest}}"
upstream = "{}"
"#,
        front_a.url(),
        ca_file_line(&ca_file),
        front_b.url()
    );
    let proxy = TestProxy::start(&toml).await;
    let a = get(proxy.addr, "/a/x").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), r#"{"route":"a"}"#);
    let b = get(proxy.addr, "/b/x").await;
    assert_eq!(b.status, 502, "{}", b.text());
    assert!(
        b.json()["detail"].as_str().unwrap().contains("TLS"),
        "{}",
        b.text()
    );
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_missing_unusable_or_mismatched_pair_or_ca_file_is_a_start_up_error_naming_the_file() {
    let pki = ListenerPki::new("startup");
    let other_key = pki.dir.join("other.key");
    std::fs::write(&other_key, pki.ca.leaf("other").key_pem).unwrap();
    let missing = pki.dir.join("missing.key");
    let cases: [(&str, &Path, &Path, &[&str]); 5] = [
        (
            "missing key",
            &pki.cert,
            &missing,
            &["server.tls.key", "missing.key"],
        ),
        (
            "missing cert",
            &missing,
            &pki.key,
            &["server.tls.cert", "missing.key"],
        ),
        (
            "a cert as the key",
            &pki.cert,
            &pki.cert,
            &["server.tls.key", "cert.pem", "no PEM private key"],
        ),
        (
            "a key as the cert",
            &pki.key,
            &pki.key,
            &["server.tls.cert", "key.pem", "no PEM certificate"],
        ),
        (
            "mismatched pair",
            &pki.cert,
            &other_key,
            &["cert.pem", "other.key", "do not form a usable pair"],
        ),
    ];
    for (name, cert, key, expected) in cases {
        let toml = one_route("http://127.0.0.1:1", "", &server_tls(cert, key));
        let config = Config::from_toml(&toml, "test.toml").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = match Proxy::with_listeners(&config, listener, None) {
            Ok(_) => panic!("{name}: the proxy started"),
            Err(e) => format!("{e:#}"),
        };
        for part in expected {
            assert!(err.contains(part), "{name}: {part:?} not in {err}");
        }
    }
    for (name, ca_file, expected) in [
        ("missing ca_file", &missing, "cannot read"),
        ("a key as the ca_file", &pki.key, "no PEM certificate"),
    ] {
        let toml = one_route("https://localhost:1", &ca_file_line(ca_file), "");
        let config = Config::from_toml(&toml, "test.toml").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = match Proxy::with_listeners(&config, listener, None) {
            Ok(_) => panic!("{name}: the proxy started"),
            Err(e) => format!("{e:#}"),
        };
        let path = ca_file.display().to_string();
        assert!(
            err.contains("route[0].ca_file") && err.contains(&path) && err.contains(expected),
            "{name}: {err}"
        );
    }
}

#[test]
fn check_reports_a_missing_key_file_by_its_resolved_path() {
    let pki = ListenerPki::new("check");
    let path = pki.dir.join("proxy.toml");
    let toml = one_route(
        "http://127.0.0.1:1",
        "",
        "[server.tls]\ncert = \"cert.pem\"\nkey = \"nope.key\"\n",
    );
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let named = pki.dir.join("nope.key").display().to_string();
    assert!(
        stderr.contains("server.tls.key") && stderr.contains(&named),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    std::fs::write(&path, one_route("http://127.0.0.1:1", "", &pki.server_tls())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// h2 over TLS (one connection, reused) or h2c with prior knowledge (one per request).
enum H2 {
    Tls(HttpsConn),
    Cleartext(std::net::SocketAddr),
}

impl H2 {
    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        match self {
            H2::Tls(conn) => conn.send(method, path, headers, body.to_owned()).await,
            H2::Cleartext(addr) => send_h2(*addr, method, path, headers, body.to_owned()).await,
        }
    }
}

#[tokio::test]
async fn a_304_a_patch_and_an_enriched_412_work_over_h2_with_tls_and_h2c() {
    let upstream = LegacyUpstream::start().await;
    let pki = ListenerPki::new("h2-writes");
    let tls_proxy = TestProxy::start(&one_route(&upstream.url(), "", &pki.server_tls())).await;
    let h2c_proxy = TestProxy::in_front_of(&upstream, "").await;
    let tls_conn = HttpsConn::connect(tls_proxy.addr, &pki.ca(), &[H2]).await;
    assert_eq!(tls_conn.version, Version::HTTP_2);
    for (name, mut client) in [
        ("h2 over TLS", H2::Tls(tls_conn)),
        ("h2c", H2::Cleartext(h2c_proxy.addr)),
    ] {
        upstream.set_doc("/api/people/1", r#"{"id":1,"name":"Ada"}"#);
        let read = client.send("GET", "/api/people/1", &[], "").await;
        assert_eq!(read.status, 200, "{name}");
        let e1 = read.header("etag").unwrap().to_owned();

        let not_modified = client
            .send("GET", "/api/people/1", &[("if-none-match", &e1)], "")
            .await;
        assert_eq!(not_modified.status, 304, "{name}");
        assert_eq!(not_modified.header("etag"), Some(e1.as_str()), "{name}");
        assert!(not_modified.body.is_empty(), "{name}");

        let patched = client
            .send(
                "PATCH",
                "/api/people/1",
                &[MERGE_PATCH, ("if-match", &e1)],
                r#"{"name":"first"}"#,
            )
            .await;
        assert_eq!(patched.status, 200, "{name}: {}", patched.text());
        assert_eq!(patched.text(), r#"{"id":1,"name":"first"}"#, "{name}");
        let e2 = patched.header("etag").unwrap().to_owned();
        assert_ne!(e1, e2);

        let stale = client
            .send(
                "PATCH",
                "/api/people/1",
                &[MERGE_PATCH, ("if-match", &e1)],
                r#"{"second":true}"#,
            )
            .await;
        assert_eq!(stale.status, 412, "{name}: {}", stale.text());
        assert_eq!(stale.header("etag"), Some(e2.as_str()), "{name}");
        assert_eq!(stale.header("content-type"), Some("application/json"), "{name}");
        assert_eq!(stale.header("content-location"), Some("/api/people/1"), "{name}");
        assert_eq!(stale.text(), r#"{"id":1,"name":"first"}"#, "{name}");
        assert_eq!(
            upstream.doc("/api/people/1").unwrap(),
            r#"{"id":1,"name":"first"}"#
        );
    }
}

#[tokio::test]
async fn bodies_too_large_to_cache_stream_through_both_ways_over_h2() {
    let upstream = LegacyUpstream::start().await;
    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(200 * 1024));
    upstream.set_doc("/api/big", &big);
    let pki = ListenerPki::new("h2-stream");
    let server = format!("{}\n[cache]\nmax_entry_bytes = \"16KiB\"\n", pki.server_tls());
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", &server)).await;
    let mut conn = HttpsConn::connect(proxy.addr, &pki.ca(), &[H2]).await;
    assert_eq!(conn.version, Version::HTTP_2);

    let got = conn.send("GET", "/api/big", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), big.len());
    assert!(got.text() == big, "the streamed body arrives intact");

    let posted = format!(r#"{{"data":"{}"}}"#, "y".repeat(48 * 1024));
    let created = conn
        .send(
            "POST",
            "/api/items",
            &[("content-type", "application/json")],
            posted.clone(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/api/items/1"));
    assert!(created.text() == posted);
    assert!(upstream.doc("/api/items/1").unwrap() == posted.as_bytes());
}

#[tokio::test]
async fn a_reload_serves_the_new_pair_to_new_connections_and_keeps_open_ones_and_a_bad_pair_changes_nothing()
{
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"v":1}"#);
    let pki = ListenerPki::new("reload");
    let proxy = TlsProxy::start(&one_route(&upstream.url(), "", &pki.server_tls())).await;
    let mut open_h1 = HttpsConn::connect(proxy.addr, &pki.ca(), &[HTTP11]).await;
    let mut open_h2 = HttpsConn::connect(proxy.addr, &pki.ca(), &[H2]).await;
    for conn in [&mut open_h1, &mut open_h2] {
        assert_eq!(conn.peer_cert, pki.leaf.der);
        assert_eq!(conn.send("GET", "/api/x", &[], "").await.status, 200);
    }

    let second = pki.ca.leaf("patchgate two");
    second.write(&pki.dir);
    proxy.tls.reload().unwrap();
    let fresh = HttpsConn::connect(proxy.addr, &pki.ca(), &[H2]).await;
    assert_eq!(fresh.peer_cert, second.der, "a new connection gets the new pair");
    for conn in [&mut open_h1, &mut open_h2] {
        let got = conn.send("GET", "/api/x", &[], "").await;
        assert_eq!(got.status, 200, "an open connection keeps working");
        assert_eq!(got.text(), r#"{"v":1}"#);
    }

    std::fs::write(
        &pki.key,
        "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = format!("{:#}", proxy.tls.reload().unwrap_err());
    assert!(err.contains("server.tls.key") && err.contains("key.pem"), "{err}");
    std::fs::write(&pki.key, pki.ca.leaf("unrelated").key_pem).unwrap();
    let err = format!("{:#}", proxy.tls.reload().unwrap_err());
    assert!(err.contains("do not form a usable pair"), "{err}");
    let mut after = HttpsConn::connect(proxy.addr, &pki.ca(), &[HTTP11]).await;
    assert_eq!(
        after.peer_cert, second.der,
        "a failed reload keeps the pair in use"
    );
    assert_eq!(after.send("GET", "/api/x", &[], "").await.status, 200);
    proxy.stop().await;
}

/// Reads the binary's JSON log lines on a thread; `wait_for` returns the first line whose
/// `message` is `message`, failing after 10 s.
struct LogLines(std::sync::mpsc::Receiver<serde_json::Value>);

impl LogLines {
    fn follow(stderr: std::process::ChildStderr) -> LogLines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or_default());
            }
        });
        LogLines(rx)
    }

    async fn wait_for(&self, message: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // Blocking receive in place: the proxy under test is another process.
            let line = tokio::task::block_in_place(|| self.0.recv_timeout(left))
                .unwrap_or_else(|_| panic!("no {message:?} log line"));
            if line["message"] == message {
                return line;
            }
        }
    }
}

/// The binary under test, killed if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_the_running_binary_reload_its_config_routes_and_certificate_and_keep_open_connections()
{
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"v":1}"#);
    let moved = LegacyUpstream::start().await;
    moved.set_doc("/api/x", r#"{"v":2}"#);
    let pki = ListenerPki::new("sighup");
    let config = pki.dir.join("proxy.toml");
    std::fs::write(&config, one_route(&upstream.url(), "", &pki.server_tls())).unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_patchgate"))
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "json"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = LogLines::follow(child.0.stderr.take().unwrap());
    let addr: std::net::SocketAddr = logs.wait_for("patchgate listening").await["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut open = HttpsConn::connect(addr, &pki.ca(), &[H2]).await;
    assert_eq!(open.peer_cert, pki.leaf.der);
    assert_eq!(open.send("GET", "/api/x", &[], "").await.status, 200);

    let second = pki.ca.leaf("patchgate two");
    second.write(&pki.dir);
    std::fs::write(&config, one_route(&moved.url(), "", &pki.server_tls())).unwrap();
    kill("-HUP", child.0.id());
    logs.wait_for("configuration reloaded").await;
    let mut fresh = HttpsConn::connect(addr, &pki.ca(), &[HTTP11]).await;
    assert_eq!(fresh.peer_cert, second.der, "a new handshake sees the new pair");
    assert_eq!(fresh.send("GET", "/api/x", &[], "").await.text(), r#"{"v":2}"#);
    let kept = open.send("GET", "/api/x", &[], "").await;
    assert_eq!(kept.status, 200, "the open connection is not dropped");
    assert_eq!(kept.text(), r#"{"v":2}"#, "its new requests take the new route");

    std::fs::remove_file(&pki.key).unwrap();
    std::fs::write(&config, one_route(&upstream.url(), "", &pki.server_tls())).unwrap();
    kill("-HUP", child.0.id());
    let failed = logs
        .wait_for("configuration reload refused; keeping the configuration in use")
        .await;
    assert!(failed["error"].as_str().unwrap().contains("key.pem"), "{failed}");
    let mut after = HttpsConn::connect(addr, &pki.ca(), &[H2]).await;
    assert_eq!(after.peer_cert, second.der);
    let got = after.send("GET", "/api/x", &[], "").await;
    assert_eq!(
        got.text(),
        r#"{"v":2}"#,
        "a refused reload changes no route either"
    );

    drop((open, after, fresh));
    kill("-TERM", child.0.id());
    let status = tokio::task::block_in_place(|| child.0.wait()).unwrap();
    assert_eq!(status.code(), Some(0));
}
