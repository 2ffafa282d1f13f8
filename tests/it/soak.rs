//! Sustained mixed load with upstream faults: 16 clients of two users PATCH, PUT, DELETE
//! and GET with and without preconditions, against an upstream that keeps one document
//! space per user, while it answers some requests with 500, drops some connections,
//! leaves some hanging and applies some writes only after their client's timeout.
//! Checked along the way: no answer shows a counter value the upstream does not hold (but
//! for a client's own write still landing). Checked at the end, loudly: every
//! acknowledged increment is in its user's document and nothing more than was attempted;
//! no user's document holds another user's increments; no cached body differs from the
//! upstream's; `/healthz` answered throughout; the cache stayed within `cache.max_bytes`.
//!
//! The bounded run takes a few seconds; the long one is
//! `PATCHGATE_SOAK_SECS=600 cargo test --locked --test it soak_long -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::*;

const CLIENTS: usize = 16;
/// The two users; client `i` is `USERS[i % 2]`.
const USERS: [&str; 2] = ["Bearer ann", "Bearer ben"];
/// Counters `c0`..`c15` in each user's document, each incremented by its own client only.
const COUNTERS: &str = "/api/counters";
/// Documents that are PUT, DELETEd, merge-patched and read by everyone.
const SCRATCH: usize = 4;
const CACHE_MAX_BYTES: u64 = 32 * 1024;
/// As in the config: a hung write holds its resource's lock this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A late write lands after its client's 504 (`request_timeout` 1 s), within `WRITE_TIMEOUT`.
const LATE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_faults_loses_nothing_and_caches_nothing_unconfirmed() {
    soak(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long soak; run with PATCHGATE_SOAK_SECS=N ... -- --ignored"]
async fn soak_long() {
    let secs = std::env::var("PATCHGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    soak(Duration::from_secs(secs)).await;
}

/// xorshift64*: deterministic per client, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What one client did.
#[derive(Default, Debug)]
struct Tally {
    /// Increment PATCHes sent (whatever came back).
    attempted: u64,
    /// Increment PATCHes answered 200.
    acked: u64,
    requests: u64,
    faults_seen: u64,
    /// Statuses outside what the operation may answer.
    unexpected: Vec<String>,
    /// Until then an increment of this client's that timed out may still land, so the
    /// proxy may show the value from before it.
    landing_until: Option<Instant>,
}

impl Tally {
    fn check(&mut self, what: &str, got: &Response, allowed: &[u16]) -> u16 {
        self.requests += 1;
        let status = got.status.as_u16();
        if matches!(status, 500 | 502 | 504) {
            self.faults_seen += 1;
        }
        if !allowed.contains(&status) && !matches!(status, 500 | 502 | 504) {
            self.unexpected.push(format!(
                "{what}: {status} {}",
                got.text().chars().take(200).collect::<String>()
            ));
        }
        status
    }
}

fn config(upstream: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout = "1s"
write_timeout = "2s"
max_body_bytes = "64KiB"

[cache]
max_bytes = {CACHE_MAX_BYTES}
max_entry_bytes = "16KiB"

[[route]]
name = "soak"
path = "/api/{{*rest}}"
upstream = "{upstream}"
freshness = "exclusive"
"#
    )
}

fn scratch(k: u64) -> String {
    format!("/api/scratch/{k}")
}

/// This client's counter in a counters document.
fn own(doc: &Value, i: usize) -> Option<u64> {
    doc.get(format!("c{i}")).and_then(Value::as_u64)
}

/// Only client `i` writes `c{i}`, one request at a time, so between its own requests the
/// upstream's `c{i}` is fixed: any value the proxy shows it must be exactly that one, or
/// the proxy answered with something the upstream never confirmed.
fn confirm(tally: &mut Tally, upstream: &LegacyUpstream, i: usize, what: &str, shown: Option<u64>) {
    let held = upstream
        .user_doc(&[auth(i)], COUNTERS)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|doc| own(&doc, i));
    let landing = tally.landing_until.is_some_and(|t| Instant::now() < t);
    if shown != held && !landing {
        tally.unexpected.push(format!(
            "{what}: the proxy shows c{i} = {shown:?}, the upstream holds {held:?}"
        ));
    }
}

fn auth(i: usize) -> (&'static str, &'static str) {
    ("authorization", USERS[i % 2])
}

async fn client(
    i: usize,
    addr: std::net::SocketAddr,
    upstream: Arc<LegacyUpstream>,
    deadline: Instant,
) -> Tally {
    let mut rng = Rng::new(i as u64 + 1);
    let mut tally = Tally::default();
    let counter = format!("/c{i}");
    // The counter's value when this client is certain of it; unknown after a fault.
    let mut known: Option<u64> = None;
    let mut etag: Option<String> = None;
    for n in 0..100_000u64 {
        if Instant::now() >= deadline {
            break;
        }
        let roll = rng.below(100);
        let Some(value) = known.filter(|_| roll >= 10) else {
            let got = send(addr, "GET", COUNTERS, &[auth(i)], "").await;
            if tally.check("GET counters", &got, &[200]) == 200 {
                known = own(&got.json(), i);
                confirm(&mut tally, &upstream, i, "GET counters", known);
                etag = got.header("etag").map(str::to_owned);
            }
            continue;
        };
        if roll < 70 {
            tally.attempted += 1;
            let (what, headers, body) = match roll % 3 {
                0 => (
                    "JSON Patch increment",
                    vec![("content-type", "application/json-patch+json")],
                    json!([
                        {"op": "test", "path": counter, "value": value},
                        {"op": "replace", "path": counter, "value": value + 1},
                    ])
                    .to_string(),
                ),
                1 => (
                    "merge patch increment",
                    vec![("content-type", "application/merge-patch+json")],
                    json!({ format!("c{i}"): value + 1 }).to_string(),
                ),
                _ => (
                    "If-Match increment",
                    vec![
                        ("content-type", "application/json-patch+json"),
                        ("if-match", etag.as_deref().unwrap_or("\"none\"")),
                    ],
                    json!([
                        {"op": "test", "path": counter, "value": value},
                        {"op": "replace", "path": counter, "value": value + 1},
                    ])
                    .to_string(),
                ),
            };
            let headers: Vec<_> = std::iter::once(auth(i)).chain(headers).collect();
            let got = send(addr, "PATCH", COUNTERS, &headers, body).await;
            if got.status == 504 {
                tally.landing_until = Some(Instant::now() + WRITE_TIMEOUT + Duration::from_secs(1));
            }
            match tally.check(what, &got, &[200, 409, 412]) {
                200 => {
                    tally.acked += 1;
                    known = own(&got.json(), i);
                    confirm(&mut tally, &upstream, i, what, known);
                    if known != Some(value + 1) {
                        tally.unexpected.push(format!("{what}: 200 with {}", got.text()));
                    }
                    etag = got.header("etag").map(str::to_owned);
                }
                // The enriched 412 carries the current document and its tag.
                412 => {
                    known = own(&got.json(), i);
                    confirm(&mut tally, &upstream, i, "412 body", known);
                    etag = got.header("etag").map(str::to_owned);
                }
                _ => known = None,
            }
            continue;
        }
        let k = rng.below(SCRATCH as u64);
        let path = scratch(k);
        match roll % 6 {
            0 => {
                let pad = "x".repeat(rng.below(12_000) as usize);
                let body = json!({"k": k, "by": i, "n": n, "pad": pad}).to_string();
                let got = send(
                    addr,
                    "PUT",
                    &path,
                    &[auth(i), ("content-type", "application/json")],
                    body,
                )
                .await;
                tally.check("PUT", &got, &[200, 201]);
            }
            1 => {
                let body = json!({"k": k, "by": i, "n": n, "created": true}).to_string();
                let headers = [
                    auth(i),
                    ("content-type", "application/json"),
                    ("if-none-match", "*"),
                ];
                let got = send(addr, "PUT", &path, &headers, body).await;
                tally.check("PUT If-None-Match: *", &got, &[201, 412]);
            }
            2 => {
                let got = send(addr, "DELETE", &path, &[auth(i)], "").await;
                tally.check("DELETE", &got, &[204, 404]);
            }
            3 => {
                let body = json!({"by": i, "n": n}).to_string();
                let headers = [auth(i), ("content-type", "application/merge-patch+json")];
                let got = send(addr, "PATCH", &path, &headers, body).await;
                tally.check("merge PATCH scratch", &got, &[200, 404]);
            }
            4 => {
                let headers = [auth(i), ("if-match", "\"stale\"")];
                let got = send(addr, "DELETE", &path, &headers, "").await;
                tally.check("DELETE If-Match stale", &got, &[404, 412]);
            }
            _ => {
                let got = send(addr, "GET", &path, &[auth(i)], "").await;
                if tally.check("GET scratch", &got, &[200, 404]) == 200
                    && let Some(tag) = got.header("etag")
                {
                    let again = send(addr, "GET", &path, &[auth(i), ("if-none-match", tag)], "").await;
                    // Another client may have changed it in between.
                    tally.check("GET scratch If-None-Match", &again, &[200, 304, 404]);
                }
            }
        }
    }
    tally
}

/// Injects one fault at a time: 500s and dropped connections often, a write that lands
/// late at most every second, a hang at most every 1.5 s (each holds a resource's write
/// lock for `write_timeout`).
async fn chaos(upstream: Arc<LegacyUpstream>, deadline: Instant) -> [u64; 4] {
    let mut rng = Rng::new(0xC4A0);
    let mut injected = [0u64; 4];
    let mut last_hang: Option<Instant> = None;
    let mut last_late: Option<Instant> = None;
    while Instant::now() < deadline {
        let fault = match rng.below(10) {
            0..=3 => Some((0, Fault::Status(500))),
            4..=6 => Some((1, Fault::Close)),
            7..=8 if last_late.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) => {
                last_late = Some(Instant::now());
                injected[3] += 1;
                upstream.fail_writes(1, Fault::Late(LATE));
                None
            }
            _ if last_hang.is_none_or(|t| t.elapsed() > Duration::from_millis(1500)) => {
                last_hang = Some(Instant::now());
                Some((2, Fault::Hang))
            }
            _ => None,
        };
        if let Some((kind, fault)) = fault {
            injected[kind] += 1;
            if rng.below(2) == 0 {
                upstream.fail_next(1, fault);
            } else {
                upstream.fail_writes(1, fault);
            }
        }
        // Pacing of the fault injection, not synchronisation.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    injected
}

/// What the admin listener showed while the load ran.
#[derive(Default, Debug)]
struct Watch {
    polls: u64,
    failures: Vec<String>,
    max_cache_bytes: u64,
}

async fn watch(admin: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Watch {
    let mut seen = Watch::default();
    while !stop.load(Ordering::SeqCst) && seen.polls < 100_000 {
        seen.polls += 1;
        let health = get(admin, "/healthz").await;
        if health.status != 200 || health.text() != "ok\n" {
            seen.failures.push(format!("{} {}", health.status, health.text()));
        }
        let metrics = get(admin, "/metrics").await.text();
        match cache_bytes(&metrics) {
            Some(bytes) => seen.max_cache_bytes = seen.max_cache_bytes.max(bytes),
            None => seen.failures.push("no patchgate_cache_bytes in /metrics".into()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn cache_bytes(metrics: &str) -> Option<u64> {
    metric(metrics, "patchgate_cache_bytes")
}

fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// This process's resident set, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn soak(load: Duration) {
    let upstream = Arc::new(LegacyUpstream::start().await);
    upstream.set_per_user(true);
    let zeros: serde_json::Map<String, Value> = (0..CLIENTS).map(|i| (format!("c{i}"), json!(0))).collect();
    for user in 0..USERS.len() {
        upstream.set_user_doc(&[auth(user)], COUNTERS, &Value::Object(zeros.clone()).to_string());
        for k in 0..SCRATCH as u64 {
            upstream.set_user_doc(
                &[auth(user)],
                &scratch(k),
                &json!({"k": k, "user": user}).to_string(),
            );
        }
    }
    let proxy = TestProxy::start(&config(&upstream.url())).await;
    let rss_before = rss_kib();

    let deadline = Instant::now() + load;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch(proxy.admin, Arc::clone(&stop)));
    let chaos = tokio::spawn(chaos(Arc::clone(&upstream), deadline));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(i, proxy.addr, Arc::clone(&upstream), deadline)))
        .collect();
    let mut tallies = Vec::new();
    for c in clients {
        tallies.push(c.await.expect("a client task panicked"));
    }
    let injected = chaos.await.expect("chaos task");
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.await.expect("health watcher task");
    upstream.fail_next(0, Fault::Close);
    upstream.fail_writes(0, Fault::Close);

    let requests: u64 = tallies.iter().map(|t| t.requests).sum();
    let acked: u64 = tallies.iter().map(|t| t.acked).sum();
    let faults: u64 = tallies.iter().map(|t| t.faults_seen).sum();
    println!(
        "soak {load:?}: {requests} requests, {acked} acknowledged increments, {faults} answered 5xx; \
         injected 500/close/hang/late = {injected:?}; {} health polls, cache peak {} bytes",
        seen.polls, seen.max_cache_bytes
    );

    let unexpected: Vec<String> = tallies
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.unexpected.iter().map(move |u| format!("client {i}: {u}")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );

    // Writes still running (hung or late) end within write_timeout; then every
    // document settles.
    let mut in_flight = u64::MAX;
    for _ in 0..500 {
        in_flight = metric(
            &get(proxy.admin, "/metrics").await.text(),
            "patchgate_upstream_writes_in_flight",
        )
        .unwrap_or(u64::MAX);
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight, 0, "upstream writes still in flight after the load");

    // Every acknowledged increment is in its user's document, and no more than were
    // attempted; no client's increments show in the other user's document.
    for (user, who) in USERS.iter().enumerate() {
        let counters: Value = serde_json::from_slice(
            &upstream
                .user_doc(&[auth(user)], COUNTERS)
                .expect("counters document"),
        )
        .unwrap();
        for (i, tally) in tallies.iter().enumerate() {
            let value = own(&counters, i).unwrap_or_else(|| panic!("c{i} missing from {counters}"));
            if i % USERS.len() != user {
                assert_eq!(value, 0, "{who}'s document holds c{i} = {value} of another user");
                continue;
            }
            assert!(
                tally.acked <= value && value <= tally.attempted,
                "c{i} = {value}, but {} increments were acknowledged of {} attempted",
                tally.acked,
                tally.attempted
            );
        }
    }

    // No cached body differs from the upstream's: with `freshness = "exclusive"` a cached
    // copy is answered without asking the upstream.
    for (user, who) in USERS.iter().enumerate() {
        for path in std::iter::once(COUNTERS.to_owned()).chain((0..SCRATCH as u64).map(scratch)) {
            let got = send(proxy.addr, "GET", &path, &[auth(user)], "").await;
            match upstream.user_doc(&[auth(user)], &path) {
                Some(body) => assert_eq!(
                    (got.status.as_u16(), got.body.clone()),
                    (200, body),
                    "{path} of {who}: the proxy answers {} {}",
                    got.status,
                    got.text()
                ),
                None => assert_eq!(
                    got.status,
                    404,
                    "{path} of {who} is gone upstream, the proxy answers {}",
                    got.text()
                ),
            }
        }
    }

    assert!(seen.failures.is_empty(), "admin answers: {:?}", seen.failures);
    assert!(seen.polls >= 5, "only {} health polls", seen.polls);
    assert!(
        seen.max_cache_bytes <= CACHE_MAX_BYTES,
        "cache reached {} bytes, bound {CACHE_MAX_BYTES}",
        seen.max_cache_bytes
    );
    let final_metrics = get(proxy.admin, "/metrics").await.text();
    assert!(cache_bytes(&final_metrics).is_some_and(|b| b <= CACHE_MAX_BYTES));
    assert!(
        acked > 0 && faults > 0,
        "the run did no work or saw no fault: {acked} acked, {faults} faults"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_kib()) {
        // Generous: other tests share this process.
        assert!(
            after.saturating_sub(before) < 512 * 1024,
            "resident set grew from {before} KiB to {after} KiB"
        );
    }
}
