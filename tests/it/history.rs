//! History: recent versions kept per resource and requester, delta reads (`226 IM Used`)
//! and stale PATCHes merged onto the current version (`on_stale = "merge"`).

use http::Method;
use serde_json::{Value, json};

use crate::support::*;

const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");
const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");
const DOC: &str = "/api/people/1";
/// Makes a document large enough that a one-member delta is smaller than it.
const BIO: &str = r#""bio":"A long text that the deltas below never touch, so that a patch of one member is smaller than the document.""#;

async fn setup(doc: &str, route_extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, doc);
    let proxy = TestProxy::in_front_of(&upstream, route_extra).await;
    (upstream, proxy)
}

fn etag(got: &Response) -> String {
    got.header("etag")
        .unwrap_or_else(|| panic!("no ETag: {got:?}"))
        .to_owned()
}

/// A GET asking for a delta (`A-IM`) from the version `base`.
async fn delta_get(addr: std::net::SocketAddr, format: &str, base: &str) -> Response {
    delta_get_as(addr, &[], format, base).await
}

/// [`delta_get`] with more request headers.
async fn delta_get_as(
    addr: std::net::SocketAddr,
    extra: &[(&str, &str)],
    format: &str,
    base: &str,
) -> Response {
    let mut headers = extra.to_vec();
    headers.extend([("a-im", format), ("if-none-match", base)]);
    send(addr, "GET", DOC, &headers, "").await
}

