//! Pooled upstream connections: the upstream closing a keep-alive connection under the
//! proxy, and bytes arriving on an idle one.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

const DOCS: usize = 4;

fn doc_path(i: usize) -> String {
    format!("/api/docs/{}", i % DOCS)
}

async fn merge_patch(proxy: &TestProxy, i: usize) -> Response {
    send(
        proxy.addr,
        "PATCH",
        &doc_path(i),
        &[("content-type", "application/merge-patch+json")],
        format!(r#"{{"p{i}":{i}}}"#),
    )
    .await
}

/// Every PATCH answered 200, every one reached the upstream as exactly one PUT and its
/// member is in the final document.
fn assert_each_write_landed_once(upstream: &RawUpstream, statuses: &[(usize, u16, String)], total: usize) {
    let failed: Vec<_> = statuses.iter().filter(|(_, status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {total} PATCHes failed: {failed:?}",
        failed.len()
    );
    let puts: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), total, "one PUT per PATCH, none resent");
    let distinct: HashSet<_> = puts.iter().map(|r| r.body.clone()).collect();
    assert_eq!(distinct.len(), total, "no PUT body reached the upstream twice");
    for d in 0..DOCS {
        let doc = upstream.doc(&doc_path(d)).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        for i in (d..total).step_by(DOCS) {
            assert_eq!(doc[format!("p{i}")], i, "PATCH {i} in {}", doc_path(d));
        }
    }
}

async fn patch_storm(upstream: &RawUpstream, proxy: &TestProxy, sequential: usize, concurrent: usize) {
    let mut statuses = Vec::new();
    for i in 0..sequential {
        let got = merge_patch(proxy, i).await;
        statuses.push((i, got.status.as_u16(), got.text()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let addr = proxy.addr;
        tasks.spawn(async move {
            let proxy_addr = addr;
            let mut out = Vec::new();
            for i in (sequential + t..sequential + concurrent).step_by(8) {
                let got = send(
                    proxy_addr,
                    "PATCH",
                    &doc_path(i),
                    &[("content-type", "application/merge-patch+json")],
                    format!(r#"{{"p{i}":{i}}}"#),
                )
                .await;
                out.push((i, got.status.as_u16(), got.text()));
            }
            out
        });
    }
    while let Some(done) = tasks.join_next().await {
        statuses.extend(done.unwrap());
    }
    assert_each_write_landed_once(upstream, &statuses, sequential + concurrent);
}

async fn upstream_with_docs(mode: AfterAnswer) -> RawUpstream {
    let upstream = RawUpstream::start(mode).await;
    for d in 0..DOCS {
        upstream.set_doc(&doc_path(d), "{}");
    }
    upstream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_keep_alive_connections_after_each_answer_costs_no_write() {
    let upstream = upstream_with_docs(AfterAnswer::Close).await;
    let proxy = TestProxy::start(&one_route(&upstream.url(), "batch_patches = false", "")).await;
    patch_storm(&upstream, &proxy, 120, 80).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_a_short_keep_alive_timeout_costs_no_write() {
    let upstream = upstream_with_docs(AfterAnswer::CloseWhenIdle(Duration::from_millis(15))).await;
    let proxy = TestProxy::start(&one_route(&upstream.url(), "batch_patches = false", "")).await;
    let mut statuses = Vec::new();
    for i in 0..100 {
        // Pauses around the upstream's idle timeout, so that some requests meet a
        // connection the upstream is closing right then.
        tokio::time::sleep(Duration::from_millis(10 + (i % 4) as u64 * 3)).await;
        let got = merge_patch(&proxy, i).await;
        statuses.push((i, got.status.as_u16(), got.text()));
    }
    assert_each_write_landed_once(&upstream, &statuses, 100);
}

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
