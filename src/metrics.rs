//! Counters and histograms in Prometheus text format, names prefixed `patchgate_`.
//!
//! Plain atomics: recording is on every request, rendering only on a scrape.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use http::{Method, StatusCode};

use crate::cache::Stats as CacheStats;
use crate::problem::Error;

/// Upper bounds of the upstream latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What the read and write paths count besides requests and latency. Each variant is one
/// series, `patchgate_{family}_total{route="…"}` with a `reason` label where it has one;
/// [`Event::series`] is the one place that spells the names.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// `patches_total{reason="applied"}`: a PATCH written upstream, alone or batched.
    PatchApplied,
    /// `patches_total{reason="unchanged"}`: a PATCH that only tests, answered without a write.
    PatchUnchanged,
    /// `patches_total{reason="merged"}`: a stale PATCH applied to the current version
    /// (`on_stale = "merge"`; counted again as applied once written).
    StaleMerged,
    /// `delta_reads_total`: a read answered `226` with a patch from a recent version.
    DeltaRead,
    /// `patches_failed_total{reason}`: a PATCH refused; the reason is the problem's
    /// [`Error::kind`] (`malformed-patch`, `test-failed`, `patch-result-too-large`…).
    PatchFailed(&'a Error),
    /// `patches_failed_total{reason="not-json"}`: the current representation did not parse
    /// (a repeated member name is counted here too).
    CurrentNotJson,
    /// `precondition_failures_total`: the client's precondition failed against the current
    /// representation patchgate read.
    PreconditionFailed,
    /// `precondition_failures_total{reason="upstream"}`: the upstream refused patchgate's
    /// conditional write and the client's own precondition decided.
    UpstreamPreconditionFailed,
    /// `conflict_retries_total`: patchgate's conditional write lost to another writer and
    /// is tried again.
    ConflictRetry,
    /// `batched_writes_total`: one upstream write carried PATCHes that waited for it.
    BatchedWrite,
    /// `batched_reads_total`: a read answered by another identical read's upstream round.
    BatchedRead,
    /// `writes_uncertain_total{reason}`: a sent write got no answer that can be trusted;
    /// the reason is the problem's [`Error::kind`].
    WriteUncertain(&'a Error),
    /// `enriched_412_total`: a 412 sent with the current representation.
    Enriched412,
    /// `shed_total`: a request refused because its route had `max_in_flight` requests.
    Shed,
}

impl Event<'_> {
    /// The series' family (`patchgate_{family}_total`) and `reason` label (empty for none).
    fn series(self) -> (&'static str, &'static str) {
        match self {
            Event::PatchApplied => ("patches", "applied"),
            Event::PatchUnchanged => ("patches", "unchanged"),
            Event::StaleMerged => ("patches", "merged"),
            Event::DeltaRead => ("delta_reads", ""),
            Event::PatchFailed(error) => ("patches_failed", error.kind()),
            Event::CurrentNotJson => ("patches_failed", "not-json"),
            Event::PreconditionFailed => ("precondition_failures", ""),
            Event::UpstreamPreconditionFailed => ("precondition_failures", "upstream"),
            Event::ConflictRetry => ("conflict_retries", ""),
            Event::BatchedWrite => ("batched_writes", ""),
            Event::BatchedRead => ("batched_reads", ""),
            Event::WriteUncertain(error) => ("writes_uncertain", error.kind()),
            Event::Enriched412 => ("enriched_412", ""),
            Event::Shed => ("shed", ""),
        }
    }
}

/// Series are recorded by route id and printed by route name: a reload that gives a
/// route a new id (see [`crate::settings`]) continues the series of its name.
#[derive(Default)]
pub struct Metrics {
    route_names: DashMap<u32, Arc<str>>,
    requests: DashMap<(u32, Method, u16), AtomicU64>,
    in_flight: AtomicI64,
    latency: DashMap<u32, Histogram>,
    /// Keyed by route and [`Event::series`]: rendering sorts by the names it prints.
    events: DashMap<(u32, &'static str, &'static str), AtomicU64>,
    /// By [`Reload`].
    reloads: [AtomicU64; 3],
}

/// How a reload ended, for `patchgate_reloads_total{result="…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The new config is in use.
    Applied,
    /// In use, except keys that only a restart changes.
    RestartNeeded,
    /// Refused; the config in use stays.
    Invalid,
}

