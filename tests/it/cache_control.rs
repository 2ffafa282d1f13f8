//! The upstream's `Cache-Control`: `private` (RFC 9111 §5.2.2.7), `no-cache`
//! (§5.2.2.4).

use http::Method;

use crate::reads::metric;
use crate::support::*;

const DOC: &str = r#"{"id":1,"name":"Ada"}"#;
const PATH: &str = "/api/people/1";

async fn read(proxy: &TestProxy, headers: &[(&str, &str)]) -> Response {
    let got = send(proxy.addr, "GET", PATH, headers, "").await;
    assert_eq!(got.status, 200, "{}", got.text());
    got
}

/// Upstream with strong ETags on `DOC` and these extra response headers.
async fn upstream_with(extra: &[(&str, &str)]) -> LegacyUpstream {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_doc(PATH, DOC);
    for (name, value) in extra {
        upstream.set_extra_header(name, value);
    }
    upstream
}

fn if_none_match(upstream: &LegacyUpstream) -> Vec<Option<String>> {
    upstream
        .requests()
        .iter()
        .map(|r| {
            r.headers
                .get("if-none-match")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn private_responses_are_cached_only_for_a_requester_with_key_header_values() {
    let upstream = upstream_with(&[("cache-control", "max-age=60, private")]).await;
    upstream.set_body_per("x-user");
    let proxy = TestProxy::in_front_of(&upstream, r#"freshness = "exclusive""#).await;
    // X-User is not a key header: alice and bob share a cache key.
    let alice = [("x-user", "alice")];
    let bob = [("x-user", "bob")];
    assert_eq!(read(&proxy, &alice).await.text(), r#"{"x-user":"alice"}"#);
    assert_eq!(read(&proxy, &bob).await.text(), r#"{"x-user":"bob"}"#);
    assert_eq!(read(&proxy, &alice).await.text(), r#"{"x-user":"alice"}"#);
    assert_eq!(upstream.count(&Method::GET, PATH), 3, "nothing was stored");

    // Authorization is a key header: each requester's private response is theirs.
    upstream.set_body_per("authorization");
    upstream.clear_requests();
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    for _ in 0..2 {
        assert_eq!(
            read(&proxy, &alice).await.text(),
            r#"{"authorization":"Bearer alice"}"#
        );
        assert_eq!(
            read(&proxy, &bob).await.text(),
            r#"{"authorization":"Bearer bob"}"#
        );
    }
    assert_eq!(upstream.count(&Method::GET, PATH), 2, "each was stored once");
}

#[tokio::test]
async fn a_no_cache_entry_is_revalidated_on_every_read_whatever_the_freshness() {
    for freshness in ["exclusive", "10m"] {
        let upstream = upstream_with(&[("cache-control", "no-cache")]).await;
        let proxy = TestProxy::in_front_of(&upstream, &format!("freshness = \"{freshness}\"")).await;
        let tag = read(&proxy, &[]).await.header("etag").unwrap().to_owned();
        for _ in 0..2 {
            let got = read(&proxy, &[]).await;
            assert_eq!(
                (got.text().as_str(), got.header("etag")),
                (DOC, Some(tag.as_str()))
            );
        }
        assert_eq!(
            if_none_match(&upstream),
            [None, Some(tag.clone()), Some(tag.clone())],
            "{freshness}: every read asked the upstream, conditionally"
        );
        // Without validators it could not be revalidated: it is not stored at all.
        upstream.set_etag_style(EtagStyle::None);
        upstream.set_doc("/api/people/2", DOC);
        get(proxy.addr, "/api/people/2").await;
        get(proxy.addr, "/api/people/2").await;
        assert_eq!(upstream.count(&Method::GET, "/api/people/2"), 2);
        let metrics = get(proxy.admin, "/metrics").await.text();
        assert_eq!(metric(&metrics, "patchgate_cache_entries"), 1, "{freshness}");
    }
}
