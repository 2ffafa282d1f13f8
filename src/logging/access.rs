//! The access log: one line per request, formatted and written off the request's task.
//!
//! The request's task fills a fixed [`Line`] (no formatting; the route name and path are
//! reference-counted handles, not copies) and offers it to a bounded queue without
//! waiting. One writer thread takes whatever is queued, formats it into one buffer and
//! writes it with one call. A full queue drops the line and counts it
//! (`patchgate_log_lines_dropped_total`): a slow terminal or disk never slows requests.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use http::Method;
use http::uri::PathAndQuery;

use super::Format;
use super::format;

/// What one request's log line says, captured when its response head is ready.
pub struct Line {
    pub time: SystemTime,
    /// `None`: no route matched (logged as `-`).
    pub route: Option<Arc<str>>,
    pub method: Method,
    pub path: Option<PathAndQuery>,
    pub status: u16,
    pub latency: Duration,
    /// `hit`, `miss`, `revalidated`, `pass`, `batched` or `-`.
    pub cache: &'static str,
}

impl Line {
    /// The path as `Uri::path` gives it (the query is not logged).
    pub fn path(&self) -> &str {
        self.path.as_ref().map_or("", PathAndQuery::path)
    }
}

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
        let route = line.route.as_deref().unwrap_or("-");
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

fn write_lines(lines: &Receiver<Msg>, format: Format, mut out: Box<dyn Write + Send>) {
    let mut buf = Vec::with_capacity(BATCH_BYTES + 1024);
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        let mut stop = false;
        while let Some(msg) = next {
            match msg {
                Msg::Line(line) => format::line(&line, format, &mut buf),
                Msg::Stop => {
                    stop = true;
                    break;
                }
            }
            if buf.len() >= BATCH_BYTES {
                break;
            }
            next = lines.try_recv().ok();
        }
        // Nowhere to report a failed write to but the log itself.
        let _ = out.write_all(&buf).and_then(|()| out.flush());
        buf.clear();
        if stop {
            return;
        }
    }
}
