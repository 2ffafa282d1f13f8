//! `PATCHGATE_BENCH_MODE=latency`: latency percentiles at a constant request rate.
//!
//! For each scenario (GET → 200, GET `If-None-Match` → 304, PATCH spread over many
//! documents) it first measures the direct upstream's capacity (closed loop, as the
//! throughput mode does: GET, or PUT for the PATCH row), then sends requests at
//! `PATCHGATE_BENCH_RATE` (0.5) × that capacity to each target in turn: the upstream
//! directly, nginx `proxy_pass`, patchgate `revalidate` and `exclusive`.
//!
//! Open loop, as wrk2 does: a pacer thread decides when each request is due, on a fixed
//! schedule, whatever happened to the ones before; a connection that is still busy when
//! its next request is due sends it late, and every latency is measured from the time the
//! request was due, not when it left. A stall therefore shows in the percentiles of every
//! request it delayed (no coordinated omission). Latencies go to an HDR histogram (1 µs
//! to 60 s, 3 significant digits).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::{Method, StatusCode, header};
use tokio::sync::mpsc;

use crate::client::{Load, connect, drive, exchange, fetch_etag};
use crate::nginx::Nginx;
use crate::servers::{ChildProxy, Upstream, start_proxy};
use crate::{Settings, common};

struct Target {
    name: &'static str,
    addr: SocketAddr,
    load: Load,
}

struct Scenario {
    name: &'static str,
    /// Measured closed loop for the upstream's capacity.
    capacity: Load,
    targets: Vec<Target>,
}

#[derive(Default)]
struct Outcome {
    hist: Option<Histogram<u64>>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    /// Requests still queued when the run was cut off.
    unsent: u64,
}

