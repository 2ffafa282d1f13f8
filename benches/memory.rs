//! Memory benchmark: the resident memory of the `patchgate` binary against what it caches.
//!
//! Starts, in this process, a legacy upstream that serves `GET /docs/{n}` with a distinct
//! JSON document of exactly `PATCHGATE_MEM_SIZE` bytes (1024) for
//! every `n`, generated on the fly, and runs the release binary as a child process in front of it (`freshness =
//! "exclusive"`, logging at `warn`). Then it reads `PATCHGATE_MEM_DOCS` (100000) distinct
//! documents through the proxy over 32 keep-alive connections, twice:
//!
//! 1. with a cache large enough for all of them: resident memory (`VmRSS`) against the
//!    cached body bytes, and the bound `1.25 × body bytes + 20 MiB`;
//! 2. with `cache.max_bytes` a third of the working set: the peak resident memory
//!    (`VmHWM`) against `1.25 × max_bytes + 20 MiB`.
//!
//! `PATCHGATE_MEM_AUTH=1` sends an `Authorization` header (a user per connection), so
//! that entries are keyed by credentials as well.
//!
//! `cargo bench --bench memory`. Reports, never asserts: the numbers depend on the
//! allocator and the machine.

#[path = "common/mod.rs"]
mod common;

#[path = "common/child.rs"]
mod child;

use child::{CONNS, Proxy, exact_document, fill, metric, start_upstream};

const MIB: f64 = 1024.0 * 1024.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs every bench target once: keep that short.
    let bench = std::env::args().any(|a| a == "--bench");
    let docs = if bench {
        env_usize("PATCHGATE_MEM_DOCS", 100_000)
    } else {
        2_000
    };
    let size = env_usize("PATCHGATE_MEM_SIZE", 1024);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(docs, size));
}

async fn run(docs: usize, size: usize) {
    let template = exact_document(size);
    let length = template.len();
    let upstream = start_upstream(template).await;
    let body_bytes = (docs * length) as u64;
    println!(
        "{docs} distinct documents of {} ({length} bytes each) through `patchgate` (exclusive), {CONNS} connections\n",
        common::size_label(size)
    );
    println!(
        "| cache.max_bytes | documents cached | cached body bytes | cache_bytes (charged) | RSS after | peak RSS | bound | within |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|:---:|");

    let large = (body_bytes * 4).max(64 << 20);
    let small = (body_bytes / 3).max(1 << 20);
    for max_bytes in [large, small] {
        let proxy = Proxy::start(upstream, max_bytes).await;
        let baseline = proxy.status("VmRSS:");
        fill(proxy.addr, docs).await;
        let rss = proxy.status("VmRSS:");
        let peak = proxy.status("VmHWM:");
        let metrics = proxy.metrics().await;
        let entries = metric(&metrics, "patchgate_cache_entries");
        let charged = metric(&metrics, "patchgate_cache_bytes");
        let cached_body = entries * length as u64;
        let (bound, within) = if max_bytes == large {
            let bound = 1.25 * cached_body as f64 + 20.0 * MIB;
            (bound, rss as f64 <= bound)
        } else {
            // Never above `max_bytes` plus the same allowance.
            let bound = 1.25 * max_bytes as f64 + 20.0 * MIB;
            (bound, peak as f64 <= bound)
        };
        println!(
            "| {:.0} MiB | {entries} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |",
            max_bytes as f64 / MIB,
            cached_body as f64 / MIB,
            charged as f64 / MIB,
            rss as f64 / MIB,
            peak as f64 / MIB,
            bound / MIB,
            if within { "yes" } else { "NO" },
        );
        eprintln!("  (resident before the fill: {:.1} MiB)", baseline as f64 / MIB);
        proxy.stop();
    }
}
