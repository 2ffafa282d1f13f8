//! `freshness = "http"`: RFC 9111 shared-cache freshness from the upstream's
//! `Cache-Control`, `Expires` and `Age`, the request's directives, `Age` on answers from
//! the cache, invalidation by unsafe methods (§4.4), and writes on such a route.

use std::time::Duration;

use http::Method;

use crate::support::*;

const DOC: &str = r#"{"id":1,"name":"Ada"}"#;
const PATH: &str = "/api/people/1";

/// An upstream with strong ETags on `DOC` and these extra read headers, and a proxy
/// with `freshness = "http"` (plus `extra` route keys) in front of it.
async fn setup(read_headers: &[(&str, &str)], extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_honour_if_match(true);
    upstream.set_doc(PATH, DOC);
    for (name, value) in read_headers {
        upstream.set_extra_header(name, value);
    }
    let proxy = TestProxy::in_front_of(&upstream, &format!("freshness = \"http\"\n{extra}")).await;
    (upstream, proxy)
}

async fn read(proxy: &TestProxy, headers: &[(&str, &str)]) -> Response {
    send(proxy.addr, "GET", PATH, headers, "").await
}

fn age(response: &Response) -> Option<u64> {
    response.header("age").map(|v| v.parse().unwrap())
}

fn reads(upstream: &LegacyUpstream) -> usize {
    upstream.count(&Method::GET, PATH)
}

/// A GET of `path` and whether the cache answered it (the upstream was not asked).
async fn hit(
    upstream: &LegacyUpstream,
    proxy: &TestProxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (Response, bool) {
    let before = upstream.count(&Method::GET, path);
    let got = send(proxy.addr, "GET", path, headers, "").await;
    (got, upstream.count(&Method::GET, path) == before)
}

#[tokio::test]
async fn max_age_serves_from_the_cache_with_an_age_that_counts_the_upstreams() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600"), ("age", "30")], "").await;
    let first = read(&proxy, &[]).await;
    assert_eq!((first.status.as_u16(), first.text().as_str()), (200, DOC));
    // The upstream's Age, with the time the answer took, from the first answer on.
    assert!((30..32).contains(&age(&first).unwrap()));
    let date = first.header("date").unwrap().to_owned();
    let tag = first.header("etag").unwrap().to_owned();
    let second = read(&proxy, &[]).await;
    assert_eq!((second.status.as_u16(), second.text().as_str()), (200, DOC));
    assert_eq!(second.header("etag"), Some(tag.as_str()));
    let aged = age(&second).expect("Age on an answer from the cache");
    assert!((30..40).contains(&aged), "{aged}");
    assert_eq!(second.header("date"), Some(date.as_str()), "the stored Date");
    // A conditional read is answered from the cache too, with its age.
    let not_modified = read(&proxy, &[("if-none-match", &tag)]).await;
    assert_eq!(not_modified.status.as_u16(), 304);
    assert!(age(&not_modified).is_some());
    assert_eq!(reads(&upstream), 1);
}

#[tokio::test]
async fn an_upstream_age_past_the_lifetime_or_no_freshness_means_asking_again() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=60"), ("age", "120")], "").await;
    let tag = read(&proxy, &[]).await.header("etag").unwrap().to_owned();
    let again = read(&proxy, &[]).await;
    assert_eq!(
        (again.status.as_u16(), again.header("etag")),
        (200, Some(tag.as_str()))
    );

    assert_eq!(reads(&upstream), 2);
    // No Cache-Control at all and no heuristic: every read asks, conditionally. (Another
    // resource: a 304 keeps the stored Cache-Control it does not replace.)
    upstream.remove_extra_header("cache-control");
    upstream.remove_extra_header("age");
    upstream.set_doc("/api/people/2", DOC);
    for _ in 0..3 {
        assert_eq!(get(proxy.addr, "/api/people/2").await.text(), DOC);
    }
    let conditional = upstream
        .requests()
        .iter()
        .filter(|r| r.path() == "/api/people/2" && r.headers.contains_key("if-none-match"))
        .count();
    assert_eq!(
        (upstream.count(&Method::GET, "/api/people/2"), conditional),
        (3, 2)
    );
}

#[tokio::test]
async fn s_maxage_wins_and_expires_counts_from_date() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600, s-maxage=0")], "").await;
    read(&proxy, &[]).await;
    read(&proxy, &[]).await;
    assert_eq!(reads(&upstream), 2, "s-maxage=0 is stale for a shared cache");

    upstream.remove_extra_header("cache-control");
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
    upstream.set_extra_header("expires", &later);
    upstream.set_doc("/api/people/2", DOC);
    get(proxy.addr, "/api/people/2").await;
    assert!(hit(&upstream, &proxy, "/api/people/2", &[]).await.1);
    assert_eq!(
        upstream.count(&Method::GET, "/api/people/2"),
        1,
        "Expires ten minutes ahead"
    );
}