pub async fn run(settings: Settings) {
    let _logging = crate::init_logging();
    let fraction: f64 = std::env::var("PATCHGATE_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5);
    let upstream = Upstream::start().await;
    // A process of its own, as nginx is: in this process it would share tokio's workers
    // with the load generator and the upstream, whose scheduling then counts in its tail.
    // `PATCHGATE_BENCH_PROXY=in-process` measures it as the throughput bench runs it.
    let in_process = std::env::var("PATCHGATE_BENCH_PROXY").is_ok_and(|v| v == "in-process");
    let (running, child) = if in_process {
        (Some(start_proxy(upstream.addr).await), None)
    } else {
        (None, Some(ChildProxy::start(upstream.addr).await))
    };
    let proxy_addr = match (&running, &child) {
        (Some(p), _) => p.addr,
        (_, Some(c)) => c.addr,
        _ => unreachable!("one of the two runs"),
    };
    let nginx = Nginx::start(upstream.addr);
    let size = settings.sizes.first().copied().unwrap_or(1024);
    println!(
        "patchgate latency bench: {} connections, open loop at {fraction} × the direct upstream's capacity, \
         {:.1} s per target after {:.1} s warm-up, {} KiB documents, patchgate {}",
        settings.conns,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        size / 1024,
        if in_process {
            "in this process"
        } else {
            "as a child process"
        }
    );
    let scenarios = scenarios(
        &settings,
        &upstream,
        proxy_addr,
        nginx.as_ref().map(|n| n.addr),
        size,
    )
    .await;
    for round in 1..=settings.rounds {
        println!();
        println!("round {round}");
        println!(
            "| scenario | target | rate req/s | p50 ms | p99 ms | p99.9 ms | max ms | added p99 ms | statuses |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
        for scenario in &scenarios {
            let capacity = drive(&settings, upstream.addr, &scenario.capacity).await.rps();
            let rate = capacity * fraction;
            let mut direct_p99 = None;
            for target in &scenario.targets {
                let outcome = open_loop(&settings, target.addr, &target.load, rate).await;
                let Some(hist) = &outcome.hist else { continue };
                let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
                let p99 = ms(0.99);
                let added = direct_p99.map_or("-".to_owned(), |d: f64| format!("{:+.2}", p99 - d));
                if direct_p99.is_none() {
                    direct_p99 = Some(p99);
                }
                let mut mix: Vec<String> = outcome.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
                if outcome.errors > 0 {
                    mix.push(format!("errors×{}", outcome.errors));
                }
                if outcome.unsent > 0 {
                    mix.push(format!("unsent×{}", outcome.unsent));
                }
                println!(
                    "| {} | {} | {rate:.0} | {:.2} | {p99:.2} | {:.2} | {:.2} | {added} | {} |",
                    scenario.name,
                    target.name,
                    ms(0.5),
                    ms(0.999),
                    hist.max() as f64 / 1000.0,
                    mix.join(" "),
                );
            }
        }
    }
    println!();
    println!(
        "direct and nginx answer the If-None-Match row with 200 (the upstream has no validators); PATCH rows: direct and nginx send the whole document with PUT"
    );
    if let Some(proxy) = running {
        proxy.stop().await;
    }
    drop(child);
    drop(nginx);
    upstream.stop();
}

async fn scenarios(
    settings: &Settings,
    upstream: &Upstream,
    proxy: SocketAddr,
    nginx: Option<SocketAddr>,
    size: usize,
) -> Vec<Scenario> {
    let doc = bytes::Bytes::from(common::document(size));
    let conns = settings.conns;
    let seed = |name: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|k| {
                let path = format!("/docs/{size}/lat-{name}/{k}");
                upstream.put(&path, doc.clone());
                path
            })
            .collect()
    };
    let prefixed = |prefix: &str, paths: &[String]| -> Vec<String> {
        paths.iter().map(|p| format!("{prefix}{p}")).collect()
    };
    let get = |paths: Vec<String>, expect| Load::new(Method::GET, paths, expect);
    let put = |docs: Vec<String>| {
        let mut load = Load::new(Method::PUT, vec![String::new(); conns], StatusCode::NO_CONTENT);
        load.set_header(header::CONTENT_TYPE, "application/json");
        load.body = crate::client::RequestBody::Fixed(doc.clone());
        load.spread_over(docs)
    };
    let patch = |docs: Vec<String>| crate::patch_load(vec![String::new(); conns]).spread_over(docs);
    let with_nginx = |targets: &mut Vec<Target>, load: Load| {
        if let Some(addr) = nginx {
            targets.insert(
                1,
                Target {
                    name: "nginx proxy_pass",
                    addr,
                    load,
                },
            );
        }
    };

    // GET → 200: one document per connection.
    let reads = seed("get", conns);
    let mut targets = vec![
        Target {
            name: "direct",
            addr: upstream.addr,
            load: get(reads.clone(), StatusCode::OK),
        },
        Target {
            name: "patchgate revalidate",
            addr: proxy,
            load: get(prefixed("/reval", &reads), StatusCode::OK),
        },
        Target {
            name: "patchgate exclusive",
            addr: proxy,
            load: get(prefixed("/excl", &reads), StatusCode::OK),
        },
    ];
    with_nginx(&mut targets, get(reads.clone(), StatusCode::OK));
    let mut out = vec![Scenario {
        name: "GET → 200",
        capacity: get(reads.clone(), StatusCode::OK),
        targets,
    }];

    // GET If-None-Match → 304 with the tag patchgate serves.
    let mut targets = Vec::new();
    for (name, prefix) in [
        ("patchgate revalidate", "/reval"),
        ("patchgate exclusive", "/excl"),
    ] {
        let mut load = get(prefixed(prefix, &reads), StatusCode::NOT_MODIFIED);
        for (c, path) in load.paths.clone().iter().enumerate() {
            let etag = fetch_etag(proxy, path).await;
            load.headers[c].insert(header::IF_NONE_MATCH, etag);
        }
        targets.push(Target {
            name,
            addr: proxy,
            load,
        });
    }
    let mut plain = get(reads.clone(), StatusCode::OK);
    plain.headers.clone_from(&targets[0].load.headers);
    targets.insert(
        0,
        Target {
            name: "direct",
            addr: upstream.addr,
            load: plain.clone(),
        },
    );
    with_nginx(&mut targets, plain);
    out.push(Scenario {
        name: "GET If-None-Match → 304",
        capacity: get(reads, StatusCode::OK),
        targets,
    });

    // PATCH over many documents (direct and nginx: the PUT a client would send).
    let n = 1000;
    let mut targets = vec![
        Target {
            name: "direct",
            addr: upstream.addr,
            load: put(seed("put-direct", n)),
        },
        Target {
            name: "patchgate revalidate",
            addr: proxy,
            load: patch(prefixed("/reval", &seed("patch-reval", n))),
        },
        Target {
            name: "patchgate exclusive",
            addr: proxy,
            load: patch(prefixed("/excl", &seed("patch-excl", n))),
        },
    ];
    with_nginx(&mut targets, put(seed("put-nginx", n)));
    out.push(Scenario {
        name: "PATCH, 1 000 documents",
        capacity: put(seed("put-capacity", n)),
        targets,
    });
    out
}

