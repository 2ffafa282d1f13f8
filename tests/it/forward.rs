//! Foundation: pass-through forwarding, limits, faults, routing safety, admin, shutdown.

use std::time::Duration;

use http::Method;

use crate::support::*;

#[tokio::test]
async fn every_method_passes_through_with_status_and_body_intact() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/people/1", r#"{"id":1,"name":"Ada"}"#);
    let proxy = TestProxy::in_front_of(&upstream, "").await;

    let got = get(proxy.addr, "/api/people/1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"id":1,"name":"Ada"}"#);
    assert_eq!(got.header("content-type"), Some("application/json"));

    let put = send(
        proxy.addr,
        "PUT",
        "/api/people/1",
        &[("content-type", "application/json")],
        r#"{"id":1,"name":"Ada L."}"#,
    )
    .await;
    assert_eq!(put.status, 200);
    assert_eq!(
        upstream.doc("/api/people/1").unwrap(),
        r#"{"id":1,"name":"Ada L."}"#
    );

    let created = send(
        proxy.addr,
        "PUT",
        "/api/people/9",
        &[("content-type", "application/json")],
        r#"{"id":9}"#,
    )
    .await;
    assert_eq!(created.status, 201);

    let posted = send(
        proxy.addr,
        "POST",
        "/api/people",
        &[("content-type", "application/json")],
        r#"{"name":"Grace"}"#,
    )
    .await;
    assert_eq!(posted.status, 201);
    assert!(posted.header("location").is_some());

    let deleted = send(proxy.addr, "DELETE", "/api/people/9", &[], "").await;
    assert_eq!(deleted.status, 204);
    assert!(upstream.doc("/api/people/9").is_none());

    let missing = get(proxy.addr, "/api/people/404").await;
    assert_eq!(missing.status, 404, "the upstream's own 404 passes through");
    assert_ne!(missing.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_added() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = send(
        proxy.addr,
        "GET",
        "/api/x",
        &[
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("upgrade", "websocket"),
            ("x-end-to-end", "kept"),
            ("host", "public.example"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &upstream.requests()[0];
    for name in ["x-hop", "keep-alive", "te", "proxy-authorization", "upgrade"] {
        assert!(seen.headers.get(name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers["host"], upstream.addr().to_string().as_str());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "public.example");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=http;host=\"public.example\""
    );
    assert_eq!(seen.headers["via"], "1.1 patchgate");
    assert_eq!(got.header("via"), Some("1.1 patchgate"));
}

#[tokio::test]
async fn hop_by_hop_headers_from_the_upstream_do_not_reach_the_client() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    upstream.set_extra_header("keep-alive", "timeout=99");
    upstream.set_extra_header("proxy-authenticate", "Basic");
    upstream.set_extra_header("x-kept", "1");
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("keep-alive"), None);
    assert_eq!(got.header("proxy-authenticate"), None);
    assert_eq!(got.header("x-kept"), Some("1"));
}

#[tokio::test]
async fn unmatched_path_gets_404_problem_json() {
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = get(proxy.addr, "/elsewhere").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let doc = got.json();
    assert_eq!(doc["status"], 404);
    assert_eq!(doc["title"], "Not Found");
    assert!(doc["type"].as_str().unwrap().ends_with("/no-route"));
    assert!(doc["detail"].is_string());
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn strip_prefix_and_first_match_in_file_order() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/people/1", r#"{"from":"stripped"}"#);
    upstream.set_doc("/api/special", r#"{"from":"second"}"#);
    let toml = format!(
        r#"
[[route]]
name = "people"
path = "/api/people/{{id}}"
upstream = "{u}"
strip_prefix = "/api"

[[route]]
name = "rest"
path = "/api/{{*rest}}"
upstream = "{u}"
"#,
        u = upstream.url()
    );
    let proxy = TestProxy::start(&toml).await;
    assert_eq!(
        get(proxy.addr, "/api/people/1").await.text(),
        r#"{"from":"stripped"}"#
    );
    assert_eq!(
        get(proxy.addr, "/api/special").await.text(),
        r#"{"from":"second"}"#
    );
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/people/1", "/api/special"]);
}

#[tokio::test]
async fn body_over_max_body_bytes_gets_413_with_content_length_and_chunked() {
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let big = vec![b'x'; 100 * 1024];
    let got = send(
        proxy.addr,
        "PUT",
        "/api/big",
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(got.status, 413);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["status"], 413);

    let chunks = (0..10)
        .map(|_| bytes::Bytes::from(vec![b'y'; 10 * 1024]))
        .collect();
    let got = send_chunked(
        proxy.addr,
        "POST",
        "/api/big",
        &[("content-type", "application/json")],
        chunks,
    )
    .await;
    assert_eq!(got.status, 413);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert!(
        upstream.writes().is_empty(),
        "no write may reach the upstream: {:?}",
        upstream.writes()
    );
    assert!(upstream.doc("/api/big").is_none());
}

#[tokio::test]
async fn chunked_body_within_the_limit_streams_through() {
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let chunks = vec![
        bytes::Bytes::from_static(b"{\"a\":"),
        bytes::Bytes::from_static(b"1}"),
    ];
    let got = send_chunked(
        proxy.addr,
        "PUT",
        "/api/c",
        &[("content-type", "application/json")],
        chunks,
    )
    .await;
    assert_eq!(got.status, 201);
    assert_eq!(upstream.doc("/api/c").unwrap(), "{\"a\":1}");
}

#[tokio::test]
async fn upstream_down_gets_502_problem_json() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = TestProxy::start(&one_route(&format!("http://{closed}"), "", "")).await;
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(got.status, 502);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["status"], 502);
}

#[tokio::test]
async fn upstream_closing_the_connection_gets_502() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    upstream.fail_next(1, Fault::Close);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(got.status, 502);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn upstream_500_passes_through_unchanged() {
    let upstream = LegacyUpstream::start().await;
    upstream.fail_next(1, Fault::Status(500));
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = get(proxy.addr, "/api/x").await;
    assert_eq!(got.status, 500);
    assert_ne!(got.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn upstream_hang_gets_504_after_request_timeout() {
    let upstream = LegacyUpstream::start().await;
    upstream.fail_next(1, Fault::Hang);
    let proxy = TestProxy::start(
        &one_route(&upstream.url(), "", "").replace("request_timeout = \"2s\"", "request_timeout = \"1s\""),
    )
    .await;
    let got = get(proxy.addr, "/api/slow").await;
    assert_eq!(got.status, 504);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["status"], 504);
}

#[tokio::test]
async fn path_traversal_attempts_get_400_and_never_reach_the_upstream() {
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    for target in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "/api/people/%2f..%2fadmin",
        "/api/a%2Fb",
        "/api/a%5c..%5cb",
        "/api/./x",
        "/api/%00",
        "/api/%zz",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = raw(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&response),
            Some(400),
            "{target}: {}",
            String::from_utf8_lossy(&response)
        );
        assert!(String::from_utf8_lossy(&response).contains("application/problem+json"));
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test]
async fn absolute_form_target_never_chooses_the_upstream_host() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"ok":true}"#);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let request =
        b"GET http://evil.example:1/api/x HTTP/1.1\r\nHost: evil.example:1\r\nConnection: close\r\n\r\n";
    let response = raw(proxy.addr, request, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), Some(200));
    assert!(String::from_utf8_lossy(&response).ends_with(r#"{"ok":true}"#));
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(
        upstream.requests()[0].headers["host"],
        upstream.addr().to_string().as_str()
    );
}

#[tokio::test]
async fn healthz_and_metrics_on_the_admin_listener() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    assert_eq!(get(proxy.addr, "/api/x").await.status, 200);
    assert_eq!(get(proxy.addr, "/nowhere").await.status, 404);

    let health = get(proxy.admin, "/healthz").await;
    assert_eq!(health.status, 200);
    let metrics = get(proxy.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains(r#"patchgate_requests_total{route="api",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"patchgate_requests_total{route="",method="GET",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"patchgate_upstream_latency_seconds_count{route="api"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE patchgate_upstream_latency_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("patchgate_in_flight_requests 0"), "{text}");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/slow", r#"{"slow":true}"#);
    upstream.set_delay(Duration::from_millis(500));
    let mut proxy = TestProxy::in_front_of(&upstream, "").await;
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/api/slow").await });
    assert!(
        eventually(Duration::from_secs(5), || upstream
            .count(&Method::GET, "/api/slow")
            == 1)
        .await
    );
    proxy.begin_stop();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"slow":true}"#);
    proxy.join().await.unwrap();
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn h2c_prior_knowledge_requests_are_served() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"h2":true}"#);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    let got = send_h2(proxy.addr, "GET", "/api/x", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), r#"{"h2":true}"#);
}