#[tokio::test]
async fn no_store_is_never_stored_and_no_cache_always_revalidates() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600, no-store")], "").await;
    read(&proxy, &[]).await;
    read(&proxy, &[]).await;
    assert_eq!(reads(&upstream), 2);
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.headers.contains_key("if-none-match"))
    );

    upstream.set_extra_header("cache-control", "max-age=600, no-cache");
    upstream.clear_requests();
    read(&proxy, &[]).await;
    read(&proxy, &[]).await;
    assert_eq!(reads(&upstream), 2);
    assert!(upstream.requests()[1].headers.contains_key("if-none-match"));
}

#[tokio::test]
async fn request_directives_bypass_or_bound_the_cache() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600"), ("age", "100")], "").await;
    // only-if-cached with nothing stored: 504, the upstream is not asked.
    let nothing = read(&proxy, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(nothing.status.as_u16(), 504);
    assert_eq!(nothing.header("content-type"), Some("application/problem+json"));
    assert!(nothing.text().contains("not-cached"), "{}", nothing.text());
    assert_eq!(reads(&upstream), 0);
    read(&proxy, &[]).await;
    let stored = read(&proxy, &[("cache-control", "only-if-cached")]).await;
    assert_eq!((stored.status.as_u16(), stored.text().as_str()), (200, DOC));
    assert_eq!(reads(&upstream), 1);
    // no-cache, max-age below the age, min-fresh beyond what is left: to the upstream.
    for directive in ["no-cache", "max-age=50", "min-fresh=550"] {
        let (got, cached) = hit(&upstream, &proxy, PATH, &[("cache-control", directive)]).await;
        assert_eq!((got.status.as_u16(), cached), (200, false), "{directive}");
    }
    assert!(!hit(&upstream, &proxy, PATH, &[("pragma", "no-cache")]).await.1);
    // Within bounds: from the cache.
    for directive in ["max-age=300", "min-fresh=100"] {
        assert!(
            hit(&upstream, &proxy, PATH, &[("cache-control", directive)])
                .await
                .1,
            "{directive}"
        );
    }
    assert_eq!(reads(&upstream), 5);
}

