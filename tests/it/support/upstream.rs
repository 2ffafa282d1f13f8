//! A real legacy JSON upstream for the integration tests: a hyper server on 127.0.0.1:0
//! that speaks only GET/HEAD/PUT/DELETE/POST over an in-memory document map, sends no
//! validators unless told to, records every request it receives and can be told to
//! misbehave (injected statuses, dropped connections, hangs, delays, rewritten bodies).
//!
//! Invariant: the state lock is a std mutex and is never held across an `.await`.

mod legacy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use legacy::{Doc, Reply, State, is_write, now_seconds, reply, user_path};

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
    /// Act on the request and answer normally, but only after this long.
    Late(Duration),
    /// Answer a read with the document as it was on arrival, this much later.
    Slow(Duration),
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
            state: Mutex::new(State::new()),
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

    /// One document space per requester: every `Authorization` and `Cookie` line of a
    /// request, in order, chooses the space its path is looked up in.
    pub fn set_per_user(&self, on: bool) {
        self.shared.lock().per_user = on;
    }

    /// Writes `path` in the space of a requester sending `headers` (see [`Self::set_per_user`]).
    pub fn set_user_doc(&self, headers: &[(&str, &str)], path: &str, body: &str) {
        self.set_doc(&user_path(&header_map(headers), path), body);
    }

    /// The document at `path` in the space of a requester sending `headers`.
    pub fn user_doc(&self, headers: &[(&str, &str)], path: &str) -> Option<Bytes> {
        self.doc(&user_path(&header_map(headers), path))
    }

    /// Every request received, in the order their bodies were complete.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Requests whose body broke off mid-stream (never recorded as received).
    pub fn aborted(&self) -> usize {
        self.shared.lock().aborted
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

    /// Adds (or replaces) a header on every GET/HEAD response, 304s included; an `ETag`
    /// set so replaces the computed one.
    pub fn set_extra_header(&self, name: &str, value: &str) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("extra header name");
        let value = HeaderValue::from_str(value).expect("extra header value");
        self.shared.lock().extra_headers.insert(name, value);
    }

    /// Adds (or replaces) a header on every answer to a PUT, POST or DELETE.
    pub fn set_write_header(&self, name: &str, value: &str) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("write header name");
        let value = HeaderValue::from_str(value).expect("write header value");
        self.shared.lock().write_headers.insert(name, value);
    }

    /// Stops sending a header set by [`Self::set_extra_header`].
    pub fn remove_extra_header(&self, name: &str) {
        self.shared.lock().extra_headers.remove(name);
    }

    /// Reads of a document answer `{"<name>":"<value>"}` with the request's value of
    /// header `name` (as an endpoint that serves each user their own data); the ETag
    /// follows that body.
    pub fn set_body_per(&self, name: &str) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("body_per header name");
        self.shared.lock().body_per = Some(name);
    }

    /// Stores PUT/POST bodies re-serialized: compact, with `"normalized":true` appended to
    /// an object (bodies that are not JSON are stored as received).
    pub fn set_normalize_on_put(&self, on: bool) {
        self.shared.lock().normalize_on_put = on;
    }

    /// Writes (PUT/POST/DELETE) take `d` longer: they take effect and are answered
    /// after it, with the connection kept open meanwhile.
    pub fn set_write_delay(&self, d: Duration) {
        self.shared.lock().write_delay = d;
    }

    /// A write delayed by [`Self::set_write_delay`] takes effect after the delay even when
    /// its connection closes meanwhile (as a server that does not notice its client left,
    /// e.g. a proxy process that was killed); by default such a write is dropped with its
    /// connection.
    pub fn set_writes_outlive_connections(&self, on: bool) {
        self.shared.lock().writes_outlive_connections = on;
    }

    /// Delays every response (faults included) by `d`, after the request is recorded;
    /// a GET or HEAD answers with the document as it was when it arrived.
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
        Err(_) => {
            // Like any real server: a request whose body broke off is not acted on.
            shared.lock().aborted += 1;
            return Ok(
                reply(StatusCode::BAD_REQUEST).json(Bytes::from_static(b"{\"error\":\"aborted body\"}"))
            );
        }
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
    let (fault, delay, read, write_delay, outlive) = {
        let mut state = shared.lock();
        state.requests.push(recorded);
        let fault = state.take_fault(&parts.method);
        // A read shows the document as it was when the request arrived, however slowly
        // it is then sent; writes take effect after the delay.
        let read = (matches!(fault, None | Some(Fault::Slow(_)))
            && (parts.method == Method::GET || parts.method == Method::HEAD))
            .then(|| state.answer(&parts, body.clone()));
        (
            fault,
            state.delay,
            read,
            state.write_delay,
            state.writes_outlive_connections,
        )
    };
    if let Some(read) = read {
        let slow = match fault {
            Some(Fault::Slow(d)) => d,
            _ => Duration::ZERO,
        };
        tokio::time::sleep(delay + slow).await;
        return Ok(read);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if is_write(&parts.method) && !write_delay.is_zero() {
        if outlive && fault.is_none() {
            // A task of its own: dropping this connection's future does not stop it.
            let task = tokio::spawn(async move {
                tokio::time::sleep(write_delay).await;
                shared.lock().answer(&parts, body)
            });
            return Ok(task.await.expect("the delayed write task"));
        }
        tokio::time::sleep(write_delay).await;
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
        Some(Fault::Late(d) | Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            Ok(shared.lock().answer(&parts, body))
        }
        None => Ok(shared.lock().answer(&parts, body)),
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}
