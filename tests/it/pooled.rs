//! Pooled upstream connections: bytes arriving on an idle one.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_behind_the_answer_is_never_taken_for_the_next_answer() {
    let upstream = RawUpstream::start(AfterAnswer::UnsolicitedWithAnswer).await;
    upstream.set_doc("/api/a", r#"{"doc":"a"}"#);
    upstream.set_doc("/api/b", r#"{"doc":"b"}"#);
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", "")).await;

    for round in 0..20 {
        let path = if round % 2 == 0 { "/api/a" } else { "/api/b" };
        let got = get(proxy.addr, path).await;
        assert_eq!(got.status, 200, "round {round}: {}", got.text());
        assert_ne!(got.text(), UNSOLICITED, "round {round}");
        assert_eq!(got.json()["doc"], &path[5..], "round {round}");
    }
    let connections: HashSet<_> = upstream.requests().iter().map(|r| r.connection).collect();
    assert_eq!(
        connections.len(),
        20,
        "a connection that sent extra bytes is never reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_on_an_idle_connection_closes_it() {
    let upstream = RawUpstream::start(AfterAnswer::UnsolicitedOnSignal).await;
    upstream.set_doc("/api/a", r#"{"doc":"a"}"#);
    upstream.set_doc("/api/b", r#"{"doc":"b"}"#);
    let proxy = TestProxy::start(&one_route(&upstream.url(), "", "")).await;

    let first = get(proxy.addr, "/api/a").await;
    assert_eq!(first.json()["doc"], "a");
    // The connection now idles in the proxy's pool; the upstream speaks out of turn.
    upstream.send_unsolicited();
    assert!(
        upstream
            .wait_for(Duration::from_secs(5), |u| u.closed_by_peer() >= 1)
            .await,
        "the proxy closes a pooled connection that received bytes while idle \
         (unsolicited responses sent: {})",
        upstream.unsolicited_sent()
    );

    let second = get(proxy.addr, "/api/b").await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.text(), r#"{"doc":"b"}"#, "the answer to its own request");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_ne!(requests[0].connection, requests[1].connection);
}
