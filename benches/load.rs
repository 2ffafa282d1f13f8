//! Load benchmark: proxied vs direct throughput, as ratios from one run.
//!
//! Starts, in this process, a legacy upstream (a minimal hyper HTTP/1.1 server on
//! 127.0.0.1:0 serving GET/PUT of JSON documents from memory, no validators) and the real
//! proxy on 127.0.0.1:0 in front of it with two routes, `/excl/…` (`freshness =
//! "exclusive"`) and `/reval/…` (`"revalidate"`). Then, for each document size, it drives
//! the upstream directly and through the proxy with the same number of keep-alive
//! HTTP/1.1 connections for the same time, and prints requests/s and the ratio.
//!
//! `cargo bench --bench load`. Environment: `PATCHGATE_BENCH_SECS` (3, per run),
//! `PATCHGATE_BENCH_WARMUP_MS` (500), `PATCHGATE_BENCH_CONNS` (32),
//! `PATCHGATE_BENCH_SIZES` (`1024,16384`, bytes), `PATCHGATE_BENCH_MAX_REQUESTS`
//! (5000000 per scenario), `PATCHGATE_BENCH_FILTER` (only the cases whose "scenario
//! freshness" contains it, e.g. `patch`), `PATCHGATE_BENCH_ROUNDS` (1; with more, every
//! case is measured that many times, the table shows the round with the median ratio and
//! the range of ratios). Without `--bench` (`cargo test --benches`) it runs a short
//! smoke pass. Load generator and servers share the machine's cores: compare ratios,
//! not absolute numbers.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Bounds any single request; a slower one counts as an error and its connection is
/// replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Settings {
    duration: Duration,
    warmup: Duration,
    conns: usize,
    sizes: Vec<usize>,
    max_requests: u64,
    /// Only cases whose "scenario freshness" contains this (case-insensitive).
    filter: Option<String>,
    /// Each case is measured this many times; the table shows the median ratio.
    rounds: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let bench = std::env::args().any(|a| a == "--bench");
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let number = |name: &str, default: f64| {
            var(name).map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
            })
        };
        if !bench {
            // `cargo test --benches`: prove it works, quickly.
            return Settings {
                duration: Duration::from_millis(200),
                warmup: Duration::from_millis(50),
                conns: 4,
                sizes: vec![1024],
                max_requests: 100_000,
                filter: None,
                rounds: 1,
            };
        }
        Settings {
            duration: Duration::from_secs_f64(number("PATCHGATE_BENCH_SECS", 3.0)),
            warmup: Duration::from_secs_f64(number("PATCHGATE_BENCH_WARMUP_MS", 500.0) / 1000.0),
            conns: number("PATCHGATE_BENCH_CONNS", 32.0) as usize,
            sizes: var("PATCHGATE_BENCH_SIZES").map_or_else(
                || vec![1024, 16 * 1024],
                |v| {
                    v.split(',')
                        .map(|s| {
                            s.trim()
                                .parse()
                                .unwrap_or_else(|_| panic!("PATCHGATE_BENCH_SIZES: {s}"))
                        })
                        .collect()
                },
            ),
            max_requests: number("PATCHGATE_BENCH_MAX_REQUESTS", 5e6) as u64,
            filter: var("PATCHGATE_BENCH_FILTER").map(|f| f.to_lowercase()),
            rounds: (number("PATCHGATE_BENCH_ROUNDS", 1.0) as usize).max(1),
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(settings));
}

async fn run(settings: Settings) {
    let upstream = Upstream::start().await;
    let proxy = start_proxy(upstream.addr).await;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "patchgate load bench: {} keep-alive HTTP/1.1 connections, {:.1} s per run after {:.1} s warm-up, \
         {} round(s); load generator, proxy and upstream in one process on {cores} cores",
        settings.conns,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.rounds,
    );

    let mut cases = Vec::new();
    for &size in &settings.sizes {
        cases.extend(cases_for(&settings, &upstream, proxy.addr, size).await);
    }
    if let Some(&size) = settings.sizes.first() {
        cases.push(hot_document(&settings, &upstream, size));
    }
    cases.retain(|case| {
        let name = format!("{} {}", case.scenario, case.freshness).to_lowercase();
        settings.filter.as_ref().is_none_or(|f| name.contains(f.as_str()))
    });
    let mut rows: Vec<Row> = cases
        .into_iter()
        .map(|case| Row {
            case,
            rounds: Vec::new(),
        })
        .collect();
    for _ in 0..settings.rounds {
        for row in &mut rows {
            let round = measure(&settings, &upstream, proxy.addr, &row.case).await;
            row.rounds.push(round);
        }
    }
    print_table(&rows);

    proxy.stop().await;
    upstream.stop();
}

