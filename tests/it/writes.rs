//! The write path: PATCH formats and statuses, fidelity, preconditions, enriched 412s,
//! concurrency, conflict retries and faults. Failing cases also assert that no upstream
//! write happened.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::support::*;

const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");
const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");

async fn setup(doc: &str, route_extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/people/1", doc);
    let proxy = TestProxy::in_front_of(&upstream, route_extra).await;
    (upstream, proxy)
}

fn assert_problem(got: &Response, status: u16) {
    assert_eq!(got.status, status, "{}", got.text());
    assert_eq!(
        got.header("content-type"),
        Some("application/problem+json"),
        "{}",
        got.text()
    );
    let doc = got.json();
    assert_eq!(doc["status"], status);
    assert!(
        doc["type"].is_string() && doc["title"].is_string() && doc["detail"].is_string(),
        "{doc}"
    );
}

#[tokio::test]
async fn json_patch_becomes_one_full_put_upstream() {
    let (upstream, proxy) = setup(r#"{"id":1,"name":"Ada","tags":["math"]}"#, "").await;
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[JSON_PATCH, ("authorization", "Bearer alice")],
        r#"[{"op":"replace","path":"/name","value":"Ada L."},{"op":"add","path":"/tags/-","value":"poetry"}]"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let expected = r#"{"id":1,"name":"Ada L.","tags":["math","poetry"]}"#;
    assert_eq!(got.text(), expected);
    let tag = got.header("etag").unwrap().to_owned();
    let writes = upstream.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::PUT);
    assert_eq!(writes[0].uri, "/api/people/1");
    assert_eq!(writes[0].headers["content-type"], "application/json");
    assert_eq!(writes[0].headers["authorization"], "Bearer alice");
    assert_eq!(writes[0].body, expected);
    let read = get(proxy.addr, "/api/people/1").await;
    assert_eq!(read.text(), expected);
    assert_eq!(read.header("etag"), Some(tag.as_str()));
}

#[tokio::test]
async fn merge_patch_becomes_one_full_put_upstream() {
    let (upstream, proxy) = setup(r#"{"id":1,"name":"Ada","email":"a@x","born":1815}"#, "").await;
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH],
        r#"{"email":null,"name":"Ada L."}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), r#"{"id":1,"name":"Ada L.","born":1815}"#);
    assert_eq!(
        upstream.doc("/api/people/1").unwrap(),
        r#"{"id":1,"name":"Ada L.","born":1815}"#
    );
}

#[tokio::test]
async fn a_patch_changes_only_what_it_names() {
    let doc = r#"{"b":1,"a":1e2,"c":12345678901234567890123,"d":0.1000}"#;
    let (upstream, proxy) = setup(doc, "").await;
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[JSON_PATCH],
        r#"[{"op":"add","path":"/e","value":"new"}]"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let expected = r#"{"b":1,"a":1e2,"c":12345678901234567890123,"d":0.1000,"e":"new"}"#;
    assert_eq!(upstream.writes()[0].body, expected);
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH],
        r#"{"e":"newer"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        upstream.writes()[1].body,
        r#"{"b":1,"a":1e2,"c":12345678901234567890123,"d":0.1000,"e":"newer"}"#
    );
}

#[tokio::test]
async fn test_compares_numbers_by_value() {
    let (upstream, proxy) = setup(r#"{"n":1,"z":0,"s":"10"}"#, "").await;
    let ok = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[JSON_PATCH],
        r#"[{"op":"test","path":"/n","value":1.0},{"op":"test","path":"/z","value":-0},{"op":"replace","path":"/n","value":2}]"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let failed = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[JSON_PATCH],
        r#"[{"op":"test","path":"/s","value":10}]"#,
    )
    .await;
    assert_problem(&failed, 409);
    assert_eq!(failed.json()["op_index"], 0);
    assert_eq!(failed.json()["path"], "/s");
    assert!(failed.header("etag").is_some(), "409 carries the current ETag");
    assert_eq!(upstream.writes().len(), 1);
}

