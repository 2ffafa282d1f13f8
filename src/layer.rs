//! `PatchLayer` / `PatchService`: the proxy as a tower middleware over any upstream
//! HTTP service.
//!
//! The walk of one request (ARCHITECTURE.md has it in full):
//! server → [`PatchService::call`] → [`Ctx::handle`] → dispatch: host checks, the
//! requester fingerprint ([`crate::requester`]), route ([`crate::route`]; 404 / 400 on
//! unsafe paths) → by method:
//!   - GET/HEAD: the read path ([`crate::read`]): cache ↔ upstream, with reads coalesced
//!     per resource ([`crate::resource`]), ETag, 304;
//!   - PATCH/PUT/DELETE: the write path ([`crate::write`]): intent → the resource's write
//!     queue → current representation → preconditions → apply → upstream write (never
//!     cancelled) → settle;
//!   - anything else: streamed pass-through ([`Ctx::forward`]);
//!
//! → response (problem+json for patchgate's own refusals) → one log line and metrics.
//! Per-request log facts live in [`Exchange`]; shared state in one `Arc<Shared>`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use tower::{Layer, Service};

use crate::body::{self, Body, BoxError};
use crate::cache::Cache;
use crate::config::Config;
use crate::headers::{ACCEPT_PATCH, content_length, finish_response};
use crate::logging;
use crate::metrics::{Event, Metrics};
use crate::problem::Error;
use crate::requester::{self, Requester};
use crate::route::{self, CompiledRoute};
use crate::settings::{RouteIds, Settings};
use crate::upstream::{self, Upstream};

// The read and write paths import these from here.

/// State shared by every request, for the life of the process. What a reload replaces
/// is in `settings`: each request loads it once ([`Ctx::settings`]).
pub(crate) struct Shared {
    pub settings: ArcSwap<Settings>,
    /// Route identities across reloads (see [`crate::settings`]).
    pub route_ids: RouteIds,
    pub cache: Cache,
    /// Everything coordinated per resource: write queues, kept documents, uncertainty.
    pub resources: crate::resource::Resources,
    pub landings: Arc<crate::landing::Landings>,
    pub metrics: Arc<Metrics>,
    /// `[cluster]`: leases and coherence through Redis; `None`: this process alone.
    pub cluster: Option<crate::cluster::Cluster>,
    /// `route.changes`: confirmed writes, for the admin listener's `/changes`.
    pub feed: crate::feed::Feed,
}

impl Shared {
    /// Publishes a confirmed write of `path` on the route's change feed, if it has one:
    /// this instance's ring, or with `[cluster]` the shared Redis stream (awaited: one
    /// round trip before the write is answered and its lease released, so that the
    /// events of one resource are in the order of its writes).
    pub(crate) async fn publish_change(
        &self,
        route: &CompiledRoute,
        path: &str,
        old: Option<&crate::cache::Entry>,
        new: Option<&crate::cache::Entry>,
    ) {
        let Some(cluster) = &self.cluster else {
            self.feed.publish(&route.config.name, path, old, new);
            return;
        };
        if let Some(tail) = self.feed.prepare(&route.config.name, path, old, new) {
            cluster.publish_change(&route.config.name, &tail).await;
        }
    }
}

/// The part of `cache.max_bytes` kept for recent versions: an eighth, when a route keeps
/// any.
fn history_share(config: &Config) -> u64 {
    if config.routes.iter().any(|r| r.history > 0) {
        config.cache.max_bytes / 8
    } else {
        0
    }
}

/// A spelling of a standard method in the wrong case, such as `put` or `Patch`.
fn is_miscased_standard(method: &Method) -> bool {
    let name = method.as_str();
    [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ]
    .iter()
    .any(|standard| *standard != name && standard.eq_ignore_ascii_case(name))
}

/// Wraps an upstream service with patchgate's read and write paths.
#[derive(Clone)]
pub struct PatchLayer {
    shared: Arc<Shared>,
}

impl PatchLayer {
    pub fn new(config: &Config) -> PatchLayer {
        let route_ids = RouteIds::default();
        let settings = Settings::new(config, &route_ids, None);
        let metrics = Metrics::default();
        metrics.name_routes(settings.routes.iter().map(|r| (r.id, r.config.name.as_str())));
        let layer = PatchLayer {
            shared: Arc::new(Shared {
                settings: ArcSwap::from_pointee(settings),
                route_ids,
                cache: Cache::with_history(
                    config.cache.max_bytes,
                    config.cache.max_entry_bytes,
                    history_share(config),
                ),
                resources: crate::resource::Resources::default(),
                landings: Arc::default(),
                metrics: Arc::new(metrics),
                cluster: config.cluster.as_ref().map(crate::cluster::Cluster::new),
                feed: crate::feed::Feed::new(&config.routes),
            }),
        };
        layer.start_cluster();
        layer
    }

