//! The change feed (`route.changes = true`): every write patchgate confirmed on a route,
//! as server-sent events on the admin listener's `GET /changes?route=NAME&since=SEQ`.
//!
//! Per route: a sequence (the first event is 1), a ring of the last [`KEPT`] events, and a
//! bounded broadcast channel of [`LIVE`] events for the streams that follow it live.
//!
//! Invariants:
//! - An event is numbered, kept and broadcast under one lock, and a stream takes its
//!   replay from the ring and subscribes under the same lock: what it sends is every event
//!   after its starting point, in order, with no gap and no repeat.
//! - Publishing never waits for a reader: the broadcast channel overwrites what a slow
//!   stream has not taken, and that stream ends (its client resumes with `Last-Event-ID`,
//!   from the ring or with 410).
//! - An event carries ETags and a JSON Patch from the old version to the new, never a
//!   whole document: `patch` is `null` when either version is unknown or not JSON.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::broadcast;

use crate::body::{self, Body, BoxError};
use crate::cache::Entry;
use crate::config::Route;
use crate::patch::Document;

/// Events kept per route for `since` and `Last-Event-ID`; older ones answer 410.
pub const KEPT: usize = 1024;
/// Events a live stream may fall behind before it is cut.
pub const LIVE: usize = 256;
/// A comment line sent on an idle stream, so that proxies and clients keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// One published event: its number and its rendered SSE text.
#[derive(Clone)]
struct Change {
    seq: u64,
    text: Bytes,
}

struct Kept {
    /// The last sequence number given; 0 before the first event.
    last: u64,
    ring: VecDeque<Change>,
}

struct RouteFeed {
    kept: Mutex<Kept>,
    live: broadcast::Sender<Change>,
}

impl RouteFeed {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding it leaves a consistent ring: every change is one push.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The feeds of the routes with `changes = true`, by route name: a reload keeps a
/// route's sequence and ring while its name keeps `changes = true`.
pub struct Feed {
    // A std lock: taken to find or replace a route's feed, never across an `.await`.
    routes: RwLock<HashMap<String, Arc<RouteFeed>>>,
}

/// Why a stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No route of that name, or one without `changes = true`.
    NoFeed,
    /// The starting point is before the oldest kept event, or after the last one.
    Gone { oldest: Option<u64>, last: u64 },
    /// `[cluster]`: the shared feed is in Redis, which did not answer (why, no URL).
    Unreachable(String),
}

/// An opened stream: the kept events to replay, then the live ones.
pub struct Subscription {
    replay: Vec<Bytes>,
    live: broadcast::Receiver<Change>,
}

impl Feed {
    pub fn new(routes: &[Route]) -> Feed {
        let feed = Feed {
            routes: RwLock::default(),
        };
        feed.configure(routes);
        feed
    }

    /// Feeds for exactly the routes with `changes = true` (a reload): the ones that had
    /// one keep it; streams of a route that lost it end.
    pub fn configure(&self, routes: &[Route]) {
        let mut feeds = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let mut kept = HashMap::new();
        for route in routes.iter().filter(|route| route.changes) {
            let feed = feeds.remove(&route.name).unwrap_or_else(|| {
                Arc::new(RouteFeed {
                    kept: Mutex::new(Kept {
                        last: 0,
                        ring: VecDeque::new(),
                    }),
                    live: broadcast::channel(LIVE).0,
                })
            });
            kept.insert(route.name.clone(), feed);
        }
        *feeds = kept;
    }

    /// True when the route publishes its writes.
    pub fn enabled(&self, route: &str) -> bool {
        self.route(route).is_some()
    }

    fn route(&self, route: &str) -> Option<Arc<RouteFeed>> {
        let feeds = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        feeds.get(route).cloned()
    }

    /// Records one confirmed upstream write of `path`: `old` is the representation it
    /// replaced (`None`: unknown or missing), `new` the one it made (`None`: deleted).
    pub fn publish(&self, route: &str, path: &str, old: Option<&Entry>, new: Option<&Entry>) {
        if let Some(tail) = self.prepare(route, path, old, new) {
            self.publish_prepared(route, &tail);
        }
    }

