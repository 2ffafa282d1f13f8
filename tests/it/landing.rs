//! A write that was sent runs to its end, and its end decides the cache: not the
//! client's timeout, not the client leaving, not a batch leader leaving, not shutdown.

use std::time::Duration;

use http::Method;
use serde_json::json;

use crate::support::*;

const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");

fn config(upstream: &LegacyUpstream, request_timeout: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout = "{request_timeout}"
{server_extra}

[[route]]
name = "api"
path = "/api/{{*rest}}"
upstream = "{}"
freshness = "exclusive"
"#,
        upstream.url()
    )
}

async fn doc_json(upstream: &LegacyUpstream) -> serde_json::Value {
    serde_json::from_slice(&upstream.doc("/api/d").unwrap_or_default()).unwrap_or_default()
}

#[tokio::test]
async fn a_write_that_lands_after_its_client_timed_out_is_not_undone() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let proxy = TestProxy::start(&config(&upstream, "1s", "")).await;
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    upstream.set_write_delay(Duration::from_secs(3));
    let got = send(proxy.addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"d":1}"#).await;
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(
        got.text().contains("outcome will be known later"),
        "{}",
        got.text()
    );
    // Before the late write lands, a read shows what the upstream holds.
    assert_eq!(get(proxy.addr, "/api/d").await.json(), json!({"v":0}));
    upstream.set_write_delay(Duration::ZERO);
    assert!(
        eventually(Duration::from_secs(10), || upstream
            .doc("/api/d")
            .unwrap()
            .as_ref()
            != br#"{"v":0}"#)
        .await
    );
    // The next PATCH waits for the late write's answer and applies to what it wrote.
    let got = send(proxy.addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"e":2}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(doc_json(&upstream).await, json!({"v":0,"d":1,"e":2}));
    assert_eq!(get(proxy.addr, "/api/d").await.json(), json!({"v":0,"d":1,"e":2}));
}

#[tokio::test]
async fn the_late_answer_of_a_write_updates_the_cache() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let proxy = TestProxy::start(&config(&upstream, "1s", "")).await;
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    upstream.set_write_delay(Duration::from_millis(1500));
    let got = send(proxy.addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"d":1}"#).await;
    assert_eq!(got.status, 504);
    let reads_before = upstream.count(&Method::GET, "/api/d");
    let mut seen = json!(null);
    for _ in 0..300 {
        seen = get(proxy.addr, "/api/d").await.json();
        if seen == json!({"v":0,"d":1}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, json!({"v":0,"d":1}), "the confirmed write is served");
    assert_eq!(
        upstream.count(&Method::GET, "/api/d"),
        reads_before,
        "from the cache the write's answer filled"
    );
}

