//! Several instances, one truth: patchgate instances in front of one legacy API that
//! coordinate through Redis (`[cluster]`).
//!
//! - Writes to one resource are serialized across instances by a Redis lease, and
//!   batching inside one instance still works: no lost update, whatever the spread.
//! - A write acknowledged on one instance is seen by every read that starts afterwards on
//!   any other, whatever the route's `freshness`.
//! - Redis unreachable: writes get `503` problem+json with `Retry-After`, reads keep
//!   working from the upstream, `/healthz` says `degraded`; Redis back: all of it recovers
//!   by itself, and nothing acknowledged was lost.
//! - An instance killed while it holds a lease blocks the others until the lease expires,
//!   not longer (and not shorter).
//!
//! Every test runs its own `redis-server` (`support::redis`) and its own upstream. Several
//! `TestProxy`s in one test are several instances, each with its own state; the tests
//! that kill an instance or give it an environment run the real binary.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use patchgate::Config;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::*;

const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");
const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");
const JSON: (&str, &str) = ("content-type", "application/json");
const DOC: &str = "/api/lists/1";
const BIN: &str = env!("CARGO_BIN_EXE_patchgate");

/// `[server]` keys for the tests where no lease has to run out: room for 120 queued writes.
const ROOMY: &str = r#"request_timeout = "10s""#;
/// `[server]` keys for the tests where a lease runs out or Redis goes away.
const SHORT: &str = "request_timeout = \"2s\"\nwrite_timeout = \"2s\"";
/// `[cluster]` keys to go with [`SHORT`]: a lease of [`LEASE`], 500 ms per Redis command.
const SHORT_LEASE: &str = "lease = \"3s\"\ntimeout = \"500ms\"\nlease_poll = \"100ms\"";
const LEASE: Duration = Duration::from_secs(3);

/// The cluster metric families and their types.
const FAMILIES: [(&str, &str); 7] = [
    ("patchgate_cluster_redis_up", "gauge"),
    ("patchgate_cluster_lease_waits_total", "counter"),
    ("patchgate_cluster_lease_losses_total", "counter"),
    ("patchgate_cluster_invalidations_sent_total", "counter"),
    ("patchgate_cluster_invalidations_received_total", "counter"),
    ("patchgate_cluster_redis_errors_total", "counter"),
    ("patchgate_cluster_feed_events_lost_total", "counter"),
];

/// One instance's config: a route `/api/{*rest}` → `upstream`, coordinating through `redis`.
fn config(upstream: &str, redis: &str, server: &str, cluster: &str, route: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = "64KiB"
{server}

[cluster]
redis = "{redis}"
{cluster}

[[route]]
name = "api"
path = "/api/{{*rest}}"
upstream = "{upstream}"
{route}
"#
    )
}

/// `n` instances of one config, each with its own state.
async fn instances(n: usize, toml: &str) -> Vec<TestProxy> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestProxy::start(toml).await);
    }
    out
}

fn add(value: u64) -> String {
    format!(r#"[{{"op":"add","path":"/items/-","value":{value}}}]"#)
}

fn merge(json: Value) -> String {
    json.to_string()
}

fn doc_json(upstream: &LegacyUpstream) -> Value {
    let body = upstream.doc(DOC).expect("the upstream has the document");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("upstream doc {body:?}: {e}"))
}

