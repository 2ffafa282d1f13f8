//! A raw-TCP HTTP/1.1 upstream that misbehaves on the connection level, where a hyper
//! server would not: it answers with keep-alive responses (no `Connection: close`) and
//! then closes the socket, or writes a response nobody asked for on an idle connection.
//!
//! It serves GET and PUT over an in-memory document map and records every request it read
//! completely, so a test can count what reached it.
//!
//! Invariant: the state lock is a std mutex and is never held across an `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What the upstream does with a connection after each answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Close the socket at once, although the answer promised keep-alive.
    Close,
    /// Close the socket when no next request arrives within this time.
    CloseWhenIdle(Duration),
    /// Keep the connection; write [`UNSOLICITED`] right behind the answer, in the same
    /// write.
    UnsolicitedWithAnswer,
    /// Keep the connection; write [`UNSOLICITED`] when the test calls
    /// [`RawUpstream::send_unsolicited`].
    UnsolicitedOnSignal,
}

/// The body of the response nobody asked for.
pub const UNSOLICITED: &str = r#"{"unsolicited":true}"#;

/// One request the upstream read completely.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    pub body: Bytes,
    /// Which accepted connection (0-based) carried it.
    pub connection: usize,
}

pub struct RawUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    mode: AfterAnswer,
    state: Mutex<State>,
    connections: AtomicUsize,
    /// Connections on which the upstream read end-of-stream from the proxy.
    closed_by_peer: AtomicUsize,
    unsolicited_sent: AtomicUsize,
    signal: Notify,
    changed: Notify,
}

#[derive(Default)]
struct State {
    docs: HashMap<String, Bytes>,
    requests: Vec<RawRequest>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RawUpstream {
    pub async fn start(mode: AfterAnswer) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the raw upstream");
        let addr = listener.local_addr().expect("raw upstream local_addr");
        let shared = Arc::new(Shared {
            mode,
            state: Mutex::new(State::default()),
            connections: AtomicUsize::new(0),
            closed_by_peer: AtomicUsize::new(0),
            unsolicited_sent: AtomicUsize::new(0),
            signal: Notify::new(),
            changed: Notify::new(),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        RawUpstream { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_doc(&self, path: &str, body: &str) {
        self.shared
            .lock()
            .docs
            .insert(path.to_owned(), Bytes::copy_from_slice(body.as_bytes()));
    }

    pub fn doc(&self, path: &str) -> Option<Bytes> {
        self.shared.lock().docs.get(path).cloned()
    }

    pub fn requests(&self) -> Vec<RawRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn closed_by_peer(&self) -> usize {
        self.shared.closed_by_peer.load(Ordering::SeqCst)
    }

    pub fn unsolicited_sent(&self) -> usize {
        self.shared.unsolicited_sent.load(Ordering::SeqCst)
    }

    /// Makes every connection waiting in [`AfterAnswer::UnsolicitedOnSignal`] write
    /// [`UNSOLICITED`] now.
    pub fn send_unsolicited(&self) {
        self.shared.signal.notify_waiters();
    }

    /// Waits until `check` holds, re-checking whenever a connection changes state; false
    /// when `timeout` passes first.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&RawUpstream) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if check(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return check(self);
            }
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let index = shared.connections.fetch_add(1, Ordering::SeqCst);
        connections.spawn(serve(stream, index, Arc::clone(&shared)));
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve(mut stream: TcpStream, connection: usize, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let read = match shared.mode {
            AfterAnswer::CloseWhenIdle(idle) => {
                match tokio::time::timeout(idle, read_request(&mut stream, &mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return,
                }
            }
            _ => read_request(&mut stream, &mut buf).await,
        };
        let (method, path, body) = match read {
            Read::Request(method, path, body) => (method, path, body),
            Read::Eof => {
                shared.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                shared.changed.notify_waiters();
                return;
            }
            Read::Broken => return,
        };
        let answer = {
            let mut state = shared.lock();
            state.requests.push(RawRequest {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
                connection,
            });
            match method.as_str() {
                "GET" => match state.docs.get(&path) {
                    Some(doc) => response("200 OK", doc),
                    None => response("404 Not Found", b"{}"),
                },
                "PUT" => {
                    state.docs.insert(path, body.clone());
                    response("200 OK", &body)
                }
                _ => response("405 Method Not Allowed", b"{}"),
            }
        };
        shared.changed.notify_waiters();
        // Registered before the answer goes out, so a signal sent as soon as the answer
        // arrived is not missed.
        let signalled = shared.signal.notified();
        tokio::pin!(signalled);
        let unsolicited = response("200 OK", UNSOLICITED.as_bytes());
        let wrote = match shared.mode {
            AfterAnswer::UnsolicitedWithAnswer => {
                let both = [answer.as_slice(), &unsolicited].concat();
                let wrote = stream.write_all(&both).await;
                shared.unsolicited_sent.fetch_add(1, Ordering::SeqCst);
                wrote
            }
            _ => stream.write_all(&answer).await,
        };
        if wrote.is_err() {
            return;
        }
        match shared.mode {
            AfterAnswer::Close => return,
            AfterAnswer::UnsolicitedOnSignal => {
                // Either the next request arrives first, or the signal does.
                let readable = stream.readable();
                tokio::select! {
                    _ = &mut signalled => {
                        if stream.write_all(&unsolicited).await.is_err() {
                            return;
                        }
                        shared.unsolicited_sent.fetch_add(1, Ordering::SeqCst);
                        shared.changed.notify_waiters();
                    }
                    _ = readable => {}
                }
            }
            _ => {}
        }
    }
}

enum Read {
    Request(String, String, Bytes),
    Eof,
    Broken,
}

/// Reads one request (head, then a `Content-Length` body) from `stream`; `buf` keeps
/// bytes read past it.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Read {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => return Read::Eof,
            Ok(0) | Err(_) => return Read::Broken,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let method = start.next().unwrap_or_default().to_owned();
    let path = start.next().unwrap_or_default().to_owned();
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Read::Broken,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = Bytes::copy_from_slice(&buf[head_end..head_end + length]);
    buf.drain(..head_end + length);
    Read::Request(method, path, body)
}

/// A keep-alive JSON response: no `Connection: close`, whatever happens next.
fn response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
