//! The read path: GET and HEAD through the cache, with strong ETags and 304s.
//!
//! [`Ctx::current`] is shared with the write path: it yields the current representation
//! of a resource, from the cache when the route's freshness allows, else from the
//! upstream (conditionally when the cached entry has upstream validators).

pub(crate) mod http_cache;

use http_cache::Timing;

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, request};

use crate::body::{self, Body};
use crate::cache::{Entry, Generation, Key, make_entry, replayed, tag_room};
use crate::config::{EtagMode, Freshness};
use crate::etag::EntityTag;
use crate::headers::{ACCEPT_PATCH, CONDITIONALS, VIA_PATCHGATE, finish_response};
use crate::layer::{Ctx, Exchange};
use crate::metrics::Event;
use crate::precondition::{Conditions, Current, Outcome, evaluate};
use crate::problem::Error;
use crate::resource::{Join, Role};
use crate::route::CompiledRoute;
use crate::upstream;

/// One routed request as the read path (and the write path's reads) sees it: where it
/// goes, what the client sent, and its cache key (with the requester fingerprint).
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub route: &'a CompiledRoute,
    pub key: &'a Key,
    pub parts: &'a request::Parts,
}

/// The current representation, or what the upstream said instead of 200.
pub(crate) enum Lookup {
    Found(Arc<Entry>),
    /// A non-200 upstream answer (404, 500…), or a 200 too large to hold, passed on.
    Other(Response<Body>),
}

/// The head of a read's upstream request, before patchgate's own conditionals.
pub(crate) struct UpstreamRead {
    uri: Uri,
    headers: HeaderMap,
}

impl Ctx {
    /// GET and HEAD.
    pub(crate) async fn read(
        &self,
        route: &CompiledRoute,
        req: Request<Body>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        let (parts, _body) = req.into_parts();
        let key = self.cache_key(route, &parts, exchange);
        let head = parts.method == Method::HEAD;
        let at = Target {
            route,
            key: &key,
            parts: &parts,
        };
        match self.read_current(at, exchange).await? {
            Lookup::Found(entry) => {
                let aged = route.config.freshness == Freshness::Http;
                let conditions = Conditions::from_headers(&parts.headers);
                let etag = entry.etag();
                let current = Current {
                    exists: true,
                    etag: Some(&etag),
                    last_modified: entry.last_modified(),
                };
                let outcome = evaluate(&conditions, &current, true);
                if outcome == Outcome::Proceed
                    && !head
                    && route.config.history > 0
                    && let Some(format) = crate::delta::wanted(&parts.headers)
                    && let Some(response) = Box::pin(self.delta(at, &entry, &conditions, format)).await
                {
                    return Ok(response);
                }
                let tag = etag.into_header_value();
                let mut response = match outcome {
                    Outcome::NotModified => not_modified(&entry, tag, route),
                    // If-Match / If-Unmodified-Since on a read (RFC 9110 §13.1.1).
                    Outcome::Failed => {
                        represent_tagged(&entry, tag, route, StatusCode::PRECONDITION_FAILED, head)
                    }
                    Outcome::Proceed => represent_tagged(&entry, tag, route, StatusCode::OK, head),
                };
                if aged {
                    http_cache::add_age(&mut response, &entry);
                }
                Ok(response)
            }
            Lookup::Other(mut response) => {
                if head {
                    *response.body_mut() = body::empty();
                }
                Ok(response)
            }
        }
    }

    /// Keeps `entry` as a recent version of `key` (and, with `[cluster]`, shares it).
    pub(crate) fn remember(&self, route: &CompiledRoute, key: &Key, entry: &Arc<Entry>) {
        let keep = route.config.history;
        if self.shared.cache.remember(key, entry, keep) && self.shared.cluster.is_some() {
            crate::cluster::share_version(&self.shared, &route.config.name, key, entry, keep);
        }
    }

    /// The recent version of `key` tagged `tag`: kept here, or by another instance.
    pub(crate) async fn version(
        &self,
        route: &CompiledRoute,
        key: &Key,
        tag: &EntityTag,
    ) -> Option<Arc<Entry>> {
        if let Some(version) = self.shared.cache.version(key, tag) {
            return Some(version);
        }
        let cluster = self.shared.cluster.as_ref()?;
        cluster.find_version(&route.config.name, key, tag).await
    }

