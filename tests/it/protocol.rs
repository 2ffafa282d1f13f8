//! Small protocol gaps: clients that half-close after their request, request bodies that
//! trickle, the forwarded host taken from the request's authority, and stored documents
//! with repeated member names.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::tls::*;
use crate::support::*;

const DOC: &str = r#"{"id":1,"name":"Ada"}"#;

/// Writes `request`, shuts down the sending side (`nc -N`), and reads until the server
/// closes; a reset ends the read too.
async fn half_closed<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> String {
    let work = async {
        stream.write_all(request).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&received).into_owned()
    };
    tokio::time::timeout(CLIENT_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| panic!("half-closed {:?}: no close", String::from_utf8_lossy(request)))
}

fn half_close_cases() -> [(&'static str, &'static [u8], u16, &'static str); 3] {
    [
        (
            "a read",
            b"GET /api/doc HTTP/1.1\r\nHost: patchgate.test\r\n\r\n",
            200,
            DOC,
        ),
        (
            "a write",
            b"PUT /api/doc HTTP/1.1\r\nHost: patchgate.test\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"id\":1,\"name\":\"Eve\"}",
            200,
            r#"{"id":1,"name":"Eve"}"#,
        ),
        (
            "a request patchgate refuses",
            b"GET /api/doc HTTP/1.1\r\n\r\n",
            400,
            r#""status":400"#,
        ),
    ]
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_answer_over_tcp_and_tls() {
    let upstream = LegacyUpstream::start().await;
    let dir = scratch_dir("half-close");
    let ca = TestCa::new("half-close CA");
    let (cert, key) = ca.leaf("patchgate half-close").write(&dir);
    let plain = TestProxy::in_front_of(&upstream, "").await;
    let tls = TestProxy::start(&one_route(&upstream.url(), "", &server_tls(&cert, &key))).await;
    for transport in ["tcp", "tls"] {
        for (name, request, status, body) in half_close_cases() {
            upstream.set_doc("/api/doc", DOC);
            let got = match transport {
                "tcp" => half_closed(TcpStream::connect(plain.addr).await.unwrap(), request).await,
                _ => half_closed(tls_stream(tls.addr, &ca.der(), &[HTTP11]).await, request).await,
            };
            assert_eq!(
                raw_status(got.as_bytes()),
                Some(status),
                "{transport}, {name}: {got:?}"
            );
            assert!(got.contains(body), "{transport}, {name}: {got:?}");
        }
    }
}

/// Sends `head` and then its body one byte every 50 ms on another task, and returns the
/// response read meanwhile, up to the server's close.
async fn trickle(addr: SocketAddr, head: &str, body_len: usize) -> String {
    let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..body_len {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    sender.abort();
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(
        read.is_ok(),
        "{head:?}: no close within {CLIENT_TIMEOUT:?}; got {text:?}"
    );
    text
}

#[tokio::test]
async fn a_request_body_that_trickles_past_body_read_timeout_gets_408_and_writes_nothing() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/doc", DOC);
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", "body_read_timeout = \"300ms\"")).await;
    // 200 bytes at one per 50 ms would take 10 s.
    for (method, path) in [("PUT", "/api/doc"), ("PATCH", "/api/doc"), ("POST", "/api/list")] {
        let content_type = match method {
            "PATCH" => "application/merge-patch+json",
            _ => "application/json",
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: patchgate.test\r\nContent-Type: {content_type}\r\n\
             Content-Length: 200\r\n\r\n"
        );
        let got = trickle(proxy.addr, &head, 200).await;
        assert_eq!(raw_status(got.as_bytes()), Some(408), "{method}: {got:?}");
        let lower = got.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/problem+json") && lower.contains("connection: close"),
            "{method}: {got:?}"
        );
        assert!(got.contains("server.body_read_timeout"), "{method}: {got:?}");
    }
    assert!(upstream.writes().is_empty(), "{:?}", upstream.writes());
    assert_eq!(upstream.doc("/api/doc").unwrap(), DOC);
    // The streamed POST reached the upstream as a body that broke off, never as a write.
    assert!(eventually(CLIENT_TIMEOUT, || upstream.aborted() == 1).await);
}

