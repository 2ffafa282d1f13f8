//! `freshness = "http"` on the read path: when a stored entry answers without the
//! upstream, what an upstream answer stores, and the `Age` it is served with. The rules
//! themselves are pure functions in [`crate::cache::freshness`].

use std::time::SystemTime;

use http::{HeaderMap, Response, header};

use crate::body::Body;
use crate::cache::freshness::{self, Wants};
use crate::cache::{Cache, Entry, replayed};
use crate::route::CompiledRoute;

/// Whether `entry` answers a request with `request` headers without the upstream.
/// `max-stale` is honoured for reads only: a write never starts from a stale entry.
pub(crate) fn usable(entry: &Entry, request: &HeaderMap, is_read: bool) -> bool {
    let mut wants = Wants::of(request);
    if !is_read {
        wants.max_stale = None;
    }
    freshness::usable(entry.age(), entry.lifetime(), &wants, || {
        freshness::may_serve_stale(&entry.headers)
    })
}

/// RFC 9111 §5.2.1.7: `only-if-cached` and nothing stored that may answer.
pub(crate) fn only_if_cached(request: &HeaderMap) -> bool {
    Wants::of(request).only_if_cached
}

/// When an upstream exchange was sent, and when its answer's head arrived (RFC 9111
/// §4.2.3 `request_time` and `response_time`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub asked: SystemTime,
    pub received: SystemTime,
}

impl Timing {
    pub(crate) fn now() -> Timing {
        let now = SystemTime::now();
        Timing {
            asked: now,
            received: now,
        }
    }
}

/// Records on `entry` the lifetime and initial age of the upstream answer with
/// `upstream` headers, exchanged at `asked`. `stored` are the
/// headers the entry keeps (after a `304`, the updated ones; `Date` and `Age` are the
/// answer's own).
pub(crate) fn stamp(
    route: &CompiledRoute,
    entry: &Entry,
    stored: &HeaderMap,
    upstream: &HeaderMap,
    asked: Timing,
) {
    let date = freshness::date(upstream).unwrap_or(asked.received);
    let lifetime = freshness::lifetime(stored, date, route.config.heuristic_freshness);
    let initial = freshness::initial_age(upstream, asked.asked, asked.received);
    // The time since the answer's head arrived (its body, a 304's round trip) counts too.
    let since = SystemTime::now()
        .duration_since(asked.received)
        .unwrap_or_default();
    entry.set_freshness(lifetime, initial + since);
}

/// Whether an upstream `200` must not be stored on an http route even though the
/// general rules allow it: nothing could use it (stale at once, no validators), the
/// request said `no-store` (§5.2.1.5), or it answers an `Authorization` the response
/// does not allow a shared cache to keep (§3.5).
pub(crate) fn refused(entry: &Entry, request: &HeaderMap) -> bool {
    let useless = entry.lifetime() == 0 && entry.upstream_etag().is_none() && entry.last_modified().is_none();
    useless
        || Wants::of(request).no_store
        || (request.contains_key(header::AUTHORIZATION) && !freshness::authorized_storable(&entry.headers))
}

/// The upstream's `Date` kept with the entry (patchgate's own entries drop it): a
/// stored response is served with the `Date` its origin gave it (RFC 9110 §6.6.1), and
/// its age is told by `Age`.
pub(crate) fn keep_date(entry: &mut Entry, upstream: &HeaderMap, cache: &Cache) {
    if upstream.contains_key(header::DATE) {
        entry.headers = cache.header_set(upstream, |name| name == header::DATE || replayed(name, upstream));
    }
}

/// Which fields of an upstream `304` replace the stored ones: those of a `200`, and
/// `Date` (the stored response is now as of the `304`).
pub(crate) fn replayed_after_304(name: &header::HeaderName, not_modified: &HeaderMap) -> bool {
    name == header::DATE || replayed(name, not_modified)
}

/// `Age` on every answer made from a stored entry, the first included: it counts the
/// upstream's own `Age` and the time it took to arrive (RFC 9111 §4.2.3, §5.1).
pub(crate) fn add_age(response: &mut Response<Body>, entry: &Entry) {
    response
        .headers_mut()
        .insert(header::AGE, freshness::age_header(entry.age()));
}