#[tokio::test]
async fn a_client_that_leaves_mid_write_does_not_cancel_it() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let proxy = TestProxy::start(&config(&upstream, "1s", "")).await;
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    upstream.set_write_delay(Duration::from_millis(500));
    let request = b"PATCH /api/d HTTP/1.1\r\nHost: x\r\nContent-Type: application/merge-patch+json\r\nContent-Length: 7\r\n\r\n{\"d\":1}";
    let addr = proxy.addr;
    let client = tokio::spawn(async move { raw(addr, request, Duration::from_secs(30)).await });
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 1).await);
    client.abort();
    let _ = client.await;
    assert!(
        eventually(Duration::from_secs(5), || upstream
            .doc("/api/d")
            .unwrap()
            .as_ref()
            == br#"{"v":0,"d":1}"#)
        .await
    );
    // Never the old body once the write was confirmed, and without asking the upstream.
    let reads = upstream.count(&Method::GET, "/api/d");
    let mut seen = json!(null);
    for _ in 0..100 {
        seen = get(proxy.addr, "/api/d").await.json();
        if seen == json!({"v":0,"d":1}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, json!({"v":0,"d":1}));
    assert_eq!(upstream.count(&Method::GET, "/api/d"), reads);
}

#[tokio::test]
async fn a_batch_leader_that_leaves_does_not_cancel_the_write_it_carries() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let proxy = TestProxy::start(&config(&upstream, "5s", "")).await;
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    upstream.set_write_delay(Duration::from_millis(600));
    let addr = proxy.addr;
    // The first write holds the lock; the next two queue, and one carries the other.
    let first =
        tokio::spawn(async move { send(addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"a":1}"#).await });
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 1).await);
    // The same request head as `send` makes, so that the two may share a write.
    let leader_request = format!(
        "PATCH /api/d HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/merge-patch+json\r\nContent-Length: 7\r\n\r\n{{\"b\":2}}"
    );
    let leader =
        tokio::spawn(async move { raw(addr, leader_request.as_bytes(), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let carried =
        tokio::spawn(async move { send(addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"c":3}"#).await });
    assert_eq!(first.await.unwrap().status, 200);
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 2).await);
    let combined = &upstream.writes()[1];
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&combined.body).unwrap(),
        json!({"v":0,"a":1,"b":2,"c":3}),
        "one write carries both queued PATCHes"
    );
    leader.abort();
    let _ = leader.await;
    let carried = carried.await.unwrap();
    assert_eq!(carried.status, 200, "{}", carried.text());
    assert_eq!(carried.json(), json!({"v":0,"a":1,"b":2,"c":3}));
    assert_eq!(doc_json(&upstream).await, json!({"v":0,"a":1,"b":2,"c":3}));
}

#[tokio::test]
async fn a_write_without_an_answer_makes_the_next_read_and_write_ask_the_upstream() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let proxy = TestProxy::start(&config(&upstream, "1s", r#"write_timeout = "1s""#)).await;
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    assert_eq!(upstream.count(&Method::GET, "/api/d"), 1, "exclusive: a hit");
    upstream.fail_writes(1, Fault::Hang);
    let got = send(proxy.addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"d":1}"#).await;
    assert_eq!(got.status, 504);
    // Once the write timed out, the resource's state is unknown: the next read asks.
    let mut asked = false;
    for _ in 0..200 {
        let before = upstream.count(&Method::GET, "/api/d");
        assert_eq!(get(proxy.addr, "/api/d").await.json(), json!({"v":0}));
        if upstream.count(&Method::GET, "/api/d") > before {
            asked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(asked, "a read of an uncertain resource goes to the upstream");
    // That read confirmed the state: hits again.
    let before = upstream.count(&Method::GET, "/api/d");
    assert_eq!(get(proxy.addr, "/api/d").await.json(), json!({"v":0}));
    assert_eq!(upstream.count(&Method::GET, "/api/d"), before);
}

#[tokio::test]
async fn a_write_without_an_answer_makes_the_next_write_read_the_upstream() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let proxy = TestProxy::start(&config(&upstream, "1s", r#"write_timeout = "1s""#)).await;
    assert_eq!(get(proxy.addr, "/api/d").await.status, 200);
    // Dropped after reading it, twice: the resend on a new connection fails too.
    upstream.fail_writes(2, Fault::Close);
    let got = send(proxy.addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"d":1}"#).await;
    assert_eq!(got.status, 502);
    // Another writer changed the document meanwhile; an exclusive route would not know.
    upstream.set_doc("/api/d", r#"{"v":1}"#);
    let reads = upstream.count(&Method::GET, "/api/d");
    let got = send(proxy.addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"e":2}"#).await;
    assert_eq!(got.status, 200);
    assert_eq!(upstream.count(&Method::GET, "/api/d"), reads + 1);
    assert_eq!(doc_json(&upstream).await, json!({"v":1,"e":2}));
}

#[tokio::test]
async fn shutdown_waits_for_writes_in_flight_past_its_grace() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/d", r#"{"v":0}"#);
    let mut proxy = TestProxy::start(&config(&upstream, "5s", r#"shutdown_grace = "100ms""#)).await;
    upstream.set_write_delay(Duration::from_millis(800));
    let addr = proxy.addr;
    let client =
        tokio::spawn(async move { send(addr, "PATCH", "/api/d", &[MERGE_PATCH], r#"{"d":1}"#).await });
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 1).await);
    proxy.begin_stop();
    proxy.join().await.unwrap();
    // The process may exit now: the write has landed and its answer was sent.
    assert_eq!(doc_json(&upstream).await, json!({"v":0,"d":1}));
    let got = client.await.unwrap();
    assert_eq!(got.status, 200, "the client is answered: {}", got.text());
    assert_eq!(got.json(), json!({"v":0,"d":1}));
}