    /// Puts `config`'s routes, limits and cache sizes in place for new requests (a
    /// reload, after validation); requests in flight keep the generation they loaded.
    /// `[cluster]` is the one the layer was built with: it needs a restart to change.
    /// One call at a time ([`crate::reload::Reloader`] serializes them).
    pub fn apply(&self, config: &Config) {
        let shared = &self.shared;
        let settings = Settings::new(config, &shared.route_ids, Some(&shared.settings.load()));
        shared
            .metrics
            .name_routes(settings.routes.iter().map(|r| (r.id, r.config.name.as_str())));
        shared.feed.configure(&config.routes);
        let live: std::collections::HashSet<u32> = settings.routes.iter().map(|r| r.id).collect();
        shared.settings.store(Arc::new(settings));
        shared.cache.resize(
            config.cache.max_bytes,
            config.cache.max_entry_bytes,
            history_share(config),
        );
        // Unreachable already (no route has their ids); this gives their bytes back.
        shared.cache.retain_routes(|route| live.contains(&route));
    }

    /// Connects `[cluster]` once a runtime is there (also called by every request).
    fn start_cluster(&self) {
        if let Some(cluster) = &self.shared.cluster {
            cluster.start(&self.shared);
        }
    }

    /// `None` when healthy; else why not (Redis unreachable with `[cluster]`).
    pub fn degraded(&self) -> Option<String> {
        self.start_cluster();
        let cluster = self.shared.cluster.as_ref()?;
        (!cluster.is_up()).then(|| format!("redis unreachable: {}", cluster.cause()))
    }

    /// The metrics this layer records, for an admin endpoint.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// The change feed of the routes with `changes = true`.
    pub fn feed(&self) -> &crate::feed::Feed {
        &self.shared.feed
    }

    /// `GET /changes?route=NAME&since=SEQ` on the admin listener: this instance's feed,
    /// or with `[cluster]` the one all instances share (see [`crate::feed`]).
    pub async fn changes(&self, query: Option<&str>, last_event_id: Option<&HeaderValue>) -> Response<Body> {
        let Some(cluster) = &self.shared.cluster else {
            return crate::feed::respond(&self.shared.feed, query, last_event_id);
        };
        let (route, since) = match crate::feed::request(query, last_event_id) {
            Ok(request) => request,
            Err(detail) => return crate::feed::bad_request(detail),
        };
        if !self.shared.feed.has(route) {
            return crate::feed::refused(&crate::feed::Refusal::NoFeed);
        }
        self.start_cluster();
        match cluster.changes(route, since).await {
            Ok(events) => crate::feed::event_stream(events),
            Err(refusal) => crate::feed::refused(&refusal),
        }
    }

    /// Upstream writes sent and not answered yet (they run even after their client left).
    pub fn writes_in_flight(&self) -> usize {
        self.shared.landings.in_flight()
    }

    /// Resolves once every sent upstream write has its answer or hit `write_timeout`.
    pub async fn writes_landed(&self) {
        self.shared.landings.all_landed().await;
    }

    /// Prometheus text for everything this layer counts, cache included.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.shared.metrics.render(&self.shared.cache.stats());
        let landings = &self.shared.landings;
        let _ = write!(
            out,
            "# HELP patchgate_upstream_writes_in_flight Upstream writes sent and not answered yet.\n\
             # TYPE patchgate_upstream_writes_in_flight gauge\n\
             patchgate_upstream_writes_in_flight {}\n\
             # HELP patchgate_resources_uncertain Resources whose last write got no answer.\n\
             # TYPE patchgate_resources_uncertain gauge\n\
             patchgate_resources_uncertain {}\n\
             # HELP patchgate_history_bytes Bytes charged to recent versions kept for merges and delta reads.\n\
             # TYPE patchgate_history_bytes gauge\n\
             patchgate_history_bytes {}\n",
            landings.in_flight(),
            self.shared.resources.uncertain(),
            self.shared.cache.history_bytes()
        );
        if let Some(cluster) = &self.shared.cluster {
            cluster.render(&mut out);
        }
        out
    }
}