    /// `226 IM Used` with the patch from the first version `If-None-Match` names that is
    /// still kept to `current`; `None` when there is none (then the usual answer).
    async fn delta(
        &self,
        at: Target<'_>,
        current: &Arc<Entry>,
        conditions: &Conditions,
        format: crate::patch::Format,
    ) -> Option<Response<Body>> {
        use crate::delta::{DELTA_BASE, IM};
        let Target { route, key, .. } = at;
        let mut base = None;
        for tag in conditions.if_none_match_tags() {
            base = self.version(route, key, &tag).await;
            if base.is_some() {
                break;
            }
        }
        let base = base?;
        let (Ok(base_doc), Ok(current_doc)) = (
            crate::patch::Document::parse(base.body_bytes()),
            crate::patch::Document::parse(current.body_bytes()),
        ) else {
            return None;
        };
        let delta = crate::patch::diff(&base_doc, &current_doc);
        let body = match format {
            crate::patch::Format::JsonPatch => delta.json_patch(),
            crate::patch::Format::MergePatch => delta.merge_patch()?,
        };
        // A delta no smaller than the document saves nothing: the document it is.
        if body.len() >= current.body_len() {
            return None;
        }
        self.shared.metrics.event(route.id, Event::DeltaRead);
        let mut response = Response::new(body::full(body.clone()));
        *response.status_mut() = StatusCode::IM_USED;
        let headers = response.headers_mut();
        headers.insert(header::ETAG, current.etag().into_header_value());
        headers.insert(IM, crate::delta::token(format));
        headers.insert(DELTA_BASE, base.etag().into_header_value());
        headers.insert(header::CACHE_CONTROL, crate::delta::cache_control());
        headers.insert(header::CONTENT_TYPE, crate::delta::content_type(format));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(accept) = &route.accept_patch {
            headers.insert(ACCEPT_PATCH, accept.clone());
        }
        headers.append(header::VIA, VIA_PATCHGATE);
        Some(response)
    }

    pub(crate) fn cache_key(
        &self,
        route: &CompiledRoute,
        parts: &request::Parts,
        exchange: &Exchange,
    ) -> Key {
        Key {
            route: route.id,
            path: route.upstream_path(parts.uri.path()).into_boxed_str(),
            query: parts.uri.query().map(Into::into),
            requester: exchange.requester.clone(),
        }
    }

    /// [`Self::current`] for a read. On a revalidate route, concurrent reads that would
    /// send the same upstream request share one exchange that started after they arrived
    /// (see [`crate::resource::reads`]).
    async fn read_current(&self, at: Target<'_>, exchange: &mut Exchange) -> Result<Lookup, Error> {
        let route = at.route;
        if route.config.freshness != Freshness::Revalidate || !route.config.batch_reads {
            return self.current(at, false, exchange).await;
        }
        self.shared_read(at, Join::Next, exchange).await
    }

    /// The current representation. `force_upstream` skips a fresh cache hit (a retry
    /// after the upstream refused patchgate's conditional write). Concurrent read misses
    /// on a route that may serve from the cache share the running exchange.
    pub(crate) async fn current(
        &self,
        at: Target<'_>,
        force_upstream: bool,
        exchange: &mut Exchange,
    ) -> Result<Lookup, Error> {
        let Target { route, key, parts } = at;
        // Another instance's acknowledged write must be applied here before the cache or
        // a running exchange answers: without that certainty, ask the upstream. A read
        // knows it without asking Redis; a write, holding the lease, asks.
        let is_read = parts.method == Method::GET || parts.method == Method::HEAD;
        if let Some(cluster) = &self.shared.cluster
            && route.config.freshness != Freshness::Revalidate
            && !force_upstream
            && !(if is_read {
                cluster.coherent()
            } else {
                cluster.barrier().await
            })
        {
            let cached = self.shared.cache.get(key, &parts.headers);
            return self.fetch(at, cached, exchange).await;
        }
        let cached = self.shared.cache.get(key, &parts.headers);
        if let Some(entry) = &cached {
            let fresh = match route.config.freshness {
                Freshness::Exclusive => true,
                Freshness::For(ttl) => entry.age() < ttl,
                Freshness::Revalidate => false,
                Freshness::Http => http_cache::usable(entry, &parts.headers, is_read),
            } && !entry.no_cache();
            if fresh && !force_upstream && !self.shared.resources.is_uncertain(route.id, &key.path) {
                exchange.cache = "hit";
                return Ok(Lookup::Found(Arc::clone(entry)));
            }
        }
        if is_read && route.config.freshness == Freshness::Http && http_cache::only_if_cached(&parts.headers)
        {
            exchange.cache = "miss";
            return Err(Error::NotCached);
        }
        // A write reads on its own, under its lock: never an exchange older than that.
        if cached.is_none() && is_read && route.config.freshness != Freshness::Revalidate {
            return self.shared_read(at, Join::Running, exchange).await;
        }
        self.fetch(at, cached, exchange).await
    }

