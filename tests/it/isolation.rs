//! Two requesters who must never see each other's data, through every mechanism that
//! lets one request's work serve another: cache entries, batched writes, enriched 412s.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::support::*;

const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");
const ALICE: (&str, &str) = ("authorization", "Bearer alice");
const BOB: (&str, &str) = ("authorization", "Bearer bob");

/// A per-user upstream with 150 ms of latency, alice's and bob's own `/api/doc`.
async fn per_user(route_extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_per_user(true);
    upstream.set_user_doc(&[ALICE], "/api/doc", r#"{"owner":"alice","secret":"a-secret"}"#);
    upstream.set_user_doc(&[BOB], "/api/doc", r#"{"owner":"bob","secret":"b-secret"}"#);
    let proxy = TestProxy::in_front_of(&upstream, route_extra).await;
    (upstream, proxy)
}

#[tokio::test]
async fn queued_patches_of_two_users_are_never_written_together() {
    let (upstream, proxy) = per_user("").await;
    upstream.set_delay(Duration::from_millis(150));
    let addr = proxy.addr;
    let alice =
        tokio::spawn(
            async move { send(addr, "PATCH", "/api/doc", &[ALICE, MERGE_PATCH], r#"{"a":1}"#).await },
        );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let bob = send(addr, "PATCH", "/api/doc", &[BOB, MERGE_PATCH], r#"{"b":2}"#).await;
    let alice = alice.await.unwrap();
    assert_eq!(alice.status, 200, "{}", alice.text());
    assert_eq!(bob.status, 200, "{}", bob.text());
    assert_eq!(alice.json(), json!({"owner":"alice","secret":"a-secret","a":1}));
    assert_eq!(
        bob.json(),
        json!({"owner":"bob","secret":"b-secret","b":2}),
        "bob is answered with his own document"
    );
    let writes = upstream.writes();
    assert_eq!(writes.len(), 2, "one write per requester");
    for write in &writes {
        let auth = write.headers.get("authorization").unwrap().to_str().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&write.body).unwrap();
        let owner = if auth == "Bearer alice" { "alice" } else { "bob" };
        assert_eq!(body["owner"], owner, "{auth} wrote {body}");
    }
    let stored = |who| {
        serde_json::from_slice::<serde_json::Value>(&upstream.user_doc(&[who], "/api/doc").unwrap()).unwrap()
    };
    assert_eq!(stored(ALICE), json!({"owner":"alice","secret":"a-secret","a":1}));
    assert_eq!(stored(BOB), json!({"owner":"bob","secret":"b-secret","b":2}));
}

#[tokio::test]
async fn queued_patches_of_one_user_still_share_a_write() {
    let (upstream, proxy) = per_user("").await;
    upstream.set_delay(Duration::from_millis(150));
    let addr = proxy.addr;
    let first =
        tokio::spawn(
            async move { send(addr, "PATCH", "/api/doc", &[ALICE, MERGE_PATCH], r#"{"n":0}"#).await },
        );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let queued: Vec<_> = (1..=3)
        .map(|n| {
            tokio::spawn(async move {
                send(
                    addr,
                    "PATCH",
                    "/api/doc",
                    &[ALICE, MERGE_PATCH],
                    format!(r#"{{"k{n}":{n}}}"#),
                )
                .await
            })
        })
        .collect();
    assert_eq!(first.await.unwrap().status, 200);
    for task in queued {
        assert_eq!(task.await.unwrap().status, 200);
    }
    let stored: serde_json::Value =
        serde_json::from_slice(&upstream.user_doc(&[ALICE], "/api/doc").unwrap()).unwrap();
    assert_eq!(stored["k1"], 1);
    assert_eq!(stored["k2"], 2);
    assert_eq!(stored["k3"], 3);
    assert!(
        upstream.writes().len() < 4,
        "the queued PATCHes of one requester ride one write: {} writes",
        upstream.writes().len()
    );
}

/// Two requests whose key headers differ only in a second field line.
async fn split_fields_are_told_apart(name: &str) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_per_user(true);
    let first = [(name, "theme=dark"), (name, "sid=AAAA")];
    let second = [(name, "theme=dark"), (name, "sid=BBBB")];
    upstream.set_user_doc(&first, "/api/doc", r#"{"who":"AAAA"}"#);
    upstream.set_user_doc(&second, "/api/doc", r#"{"who":"BBBB"}"#);
    let proxy = TestProxy::in_front_of(&upstream, r#"freshness = "exclusive""#).await;
    let got = send(proxy.addr, "GET", "/api/doc", &first, Bytes::new()).await;
    assert_eq!(got.text(), r#"{"who":"AAAA"}"#);
    let got = send(proxy.addr, "GET", "/api/doc", &second, Bytes::new()).await;
    assert_eq!(
        got.text(),
        r#"{"who":"BBBB"}"#,
        "{name}: never the first one's body"
    );
    // Each is still served from its own entry.
    let got = send(proxy.addr, "GET", "/api/doc", &first, Bytes::new()).await;
    assert_eq!(got.text(), r#"{"who":"AAAA"}"#);
    assert_eq!(upstream.count(&Method::GET, "/api/doc"), 2);
}

#[tokio::test]
async fn repeated_cookie_fields_are_one_requester_each() {
    split_fields_are_told_apart("cookie").await;
}

#[tokio::test]
async fn repeated_authorization_fields_are_one_requester_each() {
    split_fields_are_told_apart("authorization").await;
}

#[tokio::test]
async fn h2_cookie_fields_are_joined_for_the_upstream_and_keyed_joined() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_per_user(true);
    upstream.set_user_doc(
        &[("cookie", "theme=dark; sid=AAAA")],
        "/api/doc",
        r#"{"who":"AAAA"}"#,
    );
    upstream.set_user_doc(
        &[("cookie", "theme=dark; sid=BBBB")],
        "/api/doc",
        r#"{"who":"BBBB"}"#,
    );
    let proxy = TestProxy::in_front_of(&upstream, r#"freshness = "exclusive""#).await;
    let split = |sid| [("cookie", "theme=dark"), ("cookie", sid)];
    let got = send_h2(proxy.addr, "GET", "/api/doc", &split("sid=AAAA"), Bytes::new()).await;
    assert_eq!(got.text(), r#"{"who":"AAAA"}"#);
    let got = send_h2(proxy.addr, "GET", "/api/doc", &split("sid=BBBB"), Bytes::new()).await;
    assert_eq!(got.text(), r#"{"who":"BBBB"}"#);
    let cookies: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.headers.get_all("cookie").iter().count())
        .collect();
    assert_eq!(cookies, [1, 1], "one joined Cookie line upstream");
    // An HTTP/1.1 client sending the joined line is the same requester: a hit.
    let got = send(
        proxy.addr,
        "GET",
        "/api/doc",
        &[("cookie", "theme=dark; sid=AAAA")],
        Bytes::new(),
    )
    .await;
    assert_eq!(got.text(), r#"{"who":"AAAA"}"#);
    assert_eq!(upstream.count(&Method::GET, "/api/doc"), 2);
}

#[tokio::test]
async fn an_enriched_412_shows_only_the_requesters_own_document() {
    let (_upstream, proxy) = per_user(r#"freshness = "exclusive""#).await;
    let alice = send(proxy.addr, "GET", "/api/doc", &[ALICE], Bytes::new()).await;
    assert_eq!(alice.status, 200);
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/doc",
        &[BOB, MERGE_PATCH, ("if-match", alice.header("etag").unwrap())],
        r#"{"b":2}"#,
    )
    .await;
    assert_eq!(got.status, 412);
    assert_eq!(got.json(), json!({"owner":"bob","secret":"b-secret"}));
}
