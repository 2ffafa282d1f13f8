//! Counters and histograms in Prometheus text format, names prefixed `patchgate_`.
//!
//! Plain atomics: recording is on every request, rendering only on a scrape.

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use dashmap::DashMap;
use http::{Method, StatusCode};

use crate::cache::Stats as CacheStats;

/// Upper bounds of the upstream latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

pub struct Metrics {
    route_names: Vec<String>,
    requests: DashMap<(u32, Method, u16), AtomicU64>,
    in_flight: AtomicI64,
    latency: Vec<Histogram>,
    events: DashMap<(u32, &'static str, &'static str), AtomicU64>,
}

struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Decrements the in-flight gauge when the request is done, however it ends.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

const NO_ROUTE: u32 = u32::MAX;

impl Metrics {
    pub fn new(route_names: Vec<String>) -> Metrics {
        let latency = route_names
            .iter()
            .map(|_| Histogram {
                buckets: Default::default(),
                count: AtomicU64::new(0),
                sum_micros: AtomicU64::new(0),
            })
            .collect();
        Metrics {
            route_names,
            requests: DashMap::new(),
            in_flight: AtomicI64::new(0),
            latency,
            events: DashMap::new(),
        }
    }

    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub fn record_request(&self, route: Option<u32>, method: &Method, status: StatusCode) {
        let key = (route.unwrap_or(NO_ROUTE), method.clone(), status.as_u16());
        if let Some(counter) = self.requests.get(&key) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.requests
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_upstream_latency(&self, route: u32, elapsed: Duration) {
        let Some(h) = self.latency.get(route as usize) else {
            return;
        };
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a named event of the write path, e.g. `("patches", "applied")`,
    /// `("patches_failed", "test-failed")`, `("conflict_retries", "")`.
    pub fn event(&self, route: u32, family: &'static str, reason: &'static str) {
        self.events
            .entry((route, family, reason))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn route_label(&self, route: u32) -> &str {
        self.route_names.get(route as usize).map_or("", String::as_str)
    }

    pub fn render(&self, cache: &CacheStats) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP patchgate_requests_total Requests answered, by route, method and status.\n");
        out.push_str("# TYPE patchgate_requests_total counter\n");
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort_by(|a, b| (a.0.0, a.0.1.as_str(), a.0.2).cmp(&(b.0.0, b.0.1.as_str(), b.0.2)));
        for ((route, method, status), n) in rows {
            let _ = writeln!(
                out,
                "patchgate_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {n}",
                self.route_label(route),
                method,
                status
            );
        }
        out.push_str("# HELP patchgate_in_flight_requests Requests being handled now.\n");
        out.push_str("# TYPE patchgate_in_flight_requests gauge\n");
        let _ = writeln!(
            out,
            "patchgate_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );

        out.push_str(
            "# HELP patchgate_upstream_latency_seconds Upstream exchange latency up to the response head.\n",
        );
        out.push_str("# TYPE patchgate_upstream_latency_seconds histogram\n");
        for (i, h) in self.latency.iter().enumerate() {
            let route = self.route_label(i as u32);
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "patchgate_upstream_latency_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "patchgate_upstream_latency_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "patchgate_upstream_latency_seconds_sum{{route=\"{route}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "patchgate_upstream_latency_seconds_count{{route=\"{route}\"}} {count}"
            );
        }

        let mut events: Vec<_> = self
            .events
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        events.sort();
        let mut last_family = "";
        for ((route, family, reason), n) in events {
            if family != last_family {
                let _ = writeln!(out, "# TYPE patchgate_{family}_total counter");
                last_family = family;
            }
            let route = self.route_label(route);
            if reason.is_empty() {
                let _ = writeln!(out, "patchgate_{family}_total{{route=\"{route}\"}} {n}");
            } else {
                let _ = writeln!(
                    out,
                    "patchgate_{family}_total{{route=\"{route}\",reason=\"{reason}\"}} {n}"
                );
            }
        }

        for (name, kind, help, value) in [
            (
                "cache_hits_total",
                "counter",
                "Cache lookups answered from the cache.",
                cache.hits,
            ),
            (
                "cache_misses_total",
                "counter",
                "Cache lookups that found nothing.",
                cache.misses,
            ),
            (
                "cache_inserts_total",
                "counter",
                "Responses stored.",
                cache.inserts,
            ),
            (
                "cache_evictions_total",
                "counter",
                "Entries evicted to stay within cache.max_bytes.",
                cache.evictions,
            ),
            (
                "cache_invalidations_total",
                "counter",
                "Resources dropped after writes.",
                cache.invalidations,
            ),
            (
                "cache_bytes",
                "gauge",
                "Bytes accounted to cached entries (bodies plus overhead).",
                cache.bytes,
            ),
            ("cache_entries", "gauge", "Cached entries.", cache.entries),
        ] {
            let _ = writeln!(
                out,
                "# HELP patchgate_{name} {help}\n# TYPE patchgate_{name} {kind}\npatchgate_{name} {value}"
            );
        }
        out
    }
}
