//! Limits that keep one client or one upstream from holding up the others: the
//! header-read timeout against clients that trickle their request head, and routes whose
//! upstreams are independent of each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::*;

/// How a trickling connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The server closed (EOF) or reset the connection; what it sent before, if anything.
    Disconnected(Vec<u8>),
}

/// Connects and sends `head` one byte at a time, `gap` apart, while reading; returns when
/// the server closes or resets the connection. `started` fires once the first byte is
/// out. Panics if the server still holds the connection after `bound`.
async fn trickle(
    addr: std::net::SocketAddr,
    head: &'static [u8],
    gap: Duration,
    bound: Duration,
    started: oneshot::Sender<()>,
) -> Ended {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = async move {
        let mut started = Some(started);
        for byte in head {
            if wr.write_all(std::slice::from_ref(byte)).await.is_err() {
                break;
            }
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(gap).await;
        }
        // The whole head went out: the server did not cut the connection in time.
        std::future::pending::<()>().await;
    };
    let reader = async move {
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return Ended::Disconnected(received),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let ended = async {
        tokio::select! {
            ended = reader => ended,
            () = writer => unreachable!(),
        }
    };
    tokio::time::timeout(bound, ended)
        .await
        .unwrap_or_else(|_| panic!("the server still held a trickling connection after {bound:?}"))
}

#[tokio::test]
async fn a_client_trickling_headers_past_header_read_timeout_is_disconnected_while_others_are_served() {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc("/api/x", r#"{"ok":true}"#);
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", "header_read_timeout = \"1s\"")).await;

    // 64 bytes 250 ms apart would take 16 s: far past the 1 s timeout.
    const HEAD: &[u8] = b"GET /api/x HTTP/1.1\r\nHost: patchgate.test\r\nX-Slow: aaaaaaaaaaaaaa\r\n\r\n";
    let (started_tx, started) = oneshot::channel();
    let slow = tokio::spawn(trickle(
        proxy.addr,
        HEAD,
        Duration::from_millis(250),
        Duration::from_secs(10),
        started_tx,
    ));
    started.await.expect("the trickler started");

    // While the trickler holds its connection, others are served.
    for _ in 0..5 {
        let got = get(proxy.addr, "/api/x").await;
        assert_eq!(
            (got.status.as_u16(), got.text().as_str()),
            (200, r#"{"ok":true}"#)
        );
    }
    assert!(
        !slow.is_finished(),
        "the trickler was cut before the others were served"
    );

    let Ended::Disconnected(received) = slow.await.expect("trickler task");
    assert!(
        received.is_empty() || raw_status(&received) == Some(408),
        "{}",
        String::from_utf8_lossy(&received)
    );
    // The trickled request never reached the upstream.
    assert_eq!(upstream.requests().len(), 5);
}

#[tokio::test]
async fn a_slow_upstream_on_one_route_does_not_slow_another_route() {
    let slow = LegacyUpstream::start().await;
    let fast = LegacyUpstream::start().await;
    slow.set_doc("/slow/doc", r#"{"route":"slow"}"#);
    fast.set_doc("/fast/doc", r#"{"route":"fast"}"#);
    slow.set_delay(Duration::from_secs(2));
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout = "10s"

[[route]]
name = "slow"
path = "/slow/{{*rest}}"
upstream = "{}"

[[route]]
name = "fast"
path = "/fast/{{*rest}}"
upstream = "{}"
"#,
        slow.url(),
        fast.url()
    );
    let proxy = TestProxy::start(&toml).await;

    const SLOW: usize = 32;
    let slow_done = Arc::new(AtomicUsize::new(0));
    let mut in_flight = Vec::new();
    for i in 0..SLOW {
        let done = Arc::clone(&slow_done);
        let addr = proxy.addr;
        in_flight.push(tokio::spawn(async move {
            // Different clients: identical reads would share one upstream exchange.
            let client = i.to_string();
            let got = send(addr, "GET", "/slow/doc", &[("x-client", &client)], "").await;
            done.fetch_add(1, Ordering::SeqCst);
            got
        }));
    }
    // Every slow request is held by the slow upstream before the fast ones start.
    assert!(
        eventually(Duration::from_secs(10), || slow.requests().len() == SLOW).await,
        "the slow upstream received {} of {SLOW} requests",
        slow.requests().len()
    );

    for i in 0..10 {
        let got = get(proxy.addr, "/fast/doc").await;
        assert_eq!(
            (got.status.as_u16(), got.text().as_str()),
            (200, r#"{"route":"fast"}"#)
        );
        assert_eq!(
            slow_done.load(Ordering::SeqCst),
            0,
            "fast request {i} waited for a slow one"
        );
    }

    for task in in_flight {
        let got = task.await.expect("slow request task");
        assert_eq!(
            (got.status.as_u16(), got.text().as_str()),
            (200, r#"{"route":"slow"}"#)
        );
    }
    assert_eq!(fast.requests().len(), 10);
}

/// hyper's own header-read timeout starts only once HTTP/1 is chosen; the listener's
/// first-request deadline covers a client that sends nothing or only the h2 preface.
#[tokio::test]
async fn a_silent_connection_is_disconnected_after_header_read_timeout() {
    let upstream = LegacyUpstream::start().await;
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", "header_read_timeout = \"1s\"")).await;
    let silent: [(&str, &[u8]); 3] = [
        ("nothing", b""),
        ("part of the h2 preface", b"PRI * HTTP/2.0\r\n"),
        ("the whole h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ];
    for (name, head) in silent {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream.write_all(head).await.expect("send");
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{name}: still connected after 10 s");
    }
    assert!(upstream.requests().is_empty());
}
