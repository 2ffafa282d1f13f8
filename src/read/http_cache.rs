//! `freshness = "http"` on the read path: when a stored entry answers without the
//! upstream, what an upstream answer stores, and the `Age` it is served with. The rules
//! themselves are pure functions in [`crate::cache::freshness`].

use std::time::SystemTime;

use http::{HeaderMap, Response, StatusCode, header};

use crate::body::{self, Body};
use crate::cache::Entry;
use crate::cache::freshness::{self, Wants};
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
pub(crate) fn only_if_cached(request: &HeaderMap) -> Option<Response<Body>> {
    Wants::of(request)
        .only_if_cached
        .then(|| body::status_only(StatusCode::GATEWAY_TIMEOUT))
}

/// Records on `entry` the lifetime and initial age of the upstream answer with
/// `upstream` headers, received just now for a request sent at `asked`. `stored` are the
/// headers the entry keeps (after a `304`, the updated ones; `Date` and `Age` are the
/// answer's own).
pub(crate) fn stamp(
    route: &CompiledRoute,
    entry: &Entry,
    stored: &HeaderMap,
    upstream: &HeaderMap,
    asked: SystemTime,
) {
    let received = SystemTime::now();
    let date = freshness::date(upstream).unwrap_or(received);
    let lifetime = freshness::lifetime(stored, date, route.config.heuristic_freshness);
    entry.set_freshness(lifetime, freshness::initial_age(upstream, asked, received));
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

/// `Age` on an answer from the cache (RFC 9111 §5.1).
pub(crate) fn add_age(response: &mut Response<Body>, entry: &Entry) {
    response
        .headers_mut()
        .insert(header::AGE, freshness::age_header(entry.age()));
}