    /// The event's JSON after its `"seq":N` member (`,"path":…}`), or `None` when the
    /// route has no feed. The diff is the costly part: done outside any lock.
    pub(crate) fn prepare(
        &self,
        route: &str,
        path: &str,
        old: Option<&Entry>,
        new: Option<&Entry>,
    ) -> Option<Vec<u8>> {
        self.route(route)?;
        let patch = match (old, new) {
            (Some(old), Some(new)) => json_patch(old.body_bytes(), new.body_bytes()),
            _ => None,
        };
        let old_etag = old.map(|e| e.etag().to_string());
        let new_etag = new.map(|e| e.etag().to_string());
        Some(tail(
            path,
            old_etag.as_deref(),
            new_etag.as_deref(),
            patch.as_deref(),
        ))
    }

    /// Numbers, keeps and broadcasts one prepared event in this instance's ring.
    fn publish_prepared(&self, route: &str, tail: &[u8]) {
        let Some(feed) = self.route(route) else {
            return;
        };
        let mut kept = feed.lock();
        let seq = kept.last + 1;
        kept.last = seq;
        let change = Change {
            seq,
            text: render(seq, tail),
        };
        if kept.ring.len() >= KEPT {
            kept.ring.pop_front();
        }
        kept.ring.push_back(change.clone());
        // No receiver is no error: nobody follows the feed right now.
        let _ = feed.live.send(change);
    }

    /// Whether `route` names a route with a feed.
    pub(crate) fn has(&self, route: &str) -> bool {
        self.enabled(route)
    }

    /// Opens a stream of `route`'s events after `since` (`None`: only new ones).
    pub fn subscribe(&self, route: &str, since: Option<u64>) -> Result<Subscription, Refusal> {
        let feed = self.route(route).ok_or(Refusal::NoFeed)?;
        let kept = feed.lock();
        let replay = match since {
            None => Vec::new(),
            Some(since) => {
                let oldest = kept.ring.front().map(|c| c.seq);
                // Events after `since` were dropped from the ring, or `since` was never
                // given (a client of an earlier run of this process).
                let dropped = since.saturating_add(1) < oldest.unwrap_or(kept.last + 1);
                if dropped || since > kept.last {
                    return Err(Refusal::Gone {
                        oldest,
                        last: kept.last,
                    });
                }
                kept.ring
                    .iter()
                    .filter(|c| c.seq > since)
                    .map(|c| c.text.clone())
                    .collect()
            }
        };
        Ok(Subscription {
            replay,
            live: feed.live.subscribe(),
        })
    }
}

/// The RFC 6902 patch from `old` to `new`, when both are JSON documents.
fn json_patch(old: &[u8], new: &[u8]) -> Option<Bytes> {
    let old = Document::parse(old).ok()?;
    let new = Document::parse(new).ok()?;
    Some(crate::patch::diff(&old, &new).json_patch())
}

/// The event's JSON after `{"seq":N`: `,"path":…,"patch":…}`. The patch is compact JSON
/// already (no line break), inserted as it is.
fn tail(path: &str, old_etag: Option<&str>, new_etag: Option<&str>, patch: Option<&[u8]>) -> Vec<u8> {
    let string = |s: Option<&str>| serde_json::to_string(&s).unwrap_or_else(|_| "null".to_owned());
    let mut out = Vec::with_capacity(64 + path.len() + patch.map_or(0, <[u8]>::len));
    out.extend_from_slice(
        format!(
            ",\"path\":{},\"old_etag\":{},\"new_etag\":{},\"patch\":",
            string(Some(path)),
            string(old_etag),
            string(new_etag)
        )
        .as_bytes(),
    );
    out.extend_from_slice(patch.unwrap_or(b"null"));
    out.push(b'}');
    out
}