/// Sends `load` to `addr` at `rate` requests/s on a fixed schedule for the warm-up and
/// the measured window; latencies of requests due in the window, from when each was due.
async fn open_loop(settings: &Settings, addr: SocketAddr, load: &Load, rate: f64) -> Outcome {
    let conns = load.paths.len().max(1);
    let warmup = settings.warmup;
    let total = settings.warmup + settings.duration;
    // No request is sent after this; what is still queued then is counted as unsent.
    let cutoff = Instant::now() + total + Duration::from_secs(5);
    let mut queues = Vec::with_capacity(conns);
    let mut tasks = Vec::with_capacity(conns);
    for conn in 0..conns {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant, bool)>();
        queues.push(tx);
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome {
                hist: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
                ..Outcome::default()
            };
            let mut sender = None;
            while let Some((i, due, measured)) = rx.recv().await {
                if Instant::now() > cutoff {
                    outcome.unsent += 1;
                    continue;
                }
                let s = match sender.as_mut() {
                    Some(s) => s,
                    None => match connect(addr).await {
                        Some(s) => sender.insert(s),
                        None => {
                            outcome.errors += 1;
                            continue;
                        }
                    },
                };
                let result =
                    tokio::time::timeout(Duration::from_secs(10), exchange(s, load.request(addr, conn, i)))
                        .await;
                let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(Ok(status)) if measured => {
                        *outcome.statuses.entry(status).or_default() += 1;
                        if let Some(h) = outcome.hist.as_mut() {
                            h.saturating_record(micros.max(1));
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => {
                        outcome.errors += u64::from(measured);
                        sender = None;
                    }
                }
            }
            outcome
        }));
    }
    // The pacer: a thread of its own, because tokio's timers tick in milliseconds. It
    // sleeps until the next request is due (or sends at once when behind), so the
    // schedule stays exact; the wake-up delay (tens of µs) counts as latency for every
    // target alike.
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let pacer = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(5);
        let mut k: u64 = 0;
        loop {
            let offset = interval.mul_f64(k as f64);
            if offset >= total {
                break;
            }
            let due = start + offset;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let conn = (k % conns as u64) as usize;
            let _ = queues[conn].send((k / conns as u64, due, offset >= warmup));
            k += 1;
        }
    });
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    let mut all = Outcome {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Outcome::default()
    };
    for task in tasks {
        let Ok(o) = task.await else { continue };
        if let (Some(a), Some(b)) = (all.hist.as_mut(), o.hist.as_ref()) {
            let _ = a.add(b);
        }
        for (s, n) in o.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
        all.errors += o.errors;
        all.unsent += o.unsent;
    }
    all
}
