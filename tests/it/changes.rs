//! The change feed (`route.changes = true`): confirmed writes as server-sent events on
//! the admin listener's `GET /changes`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::support::*;

const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");
const JSON: (&str, &str) = ("content-type", "application/json");
const DOC: &str = "/api/people/1";
/// How long a test waits for an event that should come.
const EVENT_TIMEOUT: Duration = Duration::from_secs(3);

async fn setup(route_extra: &str) -> (LegacyUpstream, TestProxy) {
    let upstream = LegacyUpstream::start().await;
    upstream.set_doc(DOC, r#"{"id":1,"name":"Ada","tags":["math"]}"#);
    let proxy = TestProxy::in_front_of(&upstream, route_extra).await;
    (upstream, proxy)
}

/// One parsed server-sent event.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) id: u64,
    pub(crate) data: Value,
}

/// An open `text/event-stream` response, read event by event.
pub(crate) struct Sse {
    body: Incoming,
    buffer: Vec<u8>,
}

impl Sse {
    /// `GET /changes?{query}` on the admin listener; panics unless it answers 200 with an
    /// event stream.
    pub(crate) async fn open(admin: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Sse {
        let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = Request::get(format!("/changes?{query}")).header("host", admin.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(
            EVENT_TIMEOUT,
            sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("no response head for /changes?{query}"))
        .unwrap();
        assert_eq!(response.status(), 200, "/changes?{query}");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        Sse {
            body: response.into_body(),
            buffer: Vec::new(),
        }
    }

    /// The next event (comments skipped); `None` when the stream ends or nothing comes
    /// within `timeout`.
    pub(crate) async fn next_within(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).unwrap();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    pub(crate) async fn next(&mut self) -> Event {
        self.next_within(EVENT_TIMEOUT)
            .await
            .expect("an event within the timeout")
    }
}

/// An SSE block as patchgate writes it: `id`, `event: change`, one `data` line.
fn parse(block: &str) -> Option<Event> {
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines() {
        match line.split_once(": ") {
            Some(("id", v)) => id = Some(v.parse().unwrap()),
            Some(("event", v)) => event = Some(v.to_owned()),
            Some(("data", v)) => {
                assert!(data.is_none(), "one data line: {block:?}");
                data = Some(serde_json::from_str::<Value>(v).unwrap());
            }
            _ if line.is_empty() || line.starts_with(':') => {}
            _ => panic!("unexpected line {line:?} in {block:?}"),
        }
    }
    let id = id?;
    assert_eq!(event.as_deref(), Some("change"), "{block:?}");
    let data = data.unwrap();
    assert_eq!(data["seq"], json!(id), "{block:?}");
    Some(Event { id, data })
}

fn etag(got: &Response) -> String {
    got.header("etag")
        .unwrap_or_else(|| panic!("no ETag: {got:?}"))
        .to_owned()
}

/// Applies an RFC 6902 patch with the json-patch crate (an independent implementation).
fn apply(base: &[u8], patch: &Value) -> Value {
    let mut doc: Value = serde_json::from_slice(base).unwrap();
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

#[tokio::test]
async fn confirmed_writes_are_streamed_with_their_etags_and_patches() {
    let (_upstream, proxy) = setup("changes = true").await;
    let mut sse = Sse::open(proxy.admin, "route=api", &[]).await;

    let before = get(proxy.addr, DOC).await;
    let patched = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"name":"Ada L."}"#).await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let event = sse.next().await;
    assert_eq!(event.id, 1);
    assert_eq!(event.data["path"], DOC);
    assert_eq!(event.data["old_etag"], json!(etag(&before)));
    assert_eq!(event.data["new_etag"], json!(etag(&patched)));
    assert_eq!(apply(&before.body, &event.data["patch"]), patched.json());

    // A PATCH that fails its precondition writes nothing and publishes nothing.
    let refused = send(
        proxy.addr,
        "PATCH",
        DOC,
        &[MERGE_PATCH, ("if-match", &etag(&before))],
        r#"{"name":"lost"}"#,
    )
    .await;
    assert_eq!(refused.status, 412, "{}", refused.text());

    let put_body = r#"{"id":1,"name":"Ada","tags":["math","poetry"]}"#;
    let put = send(
        proxy.addr,
        "PUT",
        DOC,
        &[JSON, ("if-match", &etag(&patched))],
        put_body,
    )
    .await;
    assert!(put.status.is_success(), "{}", put.text());
    let event = sse.next().await;
    assert_eq!(event.id, 2, "the refused PATCH made no event: {event:?}");
    assert_eq!(event.data["old_etag"], json!(etag(&patched)));
    assert_eq!(event.data["new_etag"], json!(etag(&put)));
    assert_eq!(
        apply(&patched.body, &event.data["patch"]),
        serde_json::from_str::<Value>(put_body).unwrap()
    );
    // The changes, not the document.
    assert_eq!(
        event.data["patch"],
        json!([
            {"op":"replace","path":"/name","value":"Ada"},
            {"op":"add","path":"/tags/1","value":"poetry"}
        ])
    );

    // A new resource: no old version, so no patch.
    let created = send(proxy.addr, "PUT", "/api/people/2", &[JSON], r#"{"id":2}"#).await;
    assert!(created.status.is_success(), "{}", created.text());
    let event = sse.next().await;
    assert_eq!(event.id, 3);
    assert_eq!(event.data["path"], "/api/people/2");
    assert_eq!(event.data["old_etag"], Value::Null);
    assert_eq!(event.data["new_etag"], json!(etag(&created)));
    assert_eq!(event.data["patch"], Value::Null);

    let deleted = send(proxy.addr, "DELETE", DOC, &[("if-match", &etag(&put))], "").await;
    assert!(deleted.status.is_success(), "{}", deleted.text());
    let event = sse.next().await;
    assert_eq!(event.id, 4);
    assert_eq!(event.data["path"], DOC);
    assert_eq!(event.data["old_etag"], json!(etag(&put)));
    assert_eq!(event.data["new_etag"], Value::Null);
    assert_eq!(event.data["patch"], Value::Null);

    // An unconditional PUT reads nothing first: the version it replaced is unknown.
    let blind = send(proxy.addr, "PUT", "/api/people/2", &[JSON], r#"{"id":2,"x":1}"#).await;
    assert!(blind.status.is_success(), "{}", blind.text());
    let event = sse.next().await;
    assert_eq!(event.id, 5);
    assert_eq!(event.data["old_etag"], Value::Null);
    assert_eq!(event.data["new_etag"], json!(etag(&blind)));
    assert_eq!(event.data["patch"], Value::Null);

    assert!(sse.next_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn since_replays_kept_events_and_last_event_id_resumes_without_a_gap() {
    let (_upstream, proxy) = setup("changes = true").await;
    for name in ["a", "b", "c"] {
        let got = send(
            proxy.addr,
            "PATCH",
            DOC,
            &[MERGE_PATCH],
            format!(r#"{{"name":"{name}"}}"#),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
    }

    let mut all = Sse::open(proxy.admin, "route=api&since=0", &[]).await;
    let names: Vec<_> = [all.next().await, all.next().await, all.next().await]
        .iter()
        .map(|e| (e.id, e.data["patch"][0]["value"].clone()))
        .collect();
    assert_eq!(names, [(1, json!("a")), (2, json!("b")), (3, json!("c"))]);

    // Replay, then live on the same stream.
    let mut tail = Sse::open(proxy.admin, "route=api&since=2", &[]).await;
    // Without `since`: only what comes next.
    let mut fresh = Sse::open(proxy.admin, "route=api", &[]).await;
    assert_eq!(tail.next().await.id, 3);
    let got = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"name":"d"}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(tail.next().await.id, 4);
    assert_eq!(fresh.next().await.id, 4);
    assert_eq!(all.next().await.id, 4);

    // A reconnecting client: Last-Event-ID wins over the URL's `since`.
    let mut resumed = Sse::open(proxy.admin, "route=api&since=3", &[("last-event-id", "1")]).await;
    let ids = [
        resumed.next().await.id,
        resumed.next().await.id,
        resumed.next().await.id,
    ];
    assert_eq!(ids, [2, 3, 4]);
    assert!(resumed.next_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn refusals_are_problems_and_a_start_no_longer_kept_is_gone() {
    let (upstream, proxy) = setup("changes = true").await;
    let problem = |got: &Response, status: u16| {
        assert_eq!(got.status, status, "{}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
        assert_eq!(got.json()["status"], json!(status));
    };
    problem(&get(proxy.admin, "/changes?route=nope").await, 404);
    problem(&get(proxy.admin, "/changes").await, 400);
    problem(&get(proxy.admin, "/changes?route=api&since=x").await, 400);
    problem(&get(proxy.admin, "/changes?route=api&since=-1").await, 400);
    problem(
        &send(
            proxy.admin,
            "GET",
            "/changes?route=api",
            &[("last-event-id", "x")],
            "",
        )
        .await,
        400,
    );
    // An id this feed never gave (a client of an earlier run): it cannot resume.
    problem(&get(proxy.admin, "/changes?route=api&since=1").await, 410);

    // More events than the ring keeps, written concurrently on several documents.
    let total = patchgate::feed::KEPT + 6;
    let writers = 8;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let addr = proxy.addr;
            let path = format!("/api/people/w{w}");
            upstream.set_doc(&path, "{}");
            tokio::spawn(async move {
                for i in (w..total).step_by(writers) {
                    let got = send(addr, "PUT", &path, &[JSON], format!(r#"{{"i":{i}}}"#)).await;
                    assert!(got.status.is_success(), "{}", got.text());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = u64::try_from(total).unwrap();
    let oldest = total - u64::try_from(patchgate::feed::KEPT).unwrap() + 1;
    let gone = get(proxy.admin, &format!("/changes?route=api&since={}", oldest - 2)).await;
    problem(&gone, 410);
    assert!(gone.json()["detail"].as_str().unwrap().contains("no longer kept"));
    let mut sse = Sse::open(proxy.admin, &format!("route=api&since={}", oldest - 1), &[]).await;
    assert_eq!(sse.next().await.id, oldest);
    let mut sse = Sse::open(proxy.admin, &format!("route=api&since={}", total - 1), &[]).await;
    assert_eq!(sse.next().await.id, total);
}

#[tokio::test]
async fn a_route_without_changes_has_no_feed() {
    let (_upstream, proxy) = setup("").await;
    let got = get(proxy.admin, "/changes?route=api").await;
    assert_eq!(got.status, 404, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let written = send(proxy.addr, "PATCH", DOC, &[MERGE_PATCH], r#"{"name":"x"}"#).await;
    assert_eq!(written.status, 200, "{}", written.text());
}