/// The upstream document's `items`, sorted, duplicates kept.
fn items(upstream: &LegacyUpstream) -> Vec<u64> {
    let mut items: Vec<u64> = doc_json(upstream)["items"]
        .as_array()
        .expect("an items array")
        .iter()
        .map(|v| v.as_u64().expect("numeric items"))
        .collect();
    items.sort_unstable();
    items
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
async fn until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer to a write that could not take its lease: 503, problem+json, Retry-After.
fn assert_unavailable(got: &Response, what: &str) {
    assert_eq!(got.status, 503, "{what}: {}", got.text());
    assert_eq!(
        got.header("content-type"),
        Some("application/problem+json"),
        "{what}: {}",
        got.text()
    );
    assert_eq!(got.json()["status"], 503, "{what}: {}", got.text());
    assert!(
        got.json()["cause"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: a problem naming the cause: {}",
        got.text()
    );
    let retry = got
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: a 503 without Retry-After: {:?}", got.headers));
    assert!(
        retry.parse::<u64>().is_ok() || httpdate::parse_http_date(retry).is_ok(),
        "{what}: Retry-After {retry:?} is neither seconds nor an HTTP date"
    );
}

/// `/healthz` answers 200 with a body starting `ok`.
async fn healthy(admin: SocketAddr) -> bool {
    let got = get(admin, "/healthz").await;
    got.status == 200 && got.text().starts_with("ok")
}

/// `/healthz` answers 503 with a body starting `degraded`.
async fn degraded(admin: SocketAddr) -> bool {
    let got = get(admin, "/healthz").await;
    got.status == 503 && got.text().starts_with("degraded")
}

/// The sum of every sample of `family` (whatever its labels); `None` when it has none.
fn sample_sum(text: &str, family: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            match rest.rsplit_once('}') {
                Some((_, value)) => value,
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        let value: f64 = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a sample of {family} without a value: {line:?}"));
        sum = Some(sum.unwrap_or(0.0) + value);
    }
    sum
}

/// `family`'s value on the admin listener `admin`; panics when it has no sample.
async fn metric(admin: SocketAddr, family: &str) -> f64 {
    let text = get(admin, "/metrics").await.text();
    sample_sum(&text, family).unwrap_or_else(|| panic!("{family} missing in {text}"))
}

/// Sends `count` writes at once, value `v` through instance `v % n`; returns each answer
/// with its value, in value order.
async fn storm(
    proxies: &[TestProxy],
    count: u64,
    content_type: (&'static str, &'static str),
    body: fn(u64) -> String,
) -> Vec<(u64, Response)> {
    let tasks: Vec<(u64, JoinHandle<Response>)> = (0..count)
        .map(|v| {
            let addr = proxies[v as usize % proxies.len()].addr;
            let task = tokio::spawn(async move { send(addr, "PATCH", DOC, &[content_type], body(v)).await });
            (v, task)
        })
        .collect();
    let mut answers = Vec::new();
    for (v, task) in tasks {
        answers.push((v, task.await.unwrap()));
    }
    answers
}

// ---------------------------------------------------------------------------------------
// The harness itself (passes without any cluster code).

#[tokio::test]
async fn redis_harness_starts_stops_kills_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
    assert!(redis.dir().is_dir());
    assert!(redis.ping().await);
    assert_eq!(
        redis.command(&["SET", "k1", "v1"]).await,
        Ok(Resp::Simple("OK".into()))
    );

    redis.stop().await;
    assert!(!redis.is_running());
    assert!(!redis.ping().await, "stopped means unreachable");
    assert!(tokio::net::TcpStream::connect(redis.addr()).await.is_err());

    redis.restart().await;
    assert_eq!(redis.port(), port, "same port");
    assert!(redis.ping().await);
    assert_eq!(
        redis.command(&["GET", "k1"]).await,
        Ok(Resp::Bulk(Some(b"v1".to_vec()))),
        "keys come back after a stop"
    );
    assert_eq!(
        redis.command(&["SET", "k2", "v2", "PX", "60000"]).await,
        Ok(Resp::Simple("OK".into()))
    );

    redis.kill().await;
    assert!(!redis.ping().await, "killed means unreachable");
    redis.restart().await;
    assert_eq!(redis.port(), port);
    assert_eq!(redis.keys("k*").await, ["k1", "k2"], "and after a SIGKILL");
    let ttl = redis.command(&["PTTL", "k2"]).await;
    assert!(
        matches!(ttl, Ok(Resp::Int(ms)) if ms > 0 && ms <= 60000),
        "expiry times survive: {ttl:?}"
    );
    redis.flush_all().await;
    assert!(redis.keys("*").await.is_empty());

    let dir = redis.dir().to_owned();
    let addr = redis.addr();
    drop(redis);
    assert!(!dir.exists(), "the data directory is removed on drop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "killed on drop"
    );

    let locked = RedisServer::start_with_password("s3cret").await;
    assert!(locked.ping().await, "the harness authenticates");
    let mut stream = tokio::net::TcpStream::connect(locked.addr()).await.unwrap();
    let answer = raw_exchange(&mut stream, b"*1\r\n$4\r\nPING\r\n").await;
    assert!(answer.starts_with("-NOAUTH"), "{answer}");
}

async fn raw_exchange(stream: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

// ---------------------------------------------------------------------------------------
// Configuration.

#[test]
fn the_lease_must_outlast_the_write_timeout() {
    let toml = |server: &str, cluster: &str| {
        format!(
            "[server]\n{server}\n\n[[route]]\nname = \"api\"\npath = \"/api/{{*rest}}\"\nupstream = \"http://127.0.0.1:1\"\n\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n{cluster}\n"
        )
    };
    let ok = |text: String| {
        Config::from_toml(&text, "cluster.toml").unwrap_or_else(|e| panic!("{text}\nrefused: {e}"));
    };
    let refused = |text: String, key: &str| {
        let Err(e) = Config::from_toml(&text, "cluster.toml") else {
            panic!("{text}\naccepted");
        };
        let message = e.to_string();
        assert!(message.contains(key), "{text}\nnames {key}: {message}");
    };
    ok(toml(SHORT, "lease = \"3s\""));
    ok(toml(SHORT, "")); // default: write_timeout + 5 s
    ok(toml("", ""));
    ok(toml(
        SHORT,
        "key_prefix = \"tenant-a:\"\npassword_env = \"SOME_VAR\"\nlease = \"3s\"\ntimeout = \"1s\"\nlease_poll = \"250ms\"",
    ));
    ok(toml("", "").replace("redis://127.0.0.1:6379/0", "rediss://redis.internal:6380/0"));
    refused(toml(SHORT, "lease = \"2s\""), "cluster.lease");
    refused(toml(SHORT, "lease = \"1s\""), "cluster.lease");
    // Checked against the effective write_timeout (default 60 s), not only a written one.
    refused(toml("", "lease = \"30s\""), "cluster.lease");
    refused(toml(SHORT, "lease = \"soon\""), "cluster.lease");
    refused(
        toml("", "").replace("redis://127.0.0.1:6379/0", "http://127.0.0.1:6379/0"),
        "cluster.redis",
    );
}

// ---------------------------------------------------------------------------------------
// No lost updates.

#[tokio::test]
async fn concurrent_json_patches_through_three_instances_lose_nothing() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    // Reads answer the document as it was on arrival, 10 ms later: uncoordinated
    // read-modify-writes of two instances overlap and one overwrites the other.
    upstream.set_delay(Duration::from_millis(10));
    let proxies = instances(3, &config(&upstream.url(), &redis.url(), ROOMY, "", "")).await;

    let answers = storm(&proxies, 120, JSON_PATCH, add).await;
    for (value, got) in &answers {
        assert_eq!(got.status, 200, "PATCH {value}: {}", got.text());
        let items = got.json()["items"].as_array().cloned().unwrap_or_default();
        assert!(
            items.contains(&json!(value)),
            "PATCH {value} is answered with a confirmed document that has it: {}",
            got.text()
        );
    }
    assert_eq!(
        items(&upstream),
        (0..120).collect::<Vec<_>>(),
        "every value exactly once"
    );
    // The instances agree with the upstream afterwards.
    assert_instances_agree(&proxies, &upstream).await;
}

#[tokio::test]
async fn concurrent_merge_patches_through_three_instances_lose_nothing() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"base":true}"#);
    upstream.set_delay(Duration::from_millis(10));
    let route = r#"freshness = "exclusive""#;
    let proxies = instances(3, &config(&upstream.url(), &redis.url(), ROOMY, "", route)).await;
    // Warm every instance's cache: an exclusive route answers from it without asking.
    for proxy in &proxies {
        assert_eq!(get(proxy.addr, DOC).await.status, 200);
    }

    let answers = storm(&proxies, 120, MERGE_PATCH, |v| {
        merge(json!({ format!("k{v}"): v }))
    })
    .await;
    for (value, got) in &answers {
        assert_eq!(got.status, 200, "PATCH k{value}: {}", got.text());
        assert_eq!(got.json()[format!("k{value}")], json!(value), "{}", got.text());
    }
    let mut expected = serde_json::Map::new();
    expected.insert("base".into(), json!(true));
    for v in 0..120u64 {
        expected.insert(format!("k{v}"), json!(v));
    }
    assert_eq!(doc_json(&upstream), Value::Object(expected), "every key kept");
    assert_instances_agree(&proxies, &upstream).await;
}

/// Every instance reads the upstream's bytes.
async fn assert_instances_agree(proxies: &[TestProxy], upstream: &LegacyUpstream) {
    for proxy in proxies {
        assert_eq!(get(proxy.addr, DOC).await.body, upstream.doc(DOC).unwrap());
    }
}

#[tokio::test]
async fn queued_patches_on_one_instance_still_share_one_upstream_write() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    upstream.set_delay(Duration::from_millis(400));
    let proxies = instances(2, &config(&upstream.url(), &redis.url(), ROOMY, "", "")).await;
    let addr = proxies[0].addr;

    // As in batch.rs: the first PATCH holds the lock (its read reached the upstream), the
    // others queue behind it meanwhile and ride its write.
    let first = tokio::spawn(async move { send(addr, "PATCH", DOC, &[JSON_PATCH], add(0)).await });
    assert!(eventually(Duration::from_secs(5), || upstream.count(&Method::GET, DOC) == 1).await);
    let queued: Vec<JoinHandle<Response>> = (1..=8)
        .map(|v| tokio::spawn(async move { send(addr, "PATCH", DOC, &[JSON_PATCH], add(v)).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(first.await.unwrap().status, 200);
    for task in queued {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(items(&upstream), (0..=8).collect::<Vec<_>>());
    assert_eq!(
        upstream.count(&Method::PUT, DOC),
        1,
        "one write for all nine, as without [cluster]"
    );

    // The lease was given back: the other instance writes next.
    upstream.set_delay(Duration::ZERO);
    let got = send(proxies[1].addr, "PATCH", DOC, &[JSON_PATCH], add(9)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(items(&upstream), (0..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_write_waits_for_the_lease_another_instance_holds() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let proxies = instances(2, &config(&upstream.url(), &redis.url(), ROOMY, "", "")).await;
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    upstream.set_write_delay(Duration::from_millis(800));

    let first = tokio::spawn(async move { send(a, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await });
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 1).await);
    // A's write is in flight: its lease is in Redis, under the default key prefix.
    let keys = redis.keys("*").await;
    assert!(!keys.is_empty(), "a lease is held while the write runs");
    assert!(
        keys.iter().all(|k| k.starts_with("patchgate:")),
        "every key under the default prefix: {keys:?}"
    );

    let got = send(b, "PATCH", DOC, &[MERGE_PATCH], r#"{"b":2}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json(),
        json!({"v":0,"a":1,"b":2}),
        "B read the document once A's write had landed"
    );
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json(), json!({"v":0,"a":1}));
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1,"b":2}));
    let writes = upstream.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        serde_json::from_slice::<Value>(&writes[1].body).unwrap(),
        json!({"v":0,"a":1,"b":2})
    );
    assert!(
        metric(proxies[1].admin, "patchgate_cluster_lease_waits_total").await >= 1.0,
        "B counted its wait"
    );
}