/// One line of the table: the same request pattern sent straight to the upstream and
/// through the proxy, measured one right after the other.
struct Case {
    size: usize,
    scenario: &'static str,
    freshness: &'static str,
    direct: Load,
    proxied: Load,
}

struct Row {
    case: Case,
    rounds: Vec<Round>,
}

impl Row {
    /// The round whose ratio is the median (the lower one of an even count).
    fn median(&self) -> Option<&Round> {
        let mut sorted: Vec<&Round> = self.rounds.iter().collect();
        sorted.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        sorted.get(sorted.len().saturating_sub(1) / 2).copied()
    }
}

struct Round {
    direct: Measured,
    proxied: Measured,
    /// Upstream requests per proxied request, over the whole proxied run.
    upstream_per_request: f64,
    /// Connections the upstream accepted during the proxied run (the proxy's pool).
    upstream_connections: u64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.proxied.rps() / self.direct.rps()
    }
}

async fn measure(settings: &Settings, upstream: &Upstream, proxy: SocketAddr, case: &Case) -> Round {
    let direct = drive(settings, upstream.addr, &case.direct).await;
    let before = upstream.counts();
    let proxied = drive(settings, proxy, &case.proxied).await;
    let after = upstream.counts();
    Round {
        direct,
        upstream_per_request: (after.0 - before.0) as f64 / proxied.completed.max(1) as f64,
        upstream_connections: after.1 - before.1,
        proxied,
    }
}

async fn cases_for(settings: &Settings, upstream: &Upstream, proxy: SocketAddr, size: usize) -> Vec<Case> {
    let doc = Bytes::from(common::document(size));
    // Each case and each connection has its own document: writes to one resource are
    // serialized by design, and this measures the cost per request, not that queue.
    let docs = |name: &str| -> Vec<String> {
        let paths: Vec<String> = (0..settings.conns)
            .map(|c| format!("/docs/{size}/{name}/{c}"))
            .collect();
        for p in &paths {
            upstream.put(p, doc.clone());
        }
        paths
    };
    let prefixed = |prefix: &str, paths: Vec<String>| -> Vec<String> {
        paths.into_iter().map(|p| format!("{prefix}{p}")).collect()
    };
    let put = |paths: Vec<String>| {
        let mut put = Load::new(Method::PUT, paths, StatusCode::NO_CONTENT);
        put.set_header(header::CONTENT_TYPE, "application/json");
        put.body = RequestBody::Fixed(doc.clone());
        put
    };

    let mut cases = Vec::new();
    for (freshness, prefix) in [("exclusive", "/excl"), ("revalidate", "/reval")] {
        cases.push(Case {
            size,
            scenario: "GET → 200",
            freshness,
            direct: Load::new(Method::GET, docs("get-direct"), StatusCode::OK),
            proxied: Load::new(
                Method::GET,
                prefixed(prefix, docs(&format!("get-{freshness}"))),
                StatusCode::OK,
            ),
        });
    }

    // Each connection first learns its document's ETag, then revalidates with it; the
    // legacy upstream ignores If-None-Match, so direct is the 200 a client would get.
    let mut inm = Load::new(
        Method::GET,
        prefixed("/excl", docs("inm-exclusive")),
        StatusCode::NOT_MODIFIED,
    );
    for (c, path) in inm.paths.iter().enumerate() {
        let etag = fetch_etag(proxy, path).await;
        inm.headers[c].insert(header::IF_NONE_MATCH, etag);
    }
    cases.push(Case {
        size,
        scenario: "GET If-None-Match → 304",
        freshness: "exclusive",
        direct: Load::new(Method::GET, docs("get-direct"), StatusCode::OK),
        proxied: inm,
    });

    for (freshness, prefix) in [("exclusive", "/excl"), ("revalidate", "/reval")] {
        cases.push(Case {
            size,
            scenario: "PATCH (JSON Patch replace) vs PUT",
            freshness,
            direct: put(docs("put-direct")),
            proxied: patch_load(prefixed(prefix, docs(&format!("patch-{freshness}")))),
        });
    }
    cases
}

