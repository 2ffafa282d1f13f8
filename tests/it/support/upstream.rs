//! A real legacy JSON upstream for the integration tests: a hyper server on 127.0.0.1:0
//! that speaks only GET/HEAD/PUT/DELETE/POST over an in-memory document map, sends no
//! validators unless told to, records every request it receives and can be told to
//! misbehave (injected statuses, dropped connections, hangs, delays, rewritten bodies).
//!
//! Invariant: the state lock is a std mutex and is never held across an `.await`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

type Reply = http::Response<Full<Bytes>>;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// `path?query` exactly as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// A misbehaviour injected into the next requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with that status and a small JSON body.
    Status(u16),
    /// Drop the connection without answering (after reading the request).
    Close,
    /// Never answer (until the upstream is dropped).
    Hang,
}

/// Which ETags the upstream sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtagStyle {
    None,
    /// `"<hash of body>"`
    Strong,
    /// `W/"<hash of body>"`
    Weak,
}

/// The running legacy upstream; the server stops when this is dropped.
pub struct LegacyUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

struct Doc {
    body: Bytes,
    content_type: HeaderValue,
    modified: SystemTime,
}

struct State {
    docs: BTreeMap<String, Doc>,
    requests: Vec<Recorded>,
    fail_next: (usize, Fault),
    fail_writes: (usize, Fault),
    etag_style: EtagStyle,
    honour_if_match: bool,
    last_modified: bool,
    extra_headers: HeaderMap,
    normalize_on_put: bool,
    delay: Duration,
}

struct Shared {
    // A std mutex: nothing async happens while it is held.
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LegacyUpstream {
    /// Binds 127.0.0.1:0 and starts serving HTTP/1.1 and h2c with keep-alive.
    pub async fn start() -> LegacyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the legacy upstream");
        let addr = listener.local_addr().expect("upstream local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                docs: BTreeMap::new(),
                requests: Vec::new(),
                fail_next: (0, Fault::Close),
                fail_writes: (0, Fault::Close),
                etag_style: EtagStyle::None,
                honour_if_match: false,
                last_modified: false,
                extra_headers: HeaderMap::new(),
                normalize_on_put: false,
                delay: Duration::ZERO,
            }),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        LegacyUpstream {
            addr,
            shared,
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, drops every connection (hung requests included) and re-raises a
    /// panic of the server task, if any.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if let Err(e) = task.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }

    /// Writes a document directly, bypassing any proxy (another writer).
    pub fn set_doc(&self, path: &str, body: &str) {
        let doc = Doc {
            body: Bytes::copy_from_slice(body.as_bytes()),
            content_type: HeaderValue::from_static("application/json"),
            modified: now_seconds(),
        };
        self.shared.lock().docs.insert(path.to_owned(), doc);
    }

    pub fn doc(&self, path: &str) -> Option<Bytes> {
        self.shared.lock().docs.get(path).map(|d| d.body.clone())
    }

    /// Every request received, in the order their bodies were complete.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Only PUT/POST/DELETE/PATCH requests.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| is_write(&r.method))
            .collect()
    }

    /// How many `method` requests reached `path` (query ignored).
    pub fn count(&self, method: &Method, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == *method && r.path() == path)
            .count()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The next `n` requests, whatever their method, get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.shared.lock().fail_next = (n, fault);
    }

    /// The next `n` writes (PUT/POST/DELETE/PATCH) get `fault`; reads keep working.
    pub fn fail_writes(&self, n: usize, fault: Fault) {
        self.shared.lock().fail_writes = (n, fault);
    }

    pub fn set_etag_style(&self, style: EtagStyle) {
        self.shared.lock().etag_style = style;
    }

    /// PUT/DELETE/POST-to-a-document whose `If-Match` does not strong-match the current
    /// tag (or any `If-Match` on a missing document) get 412 and change nothing.
    pub fn set_honour_if_match(&self, on: bool) {
        self.shared.lock().honour_if_match = on;
    }

    /// Sends `Last-Modified` (per document, second resolution, bumped on each write) and
    /// then also answers `If-Modified-Since` with 304.
    pub fn set_last_modified(&self, on: bool) {
        self.shared.lock().last_modified = on;
    }

    /// Adds (or replaces) a header on every GET/HEAD response.
    pub fn set_extra_header(&self, name: &str, value: &str) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("extra header name");
        let value = HeaderValue::from_str(value).expect("extra header value");
        self.shared.lock().extra_headers.insert(name, value);
    }

    /// Stores PUT/POST bodies re-serialized: compact, with `"normalized":true` appended to
    /// an object (bodies that are not JSON are stored as received).
    pub fn set_normalize_on_put(&self, on: bool) {
        self.shared.lock().normalize_on_put = on;
    }

    /// Delays every response (faults included) by `d`, after the request is recorded.
    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }
}