#[tokio::test]
async fn max_stale_serves_stale_unless_the_response_forbids_it() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=60"), ("age", "100")], "").await;
    read(&proxy, &[]).await;
    let (stale, cached) = hit(&upstream, &proxy, PATH, &[("cache-control", "max-stale=100")]).await;
    assert!(cached && age(&stale).unwrap() >= 100);
    assert!(
        !hit(&upstream, &proxy, PATH, &[("cache-control", "max-stale=10")])
            .await
            .1
    );
    assert_eq!(reads(&upstream), 2);

    for forbidding in ["max-age=60, must-revalidate", "max-age=60, proxy-revalidate"] {
        upstream.set_extra_header("cache-control", forbidding);
        upstream.set_doc(PATH, &format!(r#"{{"cc":"{forbidding}"}}"#));
        read(&proxy, &[]).await;
        assert!(
            !hit(&upstream, &proxy, PATH, &[("cache-control", "max-stale")])
                .await
                .1,
            "{forbidding}"
        );
    }
}

#[tokio::test]
async fn heuristic_freshness_only_when_the_route_asks() {
    for (extra, upstream_reads) in [("", 2), ("heuristic_freshness = true", 1)] {
        let (upstream, proxy) = setup(&[], extra).await;
        // Modified an hour ago: a heuristic lifetime of six minutes.
        let hour_ago = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
        upstream.set_extra_header("last-modified", &hour_ago);
        read(&proxy, &[]).await;
        read(&proxy, &[]).await;
        assert_eq!(reads(&upstream), upstream_reads, "{extra:?}");
    }
}

#[tokio::test]
async fn vary_selects_the_stored_variant() {
    let (upstream, proxy) = setup(
        &[("cache-control", "max-age=600"), ("vary", "accept-language")],
        "",
    )
    .await;
    read(&proxy, &[("accept-language", "en")]).await;
    assert!(hit(&upstream, &proxy, PATH, &[("accept-language", "en")]).await.1);
    assert!(!hit(&upstream, &proxy, PATH, &[("accept-language", "fr")]).await.1);
    assert_eq!(reads(&upstream), 2);
}

#[tokio::test]
async fn a_put_stores_the_upstreams_answer_only_when_it_is_the_representation() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600")], "").await;
    read(&proxy, &[]).await;
    // A 200 without Content-Location: the entry goes, nothing is stored.
    let put = send(
        proxy.addr,
        "PUT",
        PATH,
        &[("content-type", "application/json")],
        r#"{"v":1}"#,
    )
    .await;
    assert_eq!(put.status.as_u16(), 200);
    let (after, cached) = hit(&upstream, &proxy, PATH, &[]).await;
    assert_eq!((after.text().as_str(), cached), (r#"{"v":1}"#, false));

    // With Content-Location naming the target, the answer is stored as it came,
    // with the upstream's own freshness.
    upstream.set_write_header("content-location", PATH);
    upstream.set_write_header("cache-control", "max-age=600");
    upstream.set_normalize_on_put(true);
    let put = send(
        proxy.addr,
        "PUT",
        PATH,
        &[("content-type", "application/json")],
        r#"{"v": 2}"#,
    )
    .await;
    assert_eq!(put.status.as_u16(), 200);
    let (stored, cached) = hit(&upstream, &proxy, PATH, &[]).await;
    let normalized = String::from_utf8(upstream.doc(PATH).unwrap().to_vec()).unwrap();
    assert!(normalized.contains("normalized"));
    assert_eq!(
        stored.text(),
        normalized,
        "the upstream's answer, not the request body"
    );
    assert!(cached, "served from the cache");
    assert_eq!(stored.header("etag"), put.header("etag"));
    assert_eq!(reads(&upstream), 2);
}

#[tokio::test]
async fn patch_and_preconditions_work_and_a_stale_entry_is_never_trusted() {
    // Stale at once (Age past max-age): a write must ask the upstream.
    let (upstream, proxy) = setup(&[("cache-control", "max-age=60"), ("age", "100")], "").await;
    let tag = read(&proxy, &[]).await.header("etag").unwrap().to_owned();
    upstream.set_doc(PATH, r#"{"id":1,"name":"Grace"}"#);
    let patch = [
        ("content-type", "application/merge-patch+json"),
        ("if-match", tag.as_str()),
    ];
    let refused = send(proxy.addr, "PATCH", PATH, &patch, r#"{"name":"Bob"}"#).await;
    assert_eq!(refused.status.as_u16(), 412, "{}", refused.text());
    assert_eq!(refused.text(), r#"{"id":1,"name":"Grace"}"#);

    let current = refused.header("etag").unwrap().to_owned();
    let patch = [
        ("content-type", "application/merge-patch+json"),
        ("if-match", current.as_str()),
    ];
    let patched = send(proxy.addr, "PATCH", PATH, &patch, r#"{"name":"Bob"}"#).await;
    assert_eq!(patched.status.as_u16(), 200, "{}", patched.text());
    assert_eq!(patched.text(), r#"{"id":1,"name":"Bob"}"#);
    let next = read(&proxy, &[]).await;
    assert_eq!(next.text(), r#"{"id":1,"name":"Bob"}"#);
    assert_eq!(next.header("etag"), patched.header("etag"));
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_the_named_locations() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600")], "").await;
    upstream.set_doc("/api/people/2", DOC);
    upstream.set_doc("/api/people/3", DOC);
    for path in [PATH, "/api/people/2", "/api/people/3"] {
        get(proxy.addr, path).await;
        assert!(hit(&upstream, &proxy, path, &[]).await.1, "{path} is cached");
    }
    // A POST that creates /api/people/4 and names /api/people/2 and 3.
    upstream.set_write_header("content-location", "/api/people/2");
    let post = send(
        proxy.addr,
        "POST",
        "/api/people",
        &[("content-type", "application/json")],
        r#"{"id":4}"#,
    )
    .await;
    assert_eq!(post.status.as_u16(), 201);
    assert!(
        !hit(&upstream, &proxy, "/api/people/2", &[]).await.1,
        "Content-Location target dropped"
    );
    assert!(
        hit(&upstream, &proxy, PATH, &[]).await.1,
        "an unnamed resource stays"
    );
    // A DELETE whose answer names another resource by absolute URL on this origin.
    upstream.set_write_header("content-location", &format!("http://{}/api/people/3", proxy.addr));
    let delete = send(proxy.addr, "DELETE", PATH, &[], "").await;
    assert_eq!(delete.status.as_u16(), 204);
    assert!(!hit(&upstream, &proxy, "/api/people/3", &[]).await.1);
    // Another origin's URL is not this cache's to drop.
    get(proxy.addr, "/api/people/3").await;
    upstream.set_write_header("content-location", "http://elsewhere.example/api/people/3");
    send(proxy.addr, "DELETE", "/api/people/2", &[], "").await;
    assert!(hit(&upstream, &proxy, "/api/people/3", &[]).await.1);
}

#[tokio::test]
async fn an_authorized_request_is_stored_only_when_the_response_allows() {
    let (upstream, proxy) = setup(&[("cache-control", "max-age=600")], "").await;
    let user = [("authorization", "Bearer a")];
    read(&proxy, &user).await;
    assert!(!hit(&upstream, &proxy, PATH, &user).await.1);
    upstream.set_extra_header("cache-control", "max-age=600, public");
    upstream.clear_requests();
    read(&proxy, &user).await;
    assert!(hit(&upstream, &proxy, PATH, &user).await.1);
    // Stored for that requester only.
    assert!(
        !hit(&upstream, &proxy, PATH, &[("authorization", "Bearer b")])
            .await
            .1
    );
    assert_eq!(reads(&upstream), 2);
}