    /// An upstream read shared, as `join` allows, with concurrent reads that would send
    /// the same request.
    async fn shared_read(
        &self,
        at: Target<'_>,
        join: Join,
        exchange: &mut Exchange,
    ) -> Result<Lookup, Error> {
        let Target { route, key, parts } = at;
        let cache = &self.shared.cache;
        let resource = self.shared.resources.get(route.id, &key.path);
        let mut round = match resource.join_read(parts, join) {
            Role::Lead(round) => round,
            Role::Follow(answer) => {
                if let Some(entry) = Role::answer(answer).await {
                    exchange.cache = "batched";
                    self.shared.metrics.event(route.id, Event::BatchedRead);
                    return Ok(Lookup::Found(entry));
                }
                let cached = cache.get(key, &parts.headers);
                return self.fetch(at, cached, exchange).await;
            }
            Role::Alone => {
                let cached = cache.get(key, &parts.headers);
                return self.fetch(at, cached, exchange).await;
            }
        };
        round.start().await;
        // The cache as the exchange starts: the one before may just have refreshed it.
        let cached = cache.get(key, &parts.headers);
        let since = cache.generation(route.id, &key.path);
        let lookup = self.fetch(at, cached, exchange).await?;
        // Shared only if no write invalidated the resource meanwhile: a read that waited
        // must never get a body older than a write acknowledged before it arrived.
        if let Lookup::Found(entry) = &lookup
            && !entry.headers.contains_key(header::SET_COOKIE)
            && !cache.changed_since(since)
        {
            round.publish(entry);
        }
        Ok(lookup)
    }

