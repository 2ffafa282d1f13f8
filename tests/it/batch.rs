//! Batched PATCHes: unconditional PATCHes queued behind a write to one document are
//! written upstream together, each answered with the confirmed document; a patch that
//! does not apply, or a combined write the upstream refuses, falls back to one write each.
//!
//! Each test slows the upstream (a delay on every response) so that the others queue
//! while the first PATCH reads the document; the first then carries them in its write.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::support::*;

const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");
const DOC: &str = "/api/lists/1";

async fn setup(route_extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"items":[]}"#);
    upstream.set_delay(Duration::from_millis(400));
    let proxy = TestProxy::in_front_of(&upstream, route_extra).await;
    (upstream, proxy)
}

fn patch(addr: SocketAddr, body: String) -> JoinHandle<Response> {
    tokio::spawn(async move { send(addr, "PATCH", DOC, &[JSON_PATCH], body).await })
}

fn add(value: u64) -> String {
    format!(r#"[{{"op":"add","path":"/items/-","value":{value}}}]"#)
}

/// Starts one PATCH and waits until it holds the lock (its read reached the upstream),
/// then queues `bodies` behind it while that read is still under way.
async fn first_then_queued(
    upstream: &LegacyUpstream,
    addr: SocketAddr,
    bodies: Vec<String>,
) -> (JoinHandle<Response>, Vec<JoinHandle<Response>>) {
    let first = patch(addr, add(0));
    assert!(eventually(Duration::from_secs(2), || upstream.count(&Method::GET, DOC) == 1).await);
    let queued = bodies.into_iter().map(|body| patch(addr, body)).collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    (first, queued)
}

fn items(upstream: &LegacyUpstream) -> Vec<u64> {
    let doc: Value = serde_json::from_slice(&upstream.doc(DOC).unwrap()).unwrap();
    let mut items: Vec<u64> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    items.sort_unstable();
    items
}

async fn answers(tasks: Vec<JoinHandle<Response>>) -> Vec<Response> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn queued_patches_share_one_upstream_write_and_each_gets_the_confirmed_document() {
    let (upstream, proxy) = setup("").await;
    let (first, queued) = first_then_queued(&upstream, proxy.addr, (1..=8).map(add).collect()).await;
    let mut all = vec![first];
    all.extend(queued);
    let all = answers(all).await;

    assert_eq!(items(&upstream), (0..=8).collect::<Vec<_>>());
    assert_eq!(upstream.count(&Method::PUT, DOC), 1, "one write for all nine");
    let current = get(proxy.addr, DOC).await;
    let stored = upstream.doc(DOC).unwrap();
    for got in &all {
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.header("etag"), current.header("etag"));
        assert_eq!(got.body, stored);
    }
}

#[tokio::test]
async fn a_queued_patch_that_does_not_apply_gets_its_own_answer() {
    let (upstream, proxy) = setup("").await;
    let bodies = vec![
        add(1),
        r#"[{"op":"test","path":"/items","value":"never"}]"#.to_owned(),
        add(2),
        r#"[{"op":"remove","path":"/missing"}]"#.to_owned(),
        add(3),
    ];
    let (first, queued) = first_then_queued(&upstream, proxy.addr, bodies).await;
    assert_eq!(first.await.unwrap().status, 200);
    let queued = answers(queued).await;

    let statuses: Vec<u16> = queued.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 409, 200, 422, 200]);
    for failed in [&queued[1], &queued[3]] {
        assert_eq!(failed.header("content-type"), Some("application/problem+json"));
    }
    assert!(
        queued[1].header("etag").is_some(),
        "a failed test names the ETag it saw"
    );
    assert_eq!(items(&upstream), [0, 1, 2, 3]);
    assert_eq!(upstream.count(&Method::PUT, DOC), 1);
}

#[tokio::test]
async fn a_combined_write_the_upstream_refuses_is_retried_one_patch_at_a_time() {
    let (upstream, proxy) = setup("").await;
    let (first, queued) = first_then_queued(&upstream, proxy.addr, (1..=4).map(add).collect()).await;
    upstream.fail_writes(1, Fault::Status(422));
    assert_eq!(first.await.unwrap().status, 200);
    let queued = answers(queued).await;

    for got in &queued {
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(items(&upstream), [0, 1, 2, 3, 4]);
    let puts: Vec<Value> = upstream
        .writes()
        .iter()
        .map(|w| serde_json::from_slice(&w.body).unwrap())
        .collect();
    assert_eq!(
        puts[0]["items"].as_array().map(Vec::len),
        Some(5),
        "the refused write carried all five patches"
    );
    assert_eq!(puts.len(), 1 + 5, "then each was written alone");
}

#[tokio::test]
async fn a_failed_combined_write_is_reported_to_every_patch_it_carried_and_nothing_is_cached() {
    let (upstream, proxy) = setup("freshness = \"exclusive\"").await;
    let (first, queued) = first_then_queued(&upstream, proxy.addr, (1..=4).map(add).collect()).await;
    upstream.fail_writes(1, Fault::Status(503));
    let first = first.await.unwrap();
    let queued = answers(queued).await;

    // The one that led the write sees the upstream's answer; the ones it carried learn
    // that the outcome is unknown.
    assert_eq!(first.status, 503);
    assert_eq!(first.json()["error"], "injected fault");
    for got in &queued {
        assert_eq!(got.status, 503);
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
        assert_eq!(
            got.json()["type"],
            "https://patchgate.dev/problems/write-outcome-unknown"
        );
    }
    assert_eq!(upstream.count(&Method::PUT, DOC), 1);
    assert_eq!(items(&upstream), Vec::<u64>::new());
    upstream.set_delay(Duration::ZERO);
    let read = get(proxy.addr, DOC).await;
    assert_eq!(
        read.body,
        upstream.doc(DOC).unwrap(),
        "no unconfirmed body was cached"
    );
}

#[tokio::test]
async fn with_batch_patches_off_every_patch_is_its_own_write() {
    let (upstream, proxy) = setup("batch_patches = false").await;
    let (first, queued) = first_then_queued(&upstream, proxy.addr, (1..=3).map(add).collect()).await;
    assert_eq!(first.await.unwrap().status, 200);
    for got in answers(queued).await {
        assert_eq!(got.status, 200);
    }
    assert_eq!(items(&upstream), [0, 1, 2, 3]);
    assert_eq!(upstream.count(&Method::PUT, DOC), 4);
}