/// The `x-forwarded-host` and `forwarded` values of every upstream request since `from`.
fn forwarded_hosts(upstream: &LegacyUpstream, from: usize) -> Vec<(String, String, String)> {
    upstream.requests()[from..]
        .iter()
        .map(|r| {
            let value = |name: &str| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            (
                r.method.to_string(),
                value("x-forwarded-host"),
                value("forwarded"),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_forwarded_host_is_the_requests_authority_not_a_conflicting_host() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/doc", DOC);
    let proxy = TestProxy::in_front_of(&upstream, "").await;

    // RFC 9112 §3.2.2: an absolute-form target's authority wins over Host, for a
    // streamed read and for the read and write patchgate makes for a PATCH.
    let absolute = [
        "GET http://public.example/api/doc HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n"
            .to_owned(),
        format!(
            "PATCH http://public.example/api/doc HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\
             Content-Type: application/merge-patch+json\r\nContent-Length: 14\r\n\r\n{}",
            r#"{"name":"Eve"}"#
        ),
    ];
    for request in absolute {
        let from = upstream.requests().len();
        let got = raw(proxy.addr, request.as_bytes(), CLIENT_TIMEOUT).await;
        assert_eq!(raw_status(&got), Some(200), "{}", String::from_utf8_lossy(&got));
        let seen = forwarded_hosts(&upstream, from);
        assert!(!seen.is_empty());
        for (method, xfh, forwarded) in seen {
            assert_eq!(xfh, "public.example", "{method} for {request:?}");
            assert!(
                forwarded.ends_with(";host=\"public.example\""),
                "{method}: {forwarded}"
            );
        }
    }

    // RFC 9113 §8.3.1: h2 carries the authority in :authority; a Host naming the same
    // entity is fine, another one makes the request malformed.
    let authority = proxy.addr.to_string();
    for host in [None, Some(authority.as_str())] {
        let from = upstream.requests().len();
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let got = send_h2(proxy.addr, "GET", "/api/doc", &headers, "").await;
        assert_eq!(got.status, 200, "host {host:?}: {}", got.text());
        let seen = forwarded_hosts(&upstream, from);
        assert_eq!(seen.len(), 1, "host {host:?}");
        assert_eq!(seen[0].1, authority, "host {host:?}");
    }
    let from = upstream.requests().len();
    for method in ["GET", "PUT"] {
        let got = send_h2(proxy.addr, method, "/api/doc", &[("host", "evil.example")], "{}").await;
        assert_eq!(got.status, 400, "{method}: {}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
    }
    assert_eq!(
        upstream.requests().len(),
        from,
        "a malformed request reached the upstream"
    );
}

#[tokio::test]
async fn a_patch_of_a_document_with_a_repeated_member_gets_422_naming_it_and_writes_nothing() {
    let upstream = LegacyUpstream::start().await;
    let stored = r#"{"id":1,"tags":[{"name":"Ada","name":"Eve"}]}"#;
    upstream.set_doc("/api/doc", stored);
    let proxy = TestProxy::in_front_of(&upstream, "").await;
    for (content_type, patch) in [
        ("application/merge-patch+json", r#"{"id":2}"#),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/id","value":2}]"#,
        ),
    ] {
        let got = send(
            proxy.addr,
            "PATCH",
            "/api/doc",
            &[("content-type", content_type)],
            patch,
        )
        .await;
        assert_eq!(got.status, 422, "{content_type}: {}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
        let problem = got.json();
        assert_eq!(problem["member"], "name", "{problem}");
        assert_eq!(problem["path"], "/tags/0/name", "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("\"name\""),
            "{problem}"
        );
    }
    assert!(upstream.writes().is_empty(), "{:?}", upstream.writes());
    assert_eq!(upstream.doc("/api/doc").unwrap(), stored);
}