impl Drop for LegacyUpstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Owns every connection task in a `JoinSet`, so aborting this task drops them all.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        while let Some(done) = connections.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let kill = Arc::new(Notify::new());
            let service = {
                let kill = kill.clone();
                service_fn(move |req| handle(shared.clone(), kill.clone(), req))
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // Dropping the connection future closes the socket without a response.
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
            }
        });
    }
}

async fn handle(shared: Arc<Shared>, kill: Arc<Notify>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let recorded = Recorded {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.to_string()),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    let (fault, delay) = {
        let mut state = shared.lock();
        state.requests.push(recorded);
        (state.take_fault(&parts.method), state.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = format!(r#"{{"error":"injected fault","status":{}}}"#, status.as_u16());
            Ok(reply(status).json(Bytes::from(body)))
        }
        Some(Fault::Close) => {
            kill.notify_one();
            std::future::pending().await
        }
        Some(Fault::Hang) => std::future::pending().await,
        None => Ok(shared.lock().answer(&parts, body)),
    }
}

fn is_write(method: &Method) -> bool {
    [Method::PUT, Method::POST, Method::DELETE, Method::PATCH].contains(method)
}

impl State {
    fn take_fault(&mut self, method: &Method) -> Option<Fault> {
        if self.fail_next.0 > 0 {
            self.fail_next.0 -= 1;
            return Some(self.fail_next.1);
        }
        if is_write(method) && self.fail_writes.0 > 0 {
            self.fail_writes.0 -= 1;
            return Some(self.fail_writes.1);
        }
        None
    }

    fn answer(&mut self, parts: &Parts, body: Bytes) -> Reply {
        let path = parts.uri.path();
        match parts.method {
            Method::GET | Method::HEAD => self.read(parts, path),
            Method::PUT => self.put(parts, path, body),
            Method::DELETE => self.delete(parts, path),
            Method::POST if self.docs.contains_key(path) => self.put(parts, path, body),
            Method::POST => self.post(parts, path, body),
            _ => reply(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, PUT, DELETE, POST")
                .json(r#"{"error":"method not allowed"}"#.into()),
        }
    }

    fn read(&self, parts: &Parts, path: &str) -> Reply {
        let (body, content_type, modified) = match self.docs.get(path) {
            Some(doc) => (doc.body.clone(), doc.content_type.clone(), Some(doc.modified)),
            None => match self.collection(path) {
                Some(listing) => listing,
                None => {
                    let mut r = reply(StatusCode::NOT_FOUND);
                    r.headers.extend(self.extra_headers.clone());
                    return r.json(r#"{"error":"not found"}"#.into());
                }
            },
        };
        let mut r = reply(StatusCode::OK);
        r.headers.extend(self.extra_headers.clone());
        self.validators(&mut r.headers, &body, modified);
        if self.not_modified(&parts.headers, &body, modified) {
            r.status = StatusCode::NOT_MODIFIED;
            return r.empty();
        }
        r.headers.insert(header::CONTENT_TYPE, content_type);
        if parts.method == Method::HEAD {
            r.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            return r.empty();
        }
        r.body(body)
    }

    /// Every document under `path/`, in path order, as one JSON array.
    fn collection(&self, path: &str) -> Option<(Bytes, HeaderValue, Option<SystemTime>)> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let children: Vec<&Doc> = self
            .docs
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, d)| d)
            .collect();
        if children.is_empty() {
            return None;
        }
        let mut body = b"[".to_vec();
        for (i, doc) in children.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&doc.body);
        }
        body.push(b']');
        let modified = children.iter().map(|d| d.modified).max();
        Some((
            body.into(),
            HeaderValue::from_static("application/json"),
            modified,
        ))
    }

    fn put(&mut self, parts: &Parts, path: &str, body: Bytes) -> Reply {
        if let Some(refused) = self.refuse_if_match(parts, path) {
            return refused;
        }
        let stored = self.store(parts, path.to_owned(), body);
        let mut r = reply(if stored.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        });
        let doc = &self.docs[path];
        self.validators(&mut r.headers, &doc.body, Some(doc.modified));
        if stored.is_none() {
            r.headers.insert(header::LOCATION, header_value(path));
            return r.empty();
        }
        r.headers.insert(header::CONTENT_TYPE, doc.content_type.clone());
        r.body(doc.body.clone())
    }

    fn delete(&mut self, parts: &Parts, path: &str) -> Reply {
        if let Some(refused) = self.refuse_if_match(parts, path) {
            return refused;
        }
        match self.docs.remove(path) {
            Some(_) => reply(StatusCode::NO_CONTENT).empty(),
            None => reply(StatusCode::NOT_FOUND).json(r#"{"error":"not found"}"#.into()),
        }
    }

    /// Creates `path/<next numeric id>`.
    fn post(&mut self, parts: &Parts, path: &str, body: Bytes) -> Reply {
        let base = path.trim_end_matches('/');
        let prefix = format!("{base}/");
        let next = self
            .docs
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|id| id.parse::<u64>().ok())
            .max()
            .map_or(1, |max| max + 1);
        let location = format!("{prefix}{next}");
        self.store(parts, location.clone(), body);
        let doc = &self.docs[&location];
        let mut r = reply(StatusCode::CREATED);
        self.validators(&mut r.headers, &doc.body, Some(doc.modified));
        r.headers.insert(header::LOCATION, header_value(&location));
        r.headers.insert(header::CONTENT_TYPE, doc.content_type.clone());
        r.body(doc.body.clone())
    }

    /// Stores a written body; returns the previous document if there was one.
    fn store(&mut self, parts: &Parts, path: String, body: Bytes) -> Option<Doc> {
        let body = if self.normalize_on_put {
            normalize(body)
        } else {
            body
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        self.docs.insert(
            path,
            Doc {
                body,
                content_type,
                modified: now_seconds(),
            },
        )
    }

    /// RFC 9110 §13.1.1 with strong comparison; `None` means the write may proceed.
    fn refuse_if_match(&self, parts: &Parts, path: &str) -> Option<Reply> {
        if !self.honour_if_match {
            return None;
        }
        let values: Vec<&HeaderValue> = parts.headers.get_all(header::IF_MATCH).iter().collect();
        if values.is_empty() {
            return None;
        }
        let doc = self.docs.get(path);
        let current = doc.and_then(|d| match self.etag_style {
            EtagStyle::Strong => Some(etag(EtagStyle::Strong, &d.body)),
            EtagStyle::None | EtagStyle::Weak => None,
        });
        let matches = tags(&values).any(|tag| {
            (tag == "*" && doc.is_some()) || (!tag.starts_with("W/") && current.as_deref() == Some(tag))
        });
        if matches {
            return None;
        }
        let mut r = reply(StatusCode::PRECONDITION_FAILED);
        if let Some(doc) = doc {
            self.validators(&mut r.headers, &doc.body, Some(doc.modified));
        }
        Some(r.json(r#"{"error":"precondition failed"}"#.into()))
    }

    /// RFC 9110 §13.1.2 (weak comparison) then §13.1.3, only for validators this upstream sends.
    fn not_modified(&self, headers: &HeaderMap, body: &[u8], modified: Option<SystemTime>) -> bool {
        let inm: Vec<&HeaderValue> = headers.get_all(header::IF_NONE_MATCH).iter().collect();
        if !inm.is_empty() {
            if self.etag_style == EtagStyle::None {
                return false;
            }
            let current = etag(EtagStyle::Strong, body);
            return tags(&inm).any(|tag| tag == "*" || tag.trim_start_matches("W/") == current);
        }
        let since = headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok());
        match (
            self.last_modified,
            since.and_then(|s| httpdate::parse_http_date(s).ok()),
            modified,
        ) {
            (true, Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }

    fn validators(&self, headers: &mut HeaderMap, body: &[u8], modified: Option<SystemTime>) {
        if self.etag_style != EtagStyle::None {
            headers.insert(header::ETAG, header_value(&etag(self.etag_style, body)));
        }
        if let (true, Some(modified)) = (self.last_modified, modified) {
            headers.insert(
                header::LAST_MODIFIED,
                header_value(&httpdate::fmt_http_date(modified)),
            );
        }
    }
}

/// The tag this upstream gives `body`; deterministic across processes.
fn etag(style: EtagStyle, body: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let tag = format!("\"up-{:016x}-{}\"", hasher.finish(), body.len());
    match style {
        EtagStyle::Weak => format!("W/{tag}"),
        EtagStyle::None | EtagStyle::Strong => tag,
    }
}

/// The entity-tags of a list header, split on commas (tags here never contain one).
fn tags<'a>(values: &'a [&'a HeaderValue]) -> impl Iterator<Item = &'a str> + 'a {
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn normalize(body: Bytes) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut value) => {
            if let Some(object) = value.as_object_mut() {
                object.insert("normalized".to_owned(), serde_json::Value::Bool(true));
            }
            serde_json::to_vec(&value).map_or(body, Bytes::from)
        }
        Err(_) => body,
    }
}

fn now_seconds() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A response under construction.
struct Draft {
    status: StatusCode,
    headers: HeaderMap,
}

fn reply(status: StatusCode) -> Draft {
    Draft {
        status,
        headers: HeaderMap::new(),
    }
}

impl Draft {
    fn header(mut self, name: HeaderName, value: &'static str) -> Draft {
        self.headers.insert(name, HeaderValue::from_static(value));
        self
    }

    fn json(mut self, body: Bytes) -> Reply {
        self.headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body(body)
    }

    fn empty(self) -> Reply {
        self.body(Bytes::new())
    }

    fn body(self, body: Bytes) -> Reply {
        let mut response = http::Response::new(Full::new(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}
