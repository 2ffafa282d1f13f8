//! Validators and the read path: ETags, 304, cache freshness modes, coalescing.

use std::time::Duration;

use http::Method;

use crate::support::*;

const DOC: &str = r#"{"id":1,"name":"Ada"}"#;

async fn setup(route_extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/people/1", DOC);
    let proxy = TestProxy::in_front_of(&upstream, route_extra).await;
    (upstream, proxy)
}

fn is_strong_tag(tag: &str) -> bool {
    tag.len() > 2 && tag.starts_with('"') && tag.ends_with('"') && !tag[1..tag.len() - 1].contains('"')
}

#[tokio::test]
async fn etag_is_added_when_the_upstream_has_none_and_survives_a_restart() {
    let (upstream, proxy) = setup("").await;
    let first = get(proxy.addr, "/api/people/1").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), DOC);
    let tag = first.header("etag").expect("an ETag").to_owned();
    assert!(is_strong_tag(&tag), "{tag}");
    assert_eq!(
        first.header("accept-patch"),
        Some("application/json-patch+json, application/merge-patch+json")
    );
    proxy.stop().await.unwrap();

    let again = TestProxy::in_front_of(&upstream, "").await;
    assert_eq!(
        get(again.addr, "/api/people/1").await.header("etag"),
        Some(tag.as_str())
    );
    upstream.set_doc("/api/people/1", r#"{"id":1,"name":"Ada L."}"#);
    assert_ne!(
        get(again.addr, "/api/people/1").await.header("etag"),
        Some(tag.as_str())
    );
}

#[tokio::test]
async fn if_none_match_gets_304_on_a_strong_or_weak_match_and_200_otherwise() {
    let (_upstream, proxy) = setup("").await;
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    for value in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"other\", {tag}"),
        "*".to_owned(),
    ] {
        let got = send(
            proxy.addr,
            "GET",
            "/api/people/1",
            &[("if-none-match", &value)],
            "",
        )
        .await;
        assert_eq!(got.status, 304, "If-None-Match: {value}");
        assert_eq!(got.header("etag"), Some(tag.as_str()));
        assert!(got.body.is_empty());
        assert_eq!(
            got.header("content-type"),
            None,
            "a 304 carries no representation headers"
        );
    }
    let got = send(
        proxy.addr,
        "GET",
        "/api/people/1",
        &[("if-none-match", "\"nope\"")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), DOC);
}

#[tokio::test]
async fn head_behaves_as_get_without_a_body() {
    let (_upstream, proxy) = setup("").await;
    let got = send(proxy.addr, "HEAD", "/api/people/1", &[], "").await;
    assert_eq!(got.status, 200);
    assert!(got.body.is_empty());
    assert_eq!(got.header("content-length"), Some(DOC.len().to_string().as_str()));
    let tag = got.header("etag").unwrap().to_owned();
    assert_eq!(
        get(proxy.addr, "/api/people/1").await.header("etag"),
        Some(tag.as_str())
    );
    let missing = send(proxy.addr, "HEAD", "/api/people/404", &[], "").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn exclusive_mode_answers_hits_without_the_upstream() {
    let (upstream, proxy) = setup(r#"freshness = "exclusive""#).await;
    for _ in 0..5 {
        let got = get(proxy.addr, "/api/people/1").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), DOC);
    }
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 1);
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let got = send(proxy.addr, "GET", "/api/people/1", &[("if-none-match", &tag)], "").await;
    assert_eq!(got.status, 304);
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 1);
    let metrics = get(proxy.admin, "/metrics").await.text();
    assert!(metrics.contains("patchgate_cache_hits_total 6"), "{metrics}");
}

#[tokio::test]
async fn revalidate_mode_reads_upstream_every_time_and_sees_changes_behind_its_back() {
    let (upstream, proxy) = setup("").await;
    assert_eq!(get(proxy.addr, "/api/people/1").await.text(), DOC);
    upstream.set_doc("/api/people/1", r#"{"id":1,"name":"changed"}"#);
    assert_eq!(
        get(proxy.addr, "/api/people/1").await.text(),
        r#"{"id":1,"name":"changed"}"#
    );
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 2);
}

#[tokio::test]
async fn revalidate_uses_upstream_validators_and_answers_an_upstream_304_from_the_cache() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_doc("/api/people/1", DOC);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let first = get(proxy.addr, "/api/people/1").await;
    let second = get(proxy.addr, "/api/people/1").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), DOC);
    assert_eq!(first.header("etag"), second.header("etag"));
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1]
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap()),
        first.header("etag"),
        "the second read is a conditional GET with the upstream's own tag"
    );
    assert_eq!(requests[1].headers["accept-encoding"], "identity");
}