#[tokio::test]
async fn a_stale_if_match_on_another_instance_gets_412() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let route = r#"freshness = "exclusive""#;
    let proxies = instances(3, &config(&upstream.url(), &redis.url(), ROOMY, "", route)).await;
    let (a, b, c) = (proxies[0].addr, proxies[1].addr, proxies[2].addr);
    let seen = get(b, DOC).await;
    assert_eq!(get(c, DOC).await.header("etag"), seen.header("etag"));
    let old = seen.header("etag").expect("an ETag").to_owned();

    let written = send(a, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(written.status, 200, "{}", written.text());
    let current = written.header("etag").expect("the write's ETag").to_owned();
    assert_ne!(current, old);

    let got = send(b, "PATCH", DOC, &[MERGE_PATCH, ("if-match", &old)], r#"{"b":2}"#).await;
    assert_eq!(got.status, 412, "{}", got.text());
    assert_eq!(
        got.json(),
        json!({"v":0,"a":1}),
        "the 412 carries the current document"
    );
    assert_eq!(got.header("etag"), Some(current.as_str()));
    let got = send(c, "PUT", DOC, &[JSON, ("if-match", &old)], r#"{"c":3}"#).await;
    assert_eq!(got.status, 412, "{}", got.text());
    let got = send(b, "DELETE", DOC, &[("if-match", &old)], Bytes::new()).await;
    assert_eq!(got.status, 412, "{}", got.text());

    assert_eq!(upstream.writes().len(), 1, "only A's write reached the upstream");
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1}));
    // The current tag works everywhere.
    let got = send(
        c,
        "PATCH",
        DOC,
        &[MERGE_PATCH, ("if-match", &current)],
        r#"{"c":3}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1,"c":3}));
}