/// One SSE event: `id`, `event: change` and one line of JSON, `{"seq":N` then `tail`.
pub(crate) fn render(seq: u64, tail: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(48 + tail.len());
    out.extend_from_slice(format!("id: {seq}\nevent: change\ndata: {{\"seq\":{seq}").as_bytes());
    out.extend_from_slice(tail);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Subscription {
    /// The `text/event-stream` response: the replay, then live events and heartbeats until
    /// the stream falls [`LIVE`] events behind or the feed goes away.
    pub fn into_response(self) -> Response<Body> {
        let Subscription { replay, live } = self;
        let start = tokio::time::Instant::now() + HEARTBEAT;
        let mut heartbeat = tokio::time::interval_at(start, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let follow =
            futures_util::stream::unfold((live, heartbeat), |(mut live, mut heartbeat)| async move {
                let text = tokio::select! {
                    received = live.recv() => match received {
                        Ok(change) => change.text,
                        // Lagged: cut, so that the client resumes from the ring without a gap.
                        Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                            return None;
                        }
                    },
                    _ = heartbeat.tick() => Bytes::from_static(b": keep-alive\n\n"),
                };
                Some((text, (live, heartbeat)))
            });
        event_stream(futures_util::stream::iter(replay).chain(follow))
    }
}

/// `GET /changes?route=NAME&since=SEQ` (or `Last-Event-ID`, which wins over `since`), from
/// this instance's ring.
pub fn respond(feed: &Feed, query: Option<&str>, last_event_id: Option<&HeaderValue>) -> Response<Body> {
    let (route, start) = match request(query, last_event_id) {
        Ok(request) => request,
        Err(detail) => return bad_request(detail),
    };
    match feed.subscribe(route, start) {
        Ok(subscription) => subscription.into_response(),
        Err(refusal) => refused(&refusal),
    }
}

/// The `400` of a `/changes` request [`request`] refused.
pub(crate) fn bad_request(detail: &str) -> Response<Body> {
    problem(StatusCode::BAD_REQUEST, "bad-feed-request", detail)
}

/// The route and the starting point a `/changes` request names, or why it is a `400`.
pub(crate) fn request<'a>(
    query: Option<&'a str>,
    last_event_id: Option<&HeaderValue>,
) -> Result<(&'a str, Option<u64>), &'static str> {
    let mut route = None;
    let mut since = None;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("route", value)) if route.is_none() => route = Some(value),
            Some(("since", value)) if since.is_none() => since = Some(value),
            _ => {}
        }
    }
    let Some(route) = route else {
        return Err("the query needs route=NAME");
    };
    // A reconnecting client resumes from the last event it saw, whatever its URL says.
    let resume = last_event_id
        .map(|v| v.to_str().map(str::trim).unwrap_or("x"))
        .filter(|v| !v.is_empty());
    let start = match resume.or(since) {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(seq) => Some(seq),
            Err(_) => {
                return Err("since and Last-Event-ID must be a sequence number (0 or more)");
            }
        },
    };
    Ok((route, start))
}