impl<S, ResBody> Layer<S> for PatchLayer
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Service = PatchService;

    fn layer(&self, inner: S) -> PatchService {
        PatchService {
            // Boxed once here so that requests answered from the cache never touch it.
            upstream: Arc::new(Upstream::new(inner)),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`PatchLayer`] produces over an upstream service, which it holds boxed:
/// its type does not name the upstream's. Its error type is `Infallible`: upstream
/// failures become 502/504 problem responses.
#[derive(Clone)]
pub struct PatchService {
    upstream: Arc<Upstream>,
    shared: Arc<Shared>,
}

impl<ReqBody> Service<Request<ReqBody>> for PatchService
where
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness of the upstream is awaited per call (`oneshot`), after routing.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(cluster) = &self.shared.cluster {
            cluster.start(&self.shared);
        }
        let ctx = Ctx {
            shared: Arc::clone(&self.shared),
            settings: self.shared.settings.load_full(),
            upstream: Arc::clone(&self.upstream),
        };
        let limit = ctx.settings.body_read_timeout;
        let req = req.map(|b| body::Deadline::bound(body::boxed(b), limit));
        Box::pin(async move { Ok(ctx.handle(req).await) })
    }
}

/// Everything one request's handling needs.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    /// The generation this request started with, kept to its end.
    pub settings: Arc<Settings>,
    upstream: Arc<Upstream>,
}

/// Per-request facts gathered along the walk, for the log line and metrics.
pub(crate) struct Exchange {
    pub route: Option<u32>,
    pub cache: &'static str,
    /// Computed once, after h2 cookies are joined; decides every sharing.
    pub requester: Requester,
}

