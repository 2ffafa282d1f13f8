//! The load generator: one task per keep-alive HTTP/1.1 connection sending one scenario's
//! requests back to back, counting statuses and latencies in the measurement window.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Settings;

/// Bounds any single request; a slower one counts as an error and its connection is
/// replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one scenario sends: per connection a path and headers, and a body.
#[derive(Clone)]
pub struct Load {
    method: Method,
    pub paths: Vec<String>,
    pub headers: Vec<HeaderMap>,
    pub body: RequestBody,
    expect: StatusCode,
    /// When set, request `i` of connection `c` goes to document `(i * conns + c) % n`
    /// instead of the connection's own path: writes spread over many documents, round
    /// robin, so that no two connections write one document at the same time.
    pub spread: Option<Arc<Vec<String>>>,
}

#[derive(Clone)]
pub enum RequestBody {
    Empty,
    Fixed(Bytes),
    /// `[{"op":"replace","path":"/n","value":<i>}]` with `i` counting per connection, so
    /// that every PATCH changes the document.
    ReplaceN,
}

impl Load {
    pub fn new(method: Method, paths: Vec<String>, expect: StatusCode) -> Load {
        let headers = vec![HeaderMap::new(); paths.len()];
        Load {
            method,
            paths,
            headers,
            body: RequestBody::Empty,
            expect,
            spread: None,
        }
    }

    pub fn set_header(&mut self, name: header::HeaderName, value: &'static str) {
        for h in &mut self.headers {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
    }

    /// Sends request `i` of connection `conn` over `docs` (see [`Load::spread`]).
    pub fn spread_over(mut self, docs: Vec<String>) -> Load {
        self.spread = Some(Arc::new(docs));
        self
    }

    pub fn request(&self, addr: SocketAddr, conn: usize, i: u64) -> Request<Full<Bytes>> {
        let body = match &self.body {
            RequestBody::Empty => Bytes::new(),
            RequestBody::Fixed(b) => b.clone(),
            RequestBody::ReplaceN => Bytes::from(format!(r#"[{{"op":"replace","path":"/n","value":{i}}}]"#)),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        let path = match &self.spread {
            Some(docs) => &docs[(i as usize * self.paths.len() + conn) % docs.len()],
            None => &self.paths[conn],
        };
        *req.uri_mut() = path.parse().unwrap();
        *req.headers_mut() = self.headers[conn].clone();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&addr.to_string()).unwrap());
        req
    }
}

/// What one scenario measured.
#[derive(Clone, Default)]
pub struct Measured {
    pub elapsed: Duration,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    expect: u16,
    hit_request_bound: bool,
    /// Responses over the whole run, warm-up included.
    pub completed: u64,
    /// Microseconds per request, sorted.
    latencies: Vec<u32>,
    /// CPU time of this whole process during the window, in cores (2.0 = two cores busy).
    cpu: Option<f64>,
}

impl Measured {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return f64::NAN;
        };
        let index = ((last as f64) * p).round() as usize;
        f64::from(self.latencies[index.min(last)]) / 1000.0
    }

    pub fn cpu(&self) -> String {
        self.cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}"))
    }

    fn requests(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn rps(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn status_mix(&self) -> String {
        let mut parts: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        if self.errors > 0 {
            parts.push(format!("errors×{}", self.errors));
        }
        parts.join(" ")
    }

    pub fn problem(&self) -> Option<String> {
        let unexpected: u64 = self
            .statuses
            .iter()
            .filter(|&(&s, _)| s != self.expect)
            .map(|(_, n)| n)
            .sum();
        if unexpected > 0 || self.errors > 0 || self.requests() == 0 {
            Some(format!(
                "expected only {}, got {}",
                self.expect,
                self.status_mix()
            ))
        } else if self.hit_request_bound {
            Some("stopped at PATCHGATE_BENCH_MAX_REQUESTS before the time was up".into())
        } else {
            None
        }
    }
}

/// Runs `load` against `addr` with one task per connection: warm-up, then counts the
/// responses completed in the measurement window.
pub async fn drive(settings: &Settings, addr: SocketAddr, load: &Load) -> Measured {
    let load = Arc::new(load.clone());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let per_conn = (settings.max_requests / settings.conns.max(1) as u64).max(1);
    let mut tasks = Vec::new();
    for conn in 0..load.paths.len() {
        let (load, measuring, stop) = (load.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses: HashMap<u16, u64> = HashMap::new();
            let mut latencies: Vec<u32> = Vec::new();
            let mut completed = 0u64;
            let mut errors = 0u64;
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < per_conn {
                sent += 1;
                let s = match sender.as_mut() {
                    Some(s) => s,
                    None => match connect(addr).await {
                        Some(s) => sender.insert(s),
                        None => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let req = load.request(addr, conn, sent);
                let started = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, req)).await {
                    Ok(Ok(status)) => {
                        completed += 1;
                        if measuring.load(Ordering::Relaxed) {
                            *statuses.entry(status).or_default() += 1;
                            latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                    }
                    Ok(Err(_)) | Err(_) => {
                        errors += 1;
                        sender = None;
                    }
                }
            }
            (statuses, latencies, completed, errors, sent >= per_conn)
        }));
    }
    tokio::time::sleep(settings.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    tokio::time::sleep(settings.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu = cpu_start
        .zip(cpu_seconds())
        .map(|(a, b)| (b - a) / elapsed.as_secs_f64());
    stop.store(true, Ordering::Relaxed);

    let mut measured = Measured {
        elapsed,
        expect: load.expect.as_u16(),
        cpu,
        ..Measured::default()
    };
    for task in tasks {
        let (statuses, latencies, completed, errors, bounded) = task.await.unwrap();
        measured.completed += completed;
        measured.latencies.extend(latencies);
        for (s, n) in statuses {
            *measured.statuses.entry(s).or_default() += n;
        }
        measured.errors += errors;
        measured.hit_request_bound |= bounded;
    }
    measured.latencies.sort_unstable();
    measured
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, in ticks of
/// 1/100 s); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces;
    // utime and stime are fields 14 and 15 of the whole line.
    let mut fields = stat
        .get(stat.rfind(')')? + 2..)?
        .split_ascii_whitespace()
        .skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A new keep-alive HTTP/1.1 connection, or `None` if it cannot be opened.
pub async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Sends one request and reads the whole response, so the connection can be reused.
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> hyper::Result<u16> {
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

pub async fn fetch_etag(proxy: SocketAddr, path: &str) -> HeaderValue {
    let mut sender = connect(proxy).await.unwrap();
    let load = Load::new(Method::GET, vec![path.to_owned()], StatusCode::OK);
    let response = sender.send_request(load.request(proxy, 0, 0)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path} through the proxy");
    response
        .headers()
        .get(header::ETAG)
        .cloned()
        .unwrap_or_else(|| panic!("GET {path} through the proxy: no ETag"))
}
