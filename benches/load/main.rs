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
//! the range of ratios), `PATCHGATE_BENCH_REDIS` (a `redis://` URL: the proxy runs with
//! `[cluster]` against that server), `PATCHGATE_BENCH_DOCS` (1000: documents the "spread"
//! cases write in turn), `PATCHGATE_BENCH_NGINX` (`/usr/sbin/nginx`, for the nginx
//! `proxy_pass` rows), `PATCHGATE_BENCH_LOG` (`info`/`warn`: log as the binary does, to
//! stderr), `PATCHGATE_BENCH_MODE=latency` (percentiles at a constant rate, see
//! `latency.rs`; `PATCHGATE_BENCH_RATE`, 0.5 of the direct capacity). Without `--bench`
//! (`cargo test --benches`) it runs a short smoke pass. Load generator and servers share the machine's cores: compare ratios,
//! not absolute numbers.

mod client; // the load generator: requests, connections, measurements
#[path = "../common/mod.rs"]
mod common;
mod latency; // PATCHGATE_BENCH_MODE=latency: percentiles at a constant rate, open loop
mod nginx; // nginx proxy_pass in front of the same upstream, a child process
mod servers; // the legacy upstream and the proxy, in this process
mod spread; // writes spread over many documents

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};

use client::{Load, Measured, RequestBody, drive, fetch_etag};
use servers::{Upstream, start_proxy};

pub struct Settings {
    pub duration: Duration,
    pub warmup: Duration,
    pub conns: usize,
    sizes: Vec<usize>,
    pub max_requests: u64,
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
    let latency_mode = std::env::var("PATCHGATE_BENCH_MODE").is_ok_and(|m| m == "latency");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if latency_mode {
        runtime.block_on(latency::run(settings));
    } else {
        runtime.block_on(run(settings));
    }
}

/// `PATCHGATE_BENCH_LOG=info|warn`: the proxy logs as the binary does at that level
/// (access log in the default text format), to stderr; unset: no subscriber at all.
pub fn init_logging() -> Option<patchgate::logging::Guard> {
    let level = std::env::var("PATCHGATE_BENCH_LOG")
        .ok()
        .filter(|l| !l.is_empty())?;
    println!("logging: RUST_LOG={level}, text lines to stderr");
    Some(patchgate::logging::init_with_filter(
        &level,
        patchgate::logging::Format::Text,
    ))
}

async fn run(settings: Settings) {
    let _logging = init_logging();
    let upstream = Upstream::start().await;
    let proxy = start_proxy(upstream.addr).await;
    let nginx = nginx::Nginx::start(upstream.addr);
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
        cases.extend(hot_document(&settings, &upstream, size));
        cases.extend(spread::cases(
            &settings,
            &upstream,
            nginx.as_ref().map(|n| n.addr),
            size,
        ));
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
    drop(nginx);
    upstream.stop();
}

/// One line of the table: the same request pattern sent straight to the upstream and
/// through the proxy, measured one right after the other.
pub struct Case {
    pub size: usize,
    pub scenario: &'static str,
    pub freshness: &'static str,
    pub direct: Load,
    pub proxied: Load,
    /// Where the proxied side is sent, when not patchgate (nginx).
    pub via: Option<SocketAddr>,
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
    let proxied = drive(settings, case.via.unwrap_or(proxy), &case.proxied).await;
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
            via: None,
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
        via: None,
    });

    for (freshness, prefix) in [("exclusive", "/excl"), ("revalidate", "/reval")] {
        cases.push(Case {
            size,
            scenario: "PATCH (JSON Patch replace) vs PUT",
            freshness,
            direct: put(docs("put-direct")),
            proxied: patch_load(prefixed(prefix, docs(&format!("patch-{freshness}")))),
            via: None,
        });
    }
    cases
}

/// Every connection reads, then patches, the same document: revalidate reads share
/// upstream exchanges, and the write lock serializes the PATCHes (against direct PUTs to
/// one document, which the upstream does not serialize).
fn hot_document(settings: &Settings, upstream: &Upstream, size: usize) -> Vec<Case> {
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
    upstream.put(&path, doc.clone());
    let read_path = format!("/docs/{size}/hot-read");
    upstream.put(&read_path, doc);
    let one = |path: String| vec![path; settings.conns];
    vec![
        Case {
            size,
            scenario: "GET → 200, one document for all connections",
            freshness: "revalidate",
            direct: Load::new(Method::GET, one(read_path.clone()), StatusCode::OK),
            proxied: Load::new(Method::GET, one(format!("/reval{read_path}")), StatusCode::OK),
            via: None,
        },
        Case {
            size,
            scenario: "PATCH, one document for all connections",
            freshness: "exclusive",
            direct: put,
            proxied: patch_load(one(format!("/excl{path}"))),
            via: None,
        },
    ]
}

pub fn patch_load(paths: Vec<String>) -> Load {
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
