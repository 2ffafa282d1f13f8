//! Self-tests of the harness: the legacy upstream and the clients, talking directly.

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::support::*;

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn legacy_upstream_serves_get_put_delete_post_and_refuses_other_methods() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    upstream.set_doc("/api/people/1", r#"{"id":1}"#);

    let got = get(addr, "/api/people/1?x=1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"id":1}"#);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("etag"), None, "no validators by default");
    let head = send(addr, "HEAD", "/api/people/1", &[], "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("8"));
    assert!(head.body.is_empty());

    let created = send(addr, "PUT", "/api/people/2", &[JSON], r#"{"id":2}"#).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/api/people/2"));
    assert!(created.body.is_empty());
    let replaced = send(addr, "PUT", "/api/people/2", &[JSON], r#"{"id":2,"v":2}"#).await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.text(), r#"{"id":2,"v":2}"#);

    let posted = send(addr, "POST", "/api/people", &[JSON], r#"{"new":true}"#).await;
    assert_eq!(posted.status, 201);
    assert_eq!(posted.header("location"), Some("/api/people/3"));
    assert_eq!(posted.text(), r#"{"new":true}"#);
    let listing = get(addr, "/api/people").await;
    assert_eq!(listing.status, 200);
    assert_eq!(
        listing.json(),
        serde_json::json!([{"id":1},{"id":2,"v":2},{"new":true}])
    );

    assert_eq!(send(addr, "DELETE", "/api/people/2", &[], "").await.status, 204);
    assert_eq!(send(addr, "DELETE", "/api/people/2", &[], "").await.status, 404);
    let missing = get(addr, "/api/people/2").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not found");

    let patch = send(addr, "PATCH", "/api/people/1", &[JSON], "{}").await;
    assert_eq!(patch.status, 405);
    assert_eq!(patch.header("allow"), Some("GET, PUT, DELETE, POST"));
    assert_eq!(upstream.doc("/api/people/1").unwrap(), r#"{"id":1}"#);

    assert_eq!(upstream.requests()[0].uri, "/api/people/1?x=1");
    assert_eq!(
        upstream.count(&Method::GET, "/api/people/1"),
        1,
        "query ignored, HEAD apart"
    );
    let writes: Vec<_> = upstream
        .writes()
        .iter()
        .map(|w| (w.method.to_string(), w.uri.clone()))
        .collect();
    assert_eq!(
        writes,
        [
            ("PUT".to_owned(), "/api/people/2".to_owned()),
            ("PUT".to_owned(), "/api/people/2".to_owned()),
            ("POST".to_owned(), "/api/people".to_owned()),
            ("DELETE".to_owned(), "/api/people/2".to_owned()),
            ("DELETE".to_owned(), "/api/people/2".to_owned()),
            ("PATCH".to_owned(), "/api/people/1".to_owned()),
        ]
    );
    assert_eq!(upstream.writes()[0].body, r#"{"id":2}"#);
    upstream.clear_requests();
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn faults_answer_close_or_hang_and_are_recorded() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    upstream.set_doc("/x", "{}");
    let request = b"PUT /x HTTP/1.1\r\nHost: u\r\nContent-Length: 2\r\n\r\n{}";

    upstream.fail_next(1, Fault::Status(503));
    let got = get(addr, "/x").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["status"], 503);
    assert_eq!(get(addr, "/x").await.status, 200, "only the next request fails");

    upstream.fail_next(1, Fault::Close);
    assert!(
        raw(addr, request, Duration::from_secs(5)).await.is_empty(),
        "closed without an answer"
    );
    upstream.fail_next(1, Fault::Hang);
    assert!(
        raw(addr, request, Duration::from_millis(300)).await.is_empty(),
        "no answer"
    );

    upstream.fail_writes(2, Fault::Status(500));
    assert_eq!(get(addr, "/x").await.status, 200, "reads still work");
    assert_eq!(send(addr, "DELETE", "/x", &[], "").await.status, 500);
    assert_eq!(send(addr, "PUT", "/x", &[JSON], "{}").await.status, 500);
    assert_eq!(send(addr, "PUT", "/x", &[JSON], "{}").await.status, 200);

    let writes = upstream.writes();
    assert_eq!(writes.len(), 5);
    assert!(
        writes[..2]
            .iter()
            .all(|w| w.method == Method::PUT && w.body == "{}"),
        "{writes:?}"
    );

    upstream.fail_next(1, Fault::Hang);
    let hung = tokio::spawn(async move { raw(addr, request, Duration::from_secs(8)).await });
    assert!(eventually(Duration::from_secs(5), || upstream.writes().len() == 6).await);
    drop(upstream);
    assert!(
        hung.await.unwrap().is_empty(),
        "dropping the upstream closes hung connections"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn etags_conditional_requests_and_honoured_if_match() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    upstream.set_doc("/d", r#"{"a":1}"#);
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_honour_if_match(true);
    upstream.set_last_modified(true);

    let got = get(addr, "/d").await;
    let tag = got.header("etag").unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let modified = got.header("last-modified").unwrap().to_owned();
    let not_modified = send(addr, "GET", "/d", &[("if-none-match", &format!("W/{tag}"))], "").await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("etag"), Some(tag.as_str()));
    let since = send(addr, "GET", "/d", &[("if-modified-since", &modified)], "").await;
    assert_eq!(since.status, 304);

    let stale = send(
        addr,
        "PUT",
        "/d",
        &[JSON, ("if-match", "\"stale\"")],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(stale.status, 412);
    let weak = send(addr, "DELETE", "/d", &[("if-match", &format!("W/{tag}"))], "").await;
    assert_eq!(weak.status, 412, "If-Match compares strongly");
    let star = send(addr, "PUT", "/missing", &[JSON, ("if-match", "*")], "{}").await;
    assert_eq!(star.status, 412);
    assert_eq!(upstream.doc("/d").unwrap(), r#"{"a":1}"#);
    assert!(upstream.doc("/missing").is_none());

    let ok = send(
        addr,
        "PUT",
        "/d",
        &[JSON, ("if-match", &format!("\"x\", {tag}"))],
        r#"{"a":2}"#,
    )
    .await;
    assert_eq!(ok.status, 200);
    let new_tag = ok.header("etag").unwrap().to_owned();
    assert_ne!(new_tag, tag);
    assert_eq!(get(addr, "/d").await.header("etag"), Some(new_tag.as_str()));

    upstream.set_etag_style(EtagStyle::Weak);
    assert_eq!(
        get(addr, "/d").await.header("etag"),
        Some(format!("W/{new_tag}").as_str())
    );
    let refused = send(addr, "PUT", "/d", &[JSON, ("if-match", &new_tag)], r#"{"a":3}"#).await;
    assert_eq!(refused.status, 412, "no strong tag to match");
}

#[tokio::test]
async fn chunked_bodies_normalization_extra_headers_and_raw_exchanges() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    let chunks = vec![
        Bytes::from_static(b"{\"b\": 1,"),
        Bytes::from_static(b" \"a\": 2}"),
    ];
    let got = send_chunked(addr, "PUT", "/c", &[JSON], chunks).await;
    assert_eq!(got.status, 201);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(seen.headers.get("content-length").is_none());
    assert_eq!(upstream.doc("/c").unwrap(), r#"{"b": 1, "a": 2}"#);

    upstream.set_normalize_on_put(true);
    let got = send(addr, "PUT", "/c", &[JSON], r#"{"b": 1, "a": 3}"#).await;
    assert_eq!(got.text(), r#"{"a":3,"b":1,"normalized":true}"#);
    assert_eq!(upstream.doc("/c").unwrap(), r#"{"a":3,"b":1,"normalized":true}"#);

    upstream.set_extra_header("cache-control", "no-store");
    upstream.set_extra_header("vary", "accept-language");
    let got = get(addr, "/c").await;
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert_eq!(got.header("vary"), Some("accept-language"));

    let response = raw(
        addr,
        b"GET /c HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&response), Some(200));
    assert!(String::from_utf8_lossy(&response).ends_with(r#"{"a":3,"b":1,"normalized":true}"#));
    assert_eq!(raw_status(b"HTTP/1.1 404 Not Found\r\n\r\n"), Some(404));
    assert_eq!(raw_status(b"garbage"), None);
    assert_eq!(raw_status(b""), None);
}

#[tokio::test]
async fn per_requester_bodies_and_extra_headers_on_304s() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    upstream.set_doc("/d", r#"{"a":1}"#);
    upstream.set_etag_style(EtagStyle::Strong);
    upstream.set_body_per("x-user");
    let alice = send(addr, "GET", "/d", &[("x-user", "alice")], "").await;
    let bob = send(addr, "GET", "/d", &[("x-user", "bob")], "").await;
    assert_eq!(alice.text(), r#"{"x-user":"alice"}"#);
    assert_eq!(bob.text(), r#"{"x-user":"bob"}"#);
    assert_ne!(alice.header("etag"), bob.header("etag"));

    let tag = alice.header("etag").unwrap().to_owned();
    upstream.set_extra_header("test-header", "B");
    upstream.set_extra_header("etag", "\"renamed\"");
    let revalidated = send(
        addr,
        "GET",
        "/d",
        &[("x-user", "alice"), ("if-none-match", &tag)],
        "",
    )
    .await;
    assert_eq!(
        revalidated.status, 304,
        "If-None-Match still compares with the body's tag"
    );
    assert_eq!(revalidated.header("test-header"), Some("B"));
    assert_eq!(revalidated.header("etag"), Some("\"renamed\""));
    upstream.remove_extra_header("test-header");
    assert_eq!(get(addr, "/d").await.header("test-header"), None);
}

#[tokio::test]
async fn h2c_delays_and_many_concurrent_connections() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    upstream.set_doc("/h", r#"{"h2":true}"#);
    let got = send_h2(addr, "GET", "/h", &[("x-test", "1")], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"h2":true}"#);
    assert_eq!(upstream.requests()[0].headers["x-test"], "1");

    upstream.set_delay(Duration::from_millis(100));
    let tasks: Vec<_> = (0..100)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/h?{i}")).await }))
        .collect();
    for task in tasks {
        let got = task.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), r#"{"h2":true}"#);
    }
    assert_eq!(upstream.count(&Method::GET, "/h"), 101);
    upstream.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_delayed_write_whose_client_left_lands_only_when_told_to_outlive_it() {
    let upstream = LegacyUpstream::start().await;
    let addr = upstream.addr();
    upstream.set_doc("/d", "0");
    upstream.set_write_delay(Duration::from_millis(300));
    let put = |body: &'static str| {
        format!(
            "PUT /d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n{body}"
        )
    };
    // The client gives up (closes) after 100 ms, before the write's delay has passed.
    raw(addr, put("1").as_bytes(), Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.doc("/d").unwrap(), "0", "dropped with its connection");

    upstream.set_writes_outlive_connections(true);
    raw(addr, put("2").as_bytes(), Duration::from_millis(100)).await;
    assert_eq!(upstream.doc("/d").unwrap(), "0", "not before its delay");
    assert!(eventually(Duration::from_secs(2), || upstream.doc("/d").unwrap() == "2").await);
    assert_eq!(upstream.writes().len(), 2);
}