/// (name, request headers, body, expected status)
type HostileRow = (&'static str, Vec<(&'static str, &'static str)>, String, u16);

#[tokio::test]
async fn patch_error_statuses_and_no_write_for_any_of_them() {
    let (upstream, proxy) = setup(r#"{"id":1,"list":[1,2]}"#, "patch_max_ops = 3").await;
    let deep = format!(
        "[{{\"op\":\"add\",\"path\":\"/x\",\"value\":{}{}}}]",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let cases: Vec<HostileRow> = vec![
        ("no content type", vec![], r#"[]"#.into(), 415),
        ("plain json", vec![("content-type", "application/json")], r#"[]"#.into(), 415),
        ("not json", vec![JSON_PATCH], "[{".into(), 400),
        ("not an array", vec![JSON_PATCH], r#"{"op":"add"}"#.into(), 400),
        ("unknown op", vec![JSON_PATCH], r#"[{"op":"frob","path":"/id"}]"#.into(), 400),
        ("missing value", vec![JSON_PATCH], r#"[{"op":"add","path":"/x"}]"#.into(), 400),
        ("bad pointer", vec![JSON_PATCH], r#"[{"op":"add","path":"x","value":1}]"#.into(), 400),
        ("deep json", vec![JSON_PATCH], deep, 400),
        ("merge not json", vec![MERGE_PATCH], "{".into(), 400),
        ("too many ops", vec![JSON_PATCH], r#"[{"op":"test","path":"/id","value":1},{"op":"test","path":"/id","value":1},{"op":"test","path":"/id","value":1},{"op":"test","path":"/id","value":1}]"#.into(), 413),
        ("missing path", vec![JSON_PATCH], r#"[{"op":"replace","path":"/nope","value":1}]"#.into(), 422),
        ("bad index", vec![JSON_PATCH], r#"[{"op":"add","path":"/list/7","value":1}]"#.into(), 422),
        ("leading zero", vec![JSON_PATCH], r#"[{"op":"replace","path":"/list/01","value":1}]"#.into(), 422),
        ("atomic", vec![JSON_PATCH], r#"[{"op":"replace","path":"/id","value":2},{"op":"remove","path":"/nope"}]"#.into(), 422),
        ("failed test", vec![JSON_PATCH], r#"[{"op":"test","path":"/id","value":2}]"#.into(), 409),
    ];
    for (name, headers, body, status) in cases {
        let got = send(proxy.addr, "PATCH", "/api/people/1", &headers, body).await;
        assert_eq!(got.status, status, "{name}: {}", got.text());
        assert_problem(&got, status);
        if status == 415 {
            assert_eq!(
                got.header("accept-patch"),
                Some("application/json-patch+json, application/merge-patch+json"),
                "{name}"
            );
        }
        if status == 422 && name != "bad pointer" {
            assert!(got.json()["op_index"].is_u64(), "{name}: {}", got.text());
        }
    }
    assert!(upstream.writes().is_empty(), "{:?}", upstream.writes());
    assert_eq!(upstream.doc("/api/people/1").unwrap(), r#"{"id":1,"list":[1,2]}"#);
}

#[tokio::test]
async fn patched_result_over_max_body_bytes_gets_413() {
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(40 * 1024));
    let (upstream, proxy) = setup(&big, "").await;
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[JSON_PATCH],
        r#"[{"op":"copy","from":"/a","path":"/b"}]"#,
    )
    .await;
    assert_problem(&got, 413);
    assert!(upstream.writes().is_empty());
}

#[tokio::test]
async fn current_body_that_is_not_json_gets_422_and_missing_resource_the_upstream_404() {
    let (upstream, proxy) = setup("this is not json", "").await;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"a":1}"#).await;
    assert_problem(&got, 422);
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/2",
        &[MERGE_PATCH, ("if-match", "\"x\"")],
        r#"{"a":1}"#,
    )
    .await;
    assert_eq!(got.status, 404);
    assert!(upstream.writes().is_empty());
}

#[tokio::test]
async fn stale_if_match_gets_412_with_the_current_body_then_succeeds_on_the_new_etag() {
    for (format, first, second) in [
        (
            JSON_PATCH,
            r#"[{"op":"replace","path":"/name","value":"first"}]"#,
            r#"[{"op":"add","path":"/second","value":true}]"#,
        ),
        (MERGE_PATCH, r#"{"name":"first"}"#, r#"{"second":true}"#),
    ] {
        let (upstream, proxy) = setup(r#"{"id":1,"name":"Ada"}"#, "").await;
        let e1 = get(proxy.addr, "/api/people/1")
            .await
            .header("etag")
            .unwrap()
            .to_owned();
        let one = send(
            proxy.addr,
            "PATCH",
            "/api/people/1",
            &[format, ("if-match", &e1)],
            first,
        )
        .await;
        assert_eq!(one.status, 200, "{}", one.text());
        let e2 = one.header("etag").unwrap().to_owned();
        assert_ne!(e1, e2);

        let two = send(
            proxy.addr,
            "PATCH",
            "/api/people/1",
            &[format, ("if-match", &e1)],
            second,
        )
        .await;
        assert_eq!(two.status, 412);
        assert_eq!(two.header("etag"), Some(e2.as_str()));
        assert_eq!(two.header("content-type"), Some("application/json"));
        assert_eq!(two.header("content-location"), Some("/api/people/1"));
        assert_eq!(two.text(), r#"{"id":1,"name":"first"}"#);
        assert_eq!(
            two.body,
            get(proxy.addr, "/api/people/1").await.body,
            "byte for byte what a GET returns"
        );
        assert_eq!(upstream.writes().len(), 1);

        let retry = send(
            proxy.addr,
            "PATCH",
            "/api/people/1",
            &[format, ("if-match", &e2)],
            second,
        )
        .await;
        assert_eq!(retry.status, 200);
        assert_eq!(retry.text(), r#"{"id":1,"name":"first","second":true}"#);
    }
}

#[tokio::test]
async fn concurrent_patches_without_preconditions_are_each_applied_once() {
    let (upstream, proxy) = setup(r#"{"items":[]}"#, "").await;
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(async move {
                let body = format!(r#"[{{"op":"add","path":"/items/-","value":{i}}}]"#);
                send(addr, "PATCH", "/api/people/1", &[JSON_PATCH], body)
                    .await
                    .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let doc: Value = serde_json::from_slice(&upstream.doc("/api/people/1").unwrap()).unwrap();
    let mut items: Vec<u64> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string().parse().unwrap())
        .collect();
    items.sort_unstable();
    assert_eq!(items, (0..40).collect::<Vec<u64>>());
}

#[tokio::test]
async fn concurrent_writes_with_the_same_if_match_let_exactly_one_through() {
    let (upstream, proxy) = setup(r#"{"n":0}"#, "").await;
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let tag = tag.clone();
            tokio::spawn(async move {
                let body = format!(r#"{{"n":{}}}"#, i + 1);
                send(
                    addr,
                    "PATCH",
                    "/api/people/1",
                    &[MERGE_PATCH, ("if-match", &tag)],
                    body,
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut failed = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        match got.status.as_u16() {
            200 => ok += 1,
            412 => failed.push(got),
            other => panic!("unexpected {other}: {}", got.text()),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(failed.len(), 19);
    let current = upstream.doc("/api/people/1").unwrap();
    for got in failed {
        assert_eq!(got.body, current, "each 412 carries the winner's body");
    }
    assert_eq!(upstream.writes().len(), 1);
}

#[tokio::test]
async fn a_patch_is_retried_on_top_of_a_writer_that_bypassed_the_proxy() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_honour_if_match(true);
    upstream.set_doc("/api/people/1", r#"{"a":1}"#);
    let proxy = TestProxy::in_front_of(&upstream, r#"freshness = "exclusive""#).await;
    assert_eq!(get(proxy.addr, "/api/people/1").await.status, 200);
    upstream.set_doc("/api/people/1", r#"{"a":1,"bypass":true}"#);
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"b":2}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        upstream.doc("/api/people/1").unwrap(),
        r#"{"a":1,"bypass":true,"b":2}"#
    );
    let writes = upstream.writes();
    assert_eq!(writes.len(), 2, "one refused conditional write, one retry");
    assert!(writes.iter().all(|w| w.headers.contains_key("if-match")));
    let metrics = get(proxy.admin, "/metrics").await.text();
    assert!(
        metrics.contains(r#"patchgate_conflict_retries_total{route="api"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_no_retries_left_the_client_gets_409_with_the_current_etag() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_honour_if_match(true);
    upstream.set_doc("/api/people/1", r#"{"a":1}"#);
    let proxy = TestProxy::in_front_of(&upstream, "freshness = \"exclusive\"\nconflict_retries = 0").await;
    get(proxy.addr, "/api/people/1").await;
    upstream.set_doc("/api/people/1", r#"{"a":2}"#);
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"b":2}"#).await;
    assert_problem(&got, 409);
    let current = get(proxy.addr, "/api/people/1").await;
    assert_eq!(current.text(), r#"{"a":2}"#);
    assert_eq!(got.header("etag"), current.header("etag"));
}

#[tokio::test]
async fn an_upstream_412_with_a_client_precondition_gets_the_enriched_412() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_honour_if_match(true);
    upstream.set_doc("/api/people/1", r#"{"a":1}"#);
    let proxy = TestProxy::in_front_of(&upstream, r#"freshness = "exclusive""#).await;
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    upstream.set_doc("/api/people/1", r#"{"a":"bypassed"}"#);
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH, ("if-match", &tag)],
        r#"{"b":2}"#,
    )
    .await;
    assert_eq!(got.status, 412);
    assert_eq!(got.text(), r#"{"a":"bypassed"}"#);
    assert_eq!(
        got.header("etag"),
        get(proxy.addr, "/api/people/1").await.header("etag")
    );
    assert_eq!(upstream.doc("/api/people/1").unwrap(), r#"{"a":"bypassed"}"#);
}

#[tokio::test]
async fn prefer_return_minimal_gets_204_with_the_etag() {
    let (_upstream, proxy) = setup(r#"{"a":1}"#, "").await;
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH, ("prefer", "return=minimal")],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(got.status, 204);
    assert!(got.body.is_empty());
    assert_eq!(got.header("preference-applied"), Some("return=minimal"));
    assert_eq!(
        got.header("etag"),
        get(proxy.addr, "/api/people/1").await.header("etag")
    );
}

#[tokio::test]
async fn require_precondition_gets_428_without_if_match() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, "require_precondition = true").await;
    for (method, headers, body) in [
        ("PATCH", vec![MERGE_PATCH], r#"{"a":2}"#),
        ("PUT", vec![("content-type", "application/json")], r#"{"a":2}"#),
        ("DELETE", vec![], ""),
    ] {
        let got = send(proxy.addr, method, "/api/people/1", &headers, body).await;
        assert_problem(&got, 428);
    }
    assert!(upstream.writes().is_empty());
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH, ("if-match", &tag)],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn put_and_delete_get_the_same_precondition_step() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, "").await;
    let ct = ("content-type", "application/json");
    let got = send(
        proxy.addr,
        "PUT",
        "/api/people/1",
        &[ct, ("if-none-match", "*")],
        r#"{"a":9}"#,
    )
    .await;
    assert_eq!(got.status, 412, "create-only PUT of an existing resource");
    assert_eq!(got.text(), r#"{"a":1}"#);
    let got = send(
        proxy.addr,
        "PUT",
        "/api/people/2",
        &[ct, ("if-none-match", "*")],
        r#"{"b":1}"#,
    )
    .await;
    assert_eq!(got.status, 201);
    assert!(got.header("etag").is_some());
    let got = send(
        proxy.addr,
        "PUT",
        "/api/people/3",
        &[ct, ("if-match", "\"x\"")],
        r#"{"c":1}"#,
    )
    .await;
    assert_problem(&got, 412);
    assert!(upstream.doc("/api/people/3").is_none());

    let got = send(
        proxy.addr,
        "DELETE",
        "/api/people/1",
        &[("if-match", "\"stale\"")],
        "",
    )
    .await;
    assert_eq!(got.status, 412);
    assert!(upstream.doc("/api/people/1").is_some());
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let got = send(
        proxy.addr,
        "PUT",
        "/api/people/1",
        &[ct, ("if-match", &tag)],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    let tag = got.header("etag").unwrap().to_owned();
    assert_eq!(
        get(proxy.addr, "/api/people/1").await.header("etag"),
        Some(tag.as_str())
    );
    let got = send(proxy.addr, "DELETE", "/api/people/1", &[("if-match", &tag)], "").await;
    assert_eq!(got.status, 204);
    assert_eq!(get(proxy.addr, "/api/people/1").await.status, 404);
    let got = send(proxy.addr, "DELETE", "/api/people/1", &[("if-match", &tag)], "").await;
    assert_eq!(
        got.status, 404,
        "a missing resource is 404 whatever the preconditions"
    );
}

#[tokio::test]
async fn a_write_drops_the_cached_parent_collection() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, r#"freshness = "exclusive""#).await;
    assert_eq!(get(proxy.addr, "/api/people").await.status, 200);
    assert_eq!(get(proxy.addr, "/api/people").await.status, 200);
    assert_eq!(upstream.count(&Method::GET, "/api/people"), 1);
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"a":2}"#).await;
    assert_eq!(got.status, 200);
    assert_eq!(get(proxy.addr, "/api/people").await.text(), r#"[{"a":2}]"#);
    assert_eq!(upstream.count(&Method::GET, "/api/people"), 2);
}

#[tokio::test]
async fn refresh_after_write_serves_what_the_upstream_normalized() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, "refresh_after_write = true").await;
    upstream.set_normalize_on_put(true);
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"b":2}"#).await;
    assert_eq!(got.status, 200);
    let stored = upstream.doc("/api/people/1").unwrap();
    assert_eq!(got.body, stored);
    assert_eq!(
        got.header("etag"),
        get(proxy.addr, "/api/people/1").await.header("etag")
    );
}

#[tokio::test]
async fn an_upstream_fault_during_the_write_leaves_no_unconfirmed_body_cached() {
    for (fault, status) in [(Fault::Status(500), 500), (Fault::Close, 502), (Fault::Hang, 504)] {
        let upstream = LegacyUpstream::start().await;
        upstream.set_doc("/api/people/1", r#"{"a":1}"#);
        // A hung write is given up at write_timeout, here as soon as its client's 504.
        let config = one_route(
            &upstream.url(),
            r#"freshness = "exclusive""#,
            r#"write_timeout = "2s""#,
        );
        let proxy = TestProxy::start(&config).await;
        assert_eq!(get(proxy.addr, "/api/people/1").await.status, 200);
        // A pooled connection closed before any answer gets the PUT once more on a new
        // connection (RFC 9112 §9.3.1): the fault has to outlast that retry.
        let attempts = if fault == Fault::Close { 2 } else { 1 };
        upstream.fail_writes(attempts, fault);
        let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"a":2}"#).await;
        assert_eq!(got.status, status, "{fault:?}: {}", got.text());
        let mut upstream_reads = 1;
        for _ in 0..100 {
            let read = get(proxy.addr, "/api/people/1").await;
            assert_eq!(
                read.text(),
                r#"{"a":1}"#,
                "{fault:?}: the next read shows what the upstream holds"
            );
            upstream_reads = upstream.count(&Method::GET, "/api/people/1");
            if upstream_reads > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(upstream_reads, 2, "{fault:?}: the entry was dropped");
    }
}

#[tokio::test]
async fn rfc6902_appendix_a_examples_through_the_proxy() {
    let cases = [
        (
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz","value":"qux"}]),
            Ok(json!({"foo":"bar","baz":"qux"})),
        ),
        (
            json!({"foo":["bar","baz"]}),
            json!([{"op":"add","path":"/foo/1","value":"qux"}]),
            Ok(json!({"foo":["bar","qux","baz"]})),
        ),
        (
            json!({"baz":"qux","foo":"bar"}),
            json!([{"op":"remove","path":"/baz"}]),
            Ok(json!({"foo":"bar"})),
        ),
        (
            json!({"foo":["bar","qux","baz"]}),
            json!([{"op":"remove","path":"/foo/1"}]),
            Ok(json!({"foo":["bar","baz"]})),
        ),
        (
            json!({"baz":"qux","foo":"bar"}),
            json!([{"op":"replace","path":"/baz","value":"boo"}]),
            Ok(json!({"baz":"boo","foo":"bar"})),
        ),
        (
            json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
            json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
            Ok(json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})),
        ),
        (
            json!({"foo":["all","grass","cows","eat"]}),
            json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
            Ok(json!({"foo":["all","cows","eat","grass"]})),
        ),
        (
            json!({"baz":"qux","foo":["a",2,"c"]}),
            json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]),
            Ok(json!({"baz":"qux","foo":["a",2,"c"]})),
        ),
        (
            json!({"baz":"qux"}),
            json!([{"op":"test","path":"/baz","value":"bar"}]),
            Err(409),
        ),
        (
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
            Ok(json!({"foo":"bar","child":{"grandchild":{}}})),
        ),
        (
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz","value":"qux","xyz":123}]),
            Ok(json!({"foo":"bar","baz":"qux"})),
        ),
        (
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
            Err(422),
        ),
        (
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":10}]),
            Ok(json!({"/":9,"~1":10})),
        ),
        (
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":"10"}]),
            Err(409),
        ),
        (
            json!({"foo":["bar"]}),
            json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
            Ok(json!({"foo":["bar",["abc","def"]]})),
        ),
    ];
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    for (i, (doc, patch, expected)) in cases.into_iter().enumerate() {
        let path = format!("/api/a/{i}");
        upstream.set_doc(&path, &doc.to_string());
        let got = send(proxy.addr, "PATCH", &path, &[JSON_PATCH], patch.to_string()).await;
        match expected {
            Ok(expected) => {
                assert_eq!(got.status, 200, "case {i}: {}", got.text());
                assert_eq!(got.json(), expected, "case {i}");
                let stored: Value = serde_json::from_slice(&upstream.doc(&path).unwrap()).unwrap();
                assert_eq!(stored, expected, "case {i}");
            }
            Err(status) => {
                assert_problem(&got, status);
                assert_eq!(upstream.doc(&path).unwrap(), doc.to_string(), "case {i}");
            }
        }
    }
}

#[tokio::test]
async fn rfc7396_appendix_a_examples_through_the_proxy() {
    let cases = [
        (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
        (json!({"a":"b"}), json!({"a":null}), json!({})),
        (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
        (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
        (
            json!({"a":{"b":"c"}}),
            json!({"a":{"b":"d","c":null}}),
            json!({"a":{"b":"d"}}),
        ),
        (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a":"b"}), json!(["c"]), json!(["c"])),
        (json!({"a":"foo"}), json!(null), json!(null)),
        (json!({"a":"foo"}), json!("bar"), json!("bar")),
        (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        (
            json!({}),
            json!({"a":{"bb":{"ccc":null}}}),
            json!({"a":{"bb":{}}}),
        ),
    ];
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    for (i, (doc, patch, expected)) in cases.into_iter().enumerate() {
        let path = format!("/api/m/{i}");
        upstream.set_doc(&path, &doc.to_string());
        let got = send(proxy.addr, "PATCH", &path, &[MERGE_PATCH], patch.to_string()).await;
        assert_eq!(got.status, 200, "case {i}: {}", got.text());
        assert_eq!(got.json(), expected, "case {i}");
        let stored: Value = serde_json::from_slice(&upstream.doc(&path).unwrap()).unwrap();
        assert_eq!(stored, expected, "case {i}");
    }
}

#[tokio::test]
async fn patch_disabled_route_answers_405_with_allow() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, "patch = []").await;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"a":2}"#).await;
    assert_problem(&got, 405);
    assert!(!got.header("allow").unwrap().contains("PATCH"));
    assert!(upstream.writes().is_empty());
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn with_an_upstream_that_tags_its_documents_the_patch_etag_is_the_upstreams() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_honour_if_match(true);
    upstream.set_doc("/api/people/1", r#"{"a":1}"#);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let before = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH, ("if-match", &before)],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let direct = get(upstream.addr(), "/api/people/1").await;
    assert_eq!(got.header("etag"), direct.header("etag"));
    assert_eq!(
        get(proxy.addr, "/api/people/1").await.header("etag"),
        direct.header("etag")
    );
    assert_eq!(
        upstream.writes()[0].headers["if-match"],
        before.as_str(),
        "the write was conditional upstream"
    );
}

#[tokio::test]
async fn an_unconditional_put_or_delete_is_one_upstream_exchange() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, "").await;
    let got = send(
        proxy.addr,
        "PUT",
        "/api/people/1",
        &[("content-type", "application/json")],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    let tag = got.header("etag").unwrap().to_owned();
    assert_eq!(
        get(proxy.addr, "/api/people/1").await.header("etag"),
        Some(tag.as_str())
    );
    upstream.clear_requests();
    assert_eq!(
        send(proxy.addr, "DELETE", "/api/people/1", &[], "").await.status,
        204
    );
    assert_eq!(
        send(proxy.addr, "DELETE", "/api/people/1", &[], "").await.status,
        404
    );
    let methods: Vec<_> = upstream.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, [Method::DELETE, Method::DELETE]);
}

#[tokio::test]
async fn an_empty_or_test_only_json_patch_is_answered_without_a_write() {
    let (upstream, proxy) = setup(r#"{"a":1,  "b":[1e2]}"#, "").await;
    let read = get(proxy.addr, "/api/people/1").await;
    let json_patch = JSON_PATCH;
    for patch in [
        "[]",
        r#"[{"op":"test","path":"/a","value":1},{"op":"test","path":"/b/0","value":100}]"#,
    ] {
        let got = send(proxy.addr, "PATCH", "/api/people/1", &[json_patch], patch).await;
        assert_eq!(got.status, 200, "{patch}: {}", got.text());
        assert_eq!(
            got.body, read.body,
            "{patch}: the document as it is, byte for byte"
        );
        assert_eq!(got.header("etag"), read.header("etag"), "{patch}");
    }
    let failing = r#"[{"op":"test","path":"/a","value":2}]"#;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[json_patch], failing).await;
    assert_eq!(got.status, 409, "{}", got.text());
    let stale = [json_patch, ("if-match", "\"stale\"")];
    assert_eq!(
        send(proxy.addr, "PATCH", "/api/people/1", &stale, "[]")
            .await
            .status,
        412
    );
    assert!(
        upstream.writes().is_empty(),
        "no write for a patch that changes nothing"
    );
}

#[tokio::test]
async fn an_upstream_4xx_to_a_write_that_carried_nobody_is_the_answer_and_not_retried() {
    let (upstream, proxy) = setup(r#"{"a":1}"#, "").await;
    upstream.fail_writes(1, Fault::Status(400));
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[MERGE_PATCH], r#"{"a":2}"#).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(upstream.writes().len(), 1, "written once");
    assert_eq!(upstream.doc("/api/people/1").unwrap(), r#"{"a":1}"#);
}

/// A large document patched twice: first as the upstream spelled it (whitespace and a
/// `\/` escape: the tree path, which writes it compact), then as patchgate wrote it (the
/// fast path, which copies all but the named members through). Each write changes only
/// what it names, and a repeated member name deep inside is refused either way.
#[tokio::test]
async fn large_documents_are_patched_alike_whatever_their_spelling() {
    let items: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"i":{i},"p":{i}.50,"s":"q\"{i}"}}"#))
        .collect();
    let pretty = format!(
        "{{ \"v\" : 1 , \"u\" : \"a\\/b\" , \"items\" : [{}] }}",
        items.join(", ")
    );
    let (upstream, proxy) = setup(&pretty, "").await;
    let first = r#"[{"op":"test","path":"/v","value":1.0},{"op":"replace","path":"/v","value":2}]"#;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[JSON_PATCH], first).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let compact = format!(r#"{{"v":2,"u":"a/b","items":[{}]}}"#, items.join(","));
    assert_eq!(upstream.writes()[0].body, compact);
    assert_eq!(got.body, compact.as_bytes());

    let second = r#"[{"op":"add","path":"/items/999/t","value":1e2},{"op":"remove","path":"/items/0"}]"#;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[JSON_PATCH], second).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let last = r#"{"i":999,"p":999.50,"s":"q\"999","t":1e2}"#;
    let expected = format!(
        r#"{{"v":2,"u":"a/b","items":[{},{last}]}}"#,
        items[1..999].join(",")
    );
    assert_eq!(upstream.writes()[1].body, expected);
    assert_eq!(got.body, expected.as_bytes());
    let merge = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH],
        r#"{"u":null}"#,
    )
    .await;
    assert_eq!(merge.status, 200, "{}", merge.text());
    assert_eq!(
        upstream.writes()[2].body,
        expected.replacen(r#""u":"a/b","#, "", 1)
    );

    let duplicate = format!(r#"{{"v":1,"items":[{},{{"i":1,"i":2}}]}}"#, items.join(","));
    upstream.set_doc("/api/people/2", &duplicate);
    let got = send(proxy.addr, "PATCH", "/api/people/2", &[JSON_PATCH], first).await;
    assert_problem(&got, 422);
    assert_eq!(upstream.writes().len(), 3, "nothing written");
}

/// With `exclusive`, each PATCH after the first starts from the body the one before wrote,
/// which is skipped, not validated again, where the patch does not reach: strings full of
/// brackets, escaped quotes and backslashes must not confuse where values end.
#[tokio::test]
async fn patches_of_a_body_patchgate_wrote_change_only_what_they_name() {
    let items: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"i":{i},"s":"]{i}\"{{[\\y_","d":[[{i}],{{"k":"}}"}}]}}"#))
        .collect();
    let doc = format!(r#"{{"v":1,"items":[{}],"z":"\\"}}"#, items.join(","));
    let (upstream, proxy) = setup(&doc, r#"freshness = "exclusive""#).await;
    let patch = |body: &'static str| {
        let addr = proxy.addr;
        async move { send(addr, "PATCH", "/api/people/1", &[JSON_PATCH], body).await }
    };

    let got = patch(r#"[{"op":"replace","path":"/v","value":2}]"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let mut expected = doc.replacen(r#"{"v":1,"#, r#"{"v":2,"#, 1);
    assert_eq!(upstream.writes()[0].body, expected);

    let got = patch(
        r#"[{"op":"add","path":"/items/150/t","value":"x}"},{"op":"remove","path":"/items/0"},
            {"op":"copy","from":"/items/298/d","path":"/c"}]"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let with_t = items[150].replacen(r#"}"}]}"#, r#"}"}],"t":"x}"}"#, 1);
    let mut kept = items[1..].to_vec();
    kept[149] = with_t;
    expected = format!(
        r#"{{"v":2,"items":[{}],"z":"\\","c":[[299],{{"k":"}}"}}]}}"#,
        kept.join(",")
    );
    assert_eq!(upstream.writes()[1].body, expected);
    assert_eq!(got.body, expected.as_bytes());

    let got = send(
        proxy.addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH],
        r#"{"z":null,"v":3}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    expected = expected
        .replacen(r#"{"v":2,"#, r#"{"v":3,"#, 1)
        .replacen(r#","z":"\\""#, "", 1);
    assert_eq!(upstream.writes()[2].body, expected);
    let etag = got.header("etag").map(str::to_owned);

    let read = send(proxy.addr, "GET", "/api/people/1", &[], "").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, expected.as_bytes());
    assert_eq!(read.header("etag").map(str::to_owned), etag);
    assert_eq!(upstream.writes().len(), 3);
}

/// The body a PATCH wrote is trusted again only while the upstream gives back those very
/// bytes: a document changed behind the proxy, into other JSON or into something that is
/// not JSON, is read and checked like any other.
#[tokio::test]
async fn a_written_body_changed_upstream_is_checked_again() {
    let items: Vec<String> = (0..200).map(|i| format!(r#"{{"i":{i},"s":"[\"{i}"}}"#)).collect();
    let doc = format!(r#"{{"v":1,"items":[{}]}}"#, items.join(","));
    let (upstream, proxy) = setup(&doc, "").await;
    let replace = r#"[{"op":"replace","path":"/v","value":2}]"#;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[JSON_PATCH], replace).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let written = doc.replacen(r#"{"v":1,"#, r#"{"v":2,"#, 1);
    assert_eq!(upstream.writes()[0].body, written);

    // Another writer: the same document with a member repeated deep inside.
    let repeated = written.replacen(r#"{"i":150,"#, r#"{"i":150,"i":7,"#, 1);
    upstream.set_doc("/api/people/1", &repeated);
    let bump = r#"[{"op":"replace","path":"/v","value":3}]"#;
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[JSON_PATCH], bump).await;
    assert_problem(&got, 422);
    assert_eq!(upstream.writes().len(), 1, "nothing written");

    // Not JSON any more, deep inside: a string left open.
    let broken = written.replacen(r#""s":"[\"150"}"#, r#""s":"[\"150}"#, 1);
    upstream.set_doc("/api/people/1", &broken);
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[JSON_PATCH], bump).await;
    assert_problem(&got, 422);
    assert_eq!(upstream.writes().len(), 1, "nothing written");

    // Other valid JSON: patched as it is now.
    let other = written.replacen(r#"{"i":199,"#, r#"{"i":199,"new":true,"#, 1);
    upstream.set_doc("/api/people/1", &other);
    let got = send(proxy.addr, "PATCH", "/api/people/1", &[JSON_PATCH], bump).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let expected = other.replacen(r#"{"v":2,"#, r#"{"v":3,"#, 1);
    assert_eq!(upstream.writes()[1].body, expected);
    assert_eq!(got.body, expected.as_bytes());
}