#[tokio::test]
async fn a_freshness_duration_serves_young_hits_and_refetches_old_ones() {
    let (upstream, proxy) = setup(r#"freshness = "300ms""#).await;
    assert_eq!(get(proxy.addr, "/api/people/1").await.text(), DOC);
    upstream.set_doc("/api/people/1", r#"{"id":1,"v":2}"#);
    // Within the freshness the old body is served without the upstream.
    let young = get(proxy.addr, "/api/people/1").await;
    if upstream.count(&Method::GET, "/api/people/1") == 1 {
        assert_eq!(young.text(), DOC);
    }
    let mut latest = String::new();
    for _ in 0..200 {
        latest = get(proxy.addr, "/api/people/1").await.text();
        if latest == r#"{"id":1,"v":2}"# {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(latest, r#"{"id":1,"v":2}"#);
}

#[tokio::test]
async fn users_with_different_credentials_never_share_a_cached_body() {
    let (upstream, proxy) = setup(r#"freshness = "exclusive""#).await;
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    assert_eq!(
        send(proxy.addr, "GET", "/api/people/1", &alice, "").await.text(),
        DOC
    );
    upstream.set_doc("/api/people/1", r#"{"for":"bob"}"#);
    assert_eq!(
        send(proxy.addr, "GET", "/api/people/1", &bob, "").await.text(),
        r#"{"for":"bob"}"#
    );
    assert_eq!(
        upstream.count(&Method::GET, "/api/people/1"),
        2,
        "bob's read went upstream"
    );
    assert_eq!(
        send(proxy.addr, "GET", "/api/people/1", &alice, "").await.text(),
        DOC
    );
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 2);
    let seen: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert_eq!(seen, ["Bearer alice", "Bearer bob"]);
}

#[tokio::test]
async fn no_store_responses_are_not_cached() {
    let (upstream, proxy) = setup(r#"freshness = "exclusive""#).await;
    upstream.set_extra_header("cache-control", "no-store");
    get(proxy.addr, "/api/people/1").await;
    let got = get(proxy.addr, "/api/people/1").await;
    assert_eq!(got.status, 200);
    assert!(got.header("etag").is_some());
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 2);
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let (upstream, proxy) = setup(r#"freshness = "exclusive""#).await;
    upstream.set_extra_header("vary", "accept-language");
    send(
        proxy.addr,
        "GET",
        "/api/people/1",
        &[("accept-language", "en")],
        "",
    )
    .await;
    send(
        proxy.addr,
        "GET",
        "/api/people/1",
        &[("accept-language", "fr")],
        "",
    )
    .await;
    send(
        proxy.addr,
        "GET",
        "/api/people/1",
        &[("accept-language", "en")],
        "",
    )
    .await;
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 2);
}

#[tokio::test]
async fn etag_upstream_uses_the_upstreams_tag_verbatim_and_auto_prefers_a_strong_one() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_doc("/api/people/1", DOC);
    let direct = get_direct(&upstream, "/api/people/1").await;
    let upstream_tag = direct.header("etag").unwrap().to_owned();
    for mode in ["upstream", "auto"] {
        let proxy = TestProxy::in_front_of(&upstream, &format!("etag = \"{mode}\"")).await;
        assert_eq!(
            get(proxy.addr, "/api/people/1").await.header("etag"),
            Some(upstream_tag.as_str()),
            "{mode}"
        );
    }
    let proxy = TestProxy::in_front_of(&upstream, "etag = \"hash\"").await;
    let hashed = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    assert_ne!(hashed, upstream_tag);
    assert!(is_strong_tag(&hashed));

    upstream.set_etag_style(EtagStyle::Weak);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let auto = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    assert!(
        is_strong_tag(&auto),
        "auto never serves a weak upstream tag as its own: {auto}"
    );
}

async fn get_direct(upstream: &LegacyUpstream, path: &str) -> Response {
    get(upstream.addr(), path).await
}

#[tokio::test]
async fn the_cache_stays_within_max_bytes_under_many_distinct_keys() {
    let upstream = LegacyUpstream::start().await;
    let doc = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
    for i in 0..300 {
        upstream.set_doc(&format!("/api/docs/{i}"), &doc);
    }
    let toml = one_route(&upstream.url(), r#"freshness = "exclusive""#, "").replace(
        "[[route]]",
        "[cache]\nmax_bytes = \"64KiB\"\nmax_entry_bytes = \"8KiB\"\n\n[[route]]",
    );
    let proxy = TestProxy::start(&toml).await;
    for i in 0..300 {
        assert_eq!(get(proxy.addr, &format!("/api/docs/{i}")).await.status, 200);
    }
    let metrics = get(proxy.admin, "/metrics").await.text();
    let bytes: u64 = metric(&metrics, "patchgate_cache_bytes");
    let evictions: u64 = metric(&metrics, "patchgate_cache_evictions_total");
    assert!(bytes <= 64 * 1024, "cache holds {bytes} bytes");
    assert!(bytes > 32 * 1024, "the cache is used: {bytes}");
    assert!(evictions > 0);
    // The most recent document is still a hit.
    get(proxy.addr, "/api/docs/299").await;
    assert_eq!(upstream.count(&Method::GET, "/api/docs/299"), 1);
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {text}"))
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let (upstream, proxy) = setup(r#"freshness = "exclusive""#).await;
    upstream.set_delay(Duration::from_millis(200));
    let addr = proxy.addr;
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(addr, "/api/people/1").await }))
        .collect();
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), DOC);
    }
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 1);
}

