//! Reloading proxy.toml without a restart (issue 17, item 3), through the admin
//! listener's `POST /reload`; SIGHUP to the binary is in `tls.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;

use crate::support::tls::scratch_dir;
use crate::support::*;

const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");

/// Two routes: `api` to `upstream` (with `extra` keys), and `other` to `other` when given.
fn config(upstream: &str, extra: &str, other: Option<&str>, server: &str) -> String {
    let mut text = one_route(upstream, extra, server);
    if let Some(other) = other {
        text.push_str(&format!(
            "\n[[route]]\nname = \"other\"\npath = \"/other/{{*rest}}\"\nupstream = \"{other}\"\n"
        ));
    }
    text
}

fn write(path: &Path, text: &str) {
    // Written beside and renamed: a reload never reads half a file.
    let part = path.with_extension("part");
    std::fs::write(&part, text).unwrap();
    std::fs::rename(&part, path).unwrap();
}

fn file(tag: &str, text: &str) -> PathBuf {
    let path = scratch_dir(tag).join("proxy.toml");
    write(&path, text);
    path
}

async fn reload(proxy: &TestProxy) -> (u16, serde_json::Value) {
    let got = send(proxy.admin, "POST", "/reload", &[], Bytes::new()).await;
    assert_eq!(got.header("content-type"), Some("application/json"));
    (got.status.as_u16(), got.json())
}

async fn metrics(proxy: &TestProxy) -> String {
    get(proxy.admin, "/metrics").await.text()
}