impl Reload {
    const ALL: [Reload; 3] = [Reload::Applied, Reload::RestartNeeded, Reload::Invalid];

    pub fn as_str(self) -> &'static str {
        match self {
            Reload::Applied => "applied",
            Reload::RestartNeeded => "restart_needed",
            Reload::Invalid => "invalid",
        }
    }
}

#[derive(Default)]
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
    /// Metrics whose route ids are the positions in `route_names`.
    pub fn new(route_names: Vec<String>) -> Metrics {
        let metrics = Metrics::default();
        metrics.name_routes(
            route_names
                .iter()
                .enumerate()
                .map(|(id, name)| (u32::try_from(id).unwrap_or(u32::MAX), name.as_str())),
        );
        metrics
    }

    /// Names route ids (new ones at a reload); each route's latency series starts at 0.
    pub fn name_routes<'a>(&self, routes: impl Iterator<Item = (u32, &'a str)>) {
        for (id, name) in routes {
            self.route_names.entry(id).or_insert_with(|| Arc::from(name));
            self.latency.entry(id).or_default();
        }
    }

    /// Counts one reload by how it ended.
    pub fn record_reload(&self, result: Reload) {
        if let Some(counter) = self.reloads.get(result as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
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
        let Some(h) = self.latency.get(&route) else {
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

    /// Counts one [`Event`] for `route`.
    pub fn event(&self, route: u32, event: Event<'_>) {
        let (family, reason) = event.series();
        self.events
            .entry((route, family, reason))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn route_label(&self, route: u32) -> Arc<str> {
        self.route_names
            .get(&route)
            .map_or_else(|| Arc::from(""), |name| Arc::clone(&name))
    }

    pub fn render(&self, cache: &CacheStats) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP patchgate_requests_total Requests answered, by route, method and status.\n");
        out.push_str("# TYPE patchgate_requests_total counter\n");
        let mut rows: BTreeMap<(Arc<str>, String, u16), u64> = BTreeMap::new();
        for e in &self.requests {
            let (route, method, status) = e.key();
            let label = (self.route_label(*route), method.to_string(), *status);
            *rows.entry(label).or_default() += e.value().load(Ordering::Relaxed);
        }
        for ((route, method, status), n) in rows {
            let _ = writeln!(
                out,
                "patchgate_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP patchgate_log_lines_dropped_total Access log lines dropped because the log queue was full.\n",
        );
        out.push_str("# TYPE patchgate_log_lines_dropped_total counter\n");
        let _ = writeln!(
            out,
            "patchgate_log_lines_dropped_total {}",
            crate::logging::dropped()
        );
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
        let mut histograms: BTreeMap<Arc<str>, ([u64; LATENCY_BUCKETS.len()], u64, u64)> = BTreeMap::new();
        for e in &self.latency {
            let (buckets, count, sum) = histograms.entry(self.route_label(*e.key())).or_default();
            for (total, bucket) in buckets.iter_mut().zip(&e.value().buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
            *count += e.value().count.load(Ordering::Relaxed);
            *sum += e.value().sum_micros.load(Ordering::Relaxed);
        }
        for (route, (buckets, count, sum_micros)) in histograms {
            let mut cumulative = 0;
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(buckets) {
                cumulative += bucket;
                let _ = writeln!(
                    out,
                    "patchgate_upstream_latency_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "patchgate_upstream_latency_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let sum = sum_micros as f64 / 1e6;
            let _ = writeln!(
                out,
                "patchgate_upstream_latency_seconds_sum{{route=\"{route}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "patchgate_upstream_latency_seconds_count{{route=\"{route}\"}} {count}"
            );
        }

        // A family's lines stay together under one TYPE line (the text format's rule).
        let mut events: BTreeMap<(&str, Arc<str>, &str), u64> = BTreeMap::new();
        for e in &self.events {
            let (route, family, reason) = *e.key();
            *events
                .entry((family, self.route_label(route), reason))
                .or_default() += e.value().load(Ordering::Relaxed);
        }
        let mut last_family = "";
        for ((family, route, reason), n) in events {
            if family != last_family {
                let _ = writeln!(out, "# TYPE patchgate_{family}_total counter");
                last_family = family;
            }
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
        out.push_str(
            "# HELP patchgate_reloads_total Configuration reloads (SIGHUP, POST /reload), by result.\n",
        );
        out.push_str("# TYPE patchgate_reloads_total counter\n");
        for (result, counter) in Reload::ALL.iter().zip(&self.reloads) {
            let _ = writeln!(
                out,
                "patchgate_reloads_total{{result=\"{}\"}} {}",
                result.as_str(),
                counter.load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PatchError;

    #[test]
    fn each_event_family_is_one_group_under_one_type_line_across_routes() {
        let metrics = Metrics::new(vec!["a".into(), "b".into()]);
        for route in [1, 0, 1] {
            metrics.event(route, Event::PatchApplied);
            metrics.event(route, Event::ConflictRetry);
        }
        let text = metrics.render(&CacheStats::default());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("patches_total") || l.contains("conflict_retries_total"))
            .collect();
        assert_eq!(
            lines,
            [
                "# TYPE patchgate_conflict_retries_total counter",
                "patchgate_conflict_retries_total{route=\"a\"} 1",
                "patchgate_conflict_retries_total{route=\"b\"} 2",
                "# TYPE patchgate_patches_total counter",
                "patchgate_patches_total{route=\"a\",reason=\"applied\"} 1",
                "patchgate_patches_total{route=\"b\",reason=\"applied\"} 2",
            ]
        );
    }

    /// The event series as dashboards and the README know them: these names must not change.
    #[test]
    fn every_event_renders_under_its_established_name() {
        let metrics = Metrics::new(vec!["a".into()]);
        let test_failed = Error::Patch(PatchError::TestFailed {
            op_index: 0,
            path: "/x".into(),
        });
        let malformed = Error::Patch(PatchError::Malformed { detail: "x".into() });
        for event in [
            Event::PatchApplied,
            Event::PatchApplied,
            Event::PatchUnchanged,
            Event::StaleMerged,
            Event::DeltaRead,
            Event::PatchFailed(&test_failed),
            Event::PatchFailed(&malformed),
            Event::CurrentNotJson,
            Event::PreconditionFailed,
            Event::UpstreamPreconditionFailed,
            Event::ConflictRetry,
            Event::BatchedWrite,
            Event::BatchedRead,
            Event::WriteUncertain(&Error::UpstreamTimeout),
            Event::Enriched412,
            Event::Shed,
        ] {
            metrics.event(0, event);
        }
        let text = metrics.render(&CacheStats::default());
        let events: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# TYPE patchgate_batched_reads_total"))
            .take_while(|l| !l.starts_with("# HELP patchgate_cache_hits_total"))
            .collect();
        assert_eq!(
            events,
            [
                "# TYPE patchgate_batched_reads_total counter",
                "patchgate_batched_reads_total{route=\"a\"} 1",
                "# TYPE patchgate_batched_writes_total counter",
                "patchgate_batched_writes_total{route=\"a\"} 1",
                "# TYPE patchgate_conflict_retries_total counter",
                "patchgate_conflict_retries_total{route=\"a\"} 1",
                "# TYPE patchgate_delta_reads_total counter",
                "patchgate_delta_reads_total{route=\"a\"} 1",
                "# TYPE patchgate_enriched_412_total counter",
                "patchgate_enriched_412_total{route=\"a\"} 1",
                "# TYPE patchgate_patches_total counter",
                "patchgate_patches_total{route=\"a\",reason=\"applied\"} 2",
                "patchgate_patches_total{route=\"a\",reason=\"merged\"} 1",
                "patchgate_patches_total{route=\"a\",reason=\"unchanged\"} 1",
                "# TYPE patchgate_patches_failed_total counter",
                "patchgate_patches_failed_total{route=\"a\",reason=\"malformed-patch\"} 1",
                "patchgate_patches_failed_total{route=\"a\",reason=\"not-json\"} 1",
                "patchgate_patches_failed_total{route=\"a\",reason=\"test-failed\"} 1",
                "# TYPE patchgate_precondition_failures_total counter",
                "patchgate_precondition_failures_total{route=\"a\"} 1",
                "patchgate_precondition_failures_total{route=\"a\",reason=\"upstream\"} 1",
                "# TYPE patchgate_shed_total counter",
                "patchgate_shed_total{route=\"a\"} 1",
                "# TYPE patchgate_writes_uncertain_total counter",
                "patchgate_writes_uncertain_total{route=\"a\",reason=\"upstream-timeout\"} 1",
            ]
        );
    }
}
