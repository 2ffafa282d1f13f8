//! The access log: one line per request, formatted and written off the request's task.
//!
//! The request's task fills a fixed [`Line`] (no formatting; the path and route name are
//! copied into a buffer inside it) and offers it to a bounded queue without
//! waiting. One writer thread takes whatever is queued, formats it into one buffer and
//! writes it with one call; it polls the queue every 2 ms when idle, so that a request
//! never has to wake it. A full queue drops the line and counts it
//! (`patchgate_log_lines_dropped_total`): a slow terminal or disk never slows requests.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::Method;

use super::Format;
use super::format;

/// What one request's log line says. The path and the route name are copied side by side
/// into a buffer inside the line (on the heap only when together they exceed
/// [`INLINE`] bytes): holding on to the request's own bytes instead would keep its
/// connection's read buffer from being reused, and free it on the writer's thread. Made
/// when the response head is ready: the request's task carries only its start until then.
pub struct Line {
    /// When the response head was ready; the writer turns it into wall-clock time, which
    /// spares the request a second clock read.
    pub ended: Instant,
    pub method: Method,
    pub status: u16,
    pub latency: Duration,
    /// `hit`, `miss`, `revalidated`, `pass`, `batched` or `-`.
    pub cache: &'static str,
    text: Text,
    path_len: usize,
    /// `None`: no route matched (logged as `-`).
    route_len: Option<usize>,
}

/// Path and route name bytes that fit in a line without an allocation.
const INLINE: usize = 64;

enum Text {
    Inline { bytes: [u8; INLINE], len: usize },
    Heap(Vec<u8>),
}

impl Text {
    fn push(&mut self, s: &str) {
        match self {
            Text::Inline { bytes, len } if *len + s.len() <= INLINE => {
                bytes[*len..*len + s.len()].copy_from_slice(s.as_bytes());
                *len += s.len();
            }
            Text::Inline { bytes, len } => {
                let mut heap = Vec::with_capacity(*len + s.len());
                heap.extend_from_slice(&bytes[..*len]);
                heap.extend_from_slice(s.as_bytes());
                *self = Text::Heap(heap);
            }
            Text::Heap(heap) => heap.extend_from_slice(s.as_bytes()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { bytes, len } => &bytes[..*len],
            Text::Heap(heap) => heap,
        }
    }
}

/// A request's start, kept while it walks: when, and its path copied (not a handle on
/// the request's bytes, which would keep hyper from reusing its read buffer).
pub struct Begun {
    started: Instant,
    text: Text,
    path_len: usize,
}

impl Begun {
    pub fn now(path: &str) -> Begun {
        Begun::at(Instant::now(), path)
    }

    fn at(started: Instant, path: &str) -> Begun {
        let mut text = Text::Inline {
            bytes: [0; INLINE],
            len: 0,
        };
        text.push(path);
        Begun {
            started,
            text,
            path_len: path.len(),
        }
    }
}

impl Line {
    /// The line of a request that `started` then, made once its response head is ready.
    pub fn new(
        method: &Method,
        path: &str,
        route: Option<&str>,
        started: Instant,
        status: u16,
        cache: &'static str,
    ) -> Line {
        Line::finish(Begun::at(started, path), method, route, status, cache)
    }

    /// The line of the request `begun` describes, made once its response head is ready.
    pub fn finish(
        begun: Begun,
        method: &Method,
        route: Option<&str>,
        status: u16,
        cache: &'static str,
    ) -> Line {
        let ended = Instant::now();
        let Begun {
            started,
            mut text,
            path_len,
        } = begun;
        if let Some(route) = route {
            text.push(route);
        }
        Line {
            ended,
            method: method.clone(),
            status,
            latency: ended.saturating_duration_since(started),
            cache,
            text,
            path_len,
            route_len: route.map(str::len),
        }
    }

    /// The path as `Uri::path` gives it (the query is not logged).
    pub fn path(&self) -> &str {
        self.text
            .as_bytes()
            .get(..self.path_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The route's name, `-` when no route matched.
    pub fn route(&self) -> &str {
        self.route_len
            .and_then(|len| self.text.as_bytes().get(self.path_len..self.path_len + len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("-")
    }
}

// Boxing the line would allocate per request: what the queue exists to avoid.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Line(Line),
    /// Write what came before, then end (sent on exit).
    Stop,
}

/// The queue's sending side, once [`Writer::start`] ran.
static QUEUE: OnceLock<SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Request lines dropped because the queue was full (or its writer gone).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Whether request lines are wanted: `RUST_LOG` enables `info` for `patchgate::layer`
/// (the target the line has always had). Cheap: the answer is cached per filter.
pub fn enabled() -> bool {
    tracing::enabled!(target: "patchgate::layer", tracing::Level::INFO)
}

/// Logs one request: to the access log queue when the writer runs, else as a `tracing`
/// event (the library without [`super::init`]). Never waits.
pub fn request(line: Line) {
    let Some(queue) = QUEUE.get() else {
        let route = line.route();
        tracing::info!(
            target: "patchgate::layer",
            route,
            method = %line.method,
            path = %line.path(),
            status = line.status,
            latency_ms = line.latency.as_secs_f64() * 1000.0,
            cache = line.cache,
            "request"
        );
        return;
    };
    match queue.try_send(Msg::Line(line)) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread; dropping it writes what is queued and stops the thread.
pub struct Writer {
    queue: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread and routes request lines to it; `None` if one runs
    /// already or no thread can be started (lines then go through `tracing`).
    pub fn start(format: Format, capacity: usize, out: Box<dyn Write + Send>) -> Option<Writer> {
        let (queue, lines) = sync_channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("patchgate-log".into())
            .spawn(move || write_lines(&lines, format, out))
            .ok()?;
        QUEUE.set(queue.clone()).ok()?;
        Some(Writer {
            queue,
            thread: Some(thread),
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Blocks while the queue is full: the thread is emptying it.
        if self.queue.send(Msg::Stop).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// Batches larger than this are written before more are taken from the queue.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the writer sleeps when it found the queue empty. It polls instead of
/// blocking in `recv`: a blocked receiver would have to be woken (a futex call and a
/// context switch) by the request that sends the next line, so every quiet moment would
/// cost a request a system call; polling leaves sending a few atomic operations.
const IDLE: Duration = Duration::from_millis(2);

fn write_lines(lines: &Receiver<Msg>, format: Format, mut out: Box<dyn Write + Send>) {
    let mut buf = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut stamps = format::Stamps::default();
    loop {
        let mut stop = false;
        let mut gone = false;
        // Read per batch, so that the wall clock's steps and slews reach the log.
        let clock = format::Clock::now();
        while buf.len() < BATCH_BYTES {
            match lines.try_recv() {
                Ok(Msg::Line(line)) => {
                    format::line(&line, clock.wall(line.ended), format, &mut stamps, &mut buf)
                }
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        if buf.is_empty() && !stop && !gone {
            std::thread::sleep(IDLE);
            continue;
        }
        // Nowhere to report a failed write to but the log itself.
        let _ = out.write_all(&buf).and_then(|()| out.flush());
        buf.clear();
        if stop || gone {
            return;
        }
    }
}