#[tokio::test]
async fn options_adds_patch_to_allow() {
    let (_upstream, proxy) = setup("").await;
    let got = send(proxy.addr, "OPTIONS", "/api/people/1", &[], "").await;
    assert!(got.status.is_success(), "{}", got.status);
    let allow = got.header("allow").unwrap();
    assert!(allow.contains("PATCH") && allow.contains("GET"), "{allow}");
    assert_eq!(
        got.header("accept-patch"),
        Some("application/json-patch+json, application/merge-patch+json")
    );
}

#[tokio::test]
async fn a_failed_if_match_on_a_read_gets_412_with_the_current_body() {
    let (_upstream, proxy) = setup("").await;
    let tag = get(proxy.addr, "/api/people/1")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let ok = send(proxy.addr, "GET", "/api/people/1", &[("if-match", &tag)], "").await;
    assert_eq!(ok.status, 200);
    let failed = send(
        proxy.addr,
        "GET",
        "/api/people/1",
        &[("if-match", "\"stale\"")],
        "",
    )
    .await;
    assert_eq!(failed.status, 412);
    assert_eq!(failed.text(), DOC);
    assert_eq!(failed.header("etag"), Some(tag.as_str()));
}

/// Starts one revalidate read and waits until its exchange reached the (slow) upstream.
async fn first_read_under_way(
    upstream: &LegacyUpstream,
    addr: std::net::SocketAddr,
) -> tokio::task::JoinHandle<Response> {
    let first = tokio::spawn(async move { get(addr, "/api/people/1").await });
    assert!(
        eventually(Duration::from_secs(2), || upstream
            .count(&Method::GET, "/api/people/1")
            == 1)
        .await
    );
    first
}

fn reads(
    addr: std::net::SocketAddr,
    n: usize,
    headers: &'static [(&'static str, &'static str)],
) -> Vec<tokio::task::JoinHandle<Response>> {
    (0..n)
        .map(|_| tokio::spawn(async move { send(addr, "GET", "/api/people/1", headers, "").await }))
        .collect()
}