#[tokio::test]
async fn requests_beyond_max_in_flight_get_503_with_retry_after() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    upstream.set_delay(Duration::from_millis(700));
    let proxy = TestProxy::in_front_of(&upstream, "max_in_flight = 2").await;
    let addr = proxy.addr;
    // Different clients: identical reads would share one upstream exchange.
    let slow: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(async move {
                let client = i.to_string();
                send(addr, "GET", "/api/x", &[("x-client", &client)], "").await
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || upstream.count(&Method::GET, "/api/x")
            == 2)
        .await
    );
    let shed = get(proxy.addr, "/api/x").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(shed.header("content-type"), Some("application/problem+json"));
    assert_eq!(shed.json()["status"], 503);
    for task in slow {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert_eq!(get(proxy.addr, "/api/x").await.status, 200, "slots are released");
    assert_eq!(
        upstream.count(&Method::GET, "/api/x"),
        3,
        "the shed request never reached the upstream"
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", "{}");
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", "max_connections = 1")).await;

    let mut first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    first.write_all(request).await.unwrap();
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let addr = proxy.addr;
    let second = tokio::spawn(async move { get(addr, "/api/x").await });
    // While the first connection stays open, it is served and the second is not.
    for _ in 0..3 {
        first.write_all(request).await.unwrap();
        let n = first.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        assert!(!second.is_finished());
    }
    assert_eq!(upstream.count(&Method::GET, "/api/x"), 4);
    drop(first);
    assert_eq!(second.await.unwrap().status, 200);
}