#[tokio::test]
async fn clusters_under_different_key_prefixes_share_one_redis_but_no_lease() {
    let redis = RedisServer::start().await;
    let (ux, uy) = (LegacyUpstream::start().await, LegacyUpstream::start().await);
    ux.set_doc(DOC, r#"{"v":0}"#);
    uy.set_doc(DOC, r#"{"v":0}"#);
    let x = TestProxy::start(&config(
        &ux.url(),
        &redis.url(),
        ROOMY,
        r#"key_prefix = "tenant-x:""#,
        "",
    ))
    .await;
    let y = TestProxy::start(&config(
        &uy.url(),
        &redis.url(),
        ROOMY,
        r#"key_prefix = "tenant-y:""#,
        "",
    ))
    .await;
    ux.set_write_delay(Duration::from_secs(2));
    let xa = x.addr;
    let in_x = tokio::spawn(async move { send(xa, "PATCH", DOC, &[MERGE_PATCH], r#"{"x":1}"#).await });
    assert!(eventually(Duration::from_secs(5), || ux.writes().len() == 1).await);
    let keys = redis.keys("*").await;
    assert!(
        keys.iter().any(|k| k.starts_with("tenant-x:")),
        "X's lease is under its prefix: {keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("tenant-x:") || k.starts_with("tenant-y:")),
        "{keys:?}"
    );

    // Same path, other prefix: Y does not wait for X's lease.
    let got = send(y.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"y":1}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        ux.doc(DOC).unwrap().as_ref(),
        br#"{"v":0}"#,
        "Y was done while X's write was still in flight"
    );
    assert_eq!(in_x.await.unwrap().status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&uy.doc(DOC).unwrap()).unwrap(),
        json!({"v":0,"y":1})
    );
    let keys = redis.keys("*").await;
    assert!(
        keys.iter()
            .all(|k| k.starts_with("tenant-x:") || k.starts_with("tenant-y:")),
        "{keys:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Coherent caches.

/// 50 rounds: instances other than the writer read (so their caches hold the document),
/// one writes (PATCH or PUT), and then each reader must show the new body: plainly, and
/// when asked `If-None-Match` with the tag it had. Then a DELETE is seen everywhere.
async fn a_write_on_one_instance_is_read_on_the_others(freshness: &str) {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":-1}"#);
    let route = format!("freshness = \"{freshness}\"");
    let proxies = instances(3, &config(&upstream.url(), &redis.url(), ROOMY, "", &route)).await;
    for round in 0..50u64 {
        let writer = proxies[round as usize % 3].addr;
        let readers: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).filter(|a| *a != writer).collect();
        let mut old_tags = Vec::new();
        for reader in &readers {
            let warm = get(*reader, DOC).await;
            assert_eq!(warm.status, 200, "{freshness} round {round}: {}", warm.text());
            old_tags.push(warm.header("etag").expect("a read has an ETag").to_owned());
        }
        let expected = json!({ "v": round });
        let written = if round % 2 == 0 {
            send(writer, "PATCH", DOC, &[MERGE_PATCH], merge(expected.clone())).await
        } else {
            send(writer, "PUT", DOC, &[JSON], merge(expected.clone())).await
        };
        assert!(
            written.status.is_success(),
            "{freshness} round {round}: {} {}",
            written.status,
            written.text()
        );
        assert_eq!(doc_json(&upstream), expected);
        for (reader, old_tag) in readers.iter().zip(&old_tags) {
            let got = get(*reader, DOC).await;
            assert_eq!(got.status, 200, "{freshness} round {round}");
            assert_eq!(
                got.json(),
                expected,
                "{freshness} round {round}: a read after a write acknowledged elsewhere"
            );
            if let Some(tag) = written.header("etag") {
                assert_eq!(
                    got.header("etag"),
                    Some(tag),
                    "{freshness}: instances agree on tags"
                );
            }
            let got = send(*reader, "GET", DOC, &[("if-none-match", old_tag)], Bytes::new()).await;
            assert_eq!(
                got.status, 200,
                "{freshness} round {round}: {old_tag} is no longer current"
            );
            assert_eq!(got.json(), expected, "{freshness} round {round}");
        }
    }
    for proxy in &proxies[1..] {
        assert_eq!(get(proxy.addr, DOC).await.status, 200);
    }
    let deleted = send(proxies[0].addr, "DELETE", DOC, &[], Bytes::new()).await;
    assert!(deleted.status.is_success(), "{}", deleted.text());
    assert_eq!(upstream.doc(DOC), None);
    for proxy in &proxies[1..] {
        let got = get(proxy.addr, DOC).await;
        assert_eq!(
            got.status,
            404,
            "{freshness}: a delete is seen elsewhere: {}",
            got.text()
        );
    }
}

#[tokio::test]
async fn a_write_on_one_instance_is_read_on_the_others_exclusive() {
    a_write_on_one_instance_is_read_on_the_others("exclusive").await;
}

#[tokio::test]
async fn a_write_on_one_instance_is_read_on_the_others_fresh_for_5s() {
    a_write_on_one_instance_is_read_on_the_others("5s").await;
}

#[tokio::test]
async fn a_write_on_one_instance_is_read_on_the_others_revalidate() {
    a_write_on_one_instance_is_read_on_the_others("revalidate").await;
}

#[tokio::test]
async fn metrics_show_redis_up_and_invalidations_sent_and_received() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let route = r#"freshness = "exclusive""#;
    let proxies = instances(2, &config(&upstream.url(), &redis.url(), ROOMY, "", route)).await;
    let (a, b) = (&proxies[0], &proxies[1]);
    assert_eq!(get(b.addr, DOC).await.json(), json!({"v":0}));
    let got = send(a.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(get(b.addr, DOC).await.json(), json!({"v":0,"a":1}));

    for proxy in &proxies {
        let text = get(proxy.admin, "/metrics").await.text();
        for (family, kind) in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "# TYPE {family} {kind} missing in {text}"
            );
            assert!(
                sample_sum(&text, family).is_some(),
                "{family} has no sample in {text}"
            );
        }
        assert_eq!(
            sample_sum(&text, "patchgate_cluster_redis_up"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample_sum(&text, "patchgate_cluster_lease_losses_total"),
            Some(0.0),
            "nothing went wrong: {text}"
        );
        assert_eq!(
            sample_sum(&text, "patchgate_cluster_redis_errors_total"),
            Some(0.0),
            "nothing went wrong: {text}"
        );
    }
    assert!(metric(a.admin, "patchgate_cluster_invalidations_sent_total").await >= 1.0);
    assert!(
        until(Duration::from_secs(5), || async {
            metric(b.admin, "patchgate_cluster_invalidations_received_total").await >= 1.0
        })
        .await,
        "B counted the invalidation it received"
    );
}

// ---------------------------------------------------------------------------------------
// Redis unreachable.

#[tokio::test]
async fn with_redis_down_writes_get_503_reads_go_upstream_and_health_is_degraded_until_it_is_back() {
    let mut redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    let route = r#"freshness = "exclusive""#;
    let proxies = instances(
        2,
        &config(&upstream.url(), &redis.url(), SHORT, SHORT_LEASE, route),
    )
    .await;
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    let got = send(a, "PATCH", DOC, &[JSON_PATCH], add(1)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(get(b, DOC).await.json(), json!({"items":[1]}));
    for proxy in &proxies {
        assert!(healthy(proxy.admin).await);
    }

    redis.stop().await;
    let writes = upstream.writes().len();
    let got = send(a, "PATCH", DOC, &[JSON_PATCH], add(2)).await;
    assert_unavailable(&got, "PATCH on A with Redis down");
    let got = send(b, "PATCH", DOC, &[JSON_PATCH], add(3)).await;
    assert_unavailable(&got, "PATCH on B with Redis down");
    let got = send(a, "PUT", DOC, &[JSON], r#"{"items":[4]}"#).await;
    assert_unavailable(&got, "PUT with Redis down");
    let got = send(b, "DELETE", DOC, &[], Bytes::new()).await;
    assert_unavailable(&got, "DELETE with Redis down");
    assert_eq!(
        upstream.writes().len(),
        writes,
        "no refused write reached the upstream"
    );
    assert_eq!(items(&upstream), [1]);

    // Reads keep working, and ask the upstream: without invalidations no cache is trusted.
    for addr in [a, b] {
        let before = upstream.count(&Method::GET, DOC);
        let got = get(addr, DOC).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json(), json!({"items":[1]}));
        assert_eq!(
            upstream.count(&Method::GET, DOC),
            before + 1,
            "read from the upstream"
        );
    }
    for proxy in &proxies {
        assert!(
            until(Duration::from_secs(5), || degraded(proxy.admin)).await,
            "/healthz: {:?}",
            get(proxy.admin, "/healthz").await
        );
        assert!(
            until(Duration::from_secs(5), || async {
                metric(proxy.admin, "patchgate_cluster_redis_up").await == 0.0
            })
            .await
        );
        assert!(metric(proxy.admin, "patchgate_cluster_redis_errors_total").await >= 1.0);
    }

    redis.restart().await;
    // Writes come back by themselves.
    let mut acknowledged = vec![1];
    let mut next = 10;
    for addr in [a, b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = send(addr, "PATCH", DOC, &[JSON_PATCH], add(next)).await;
            next += 1;
            if got.status == 200 {
                acknowledged.push(next - 1);
                break;
            }
            assert_unavailable(&got, "PATCH while Redis comes back");
            assert!(Instant::now() < deadline, "writes did not recover within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for proxy in &proxies {
        assert!(
            until(Duration::from_secs(10), || healthy(proxy.admin)).await,
            "/healthz: {:?}",
            get(proxy.admin, "/healthz").await
        );
        assert_eq!(metric(proxy.admin, "patchgate_cluster_redis_up").await, 1.0);
    }
    let stored = items(&upstream);
    for value in &acknowledged {
        assert_eq!(
            stored.iter().filter(|v| *v == value).count(),
            1,
            "acknowledged {value} is in {stored:?} once"
        );
    }
    for refused in [2, 3, 4] {
        assert!(
            !stored.contains(&refused),
            "refused {refused} was written: {stored:?}"
        );
    }
    for addr in [a, b] {
        assert_eq!(get(addr, DOC).await.body, upstream.doc(DOC).unwrap());
    }
}

#[tokio::test]
async fn no_acknowledged_write_is_lost_when_redis_dies_under_load_and_comes_back() {
    let mut redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    upstream.set_delay(Duration::from_millis(5));
    let route = r#"freshness = "exclusive""#;
    let proxies = instances(
        3,
        &config(&upstream.url(), &redis.url(), SHORT, SHORT_LEASE, route),
    )
    .await;

    // One writer per instance, each with its own values, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    // (instance, value, when it was sent, its answer)
    type Answers = Vec<(usize, u64, Instant, Response)>;
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let writers: Vec<JoinHandle<()>> = proxies
        .iter()
        .enumerate()
        .map(|(i, proxy)| {
            let (addr, stop, answers) = (proxy.addr, stop.clone(), answers.clone());
            tokio::spawn(async move {
                let mut value = i as u64 * 100_000;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let got = send(addr, "PATCH", DOC, &[JSON_PATCH], add(value)).await;
                    answers.lock().unwrap().push((i, value, sent, got));
                    value += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    let acknowledged_by = |i: usize, after: Instant| {
        answers
            .lock()
            .unwrap()
            .iter()
            .any(|(who, _, sent, got)| *who == i && *sent > after && got.status == 200)
    };
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || (0..3)
            .all(|i| acknowledged_by(i, started)))
        .await,
        "every instance writes while Redis is up"
    );

    redis.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await;
    let back = Instant::now();
    let recovered = eventually(Duration::from_secs(10), || {
        (0..3).all(|i| acknowledged_by(i, back))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        recovered,
        "every instance writes again within 10 s of Redis coming back"
    );

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut refused = 0;
    for (_, value, _, got) in answers.iter() {
        match got.status.as_u16() {
            200 => {}
            503 => {
                assert_unavailable(got, &format!("PATCH {value}"));
                refused += 1;
            }
            // Waiting for a lease left behind by the outage may outlast request_timeout.
            504 => {}
            other => panic!("PATCH {value}: {other} {}", got.text()),
        }
    }
    assert!(refused > 0, "the outage was seen: some writes got 503");
    let stored = items(&upstream);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for value in &stored {
        *counts.entry(*value).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "no value written twice: {stored:?}"
    );
    for (_, value, _, got) in answers.iter() {
        if got.status == 200 {
            assert!(
                counts.contains_key(value),
                "acknowledged {value} is missing from {stored:?}"
            );
        }
    }
    assert_instances_agree(&proxies, &upstream).await;
}

// ---------------------------------------------------------------------------------------
// Real processes: SIGKILL and the environment.

/// A `patchgate` process started with `--config`, killed when dropped.
struct Instance {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl Instance {
    /// Writes `toml` to a file, starts the binary with `env` added and waits until it has
    /// logged where it listens (and where its admin listener is, when `admin`).
    async fn start(toml: &str, env: &[(&str, &str)], admin: bool) -> Instance {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "patchgate-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        std::fs::write(&path, toml).unwrap();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let (mut addr, mut admin_addr) = (None, None);
            while addr.is_none() || (admin && admin_addr.is_none()) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let Ok(line) = rx.recv_timeout(left) else {
                    return None;
                };
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                let at = || v["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
                match v["message"].as_str() {
                    Some("patchgate listening") => addr = at(),
                    Some("admin listening") => admin_addr = at(),
                    _ => {}
                }
            }
            Some((addr?, admin_addr))
        })
        .await
        .unwrap();
        let Some((addr, admin)) = waited else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "patchgate exited or did not report its listeners within 10 s:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Instance {
            child,
            addr,
            admin,
            log,
            dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL, and reap the process.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn an_instance_killed_holding_a_lease_blocks_the_others_only_until_it_expires() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    let toml = config(&upstream.url(), &redis.url(), SHORT, SHORT_LEASE, "");
    let mut first = Instance::start(&toml, &[], false).await;
    let second = Instance::start(&toml, &[], false).await;
    let mut acknowledged = Vec::new();
    for (value, addr) in [(1, first.addr), (2, second.addr)] {
        let got = send(addr, "PATCH", DOC, &[JSON_PATCH], add(value)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        acknowledged.push(value);
    }

    // The first instance takes the lease and sends a write the upstream takes 1.5 s over,
    // and completes even though the process that sent it is gone by then.
    let dead_write = Duration::from_millis(1500);
    upstream.set_write_delay(dead_write);
    upstream.set_writes_outlive_connections(true);
    let sent = Instant::now();
    let request = format!(
        "PATCH {DOC} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json-patch+json\r\nContent-Length: {}\r\n\r\n{}",
        add(3).len(),
        add(3)
    );
    let addr = first.addr;
    let in_flight = tokio::spawn(async move { raw(addr, request.as_bytes(), Duration::from_secs(10)).await });
    assert!(
        eventually(Duration::from_secs(5), || upstream.writes().len() == 3).await,
        "{}",
        first.log()
    );
    assert!(
        !redis.keys("patchgate:*").await.is_empty(),
        "the first instance holds a lease"
    );
    first.kill();
    let killed = Instant::now();
    let _ = in_flight.await;
    upstream.set_write_delay(Duration::ZERO);

    // The second instance gets the resource once the dead instance's lease has expired.
    let mut value = 4;
    let succeeded = loop {
        let got = send(second.addr, "PATCH", DOC, &[JSON_PATCH], add(value)).await;
        if got.status == 200 {
            acknowledged.push(value);
            break Instant::now();
        }
        assert!(
            matches!(got.status.as_u16(), 503 | 504),
            "PATCH {value} waiting for the lease: {} {}",
            got.status,
            got.text()
        );
        assert!(
            killed.elapsed() < LEASE + Duration::from_secs(5),
            "no write within the lease and 5 s of the kill; last: {} {}\n{}",
            got.status,
            got.text(),
            second.log()
        );
        value += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        succeeded >= sent + LEASE - Duration::from_millis(100),
        "the dead instance's lease was respected: its PATCH was sent {:?} before the kill, and \
         another instance's write succeeded {:?} after that PATCH was sent (lease {LEASE:?})",
        killed - sent,
        succeeded - sent
    );
    // Had the second instance written before the dead write landed, that late write would
    // have overwritten it: look once it has surely landed.
    tokio::time::sleep_until(sent + dead_write + Duration::from_millis(300)).await;
    let stored = items(&upstream);
    for value in &acknowledged {
        assert_eq!(
            stored.iter().filter(|v| *v == value).count(),
            1,
            "acknowledged {value} in {stored:?} once"
        );
    }
    assert_eq!(
        stored.iter().filter(|v| **v == 3).count(),
        1,
        "the dead instance's write landed while its lease was held: {stored:?}"
    );
    assert_eq!(get(second.addr, DOC).await.body, upstream.doc(DOC).unwrap());
}

#[tokio::test]
async fn the_redis_password_is_read_from_the_variable_password_env_names() {
    let redis = RedisServer::start_with_password("s3cret-Pw").await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let toml = config(
        &upstream.url(),
        &redis.url(),
        SHORT,
        "password_env = \"PATCHGATE_IT_REDIS_PASSWORD\"\ntimeout = \"500ms\"",
        "",
    ) + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let instance = Instance::start(&toml, &[("PATCHGATE_IT_REDIS_PASSWORD", "s3cret-Pw")], true).await;
    let admin = instance.admin.unwrap();
    let got = send(instance.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(got.status, 200, "{}\n{}", got.text(), instance.log());
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1}));
    assert!(
        healthy(admin).await,
        "{:?}\n{}",
        get(admin, "/healthz").await,
        instance.log()
    );
    assert_eq!(metric(admin, "patchgate_cluster_redis_up").await, 1.0);
    assert_eq!(metric(admin, "patchgate_cluster_redis_errors_total").await, 0.0);
}

#[tokio::test]
async fn a_redis_that_lost_its_keys_gives_no_lease_until_writes_under_way_have_ended() {
    let mut redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let proxies = instances(2, &config(&upstream.url(), &redis.url(), SHORT, SHORT_LEASE, "")).await;
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    // Both instances have seen Redis's epoch.
    for proxy in &proxies {
        assert!(until(Duration::from_secs(5), || healthy(proxy.admin)).await);
    }
    upstream.set_write_delay(Duration::from_millis(1500));
    let first = tokio::spawn(async move { send(a, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await });
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 1).await);
    // Redis comes back empty while A's write is under way: A's lease is gone.
    redis.kill().await;
    redis.restart().await;
    redis.flush_all().await;
    upstream.set_write_delay(Duration::ZERO);
    let started = std::time::Instant::now();
    let second = loop {
        let got = send(b, "PATCH", DOC, &[MERGE_PATCH], r#"{"b":2}"#).await;
        if got.status == 200 {
            break got;
        }
        assert_eq!(got.status, 503, "{}", got.text());
        assert!(
            started.elapsed() < LEASE * 3,
            "B never got the lease back: {}",
            got.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    // B waited for A's write: neither update is lost.
    assert_eq!(second.json(), json!({"v":0,"a":1,"b":2}));
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1,"b":2}));
}

/// Whether `server`'s `INFO replication` has `line`.
async fn replication_has(server: &RedisServer, line: &str) -> bool {
    let info = server
        .command(&["INFO", "replication"])
        .await
        .ok()
        .and_then(|r| r.as_text());
    info.is_some_and(|text| text.lines().any(|l| l.trim() == line))
}

#[tokio::test]
async fn with_sentinel_writes_and_reads_follow_the_primary_through_a_failover() {
    let mut primary = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&primary).await;
    assert!(
        until(Duration::from_secs(10), || replication_has(
            &replica,
            "master_link_status:up"
        ))
        .await,
        "the replica synced: {}",
        replica.log_tail()
    );
    let sentinel = RedisServer::start_sentinel_of(&primary, "pg").await;
    // A failover needs the Sentinel to know the replica.
    assert!(
        until(Duration::from_secs(15), || async {
            matches!(
                sentinel.command(&["SENTINEL", "replicas", "pg"]).await,
                Ok(Resp::Array(Some(replicas))) if !replicas.is_empty()
            )
        })
        .await,
        "the Sentinel found the replica: {}",
        sentinel.log_tail()
    );
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let cluster = format!(
        "sentinels = [\"{}\"]\nsentinel_master = \"pg\"\n{SHORT_LEASE}",
        sentinel.url()
    );
    let toml = config(
        &upstream.url(),
        "unused",
        SHORT,
        &cluster,
        r#"freshness = "exclusive""#,
    )
    .replace("redis = \"unused\"\n", "");
    let proxies = instances(2, &toml).await;
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    assert_eq!(get(b, DOC).await.json(), json!({"v":0}), "B caches the document");
    let got = send(a, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        get(b, DOC).await.json(),
        json!({"v":0,"a":1}),
        "through the primary"
    );
    assert!(
        !primary.keys("patchgate:*").await.is_empty(),
        "the primary has the epoch"
    );

    primary.kill().await;
    let started = std::time::Instant::now();
    let second = loop {
        let got = send(b, "PATCH", DOC, &[MERGE_PATCH], r#"{"b":2}"#).await;
        if got.status == 200 {
            break got;
        }
        assert_eq!(got.status, 503, "{}", got.text());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no write after the failover: {}\n{}",
            got.text(),
            sentinel.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(second.json(), json!({"v":0,"a":1,"b":2}));
    assert!(
        replication_has(&replica, "role:master").await,
        "the replica was promoted"
    );
    // A caches again, and B's write reaches it through the new primary.
    assert_eq!(get(a, DOC).await.json(), json!({"v":0,"a":1,"b":2}));
    let got = send(b, "PATCH", DOC, &[MERGE_PATCH], r#"{"c":3}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(get(a, DOC).await.json(), json!({"v":0,"a":1,"b":2,"c":3}));
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1,"b":2,"c":3}));
}

#[tokio::test]
async fn a_holder_that_cannot_prove_its_lease_sends_nothing() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let proxies = instances(1, &config(&upstream.url(), &redis.url(), SHORT, SHORT_LEASE, "")).await;
    let a = proxies[0].addr;
    // The current read takes long enough that the lease must be proven by asking Redis.
    upstream.set_delay(Duration::from_millis(1200));
    let patch = tokio::spawn(async move { send(a, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await });
    assert!(
        until(Duration::from_secs(5), || async {
            !redis.keys("patchgate:lease:*").await.is_empty()
        })
        .await
    );
    // The lease vanishes (an operator, an eviction) while the holder reads.
    for key in redis.keys("patchgate:lease:*").await {
        redis.command(&["DEL", &key]).await.unwrap();
    }
    let got = patch.await.unwrap();
    assert_unavailable(&got, "a lost lease");
    assert_eq!(got.json()["type"], "https://patchgate.dev/problems/lease-lost");
    assert!(upstream.writes().is_empty(), "nothing was sent");
    assert_eq!(doc_json(&upstream), json!({"v":0}));
    assert!(metric(proxies[0].admin, "patchgate_cluster_lease_losses_total").await >= 1.0);
    // The next write takes a new lease and goes through.
    upstream.set_delay(Duration::ZERO);
    let got = send(a, "PATCH", DOC, &[MERGE_PATCH], r#"{"b":2}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(doc_json(&upstream), json!({"v":0,"b":2}));
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_stops_answering_from_its_cache_before_a_write_is_acknowledged() {
    let redis = RedisServer::start().await;
    let relay = Relay::start(redis.addr()).await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let route = r#"freshness = "exclusive""#;
    let cluster = "timeout = \"500ms\"";
    let a = TestProxy::start(&config(&upstream.url(), &redis.url(), ROOMY, cluster, route)).await;
    let b = TestProxy::start(&config(&upstream.url(), &relay.url(), ROOMY, cluster, route)).await;
    assert!(until(Duration::from_secs(5), || healthy(b.admin)).await);
    assert_eq!(get(b.addr, DOC).await.json(), json!({"v":0}));
    assert!(
        until(Duration::from_secs(5), || async {
            let before = upstream.count(&Method::GET, DOC);
            get(b.addr, DOC).await;
            upstream.count(&Method::GET, DOC) == before
        })
        .await,
        "B answers from its cache"
    );
    // B's connection to Redis stalls without breaking: B gets no notice, sends no ack.
    relay.pause(true);
    let started = std::time::Instant::now();
    let got = send(a.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "A waited for B's ack until B's cache could no longer answer: {:?}",
        started.elapsed()
    );
    // The write is acknowledged: B must not answer the older body from its cache.
    assert_eq!(get(b.addr, DOC).await.json(), json!({"v":0,"a":1}));
    relay.pause(false);
    assert_eq!(get(b.addr, DOC).await.json(), json!({"v":0,"a":1}));
}

// ---------------------------------------------------------------------------------------
// Redis over TLS.

/// A TLS-only Redis whose certificate, valid for `localhost` only, a private CA signed;
/// the CA's file, and the directory holding both (remove it when done).
async fn redis_with_a_private_ca(tag: &str) -> (RedisServer, PathBuf, PathBuf) {
    use crate::support::tls::{TestCa, scratch_dir};
    let dir = scratch_dir(tag);
    let ca = TestCa::new("patchgate-it Redis CA");
    let (cert, key) = ca.leaf_for("redis", &["localhost"]).write(&dir);
    let ca_file = ca.write(&dir, "ca.pem");
    let redis = RedisServer::start_tls(&cert, &key, &ca_file).await;
    assert_eq!(redis.url(), format!("rediss://localhost:{}/0", redis.port()));
    (redis, ca_file, dir)
}

/// `[cluster]` keys: `ca_file` (when given) and a 500 ms timeout.
fn tls_cluster(ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or(String::new(), |path| {
        format!("ca_file = {:?}\n", path.display().to_string())
    });
    format!("{ca}timeout = \"500ms\"")
}

#[tokio::test]
async fn cluster_over_tls_with_a_private_ca() {
    let (redis, ca_file, dir) = redis_with_a_private_ca("redis-private-ca").await;
    // The server speaks TLS only: a plain PING gets no PONG (the connection is closed).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut plain = tokio::net::TcpStream::connect(redis.addr()).await.unwrap();
        plain.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), plain.read_to_end(&mut reply)).await;
        assert!(read.is_ok(), "the plain connection was not closed");
        assert!(
            !String::from_utf8_lossy(&reply).contains("PONG"),
            "a plain PING was answered: {reply:?}"
        );
    }

    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let route = r#"freshness = "exclusive""#;
    let toml = config(
        &upstream.url(),
        &redis.url(),
        ROOMY,
        &tls_cluster(Some(&ca_file)),
        route,
    );
    let proxies = instances(2, &toml).await;
    let (a, b) = (&proxies[0], &proxies[1]);
    for proxy in &proxies {
        assert!(
            until(Duration::from_secs(5), || healthy(proxy.admin)).await,
            "/healthz: {:?}",
            get(proxy.admin, "/healthz").await
        );
    }
    assert_eq!(get(b.addr, DOC).await.json(), json!({"v":0}));
    let got = send(a.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1}));
    assert_eq!(
        get(b.addr, DOC).await.json(),
        json!({"v":0,"a":1}),
        "B read A's acknowledged write"
    );
    for proxy in &proxies {
        assert!(healthy(proxy.admin).await);
        assert_eq!(metric(proxy.admin, "patchgate_cluster_redis_up").await, 1.0);
        assert_eq!(
            metric(proxy.admin, "patchgate_cluster_redis_errors_total").await,
            0.0
        );
    }
    assert!(
        until(Duration::from_secs(5), || async {
            metric(b.admin, "patchgate_cluster_invalidations_received_total").await >= 1.0
        })
        .await,
        "B received A's notice over TLS"
    );
    // The coordination state is in this Redis (read by the harness over TLS).
    assert_eq!(redis.keys("patchgate:epoch").await, ["patchgate:epoch"]);
    drop(proxies);
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn cluster_over_tls_refuses_an_untrusted_server() {
    let (redis, ca_file, dir) = redis_with_a_private_ca("redis-untrusted").await;
    let other_ca = crate::support::tls::TestCa::new("patchgate-it another CA");
    let other_ca_file = other_ca.write(&dir, "other-ca.pem");
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let route = r#"freshness = "exclusive""#;
    let url = redis.url();
    let by_address = format!("rediss://127.0.0.1:{}/0", redis.port());

    // The control: the same server, trusted, works.
    let trusted = TestProxy::start(&config(
        &upstream.url(),
        &url,
        SHORT,
        &tls_cluster(Some(&ca_file)),
        route,
    ))
    .await;
    assert!(until(Duration::from_secs(5), || healthy(trusted.admin)).await);
    let got = send(trusted.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let writes = upstream.writes().len();

    let untrusted = [
        ("signed by a CA that is not ca_file", &url, Some(&other_ca_file)),
        ("without ca_file (webpki roots only)", &url, None),
        (
            "for a name the certificate does not have",
            &by_address,
            Some(&ca_file),
        ),
    ];
    let mut proxies = Vec::new();
    for (why, url, ca) in untrusted {
        let toml = config(
            &upstream.url(),
            url,
            SHORT,
            &tls_cluster(ca.map(PathBuf::as_path)),
            route,
        );
        proxies.push((why, TestProxy::start(&toml).await));
    }
    for (why, proxy) in &proxies {
        // Degraded because the handshake failed, not merely because none was tried yet,
        // and /healthz says so.
        assert!(
            until(Duration::from_secs(5), || async {
                get(proxy.admin, "/healthz")
                    .await
                    .text()
                    .contains("TLS handshake failed")
            })
            .await,
            "{why}: /healthz {:?}",
            get(proxy.admin, "/healthz").await
        );
        let health = get(proxy.admin, "/healthz").await;
        assert_eq!(health.status, 503, "{why}: {}", health.text());
        assert!(
            health
                .text()
                .starts_with("degraded: redis unreachable: TLS handshake failed: "),
            "{why}: {}",
            health.text()
        );
        assert!(metric(proxy.admin, "patchgate_cluster_redis_errors_total").await >= 1.0);
        assert_eq!(
            metric(proxy.admin, "patchgate_cluster_redis_up").await,
            0.0,
            "{why}"
        );
        let got = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"b":2}"#).await;
        assert_unavailable(&got, why);
        // Reads still work, from the upstream.
        let got = get(proxy.addr, DOC).await;
        assert_eq!(got.status, 200, "{why}: {}", got.text());
        assert_eq!(got.json(), json!({"v":0,"a":1}), "{why}");
    }
    assert_eq!(
        upstream.writes().len(),
        writes,
        "no refused write reached the upstream"
    );
    assert_eq!(doc_json(&upstream), json!({"v":0,"a":1}));
    assert!(healthy(trusted.admin).await, "the trusted instance is still fine");
    drop(proxies);
    drop(trusted);
    drop(redis);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn on_a_redis_cluster_writes_are_serialized_and_reads_coherent() {
    let nodes = RedisServer::start_cluster(3).await;
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    upstream.set_delay(Duration::from_millis(10));
    let seeds: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let cluster = format!("cluster_nodes = [{}]", seeds.join(", "));
    let toml = config(
        &upstream.url(),
        "unused",
        ROOMY,
        &cluster,
        r#"freshness = "exclusive""#,
    )
    .replace("redis = \"unused\"\n", "");
    let proxies = instances(3, &toml).await;
    for proxy in &proxies {
        assert!(until(Duration::from_secs(10), || healthy(proxy.admin)).await);
        assert_eq!(get(proxy.addr, DOC).await.status, 200, "warm the cache");
    }
    // Every key in one slot, so on one node, under the hash-tagged prefix.
    let mut holders = Vec::new();
    for node in &nodes {
        if !node.keys("*").await.is_empty() {
            holders.push(node.keys("*").await);
        }
    }
    assert_eq!(holders.len(), 1, "one node holds every key: {holders:?}");
    assert!(
        holders[0].iter().all(|k| k.starts_with("{patchgate:}")),
        "{holders:?}"
    );

    let answers = storm(&proxies, 60, JSON_PATCH, add).await;
    for (value, got) in &answers {
        assert_eq!(got.status, 200, "PATCH {value}: {}", got.text());
    }
    assert_eq!(
        items(&upstream),
        (0..60).collect::<Vec<_>>(),
        "every value exactly once"
    );
    assert_instances_agree(&proxies, &upstream).await;
    // Write on one, read on the others, with caches warm.
    for round in 0..10u64 {
        let writer = &proxies[(round % 3) as usize];
        let got = send(writer.addr, "PATCH", DOC, &[JSON_PATCH], add(100 + round)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        for proxy in &proxies {
            let items = get(proxy.addr, DOC).await.json()["items"].clone();
            assert!(
                items.as_array().is_some_and(|a| a.contains(&json!(100 + round))),
                "round {round}: {items}"
            );
        }
    }
    for proxy in &proxies {
        assert!(metric(proxy.admin, "patchgate_cluster_invalidations_received_total").await >= 1.0);
        assert_eq!(metric(proxy.admin, "patchgate_cluster_redis_up").await, 1.0);
    }
}

/// Two instances whose route has `changes = true`, both connected to `redis`.
async fn feed_instances(redis: &str, upstream: &LegacyUpstream, cluster: &str) -> Vec<TestProxy> {
    upstream.set_doc(DOC, r#"{"v":0}"#);
    let toml = config(&upstream.url(), redis, ROOMY, cluster, "changes = true");
    let toml = if redis.is_empty() {
        toml.replace("redis = \"\"\n", "")
    } else {
        toml
    };
    let proxies = instances(2, &toml).await;
    for proxy in &proxies {
        assert!(until(Duration::from_secs(3), || healthy(proxy.admin)).await);
    }
    proxies
}

/// Writes `{"v":v}` through `proxy`; returns the new ETag.
async fn write_v(proxy: &TestProxy, v: u64) -> String {
    let got = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], merge(json!({ "v": v }))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.header("etag").expect("an ETag").to_owned()
}

/// The next event on `sse`: number `seq`, of the write that returned `etag`.
async fn expect_event(sse: &mut crate::changes::Sse, seq: u64, etag: &str) {
    let event = sse.next().await;
    assert_eq!(event.id, seq, "{:?}", event.data);
    assert_eq!(event.data["path"], json!(DOC));
    assert_eq!(event.data["new_etag"], json!(etag), "event {seq}");
}

/// Writes through both instances, seen on one stream, in order; `since` and
/// `Last-Event-ID` on the other instance continue it without a gap.
async fn one_feed_for_every_instance(proxies: &[TestProxy]) {
    let (a, b) = (&proxies[0], &proxies[1]);
    let mut on_a = crate::changes::Sse::open(a.admin, "route=api", &[]).await;
    let mut tags = Vec::new();
    for v in 1..=6u64 {
        let writer = if v % 2 == 0 { b } else { a };
        tags.push(write_v(writer, v).await);
    }
    for (seq, tag) in (1..).zip(&tags) {
        expect_event(&mut on_a, seq, tag).await;
    }
    // A patch from the version the write replaced, whichever instance read it.
    let mut replay = crate::changes::Sse::open(b.admin, "route=api&since=2", &[]).await;
    for (seq, tag) in (3..).zip(&tags[2..]) {
        expect_event(&mut replay, seq, tag).await;
    }
    let mut resumed =
        crate::changes::Sse::open(b.admin, "route=api&since=0", &[("last-event-id", "4")]).await;
    for (seq, tag) in (5..).zip(&tags[4..]) {
        expect_event(&mut resumed, seq, tag).await;
    }
    for v in 7..=8u64 {
        let tag = write_v(if v % 2 == 0 { b } else { a }, v).await;
        expect_event(&mut on_a, v, &tag).await;
        expect_event(&mut replay, v, &tag).await;
        expect_event(&mut resumed, v, &tag).await;
    }
    assert!(
        resumed.next_within(Duration::from_millis(200)).await.is_none(),
        "no event twice"
    );
}

#[tokio::test]
async fn the_change_feed_is_one_for_every_instance() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    let proxies = feed_instances(&redis.url(), &upstream, "").await;
    one_feed_for_every_instance(&proxies).await;
    let mut keys = redis.keys("*").await;
    keys.retain(|k| k.contains("api") && !k.contains(":lease:") && !k.contains(":versions:"));
    keys.sort();
    assert_eq!(keys, ["patchgate:changes:api", "patchgate:seq:api"]);
}

#[tokio::test]
async fn the_change_feed_is_one_for_every_instance_on_a_redis_cluster() {
    let nodes = RedisServer::start_cluster(3).await;
    let upstream = LegacyUpstream::start().await;
    let seeds: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let cluster = format!("cluster_nodes = [{}]", seeds.join(", "));
    let proxies = feed_instances("", &upstream, &cluster).await;
    one_feed_for_every_instance(&proxies).await;
}

#[tokio::test]
async fn the_shared_feed_is_gone_before_its_first_kept_event_and_unavailable_without_redis() {
    let mut redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    let proxies = feed_instances(&redis.url(), &upstream, "").await;
    let (a, b) = (&proxies[0], &proxies[1]);
    // Nothing published yet: from 0 is fine, from 1 was never given.
    let mut empty = crate::changes::Sse::open(b.admin, "route=api&since=0", &[]).await;
    assert!(empty.next_within(Duration::from_millis(100)).await.is_none());
    assert_eq!(get(b.admin, "/changes?route=api&since=1").await.status, 410);
    for v in 1..=6u64 {
        write_v(if v % 2 == 0 { b } else { a }, v).await;
    }
    // As if trimming had dropped events 1 to 3.
    redis
        .command(&["XTRIM", "patchgate:changes:api", "MINID", "4-1"])
        .await
        .expect("XTRIM");
    for since in [0, 1, 2, 7] {
        let got = get(a.admin, &format!("/changes?route=api&since={since}")).await;
        assert_eq!(got.status, 410, "since={since}: {}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
    }
    let mut from_3 = crate::changes::Sse::open(a.admin, "route=api&since=3", &[]).await;
    assert_eq!(from_3.next().await.id, 4);
    assert_eq!(get(a.admin, "/changes?route=nope").await.status, 404);

    redis.stop().await;
    let got = get(b.admin, "/changes?route=api&since=3").await;
    assert_unavailable(&got, "/changes without redis");
    // The open stream ends, so that its client reconnects.
    let mut ended = false;
    for _ in 0..3 {
        if from_3.next_within(Duration::from_secs(3)).await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "a stream whose redis went away ends");
}

#[tokio::test]
async fn a_version_one_instance_kept_is_a_base_on_another() {
    let redis = RedisServer::start().await;
    let upstream = LegacyUpstream::start().await;
    let bio = "a long member that no change below touches, so deltas stay smaller than the document";
    upstream.set_doc(
        DOC,
        &json!({"name":"Ada","age":36,"city":"London","bio":bio}).to_string(),
    );
    let route = "freshness = \"exclusive\"\non_stale = \"merge\"";
    let proxies = instances(2, &config(&upstream.url(), &redis.url(), ROOMY, "", route)).await;
    let (a, b) = (proxies[0].addr, proxies[1].addr);
    let seen = get(a, DOC).await;
    let base = seen.header("etag").expect("an ETag").to_owned();
    // B writes: the version A holds is B's to keep, and A's copy is dropped.
    let other = send(b, "PATCH", DOC, &[MERGE_PATCH], r#"{"age":37}"#).await;
    assert_eq!(other.status, 200, "{}", other.text());
    // A has never kept that version itself: it finds it through Redis.
    let mut delta = None;
    for _ in 0..50 {
        let got = send(
            a,
            "GET",
            DOC,
            &[("a-im", "merge-patch"), ("if-none-match", &base)],
            "",
        )
        .await;
        if got.status == 226 {
            delta = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delta = delta.expect("a delta from the version B kept");
    assert_eq!(delta.json(), json!({"age":37}));
    let merged = send(
        a,
        "PATCH",
        DOC,
        &[JSON_PATCH, ("if-match", &base)],
        r#"[{"op":"replace","path":"/city","value":"Paris"}]"#,
    )
    .await;
    assert_eq!(merged.status, 200, "{}", merged.text());
    assert_eq!(merged.header("rebased-from"), Some(base.as_str()));
    assert_eq!(
        doc_json(&upstream),
        json!({"name":"Ada","age":37,"city":"Paris","bio":bio})
    );
    // Another requester never finds it.
    let bob = send(
        a,
        "GET",
        DOC,
        &[
            ("authorization", "Bearer bob"),
            ("a-im", "merge-patch"),
            ("if-none-match", &base),
        ],
        "",
    )
    .await;
    assert_eq!(bob.status, 200, "{}", bob.text());
}