    /// The upstream GET that reads what `parts` asks for, before any conditional of
    /// patchgate's own: the client's conditionals, range and coding stay with patchgate.
    /// `resource::reads::Signature` names what decides it.
    pub(crate) fn upstream_read(
        &self,
        route: &CompiledRoute,
        parts: &request::Parts,
    ) -> Result<UpstreamRead, Error> {
        let mut headers = parts.headers.clone();
        for name in CONDITIONALS {
            headers.remove(name);
        }
        headers.remove(header::RANGE);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_TYPE);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let (mut up, ()) = Request::new(()).into_parts();
        up.headers = headers;
        up.extensions = parts.extensions.clone();
        // The client's target, so that its authority (h2, absolute-form) is forwarded.
        up.uri = parts.uri.clone();
        upstream::prepare(&mut up, self.upstream_uri(route, &parts.uri)?, &route.host);
        Ok(UpstreamRead {
            uri: up.uri,
            headers: up.headers,
        })
    }

    /// One upstream GET, conditional when `cached` has upstream validators. Boxed: the
    /// upstream exchange is the largest state of every walk, and a future is copied whole
    /// each time it moves into its caller's; cache hits should not carry it.
    async fn fetch(
        &self,
        at: Target<'_>,
        cached: Option<Arc<Entry>>,
        exchange: &mut Exchange,
    ) -> Result<Lookup, Error> {
        Box::pin(self.fetch_upstream(at, cached, exchange)).await
    }

    async fn fetch_upstream(
        &self,
        at: Target<'_>,
        cached: Option<Arc<Entry>>,
        exchange: &mut Exchange,
    ) -> Result<Lookup, Error> {
        let Target { route, key, parts } = at;
        // A write that lands while this read is in flight must win: stores below are
        // refused if the resource was invalidated since this point.
        let since = self.shared.cache.generation(route.id, &key.path);
        let mut cached = cached;
        let mut asked = Timing::now();
        let read = self.upstream_read(route, parts)?;
        let mut response = self.ask(route, read, cached.as_deref()).await?;
        asked.received = SystemTime::now();
        // RFC 9111 §4.3.4: a 304 with another validator is not about the stored body,
        // which it therefore does not confirm: read the resource again in full.
        if response.status() == StatusCode::NOT_MODIFIED
            && cached
                .as_ref()
                .is_some_and(|entry| !entry.confirmed_by(response.headers()))
        {
            cached = None;
            asked = Timing::now();
            response = self.ask(route, self.upstream_read(route, parts)?, None).await?;
            asked.received = SystemTime::now();
        }
        // An answer to a read sent after the last write's outcome was lost shows the
        // resource as it is.
        if matches!(
            response.status(),
            StatusCode::OK | StatusCode::NOT_MODIFIED | StatusCode::NOT_FOUND | StatusCode::GONE
        ) && !self.shared.cache.changed_since(since)
        {
            self.shared.resources.confirm(route.id, &key.path);
        }

        match (response.status(), cached) {
            (StatusCode::NOT_MODIFIED, Some(entry)) => {
                exchange.cache = "revalidated";
                let not_modified = response.headers();
                Ok(Lookup::Found(self.refresh(
                    since,
                    at,
                    &entry,
                    not_modified,
                    asked,
                )))
            }
            (StatusCode::OK, previous) => {
                exchange.cache = "miss";
                // Reads keep what the cache may hold; writes need the whole document.
                let limit = if parts.method == Method::GET || parts.method == Method::HEAD {
                    self.settings.max_entry_bytes
                } else {
                    self.settings.max_entry_bytes.max(self.settings.max_body_bytes)
                };
                // The body the last PATCH wrote, read back for the next one from an
                // upstream that cannot confirm it (no validators): the same bytes are
                // still patchgate's compact form.
                let written = previous
                    .as_deref()
                    .filter(|p| p.patched() && parts.method == Method::PATCH)
                    .map(Entry::body_bytes);
                let lookup = self.store(since, at, response, limit, asked, written).await?;
                // The version this one replaces becomes history.
                if let (Some(previous), Lookup::Found(entry)) = (previous, &lookup)
                    && !previous.same_tag(entry)
                {
                    self.remember(route, key, &previous);
                }
                Ok(lookup)
            }
            (status, _) => {
                exchange.cache = "pass";
                if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                    self.shared.cache.invalidate(route.id, &key.path);
                }
                Ok(Lookup::Other(finish_response(response)))
            }
        }
    }

    /// Sends `read`, conditional when `cached` has upstream validators.
    async fn ask(
        &self,
        route: &CompiledRoute,
        read: UpstreamRead,
        cached: Option<&Entry>,
    ) -> Result<Response<Body>, Error> {
        let mut req = Request::new(body::empty());
        *req.uri_mut() = read.uri;
        *req.headers_mut() = read.headers;
        if let Some(entry) = cached {
            if let Some(tag) = entry.upstream_etag() {
                req.headers_mut().insert(header::IF_NONE_MATCH, tag.clone());
            } else if let Some(date) = entry.headers.get(header::LAST_MODIFIED) {
                req.headers_mut().insert(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
        self.send(route, req).await
    }

    /// Turns an upstream 200 into an entry, cached when allowed; marked
    /// [`Entry::patched`] when its body is `written`, a body a PATCH wrote.
    async fn store(
        &self,
        since: Generation,
        at: Target<'_>,
        response: Response<Body>,
        limit: u64,
        asked: Timing,
        written: Option<&[u8]>,
    ) -> Result<Lookup, Error> {
        let Target { route, key, parts } = at;
        let request = &parts.headers;
        if crate::headers::content_length(response.headers()).is_some_and(|len| len > limit) {
            return Ok(Lookup::Other(too_large(route, response)));
        }
        let (parts, body) = response.into_parts();
        let body = match self.read_or_stream(body, limit, tag_room(&parts.headers)).await? {
            Ok(bytes) => bytes,
            Err(stream) => {
                return Ok(Lookup::Other(too_large(
                    route,
                    Response::from_parts(parts, stream),
                )));
            }
        };
        let mut entry = make_entry(route.config.etag, &parts.headers, body, &self.shared.cache);
        if written.is_some_and(|written| written == entry.body_bytes()) {
            entry = entry.mark_patched();
        }
        let http = route.config.freshness == Freshness::Http;
        if http {
            http_cache::keep_date(&mut entry, &parts.headers, &self.shared.cache);
            http_cache::stamp(route, &entry, &parts.headers, &parts.headers, asked);
        }
        // Never store a response that sets cookies: it belongs to one client, who gets
        // its cookies. In revalidate mode an entry without upstream validators would
        // never be used.
        if parts.headers.contains_key(header::SET_COOKIE) {
            let mut headers = HeaderMap::clone(&entry.headers);
            for cookie in parts.headers.get_all(header::SET_COOKIE) {
                headers.append(header::SET_COOKIE, cookie.clone());
            }
            entry.headers = Arc::new(headers);
            return Ok(Lookup::Found(Arc::new(entry)));
        }
        // Nor a `no-cache` one without validators: it could not be revalidated either
        // (RFC 9111 §5.2.2.4).
        let useless = ((route.config.freshness == Freshness::Revalidate || entry.no_cache())
            && entry.upstream_etag().is_none()
            && entry.last_modified().is_none())
            || (http && http_cache::refused(&entry, request));
        let stored = if useless {
            Err(entry)
        } else {
            self.shared.cache.insert_since(since, key.clone(), request, entry)
        };
        // A version the cache holds becomes history when replaced; one it does not hold
        // is history now.
        let entry = stored.unwrap_or_else(|unstored| {
            let entry = Arc::new(unstored);
            self.remember(route, key, &entry);
            entry
        });
        Ok(Lookup::Found(entry))
    }

    /// After an upstream 304 that confirmed `entry`. When the 304 changes none of its
    /// headers: the same entry, renewed when a duration freshness reads its age, and
    /// stored again if it was evicted meanwhile. Otherwise a replacement with the
    /// updated headers (RFC 9111 §4.3.4) takes its place, if it still has one; when the
    /// replacement cannot be stored (the 304 says `no-store`, say), the outdated entry
    /// goes too.
    fn refresh(
        &self,
        since: Generation,
        at: Target<'_>,
        entry: &Arc<Entry>,
        not_modified: &HeaderMap,
        asked: Timing,
    ) -> Arc<Entry> {
        let Target { route, key, parts } = at;
        let request = &parts.headers;
        let cache = &self.shared.cache;
        let http = route.config.freshness == Freshness::Http;
        let updated = if http {
            entry.updated_headers(not_modified, |name| {
                http_cache::replayed_after_304(name, not_modified)
            })
        } else {
            entry.updated_headers(not_modified, |name| replayed(name, not_modified))
        };
        let Some(headers) = updated else {
            // Only a duration or http freshness reads the storage time: elsewhere the
            // entry the upstream just confirmed is served as it is.
            match route.config.freshness {
                Freshness::For(_) => entry.renew(),
                Freshness::Http => http_cache::stamp(route, entry, &entry.headers, not_modified, asked),
                Freshness::Revalidate | Freshness::Exclusive => return Arc::clone(entry),
            }
            if cache.contains(entry) {
                return Arc::clone(entry);
            }
            return cache
                .insert_since(since, key.clone(), request, entry.duplicate())
                .unwrap_or_else(|_| Arc::clone(entry));
        };
        let revised = entry.revised(cache.header_set(&headers, |_| true));
        if http {
            http_cache::stamp(route, &revised, &revised.headers, not_modified, asked);
        }
        match cache.replace(since, entry, key.clone(), request, revised) {
            Ok(stored) => stored,
            Err(unstored) => Arc::new(unstored),
        }
    }
}

/// A 200 too large to hold, streamed through; tagged only when the upstream tags it.
fn too_large(route: &CompiledRoute, response: Response<Body>) -> Response<Body> {
    let mut response = finish_response(response);
    if route.config.etag == EtagMode::Hash {
        response.headers_mut().remove(header::ETAG);
    }
    response
}

/// A full response for `entry` (no body for HEAD).
pub(crate) fn represent(
    entry: &Arc<Entry>,
    route: &CompiledRoute,
    status: StatusCode,
    head: bool,
) -> Response<Body> {
    represent_tagged(entry, entry.etag().into_header_value(), route, status, head)
}

/// [`represent`] with the entry's tag already rendered.
fn represent_tagged(
    entry: &Arc<Entry>,
    etag: HeaderValue,
    route: &CompiledRoute,
    status: StatusCode,
    head: bool,
) -> Response<Body> {
    let body = if head {
        body::empty()
    } else {
        body::full(entry.body())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.clone_from(&entry.headers);
    headers.insert(header::ETAG, etag);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body_len()));
    if let Some(accept) = &route.accept_patch {
        headers.insert(ACCEPT_PATCH, accept.clone());
    }
    headers.append(header::VIA, VIA_PATCHGATE);
    response
}

/// 304 with the headers a 200 would carry among those RFC 9110 §15.4.5 keeps.
fn not_modified(entry: &Entry, etag: HeaderValue, route: &CompiledRoute) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    // Only an entry made for this one request has cookies (such entries are never cached).
    for name in [
        header::CONTENT_LOCATION,
        header::VARY,
        header::CACHE_CONTROL,
        header::EXPIRES,
        header::SET_COOKIE,
    ] {
        for value in entry.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(accept) = &route.accept_patch {
        headers.insert(ACCEPT_PATCH, accept.clone());
    }
    headers.append(header::VIA, VIA_PATCHGATE);
    response
}