/// Every connection patches the same document: the write lock serializes them, so this
/// shows the queue, against direct PUTs to one document (which the upstream does not
/// serialize).
fn hot_document(settings: &Settings, upstream: &Upstream, size: usize) -> Case {
    let doc = Bytes::from(common::document(size));
    let direct_path = format!("/docs/{size}/hot-direct");
    upstream.put(&direct_path, doc.clone());
    let mut put = Load::new(
        Method::PUT,
        vec![direct_path; settings.conns],
        StatusCode::NO_CONTENT,
    );
    put.set_header(header::CONTENT_TYPE, "application/json");
    put.body = RequestBody::Fixed(doc.clone());
    let path = format!("/docs/{size}/hot-exclusive");
    upstream.put(&path, doc);
    Case {
        size,
        scenario: "PATCH, one document for all connections",
        freshness: "exclusive",
        direct: put,
        proxied: patch_load(vec![format!("/excl{path}"); settings.conns]),
    }
}

fn patch_load(paths: Vec<String>) -> Load {
    let mut load = Load::new(Method::PATCH, paths, StatusCode::OK);
    load.set_header(header::CONTENT_TYPE, "application/json-patch+json");
    load.body = RequestBody::ReplaceN;
    load
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| doc | scenario | freshness | direct req/s | proxied req/s | ratio | p50 / p99 ms direct | p50 / p99 ms proxied | CPU cores direct / proxied | up req/req | up conns | proxied statuses |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let Some(median) = row.median() else { continue };
        let ratio = if row.rounds.len() > 1 {
            let ratios = row.rounds.iter().map(Round::ratio);
            let min = ratios.clone().fold(f64::INFINITY, f64::min);
            let max = ratios.fold(f64::NEG_INFINITY, f64::max);
            format!("{:.2} [{min:.2}–{max:.2}]", median.ratio())
        } else {
            format!("{:.2}", median.ratio())
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {ratio} | {:.2} / {:.2} | {:.2} / {:.2} | {} / {} | {:.2} | {} | {} |",
            common::size_label(row.case.size),
            row.case.scenario,
            row.case.freshness,
            median.direct.rps(),
            median.proxied.rps(),
            median.direct.percentile_ms(0.5),
            median.direct.percentile_ms(0.99),
            median.proxied.percentile_ms(0.5),
            median.proxied.percentile_ms(0.99),
            median.direct.cpu(),
            median.proxied.cpu(),
            median.upstream_per_request,
            median.upstream_connections,
            median.proxied.status_mix(),
        );
    }
    println!();
    let mut clean = true;
    for row in rows {
        for (i, round) in row.rounds.iter().enumerate() {
            for (side, m) in [("direct", &round.direct), ("proxied", &round.proxied)] {
                if let Some(problem) = m.problem() {
                    clean = false;
                    println!(
                        "WARNING {} {} ({}, {side}, round {}): {problem}",
                        common::size_label(row.case.size),
                        row.case.scenario,
                        row.case.freshness,
                        i + 1,
                    );
                }
            }
        }
    }
    if clean {
        println!("every response had the expected status; no connection errors");
    }
}

/// What one scenario sends: per connection a path and headers, and a body.
#[derive(Clone)]
struct Load {
    method: Method,
    paths: Vec<String>,
    headers: Vec<HeaderMap>,
    body: RequestBody,
    expect: StatusCode,
}

#[derive(Clone)]
enum RequestBody {
    Empty,
    Fixed(Bytes),
    /// `[{"op":"replace","path":"/n","value":<i>}]` with `i` counting per connection, so
    /// that every PATCH changes the document.
    ReplaceN,
}

impl Load {
    fn new(method: Method, paths: Vec<String>, expect: StatusCode) -> Load {
        let headers = vec![HeaderMap::new(); paths.len()];
        Load {
            method,
            paths,
            headers,
            body: RequestBody::Empty,
            expect,
        }
    }