#[tokio::test]
async fn identical_revalidate_reads_share_one_exchange_that_starts_after_they_arrive() {
    let (upstream, proxy) = setup("").await;
    upstream.set_delay(Duration::from_millis(300));
    let first = first_read_under_way(&upstream, proxy.addr).await;
    // Ten reads arrive while the first one's exchange runs: they must not take its
    // answer (it may predate them), but they can share the next one.
    let later = reads(proxy.addr, 10, &[]);
    assert_eq!(first.await.unwrap().text(), DOC);
    for read in later {
        let got = read.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), DOC);
        assert!(got.header("etag").is_some_and(is_strong_tag));
    }
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 2);
    let metrics = get(proxy.admin, "/metrics").await.text();
    assert!(
        metrics.contains("patchgate_batched_reads_total{route=\"api\"} 9"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_change_made_while_an_exchange_runs_is_seen_by_the_reads_that_arrive_after_it() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_doc("/api/people/1", DOC);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    assert_eq!(get(proxy.addr, "/api/people/1").await.text(), DOC);
    upstream.clear_requests();
    upstream.set_delay(Duration::from_millis(300));
    let first = first_read_under_way(&upstream, proxy.addr).await;
    upstream.set_doc("/api/people/1", r#"{"id":1,"name":"changed"}"#);
    let later = reads(proxy.addr, 5, &[]);
    first.await.unwrap();
    for read in later {
        assert_eq!(read.await.unwrap().text(), r#"{"id":1,"name":"changed"}"#);
    }
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 2);
}

#[tokio::test]
async fn reads_that_would_send_another_request_are_never_answered_from_each_others_exchange() {
    let (upstream, proxy) = setup("").await;
    upstream.set_delay(Duration::from_millis(300));
    const ALICE: &[(&str, &str)] = &[("authorization", "Bearer alice")];
    const ALICE_TRACED: &[(&str, &str)] = &[("authorization", "Bearer alice"), ("x-trace", "7")];
    const BOB: &[(&str, &str)] = &[("authorization", "Bearer bob")];
    let addr = proxy.addr;
    let first = tokio::spawn(async move { send(addr, "GET", "/api/people/1", ALICE, "").await });
    assert!(
        eventually(Duration::from_secs(2), || upstream
            .count(&Method::GET, "/api/people/1")
            == 1)
        .await
    );
    let same = reads(addr, 3, ALICE);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let traced = reads(addr, 3, ALICE_TRACED);
    let bob = reads(addr, 3, BOB);
    first.await.unwrap();
    for read in same.into_iter().chain(traced).chain(bob) {
        assert_eq!(read.await.unwrap().text(), DOC);
    }
    let seen: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| {
            let header = |name| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            (header("authorization").unwrap_or_default(), header("x-trace"))
        })
        .collect();
    let count = |who: &str, trace: Option<&str>| {
        seen.iter()
            .filter(|(auth, t)| auth == who && t.as_deref() == trace)
            .count()
    };
    assert_eq!(
        count("Bearer alice", None),
        2,
        "the first read, then one for the three that waited: {seen:?}"
    );
    // Another header: never alice's exchange, but the three share one of their own,
    // the first at once, the other two behind it.
    assert_eq!(count("Bearer alice", Some("7")), 2, "{seen:?}");
    // Credentials are part of the cache key: bob's reads queue on their own, the first
    // at once, the other two behind it.
    assert_eq!(count("Bearer bob", None), 2, "{seen:?}");
    assert_eq!(seen.len(), 6, "{seen:?}");
}

#[tokio::test]
async fn responses_that_set_cookies_reach_their_client_and_are_never_shared() {
    let (upstream, proxy) = setup("").await;
    upstream.set_extra_header("set-cookie", "session=abc; HttpOnly");
    let alone = get(proxy.addr, "/api/people/1").await;
    assert_eq!(alone.status, 200);
    assert_eq!(alone.header("set-cookie"), Some("session=abc; HttpOnly"));
    // A 304 made from such a response still carries its cookie, beside the ETag.
    let tag = alone.header("etag").unwrap().to_owned();
    let revalidated = send(proxy.addr, "GET", "/api/people/1", &[("if-none-match", &tag)], "").await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(tag.as_str()));
    assert_eq!(revalidated.header("set-cookie"), Some("session=abc; HttpOnly"));
    assert!(revalidated.body.is_empty());
    upstream.clear_requests();
    upstream.set_delay(Duration::from_millis(300));
    let first = first_read_under_way(&upstream, proxy.addr).await;
    let later = reads(proxy.addr, 3, &[]);
    assert_eq!(
        first.await.unwrap().header("set-cookie"),
        Some("session=abc; HttpOnly")
    );
    for read in later {
        let got = read.await.unwrap();
        assert_eq!(got.text(), DOC);
        assert_eq!(got.header("set-cookie"), Some("session=abc; HttpOnly"));
    }
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 4);
}

#[tokio::test]
async fn with_batch_reads_off_every_revalidate_read_is_its_own_exchange() {
    let (upstream, proxy) = setup("batch_reads = false").await;
    upstream.set_delay(Duration::from_millis(300));
    let first = first_read_under_way(&upstream, proxy.addr).await;
    let later = reads(proxy.addr, 5, &[]);
    first.await.unwrap();
    for read in later {
        assert_eq!(read.await.unwrap().text(), DOC);
    }
    assert_eq!(upstream.count(&Method::GET, "/api/people/1"), 6);
}

#[tokio::test]
async fn a_miss_never_shares_an_exchange_older_than_a_write_acknowledged_before_it() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/people/1", r#"{"v":0}"#);
    // Nothing is ever stored, so every read is a miss that may join a running exchange.
    upstream.set_extra_header("cache-control", "no-store");
    let proxy = TestProxy::in_front_of(&upstream, r#"freshness = "exclusive""#).await;
    upstream.fail_next(1, Fault::Slow(Duration::from_millis(1500)));
    let addr = proxy.addr;
    let early = tokio::spawn(async move { get(addr, "/api/people/1").await });
    assert!(
        eventually(Duration::from_secs(5), || upstream
            .count(&Method::GET, "/api/people/1")
            == 1)
        .await
    );
    let merge = ("content-type", "application/merge-patch+json");
    let written = send(addr, "PATCH", "/api/people/1", &[merge], r#"{"v":1}"#).await;
    assert_eq!(written.status, 200, "{}", written.text());
    let late = get(addr, "/api/people/1").await;
    assert_eq!(
        late.text(),
        r#"{"v":1}"#,
        "never the exchange that started before the write"
    );
    // The read that arrived before the write shows what the upstream held then.
    assert_eq!(early.await.unwrap().text(), r#"{"v":0}"#);
}