impl Ctx {
    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let _in_flight = self.shared.metrics.in_flight();
        let method = req.method().clone();
        // The start and the path while the request walks; the line is made at the end.
        // None when nothing is logged.
        let begun = logging::enabled().then(|| logging::Begun::now(req.uri().path()));
        let mut exchange = Exchange {
            route: None,
            cache: "-",
            requester: Requester::default(),
        };
        let response = match self.dispatch(req, &mut exchange).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        let status = response.status();
        self.shared
            .metrics
            .record_request(exchange.route, &method, status);
        if let Some(begun) = begun {
            let route = exchange.route.and_then(|id| self.settings.routes.get(id));
            logging::request(logging::Line::finish(
                begun,
                &method,
                route.map(|r| r.config.name.as_str()),
                status.as_u16(),
                exchange.cache,
            ));
        }
        response
    }

    async fn dispatch(
        &self,
        mut req: Request<Body>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        if !crate::headers::host_is_valid(req.version(), req.uri(), req.headers()) {
            return Err(Error::BadHost);
        }
        let version = req.version();
        requester::join_h2_cookies(version, req.headers_mut());
        exchange.requester = Requester::of(&self.settings.key_headers, req.headers());
        let path = req.uri().path();
        if !route::is_safe_path(path) {
            return Err(Error::UnsafePath);
        }
        let route = self.settings.routes.find(path).ok_or(Error::NoRoute)?;
        exchange.route = Some(route.id);
        let _slot = match route.config.max_in_flight {
            Some(limit) => Some(self.admit(route, limit)?),
            None => None,
        };
        match *req.method() {
            Method::GET | Method::HEAD => self.read(route, req, exchange).await,
            // Boxed here and below: a future is copied whole whenever it moves, and
            // those walks are large; the common read of a cached document is small.
            Method::PATCH | Method::PUT | Method::DELETE => Box::pin(self.write(route, req, exchange)).await,
            Method::OPTIONS => Box::pin(self.options(route, req)).await,
            Method::CONNECT => Err(Error::MethodNotAllowed { allow: allow(route) }),
            // Methods are case-sensitive (RFC 9110 §9.1), but an upstream that
            // upper-cases them would take `put` as a write outside the lock.
            ref m if is_miscased_standard(m) => Err(Error::MethodNotImplemented),
            _ => {
                // POST and other methods pass through; a success still changes the
                // resource and its collection, so their cached copies go. With
                // `freshness = "http"`, any non-error answer does, and so do the
                // `Location` and `Content-Location` targets (RFC 9111 §4.4).
                let path = route.upstream_path(req.uri().path());
                let http = route.config.freshness == crate::config::Freshness::Http;
                let head = http.then(|| crate::write::head_of(&req));
                let response = Box::pin(self.forward(route, req)).await?;
                let status = response.status();
                if status.is_success() || (http && status.as_u16() < 400) {
                    self.invalidate_after_write(route, &path);
                    if let Some(head) = &head {
                        self.invalidate_named(head, response.headers());
                    }
                }
                Ok(response)
            }
        }
    }

    /// Takes one of the route's `max_in_flight` slots, or refuses with 503.
    fn admit<'r>(&self, route: &'r CompiledRoute, limit: usize) -> Result<Slot<'r>, Error> {
        let counter = &*route.in_flight;
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.event(route.id, Event::Shed);
            return Err(Error::Overloaded);
        }
        Ok(Slot(counter))
    }

    /// Streams the request to the upstream and the response back, unchanged but for
    /// hop-by-hop and forwarding headers. The body is counted as it streams.
    pub async fn forward(&self, route: &CompiledRoute, req: Request<Body>) -> Result<Response<Body>, Error> {
        let max = self.settings.max_body_bytes;
        if content_length(req.headers()).is_some_and(|len| len > max) {
            return Err(Error::BodyTooLarge { max });
        }
        let (mut parts, body) = req.into_parts();
        let uri = self.upstream_uri(route, &parts.uri)?;
        upstream::prepare(&mut parts, uri, &route.host);
        let req = Request::from_parts(parts, body::limited(body, max));
        let response = self.send(route, req).await?;
        Ok(finish_response(response))
    }

    /// The absolute upstream URI for a client request URI on this route.
    pub fn upstream_uri(&self, route: &CompiledRoute, uri: &Uri) -> Result<Uri, Error> {
        route.upstream_uri(uri).ok_or(Error::UnsafePath)
    }

    /// One upstream exchange, bounded by `request_timeout` up to the response head.
    pub async fn send(&self, route: &CompiledRoute, req: Request<Body>) -> Result<Response<Body>, Error> {
        self.send_within(route, req, self.settings.request_timeout).await
    }

    /// [`Self::send`] bounded by `within`; the latency goes to the route's metrics.
    pub async fn send_within(
        &self,
        route: &CompiledRoute,
        req: Request<Body>,
        within: Duration,
    ) -> Result<Response<Body>, Error> {
        let started = Instant::now();
        let result = self.upstream.send(req, within).await;
        self.shared
            .metrics
            .record_upstream_latency(route.id, started.elapsed());
        result.map_err(Error::from)
    }

    /// [`upstream::read_or_stream`] within `request_timeout`.
    pub async fn read_or_stream(
        &self,
        body: Body,
        limit: u64,
        room: usize,
    ) -> Result<Result<bytes::BytesMut, Body>, Error> {
        upstream::read_or_stream(body, limit, room, self.settings.request_timeout)
            .await
            .map_err(Error::from)
    }

    /// Reads a whole upstream body, bounded in size and by `within`.
    pub async fn read_body(&self, body: Body, limit: u64, within: Duration) -> Result<Bytes, Error> {
        upstream::read_body(body, limit, within)
            .await
            .map_err(Error::from)
    }

    /// OPTIONS: forwarded; `Allow` gains PATCH. A legacy upstream that refuses OPTIONS is
    /// answered by patchgate.
    pub(crate) async fn options(
        &self,
        route: &CompiledRoute,
        req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let mut response = self.forward(route, req).await?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_IMPLEMENTED {
            response = crate::body::status_only(StatusCode::NO_CONTENT);
            response.headers_mut().insert(header::ALLOW, allow(route));
        } else if route.accept_patch.is_some() {
            let merged = response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .map(|allow| {
                    if allow.split(',').any(|m| m.trim().eq_ignore_ascii_case("PATCH")) {
                        allow.to_owned()
                    } else if allow.trim().is_empty() {
                        "PATCH".to_owned()
                    } else {
                        format!("{allow}, PATCH")
                    }
                });
            let value = merged
                .and_then(|m| HeaderValue::from_str(&m).ok())
                .unwrap_or_else(|| allow(route));
            response.headers_mut().insert(header::ALLOW, value);
        }
        if let Some(accept) = &route.accept_patch {
            response.headers_mut().insert(ACCEPT_PATCH, accept.clone());
        }
        Ok(response)
    }
}

/// The methods a route allows, for `Allow`.
pub(crate) fn allow(route: &CompiledRoute) -> HeaderValue {
    if route.accept_patch.is_some() {
        HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, PATCH, OPTIONS")
    } else {
        HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS")
    }
}

/// A route's in-flight slot, released however the request ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