fn two_upstreams_with(path: &str) -> impl Fn(&LegacyUpstream, &str) {
    let path = path.to_owned();
    move |upstream, name| upstream.set_doc(&path, &format!(r#"{{"from":"{name}"}}"#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_change_under_load_and_no_request_fails() {
    let (a, b) = (LegacyUpstream::start().await, LegacyUpstream::start().await);
    for (upstream, name) in [(&a, "a"), (&b, "b")] {
        two_upstreams_with("/api/probe")(upstream, name);
        two_upstreams_with("/other/probe")(upstream, name);
        for i in 0..4 {
            upstream.set_doc(&format!("/api/items/{i}"), r#"{"n":0}"#);
        }
    }
    // Even generations: api → a, no `other` route; odd: api → b (cached), `other` → a.
    let generation = |n: usize| {
        if n.is_multiple_of(2) {
            config(&a.url(), "", None, "")
        } else {
            config(
                &b.url(),
                "freshness = \"exclusive\"\nmax_in_flight = 64",
                Some(&a.url()),
                "header_read_timeout = \"7s\"\nbody_read_timeout = \"9s\"",
            )
        }
    };
    let path = file("reload-load", &generation(0));
    let proxy = TestProxy::start_file(&path).await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (stop, done, addr) = (Arc::clone(&stop), Arc::clone(&done), proxy.addr);
        clients.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let item = format!("/api/items/{client}");
                let read = get(addr, &item).await;
                assert_eq!(read.status, 200, "GET {item}: {}", read.text());
                let body = format!(r#"{{"n":{k}}}"#);
                let wrote = send(addr, "PATCH", &item, &[MERGE_PATCH], body).await;
                assert!(
                    wrote.status == 200 || wrote.status == 204,
                    "PATCH {item}: {} {}",
                    wrote.status,
                    wrote.text()
                );
                done.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }

    for n in 1..=6 {
        let before = done.load(Ordering::Relaxed);
        // Let requests run on the generation in use before replacing it.
        assert!(
            eventually(std::time::Duration::from_secs(10), || done
                .load(Ordering::Relaxed)
                > before + 8)
            .await
        );
        write(&path, &generation(n));
        let (status, answer) = reload(&proxy).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["result"], "applied", "{answer}");
        let expected = if n.is_multiple_of(2) { "a" } else { "b" };
        let probe = get(proxy.addr, "/api/probe").await;
        assert_eq!(
            probe.json()["from"],
            expected,
            "generation {n}: new requests follow the new route"
        );
        let other = get(proxy.addr, "/other/probe").await;
        if n.is_multiple_of(2) {
            assert_eq!(other.status, 404, "generation {n}: the removed route is gone");
        } else {
            assert_eq!(other.status, 200, "generation {n}");
            assert_eq!(other.json()["from"], "a");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        // A failed request panics its client: re-raised here.
        client.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 48);
    assert!(
        metrics(&proxy)
            .await
            .contains("patchgate_reloads_total{result=\"applied\"} 6"),
        "{}",
        metrics(&proxy).await
    );
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_config_keeps_the_one_in_use_and_is_counted() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"v":1}"#);
    let good = config(&upstream.url(), "", None, "");
    let path = file("reload-invalid", &good);
    let proxy = TestProxy::start_file(&path).await;

    let bad = good.replace("[[route]]\n", "[[route]]\nfreshness = \"sometimes\"\n");
    write(&path, &bad);
    let line = bad.lines().position(|l| l.starts_with("freshness")).unwrap() + 1;
    let (status, answer) = reload(&proxy).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["result"], "invalid");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("proxy.toml:{line}:")) && error.contains("route[0].freshness"),
        "names file, line, column and key: {error}"
    );
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(got.status, 200, "the old config stays");
    assert_eq!(got.text(), r#"{"v":1}"#);

    // A TLS pair that does not load is as invalid as a bad key.
    let tls = "[server.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"";
    write(&path, &config(&upstream.url(), "", None, tls));
    let (status, answer) = reload(&proxy).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("server.tls.cert"),
        "{answer}"
    );

    write(&path, &good);
    assert_eq!(reload(&proxy).await.1["result"], "applied");
    let text = metrics(&proxy).await;
    assert!(
        text.contains("patchgate_reloads_total{result=\"invalid\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("patchgate_reloads_total{result=\"applied\"} 1"),
        "{text}"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn an_entry_cached_for_the_old_upstream_is_never_served_after_a_reload() {
    let (a, b) = (LegacyUpstream::start().await, LegacyUpstream::start().await);
    two_upstreams_with("/api/x")(&a, "a");
    two_upstreams_with("/api/x")(&b, "b");
    let cached = "freshness = \"exclusive\"";
    let path = file("reload-cache", &config(&a.url(), cached, None, ""));
    let proxy = TestProxy::start_file(&path).await;
    assert_eq!(get(proxy.addr, "/api/x").await.json()["from"], "a");
    assert_eq!(get(proxy.addr, "/api/x").await.json()["from"], "a");
    assert_eq!(
        a.count(&http::Method::GET, "/api/x"),
        1,
        "the second read was a hit"
    );

    write(&path, &config(&b.url(), cached, None, ""));
    assert_eq!(reload(&proxy).await.1["result"], "applied");
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(got.json()["from"], "b", "not a's cached body");
    assert_eq!(b.count(&http::Method::GET, "/api/x"), 1);

    // A change that leaves the cached bytes' meaning alone keeps the entry.
    write(
        &path,
        &config(&b.url(), &format!("{cached}\nmax_in_flight = 8"), None, ""),
    );
    assert_eq!(reload(&proxy).await.1["result"], "applied");
    assert_eq!(get(proxy.addr, "/api/x").await.json()["from"], "b");
    assert_eq!(b.count(&http::Method::GET, "/api/x"), 1, "still a hit");

    // A new base path on the same upstream: what the entry holds is another document.
    b.set_doc("/v2/api/x", r#"{"from":"b v2"}"#);
    let moved = config(&format!("{}/v2", b.url()), cached, None, "");
    write(&path, &moved);
    assert_eq!(reload(&proxy).await.1["result"], "applied");
    assert_eq!(get(proxy.addr, "/api/x").await.json()["from"], "b v2");
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn a_listen_change_is_reported_as_needing_a_restart_and_the_rest_is_applied() {
    let (a, b) = (LegacyUpstream::start().await, LegacyUpstream::start().await);
    two_upstreams_with("/api/x")(&a, "a");
    two_upstreams_with("/api/x")(&b, "b");
    let path = file("reload-listen", &config(&a.url(), "", None, ""));
    let proxy = TestProxy::start_file(&path).await;
    let moved = config(&b.url(), "", None, "max_connections = 100")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    write(&path, &moved);
    let (status, answer) = reload(&proxy).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "restart_needed");
    assert_eq!(
        answer["restart_needed"],
        serde_json::json!(["server.listen", "server.max_connections"])
    );
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(
        got.json()["from"],
        "b",
        "the route change is applied on the old listener"
    );
    let text = metrics(&proxy).await;
    assert!(
        text.contains("patchgate_reloads_total{result=\"restart_needed\"} 1"),
        "{text}"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn a_proxy_without_a_file_answers_409() {
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = send(proxy.admin, "POST", "/reload", &[], Bytes::new()).await;
    assert_eq!(got.status, 409);
    assert_eq!(got.json()["result"], "unavailable");
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_on_the_config_they_started_with() {
    let (a, b) = (LegacyUpstream::start().await, LegacyUpstream::start().await);
    two_upstreams_with("/api/x")(&a, "a");
    two_upstreams_with("/api/x")(&b, "b");
    a.set_doc("/api/w", r#"{"n":0}"#);
    b.set_doc("/api/w", r#"{"n":0}"#);
    let path = file("reload-in-flight", &config(&a.url(), "", None, ""));
    let proxy = TestProxy::start_file(&path).await;
    a.set_delay(std::time::Duration::from_millis(300));
    let addr = proxy.addr;
    let read = tokio::spawn(async move { get(addr, "/api/x").await });
    let write =
        tokio::spawn(async move { send(addr, "PATCH", "/api/w", &[MERGE_PATCH], r#"{"n":1}"#).await });
    let seen = || {
        let requests = a.requests();
        requests.iter().any(|r| r.path() == "/api/x") && requests.iter().any(|r| r.path() == "/api/w")
    };
    assert!(eventually(std::time::Duration::from_secs(5), seen).await);

    write_file_and_reload(&proxy, &path, &config(&b.url(), "", None, "")).await;
    assert_eq!(
        get(addr, "/api/x").await.json()["from"],
        "b",
        "a new request takes the new route"
    );
    let read = read.await.unwrap();
    assert_eq!(read.status, 200);
    assert_eq!(
        read.json()["from"],
        "a",
        "the read in flight finishes on the old route"
    );
    let write = write.await.unwrap();
    assert_eq!(write.status, 200, "{}", write.text());
    assert_eq!(
        a.doc("/api/w").unwrap(),
        r#"{"n":1}"#,
        "the write in flight lands where it began"
    );
    assert_eq!(b.doc("/api/w").unwrap(), r#"{"n":0}"#);
    proxy.stop().await.unwrap();
}

async fn write_file_and_reload(proxy: &TestProxy, path: &Path, text: &str) {
    write(path, text);
    let (status, answer) = reload(proxy).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &serde_json::json!("applied")),
        "{answer}"
    );
}

/// The attacker's reload: a fingerprint made under one `cache.key_headers` can have the
/// same bytes as another requester's under the next (`x-tenant: acme` then `x-user: acme`).
#[tokio::test]
async fn new_key_headers_never_let_one_requester_reach_an_entry_cached_for_another() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    upstream.set_body_per("x-tenant");
    let keyed = |name: &str| {
        config(&upstream.url(), "freshness = \"exclusive\"", None, "").replace(
            "[server]",
            &format!("[cache]\nkey_headers = [\"{name}\"]\n\n[server]"),
        )
    };
    let path = file("reload-key-headers", &keyed("x-tenant"));
    let proxy = TestProxy::start_file(&path).await;
    let acme = send(proxy.addr, "GET", "/api/x", &[("x-tenant", "acme")], Bytes::new()).await;
    assert_eq!(acme.json()["x-tenant"], "acme");
    let again = send(proxy.addr, "GET", "/api/x", &[("x-tenant", "acme")], Bytes::new()).await;
    assert_eq!(again.json()["x-tenant"], "acme");
    assert_eq!(upstream.count(&http::Method::GET, "/api/x"), 1, "cached for acme");

    write_file_and_reload(&proxy, &path, &keyed("x-user")).await;
    let other = send(proxy.addr, "GET", "/api/x", &[("x-user", "acme")], Bytes::new()).await;
    assert_eq!(other.status, 200);
    assert!(
        !other.text().contains("acme"),
        "tenant acme's entry leaked: {}",
        other.text()
    );
    assert_eq!(
        upstream.count(&http::Method::GET, "/api/x"),
        2,
        "asked the upstream"
    );
    proxy.stop().await.unwrap();
}

fn gauge(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn limits_and_cache_sizes_change_live() {
    let upstream = LegacyUpstream::start().await;
    for i in 0..10 {
        upstream.set_doc(&format!("/api/d/{i}"), &format!(r#"{{"i":{i}}}"#));
    }
    let cached = "freshness = \"exclusive\"";
    let path = file("reload-limits", &config(&upstream.url(), cached, None, ""));
    let proxy = TestProxy::start_file(&path).await;
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let put = send(
        proxy.addr,
        "PUT",
        "/api/d/0",
        &[("content-type", "application/json")],
        big.clone(),
    )
    .await;
    assert!(put.status.is_success(), "{}", put.status);
    for i in 0..10 {
        assert_eq!(get(proxy.addr, &format!("/api/d/{i}")).await.status, 200);
    }
    assert!(gauge(&metrics(&proxy).await, "patchgate_cache_bytes") > 8 * 1024);

    let smaller = config(&upstream.url(), cached, None, "max_body_bytes = \"1KiB\"")
        .replace("max_body_bytes = \"64KiB\"\n", "")
        .replace(
            "[server]",
            "[cache]\nmax_bytes = \"4KiB\"\nmax_entry_bytes = \"1KiB\"\n\n[server]",
        );
    write_file_and_reload(&proxy, &path, &smaller).await;
    let text = metrics(&proxy).await;
    assert!(gauge(&text, "patchgate_cache_bytes") <= 4096, "{text}");
    let put = send(
        proxy.addr,
        "PUT",
        "/api/d/1",
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(put.status, 413, "the new max_body_bytes holds");
    assert_eq!(get(proxy.addr, "/api/d/2").await.json()["i"], 2);
    proxy.stop().await.unwrap();
}