/// Applies an RFC 6902 patch with the json-patch crate (an independent implementation).
fn apply_json_patch(base: &[u8], patch: &[u8]) -> Value {
    let mut doc: Value = serde_json::from_slice(base).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

#[tokio::test]
async fn a_delta_read_answers_226_with_the_patch_from_the_version_the_client_holds() {
    let doc = format!(r#"{{"id":1,"name":"Ada","tags":["math"],"age":36,{BIO}}}"#);
    let (_upstream, proxy) = setup(&doc, "").await;
    let first = get(proxy.addr, DOC).await;
    let base = etag(&first);
    let written = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"name":"Ada L."}"#).await;
    assert_eq!(written.status, 200, "{}", written.text());
    let current = etag(&written);

    let got = delta_get(proxy.addr, "json-patch", &base).await;
    assert_eq!(got.status, 226, "{}", got.text());
    assert_eq!(got.header("im"), Some("json-patch"));
    assert_eq!(got.header("etag"), Some(current.as_str()));
    assert_eq!(got.header("delta-base"), Some(base.as_str()));
    assert!(
        got.header("cache-control")
            .is_some_and(|c| c.contains("no-transform"))
    );
    assert_eq!(got.header("content-type"), Some("application/json-patch+json"));
    assert_eq!(
        got.json(),
        json!([{"op":"replace","path":"/name","value":"Ada L."}])
    );
    assert_eq!(apply_json_patch(&first.body, &got.body), written.json());

    let merge = delta_get(proxy.addr, "merge-patch", &base).await;
    assert_eq!(merge.status, 226, "{}", merge.text());
    assert_eq!(merge.header("im"), Some("merge-patch"));
    assert_eq!(merge.header("content-type"), Some("application/merge-patch+json"));
    assert_eq!(merge.json(), json!({"name":"Ada L."}));
}

#[tokio::test]
async fn anything_else_is_the_usual_200_or_304() {
    let (_upstream, proxy) = setup(&format!(r#"{{"a":1,{BIO}}}"#), "").await;
    let base = etag(&get(proxy.addr, DOC).await);
    let written = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":2}"#).await;
    let current = etag(&written);
    let cases: [(&[(&str, &str)], u16); 5] = [
        // The client holds the current version.
        (
            &[("a-im", "json-patch"), ("if-none-match", current.as_str())],
            304,
        ),
        // A version never seen.
        (&[("a-im", "json-patch"), ("if-none-match", "\"never\"")], 200),
        // An instance manipulation patchgate does not make.
        (&[("a-im", "vcdiff"), ("if-none-match", base.as_str())], 200),
        // No A-IM: a conditional GET.
        (&[("if-none-match", base.as_str())], 200),
        // Refused with q=0.
        (
            &[("a-im", "json-patch;q=0"), ("if-none-match", base.as_str())],
            200,
        ),
    ];
    for (headers, status) in cases {
        let got = send(proxy.addr, "GET", DOC, headers, "").await;
        assert_eq!(got.status, status, "{headers:?}: {}", got.text());
        if status == 200 {
            assert_eq!(got.json()["a"], 2);
            assert_eq!(got.header("etag"), Some(current.as_str()));
        }
    }
}

#[tokio::test]
async fn one_requesters_versions_are_never_another_requesters_base() {
    let (_upstream, proxy) = setup(&format!(r#"{{"a":1,{BIO}}}"#), "").await;
    let alice = ("authorization", "Bearer alice");
    let bob = ("authorization", "Bearer bob");
    let base = etag(&send(proxy.addr, "GET", DOC, &[alice], "").await);
    let written = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH, alice], r#"{"a":2}"#).await;
    assert_eq!(written.status, 200);
    let got = delta_get_as(proxy.addr, &[bob], "json-patch", &base).await;
    assert_eq!(got.status, 200, "bob never saw that version: {}", got.text());
    let got = delta_get_as(proxy.addr, &[alice], "json-patch", &base).await;
    assert_eq!(got.status, 226, "{}", got.text());
}

#[tokio::test]
async fn a_delta_of_one_member_in_a_256_kib_document_is_a_few_bytes() {
    let items: Vec<Value> = (0..3900)
        .map(|i| json!({"id": i, "name": format!("item number {i}"), "price": 1.25, "tags": ["a", "b"]}))
        .collect();
    let doc = serde_json::to_string(&json!({"items": items, "version": 1})).unwrap();
    assert!(doc.len() >= 256 * 1024, "{}", doc.len());
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, &doc);
    let toml = one_route(&upstream.url(), "", "").replace("\"64KiB\"", "\"1MiB\"");
    let proxy = TestProxy::start(&toml).await;
    let first = get(proxy.addr, DOC).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let base = etag(&first);
    let patch = r#"[{"op":"replace","path":"/items/1300/price","value":2.5}]"#;
    let written = send(proxy.addr, "PATCH", DOC, &[JSON_PATCH], patch).await;
    assert_eq!(written.status, 200, "{}", written.text());
    let got = delta_get(proxy.addr, "json-patch", &base).await;
    assert_eq!(got.status, 226, "{}", got.text());
    assert_eq!(apply_json_patch(&first.body, &got.body), written.json());
    assert!(got.body.len() < 100, "{} bytes: {}", got.body.len(), got.text());
    println!(
        "delta of one member in {} bytes: {} bytes ({:.4}% of the document)",
        written.body.len(),
        got.body.len(),
        100.0 * got.body.len() as f64 / written.body.len() as f64
    );
}

#[tokio::test]
async fn a_stale_patch_that_touches_nothing_changed_is_merged() {
    let route = r#"on_stale = "merge""#;
    let (upstream, proxy) = setup(r#"{"name":"Ada","age":36,"city":"London"}"#, route).await;
    let base = etag(&get(proxy.addr, DOC).await);
    // Someone else changes the age.
    let other = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"age":37}"#).await;
    assert_eq!(other.status, 200);
    // A PATCH made for the old version changes the city only.
    let got = send(
        proxy.addr,
        "PATCH",
        DOC,
        &[JSON_PATCH, ("if-match", &base)],
        r#"[{"op":"replace","path":"/city","value":"Paris"}]"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("rebased-from"), Some(base.as_str()));
    let merged = json!({"name":"Ada","age":37,"city":"Paris"});
    assert_eq!(got.json(), merged);
    assert_ne!(got.header("etag"), other.header("etag"));
    let stored: Value = serde_json::from_slice(&upstream.doc(DOC).unwrap()).unwrap();
    assert_eq!(stored, merged);
}

#[tokio::test]
async fn a_stale_patch_that_collides_gets_412_listing_the_paths() {
    let route = r#"on_stale = "merge""#;
    let (upstream, proxy) = setup(r#"{"name":"Ada","address":{"city":"London","zip":"N1"}}"#, route).await;
    let base = etag(&get(proxy.addr, DOC).await);
    let other = send(
        proxy.addr,
        "PATCH",
        DOC,
        &[MERGE_PATCH],
        r#"{"address":{"city":"Leeds"}}"#,
    )
    .await;
    assert_eq!(other.status, 200);
    let current = etag(&other);
    let writes = upstream.writes().len();

    // Touching the very member: 412 with the current body.
    let same = send(
        proxy.addr,
        "PATCH",
        DOC,
        &[JSON_PATCH, ("if-match", &base)],
        r#"[{"op":"replace","path":"/address/city","value":"Paris"}]"#,
    )
    .await;
    assert_eq!(same.status, 412, "{}", same.text());
    assert_eq!(same.header("etag"), Some(current.as_str()));
    assert_eq!(same.json(), other.json());
    assert_eq!(upstream.writes().len(), writes, "nothing written");

    // A merge patch of another member of that object merges.
    let merged = send(
        proxy.addr,
        "PATCH",
        DOC,
        &[MERGE_PATCH, ("if-match", &base)],
        r#"{"address":{"zip":"N2"}}"#,
    )
    .await;
    assert_eq!(merged.status, 200, "{}", merged.text());
    assert_eq!(
        merged.json(),
        json!({"name":"Ada","address":{"city":"Leeds","zip":"N2"}})
    );
    let current = etag(&merged);
    let writes = upstream.writes().len();

    // Replacing the object that holds it, with a problem+json client: the list.
    let problem = send(
        proxy.addr,
        "PATCH",
        DOC,
        &[
            JSON_PATCH,
            ("if-match", &base),
            ("accept", "application/problem+json"),
        ],
        r#"[{"op":"replace","path":"/address","value":{"city":"Paris","zip":"N1"}}]"#,
    )
    .await;
    assert_eq!(problem.status, 412, "{}", problem.text());
    assert_eq!(problem.header("content-type"), Some("application/problem+json"));
    assert_eq!(problem.header("etag"), Some(current.as_str()));
    let doc = problem.json();
    assert_eq!(doc["status"], 412);
    assert_eq!(doc["base"], base.as_str());
    assert_eq!(doc["current"], current.as_str());
    let listed = doc["collisions"].as_array().cloned().unwrap_or_default();
    assert!(!listed.is_empty(), "{doc}");
    let address = listed
        .iter()
        .find(|c| c["path"] == "/address")
        .unwrap_or_else(|| panic!("/address listed: {doc}"));
    assert_eq!(address["base"], json!({"city":"London","zip":"N1"}));
    assert_eq!(address["current"], json!({"city":"Leeds","zip":"N2"}));
    assert_eq!(address["requested"], json!({"city":"Paris","zip":"N1"}));
    for c in &listed {
        assert!(c.get("requested").is_some(), "{c}");
    }
    assert_eq!(upstream.writes().len(), writes, "nothing written");

    // A PUT is never merged.
    let put = send(
        proxy.addr,
        "PUT",
        DOC,
        &[("content-type", "application/json"), ("if-match", &base)],
        r#"{"name":"X"}"#,
    )
    .await;
    assert_eq!(put.status, 412, "{}", put.text());
    assert_eq!(upstream.writes().len(), writes, "nothing written");
}

#[tokio::test]
async fn without_merge_or_history_a_stale_patch_is_412() {
    for route in [r#"on_stale = "reject""#, "on_stale = \"merge\"\nhistory = 0"] {
        let (upstream, proxy) = setup(&format!(r#"{{"a":1,"b":1,{BIO}}}"#), route).await;
        let base = etag(&get(proxy.addr, DOC).await);
        assert_eq!(
            send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":2}"#)
                .await
                .status,
            200
        );
        let got = send(
            proxy.addr,
            "PATCH",
            DOC,
            &[MERGE_PATCH, ("if-match", &base)],
            r#"{"b":2}"#,
        )
        .await;
        assert_eq!(got.status, 412, "{route}: {}", got.text());
        assert_eq!(upstream.count(&Method::PUT, DOC), 1, "{route}");
        let delta = delta_get(proxy.addr, "json-patch", &base).await;
        let expected = if route.contains("history = 0") { 200 } else { 226 };
        assert_eq!(delta.status, expected, "{route}");
    }
}

#[tokio::test]
async fn a_delta_no_smaller_than_the_document_is_the_document() {
    let (_upstream, proxy) = setup(r#"{"a":1}"#, "").await;
    let base = etag(&get(proxy.addr, DOC).await);
    let written = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":2}"#).await;
    assert_eq!(written.status, 200);
    let got = delta_get(proxy.addr, "json-patch", &base).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), json!({"a":2}));
}

#[tokio::test]
async fn a_no_store_response_is_never_kept_as_a_version() {
    let (upstream, proxy) = setup(&format!(r#"{{"a":1,{BIO}}}"#), "").await;
    upstream.set_extra_header("cache-control", "no-store");
    let base = etag(&get(proxy.addr, DOC).await);
    let written = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":2}"#).await;
    assert_eq!(written.status, 200, "{}", written.text());
    let got = delta_get(proxy.addr, "json-patch", &base).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["a"], 2);
}

#[tokio::test]
async fn versions_kept_by_the_cache_become_history_when_replaced() {
    // Exclusive: the first version lives in the cache until the write replaces it.
    let doc = format!(r#"{{"a":1,{BIO}}}"#);
    let (upstream, proxy) = setup(&doc, r#"freshness = "exclusive""#).await;
    let base = etag(&get(proxy.addr, DOC).await);
    assert_eq!(
        send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"a":2}"#)
            .await
            .status,
        200
    );
    let got = delta_get(proxy.addr, "json-patch", &base).await;
    assert_eq!(got.status, 226, "{}", got.text());
    assert_eq!(got.json(), json!([{"op":"replace","path":"/a","value":2}]));

    // Revalidate with upstream validators: a version the upstream replaced by itself.
    let (upstream2, proxy2) = setup(&doc, "").await;
    upstream2.set_etag_style(EtagStyle::Strong);
    let base = etag(&get(proxy2.addr, DOC).await);
    upstream2.set_doc(DOC, &format!(r#"{{"a":3,{BIO}}}"#));
    assert_eq!(get(proxy2.addr, DOC).await.json()["a"], 3);
    let got = delta_get(proxy2.addr, "merge-patch", &base).await;
    assert_eq!(got.status, 226, "{}", got.text());
    assert_eq!(got.json(), json!({"a":3}));
    drop(upstream);
}