    fn set_header(&mut self, name: header::HeaderName, value: &'static str) {
        for h in &mut self.headers {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
    }

    fn request(&self, addr: SocketAddr, conn: usize, i: u64) -> Request<Full<Bytes>> {
        let body = match &self.body {
            RequestBody::Empty => Bytes::new(),
            RequestBody::Fixed(b) => b.clone(),
            RequestBody::ReplaceN => Bytes::from(format!(r#"[{{"op":"replace","path":"/n","value":{i}}}]"#)),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.paths[conn].parse().unwrap();
        *req.headers_mut() = self.headers[conn].clone();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&addr.to_string()).unwrap());
        req
    }
}

/// What one scenario measured.
#[derive(Clone, Default)]
struct Measured {
    elapsed: Duration,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    expect: u16,
    hit_request_bound: bool,
    /// Responses over the whole run, warm-up included.
    completed: u64,
    /// Microseconds per request, sorted.
    latencies: Vec<u32>,
    /// CPU time of this whole process during the window, in cores (2.0 = two cores busy).
    cpu: Option<f64>,
}

impl Measured {
    fn percentile_ms(&self, p: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return f64::NAN;
        };
        let index = ((last as f64) * p).round() as usize;
        f64::from(self.latencies[index.min(last)]) / 1000.0
    }

    fn cpu(&self) -> String {
        self.cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}"))
    }

    fn requests(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn rps(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }

    fn status_mix(&self) -> String {
        let mut parts: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        if self.errors > 0 {
            parts.push(format!("errors×{}", self.errors));
        }
        parts.join(" ")
    }

    fn problem(&self) -> Option<String> {
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
async fn drive(settings: &Settings, addr: SocketAddr, load: &Load) -> Measured {
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
async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Sends one request and reads the whole response, so the connection can be reused.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> hyper::Result<u16> {
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

async fn fetch_etag(proxy: SocketAddr, path: &str) -> HeaderValue {
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

/// The legacy upstream: GET and PUT of documents in memory, HTTP/1.1 keep-alive, no
/// validators, no conditional requests.
struct Upstream {
    addr: SocketAddr,
    // A std lock: nothing async happens while it is held.
    docs: Arc<RwLock<HashMap<String, Bytes>>>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let docs: Arc<RwLock<HashMap<String, Bytes>>> = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        let task = tokio::spawn(upstream_accept(listener, docs.clone(), counters.clone()));
        Upstream {
            addr,
            docs,
            counters,
            task,
        }
    }

    /// (requests, connections) received so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.counters.requests.load(Ordering::Relaxed),
            self.counters.connections.load(Ordering::Relaxed),
        )
    }

    fn put(&self, path: &str, body: Bytes) {
        self.docs.write().unwrap().insert(path.to_owned(), body);
    }

    fn stop(self) {
        self.task.abort();
    }
}

async fn upstream_accept(
    listener: TcpListener,
    docs: Arc<RwLock<HashMap<String, Bytes>>>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stream.set_nodelay(true).unwrap();
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let (docs, counters) = (docs.clone(), counters.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                upstream_handle(docs.clone(), req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn upstream_handle(
    docs: Arc<RwLock<HashMap<String, Bytes>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let path = parts.uri.path();
    Ok(match parts.method {
        Method::GET | Method::HEAD => match docs.read().unwrap().get(path) {
            Some(doc) => {
                let mut response = Response::new(Full::new(doc.clone()));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            None => status(StatusCode::NOT_FOUND),
        },
        Method::PUT => {
            let created = docs.write().unwrap().insert(path.to_owned(), body).is_none();
            status(if created {
                StatusCode::CREATED
            } else {
                StatusCode::NO_CONTENT
            })
        }
        _ => {
            let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
            response
        }
    })
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// The proxy on 127.0.0.1:0, run as the binary runs it; logging stays off (no tracing
/// subscriber is installed).
struct RunningProxy {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningProxy {
    /// Signals shutdown, waits for `run` to return and re-raises its panic or error.
    async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(result)) => result.unwrap(),
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("proxy task: {e}"),
            Err(_) => panic!("the proxy did not shut down within 15 s"),
        }
    }
}

async fn start_proxy(upstream: SocketAddr) -> RunningProxy {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[route]]
name = "exclusive"
path = "/excl/{{*rest}}"
strip_prefix = "/excl"
upstream = "http://{upstream}"
freshness = "exclusive"

[[route]]
name = "revalidate"
path = "/reval/{{*rest}}"
strip_prefix = "/reval"
upstream = "http://{upstream}"
freshness = "revalidate"
"#
    );
    let config =
        patchgate::Config::from_toml(&toml, "bench.toml").unwrap_or_else(|e| panic!("bench config: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = patchgate::Proxy::with_listeners(&config, listener, None).unwrap();
    let addr = proxy.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    RunningProxy { addr, stop, task }
}
