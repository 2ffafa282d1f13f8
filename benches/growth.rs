//! How cost grows: the README's growth tables, one section each, chosen with
//! `PATCHGATE_GROWTH` (default `routes,docs,conns`).
//!
//! - `routes`: time to route one request by number of routes (10 → 1 000), in process;
//! - `docs`: GET-hit throughput and resident memory by number of cached 1 KiB documents
//!   (10³ → 10⁶, `PATCHGATE_GROWTH_DOCS`), the release binary as a child process
//!   (`exclusive`) in front of an in-process upstream, read over 32 connections;
//! - `conns`: resident memory and latency percentiles by open connections (100 →
//!   10 000, `PATCHGATE_GROWTH_CONNS`): every connection opened and used once, then a
//!   constant rate (`PATCHGATE_GROWTH_RATE`, 2 000/s) spread over all of them for 5 s,
//!   each latency taken from the request's planned send time (open loop).
//!
//! `cargo bench --bench growth`. Reports, never asserts: the machine is shared.

#[path = "common/mod.rs"]
mod common;

#[path = "common/child.rs"]
mod child;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use child::{CONNS, Proxy, exact_document, fill, metric, start_upstream};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use patchgate::config::Config;
use patchgate::route::RouteTable;
use tokio::net::TcpStream;

const MIB: f64 = 1024.0 * 1024.0;

fn list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    // `cargo test --benches` runs every bench target once: keep that short.
    let bench = std::env::args().any(|a| a == "--bench");
    let sections = std::env::var("PATCHGATE_GROWTH").unwrap_or_else(|_| "routes,docs,conns".into());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for section in sections.split(',') {
        match (section.trim(), bench) {
            ("routes", _) => routes(if bench { &[10, 100, 1000] } else { &[10] }),
            ("docs", true) => runtime.block_on(docs(&list(
                "PATCHGATE_GROWTH_DOCS",
                &[1_000, 10_000, 100_000, 1_000_000],
            ))),
            ("docs", false) => runtime.block_on(docs(&[100])),
            ("conns", true) => {
                runtime.block_on(conns(&list("PATCHGATE_GROWTH_CONNS", &[100, 1_000, 10_000])))
            }
            ("conns", false) => runtime.block_on(conns(&[10])),
            (other, _) => eprintln!("unknown section {other:?}: routes, docs or conns"),
        }
    }
}

/// Nanoseconds per lookup, the best of five rounds of `iterations`.
fn per_lookup(table: &RouteTable, path: &str, iterations: u32) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(table.find(black_box(path)));
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .fold(f64::INFINITY, f64::min)
}

fn routes(counts: &[usize]) {
    println!("\n### Routing time by number of routes (ns per lookup, best of 5)\n");
    println!(
        "| routes | distinct prefixes: first route | last route | no route | shared prefix `/api/{{id}}/rN`: last route |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &n in counts {
        let table = |template: &dyn Fn(usize) -> String| {
            let mut toml = String::new();
            for i in 0..n {
                toml.push_str(&format!(
                    "[[route]]\nname = \"r{i}\"\npath = \"{}\"\nupstream = \"http://127.0.0.1:9\"\n",
                    template(i)
                ));
            }
            let config = Config::from_toml(&toml, "growth.toml").expect("a valid config");
            RouteTable::new(&config.routes)
        };
        let distinct = table(&|i| format!("/api/r{i}/items/{{id}}"));
        let shared = table(&|i| format!("/api/{{id}}/r{i}"));
        let iterations = 200_000;
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} |",
            per_lookup(&distinct, "/api/r0/items/7", iterations),
            per_lookup(&distinct, &format!("/api/r{}/items/7", n - 1), iterations),
            per_lookup(&distinct, "/nothing/here", iterations),
            per_lookup(&shared, &format!("/api/7/r{}", n - 1), iterations / 10),
        );
    }
}

async fn docs(counts: &[usize]) {
    println!(
        "\n### GET hits and resident memory by number of cached {} documents\n",
        common::size_label(1024)
    );
    println!(
        "| documents | RSS after the fill | (RSS − RSS at start − bodies) per document | GET hits/s (32 connections, random documents) | hit ratio |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let upstream = start_upstream(exact_document(1024)).await;
    for &n in counts {
        let proxy = Proxy::start(upstream, (n as u64 * 4096).max(64 << 20)).await;
        let baseline = proxy.status("VmRSS:");
        fill(proxy.addr, n).await;
        let rss = proxy.status("VmRSS:");
        let before = metric(&proxy.metrics().await, "patchgate_cache_hits_total");
        let (answered, elapsed) = closed_loop(proxy.addr, n, Duration::from_secs(5)).await;
        let hits = metric(&proxy.metrics().await, "patchgate_cache_hits_total") - before;
        println!(
            "| {n} | {:.1} MiB | {:.0} B | {:.0} | {:.3} |",
            rss as f64 / MIB,
            (rss as f64 - baseline as f64 - (n * 1024) as f64) / n as f64,
            answered as f64 / elapsed.as_secs_f64(),
            hits as f64 / answered.max(1) as f64,
        );
        proxy.stop();
    }
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut SendRequest<Empty<Bytes>>, n: usize) {
    let request = Request::get(format!("/docs/{n}"))
        .header(header::HOST, "bench")
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.expect("body");
}

/// Reads random documents below `docs` over `CONNS` connections for `duration`.
async fn closed_loop(addr: SocketAddr, docs: usize, duration: Duration) -> (u64, Duration) {
    let answered = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNS as u64)
        .map(|k| {
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut seed = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                while start.elapsed() < duration {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    get(&mut sender, (seed % docs as u64) as usize).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    (answered.load(Ordering::Relaxed), start.elapsed())
}

async fn conns(counts: &[usize]) {
    let rate = list("PATCHGATE_GROWTH_RATE", &[2_000])[0].max(1);
    println!(
        "\n### Resident memory and latency by open connections ({rate} GET hits/s spread over all, 5 s, open loop)\n"
    );
    println!("| connections | RSS idle | RSS after | p50 | p99 | p99.9 | max |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let upstream = start_upstream(exact_document(1024)).await;
    for &n in counts {
        let proxy = Proxy::start(upstream, 64 << 20).await;
        fill(proxy.addr, 100).await;
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let mut sender = connect(proxy.addr).await;
            get(&mut sender, i % 100).await;
            senders.push(sender);
        }
        let idle = proxy.status("VmRSS:");
        let mut latencies = open_loop(senders, rate, Duration::from_secs(5)).await;
        let rss = proxy.status("VmRSS:");
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "| {n} | {:.1} MiB | {:.1} MiB | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            idle as f64 / MIB,
            rss as f64 / MIB,
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0),
        );
        proxy.stop();
    }
}

/// Request `i` goes on connection `i % n` at `i / rate` seconds. Its latency counts from
/// then when its connection was still busy (so a stall shows in the latency of the
/// requests planned behind it), else from when it was sent: the timer wakes up to a
/// millisecond late, and that is not the proxy's.
async fn open_loop(
    senders: Vec<SendRequest<Empty<Bytes>>>,
    rate: usize,
    duration: Duration,
) -> Vec<Duration> {
    let n = senders.len();
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(k, mut sender)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut free_at = start;
                for i in (k..total).step_by(n) {
                    let planned = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(planned).await;
                    let from = if free_at > planned {
                        planned
                    } else {
                        tokio::time::Instant::now()
                    };
                    get(&mut sender, i % 100).await;
                    free_at = tokio::time::Instant::now();
                    latencies.push(free_at - from);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.expect("open-loop task"));
    }
    all
}