/// The answer to a stream that was not opened.
pub(crate) fn refused(refusal: &Refusal) -> Response<Body> {
    match refusal {
        Refusal::NoFeed => problem(
            StatusCode::NOT_FOUND,
            "no-feed",
            "no route of that name has changes = true",
        ),
        Refusal::Gone { oldest, last } => {
            let detail = match oldest {
                Some(oldest) => format!(
                    "events after that sequence number are no longer kept (kept: {oldest} to {last}); \
                     read the resources again and follow the feed without since"
                ),
                None => format!(
                    "this feed has published {last} events since patchgate started; read the \
                     resources again and follow the feed without since"
                ),
            };
            problem(StatusCode::GONE, "feed-gone", &detail)
        }
        Refusal::Unreachable(cause) => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let mut response = crate::problem::problem_response(
                status,
                &serde_json::json!({
                    "type": "https://patchgate.dev/problems/feed-unavailable",
                    "title": status.canonical_reason().unwrap_or("Error"),
                    "status": status.as_u16(),
                    "detail": "the change feed all instances share is in Redis, which did not answer; retry",
                    "cause": cause,
                }),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// A `text/event-stream` response of `texts`.
pub(crate) fn event_stream<S>(texts: S) -> Response<Body>
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    let frames = texts.map(|text| Ok::<_, BoxError>(Frame::data(text)));
    let mut response = Response::new(body::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn problem(status: StatusCode, kind: &str, detail: &str) -> Response<Body> {
    crate::problem::problem_response(
        status,
        &serde_json::json!({
            "type": format!("https://patchgate.dev/problems/{kind}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn feed() -> Feed {
        let config = Config::from_toml(
            "[[route]]\nname = \"a\"\npath = \"/a/{*rest}\"\nupstream = \"http://127.0.0.1:3000\"\n\
             changes = true\n\
             [[route]]\nname = \"b\"\npath = \"/b/{*rest}\"\nupstream = \"http://127.0.0.1:3000\"\n",
            "proxy.toml",
        )
        .unwrap();
        assert!(config.routes[0].describe().ends_with(" changes=true"));
        assert!(!config.routes[1].describe().contains("changes"));
        Feed::new(&config.routes)
    }

    fn entry(body: &str) -> Entry {
        let etag = crate::etag::EntityTag::from_body(body.as_bytes());
        Entry::new(body.as_bytes(), &etag, std::sync::Arc::default())
    }

    fn texts(subscription: &Subscription) -> Vec<String> {
        subscription
            .replay
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn events_are_numbered_kept_and_replayed_after_since() {
        let feed = feed();
        let (old, new) = (entry(r#"{"a":1}"#), entry(r#"{"a":2}"#));
        feed.publish("a", "/a/1", Some(&old), Some(&new));
        feed.publish("a", "/a/1", Some(&new), None);
        feed.publish("a", "/a/2", None, Some(&entry("not json")));
        feed.publish("b", "/b/1", None, Some(&new));
        let all = texts(&feed.subscribe("a", Some(0)).unwrap());
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            format!(
                "id: 1\nevent: change\ndata: {{\"seq\":1,\"path\":\"/a/1\",\"old_etag\":{},\"new_etag\":{},\
                 \"patch\":[{{\"op\":\"replace\",\"path\":\"/a\",\"value\":2}}]}}\n\n",
                serde_json::to_string(&old.etag().to_string()).unwrap(),
                serde_json::to_string(&new.etag().to_string()).unwrap(),
            )
        );
        assert!(all[1].contains("\"new_etag\":null,\"patch\":null}"), "{}", all[1]);
        assert!(all[2].starts_with("id: 3\n") && all[2].contains("\"old_etag\":null"));
        assert_eq!(texts(&feed.subscribe("a", Some(2)).unwrap()).len(), 1);
        assert!(texts(&feed.subscribe("a", Some(3)).unwrap()).is_empty());
        assert!(texts(&feed.subscribe("a", None).unwrap()).is_empty());
        assert!(matches!(feed.subscribe("a", Some(4)), Err(Refusal::Gone { .. })));
        assert!(matches!(feed.subscribe("b", None), Err(Refusal::NoFeed)));
        assert!(matches!(feed.subscribe("c", None), Err(Refusal::NoFeed)));
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_older_starts_are_gone() {
        let feed = feed();
        let doc = entry("{}");
        for _ in 0..KEPT + 5 {
            feed.publish("a", "/a/1", None, Some(&doc));
        }
        let last = u64::try_from(KEPT).unwrap() + 5;
        assert_eq!(
            feed.subscribe("a", Some(4)).err(),
            Some(Refusal::Gone {
                oldest: Some(6),
                last
            })
        );
        let from_oldest = texts(&feed.subscribe("a", Some(5)).unwrap());
        assert_eq!(from_oldest.len(), KEPT);
        assert!(from_oldest[0].starts_with("id: 6\n"));
    }

    #[tokio::test]
    async fn a_lagging_stream_ends_after_what_it_took() {
        use http_body_util::BodyExt as _;
        let feed = feed();
        let doc = entry("{}");
        let subscription = feed.subscribe("a", Some(0)).unwrap();
        for _ in 0..LIVE + 1 {
            feed.publish("a", "/a/1", None, Some(&doc));
        }
        // Publishing did not wait for it; it lagged, so its stream ends.
        let body = subscription.into_response().into_body().collect().await.unwrap();
        assert!(body.to_bytes().is_empty());
    }
}
