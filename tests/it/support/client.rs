//! HTTP clients the tests use to talk to the proxy (or straight to the upstream): one
//! fresh connection per call (HTTP/1.1, chunked HTTP/1.1, h2c prior knowledge or raw
//! bytes), so no pooled connection outlives the test runtime that opened it.
//!
//! Invariant: every call is bounded by a timeout and panics with the request it was
//! making when the timeout passes; a test never hangs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any client call may take before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete response: status, headers and the whole body.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The first value of `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} (status {})",
                self.text(),
                self.status
            )
        })
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request to `addr`, adding `Host: addr` unless `headers` has one.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    let request = build(addr, method, path, headers, Full::new(body.into()), false);
    bounded(format!("{method} {path} to {addr}"), exchange_h1(addr, request)).await
}

/// `GET path` with no extra headers.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    send(addr, "GET", path, &[], Bytes::new()).await
}

/// Sends a chunked request body (`Transfer-Encoding: chunked`, no `Content-Length`), one
/// HTTP chunk per element of `chunks`.
pub async fn send_chunked(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: Vec<Bytes>,
) -> Response {
    let request = build(addr, method, path, headers, Chunks(chunks.into()), false);
    bounded(
        format!("chunked {method} {path} to {addr}"),
        exchange_h1(addr, request),
    )
    .await
}

/// Sends one h2c request with prior knowledge (no upgrade dance).
pub async fn send_h2(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    let request = build(addr, method, path, headers, Full::new(body.into()), true);
    let what = format!("h2c {method} {path} to {addr}");
    bounded(what.clone(), async move {
        let io = TokioIo::new(connect(addr).await);
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap_or_else(|e| panic!("{what}: h2 handshake failed: {e}"));
        tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        collect(response, &what).await
    })
    .await
}

/// Writes `request` on a fresh TCP connection and returns every byte read until the server
/// closes the connection (or resets it) or `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = bounded(format!("raw connect to {addr}"), connect(addr)).await;
    // A server may answer and close before reading everything; what it sent still counts.
    let _ = tokio::time::timeout_at(deadline, stream.write_all(request)).await;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    received
}

/// The status code of the first status line in a raw HTTP/1.x response.
pub fn raw_status(resp: &[u8]) -> Option<u16> {
    let line = resp.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

async fn bounded<T>(what: String, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CLIENT_TIMEOUT, work).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no complete response within {CLIENT_TIMEOUT:?}"),
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let _ = stream.set_nodelay(true);
    stream
}

fn build<B>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
    h2: bool,
) -> Request<B> {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("method {method:?}: {e}"));
    // h2 needs the scheme and authority in the URI; HTTP/1.1 sends the origin form.
    let uri = if h2 {
        format!("http://{addr}{path}")
    } else {
        path.to_owned()
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri
        .parse()
        .unwrap_or_else(|e| panic!("request target {uri:?}: {e}"));
    let map = request.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("header {name:?}: {e}"));
        let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("header value {value:?}: {e}"));
        map.append(name, value);
    }
    if !h2 && !map.contains_key(http::header::HOST) {
        map.insert(
            http::header::HOST,
            HeaderValue::from_str(&addr.to_string()).expect("host header"),
        );
    }
    request
}

async fn exchange_h1<B>(addr: SocketAddr, request: Request<B>) -> Response
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let what = format!("{} {} to {addr}", request.method(), request.uri());
    let io = TokioIo::new(connect(addr).await);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .unwrap_or_else(|e| panic!("{what}: handshake failed: {e}"));
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    collect(response, &what).await
}

async fn collect(response: http::Response<Incoming>, what: &str) -> Response {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"))
        .to_bytes();
    Response {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A request body of known chunks and unknown length, so hyper sends it chunked.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}
