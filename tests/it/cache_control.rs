//! The upstream's `Cache-Control` and `304`s: `private` (RFC 9111 §5.2.2.7), `no-cache`
//! (§5.2.2.4), and stored headers updated by a `304` (§3.2, §4.3.4).

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

#[tokio::test]
async fn an_upstream_304_updates_the_stored_headers_in_revalidate_mode() {
    let upstream = upstream_with(&[("test-header", "A"), ("cache-control", "max-age=1")]).await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let first = read(&proxy, &[]).await;
    assert_eq!(first.header("test-header"), Some("A"));
    let tag = first.header("etag").unwrap().to_owned();

    upstream.set_extra_header("test-header", "B");
    upstream.set_extra_header("cache-control", "max-age=3600");
    let updated = read(&proxy, &[]).await;
    assert_eq!(updated.header("test-header"), Some("B"));
    assert_eq!(updated.header("cache-control"), Some("max-age=3600"));
    assert_eq!(
        (updated.text().as_str(), updated.header("etag")),
        (DOC, Some(tag.as_str()))
    );

    // A 304 that omits the header leaves the stored one (RFC 9111 §3.2).
    upstream.remove_extra_header("test-header");
    let kept = read(&proxy, &[]).await;
    assert_eq!(kept.header("test-header"), Some("B"));
    assert_eq!(
        if_none_match(&upstream),
        [None, Some(tag.clone()), Some(tag)],
        "the later reads were answered by 304s"
    );
}

#[tokio::test]
async fn in_exclusive_and_duration_modes_a_304_updates_what_later_hits_show() {
    for freshness in ["exclusive", "10m"] {
        let upstream = upstream_with(&[("test-header", "A"), ("cache-control", "no-cache")]).await;
        let proxy = TestProxy::in_front_of(&upstream, &format!("freshness = \"{freshness}\"")).await;
        assert_eq!(read(&proxy, &[]).await.header("test-header"), Some("A"));
        upstream.set_extra_header("test-header", "B");
        upstream.set_extra_header("cache-control", "max-age=60");
        // Revalidated (`no-cache`); the 304 drops `no-cache`, so later reads are hits.
        for _ in 0..3 {
            let got = read(&proxy, &[]).await;
            assert_eq!(got.text(), DOC);
            assert_eq!(got.header("test-header"), Some("B"), "{freshness}");
            assert_eq!(got.header("cache-control"), Some("max-age=60"), "{freshness}");
        }
        assert_eq!(upstream.count(&Method::GET, PATH), 2, "{freshness}");
    }
}

#[tokio::test]
async fn a_304_with_another_etag_does_not_confirm_the_stored_body_which_is_read_again() {
    let upstream = upstream_with(&[]).await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let tag = read(&proxy, &[]).await.header("etag").unwrap().to_owned();
    // The upstream still answers the old tag's If-None-Match with 304, but names
    // another tag.
    upstream.set_extra_header("etag", "\"renamed\"");
    let got = read(&proxy, &[]).await;
    assert_eq!(
        (got.text().as_str(), got.header("etag")),
        (DOC, Some("\"renamed\""))
    );
    assert_eq!(
        if_none_match(&upstream),
        [None, Some(tag), None],
        "the 304 was followed by an unconditional read"
    );
    let again = read(&proxy, &[]).await;
    assert_eq!(again.header("etag"), Some("\"renamed\""));
}

#[tokio::test]
async fn a_304_that_makes_the_response_unstorable_drops_the_stored_entry() {
    for directive in ["no-store", "private"] {
        let upstream = upstream_with(&[("cache-control", "max-age=60")]).await;
        let proxy = TestProxy::in_front_of(&upstream, "").await;
        let tag = read(&proxy, &[]).await.header("etag").unwrap().to_owned();
        upstream.set_extra_header("cache-control", directive);
        let got = read(&proxy, &[]).await;
        assert_eq!(
            (got.text().as_str(), got.header("cache-control")),
            (DOC, Some(directive))
        );
        read(&proxy, &[]).await;
        assert_eq!(
            if_none_match(&upstream),
            [None, Some(tag), None],
            "{directive}: nothing was left to revalidate"
        );
    }
}
