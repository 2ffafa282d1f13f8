//! The write path: PATCH, PUT and DELETE.
//!
//! Under the resource's write lock: read the current representation, evaluate the
//! preconditions (RFC 9110 §13.2.2), apply the patch, write the whole document upstream
//! (conditionally on the upstream's own strong ETag), and update the cache only with what
//! the upstream confirmed. An upstream 412 with no client precondition means another
//! writer bypassed patchgate: re-read, re-apply, retry up to `conflict_retries`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request};
use http_body_util::Limited;

use crate::batch::{Claimed, Verdict};
use crate::body::{self, Body};
use crate::cache::{Cache, Entry, Key, make_entry, tag_room};
use crate::config::EtagMode;
use crate::etag::EntityTag;
use crate::headers::{ACCEPT_PATCH, PREFER, PREFERENCE_APPLIED};
use crate::layer::{Ctx, Exchange, allow, collect, content_length, finish_response};
use crate::lock::WriteGuard;
use crate::patch::{Document, Format, Patch, PatchError};
use crate::precondition::{Conditions, Current, Outcome, evaluate};
use crate::problem::Error;
use crate::read::{Lookup, represent};
use crate::rounds::Signature;
use crate::route::CompiledRoute;
use crate::upstream;

/// What the client asked to write, parsed before the lock is taken.
enum Intent {
    Patch(Arc<Patch>),
    Put(Bytes),
    Delete,
}

/// A write ready to be sent, with everything its task needs.
struct Write {
    key: Key,
    /// A copy of the client's request head: the task may outlive the request.
    parts: request::Parts,
    method: Method,
    current: Option<Arc<Entry>>,
    new_body: Option<Bytes>,
    /// The PATCHes this write carries.
    batch: Claimed,
    /// What a PATCH wrote, parsed and serialized, to keep for the next one.
    written: Option<(Document, Bytes)>,
}

/// How a write gets its turn.
enum Turn {
    Lock(WriteGuard),
    /// A leader wrote this PATCH with its own: the response.
    Done(Response<Body>),
}

/// The outcome of one attempt at the upstream write.
enum Attempt {
    /// With the new representation when the write was confirmed and it is known.
    Done(Response<Body>, Option<Arc<Entry>>),
    /// The upstream refused patchgate's conditional write: someone else wrote first.
    Conflict,
}

/// What a sent write's task hands back: its outcome and, while the client still
/// waits, the resource's lock for a retry.
struct Landed {
    result: Result<Attempt, Error>,
    lock: WriteGuard,
    cache: &'static str,
}

impl Ctx {
    pub(crate) async fn write(
        &self,
        route: &CompiledRoute,
        req: Request<Body>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        let conditions = Conditions::from_headers(req.headers());
        if route.config.require_precondition && !conditions.has_write_precondition() {
            return Err(Error::PreconditionRequired);
        }
        // A coded body would be patched, hashed and cached as if it were the document.
        if req.method() != Method::DELETE && crate::headers::has_content_coding(req.headers()) {
            return Err(Error::UnsupportedContentEncoding);
        }
        let (parts, body) = req.into_parts();
        let intent = self.intent(route, &parts, body).await?;
        let key = self.cache_key(route, &parts, exchange);
        // Only a write that sends the very same request may carry another's PATCH.
        let signature = match &intent {
            Intent::Patch(_) if route.config.batch_patches => Some(self.write_signature(route, &parts)?),
            _ => None,
        };
        let mut lock = match self
            .turn(
                route,
                &key.path,
                &parts,
                &intent,
                &conditions,
                signature.as_ref(),
                exchange,
            )
            .await?
        {
            Turn::Lock(guard) => guard,
            Turn::Done(response) => return Ok(response),
        };
        let mut retries = 0;
        // Set once a combined write was refused: this PATCH is then written on its own.
        let mut alone = signature.is_none();
        loop {
            // After a conflict, or a write whose outcome never came, the cache cannot be
            // trusted: read the upstream.
            let force_upstream = retries > 0 || self.shared.landings.is_uncertain(route.id, &key.path);
            // An unconditional PUT or DELETE replaces whatever is there: no need to read it
            // first (a cached copy still lends its upstream ETag to the write).
            let blind = !force_upstream && conditions.is_empty() && !matches!(intent, Intent::Patch(_));
            let lookup = if blind {
                match self.shared.cache.get(&key, &parts.headers) {
                    Some(entry) => Lookup::Found(entry),
                    None => Lookup::Other(crate::layer::status_only(StatusCode::NOT_FOUND)),
                }
            } else {
                self.current(route, &key, &parts, force_upstream, exchange)
                    .await?
            };
            let current = match lookup {
                Lookup::Found(entry) => Some(entry),
                Lookup::Other(response) => match (response.status(), &intent) {
                    (StatusCode::NOT_FOUND, Intent::Put(_)) => None,
                    (StatusCode::NOT_FOUND, Intent::Delete) if blind => None,
                    // A PATCH needs the whole document; this one is too large to hold.
                    (StatusCode::OK, _) => return Err(self.too_large()),
                    // §13.2.1: a missing resource is 404 whatever the preconditions.
                    _ => return Ok(response),
                },
            };
            let document = match (&intent, &current) {
                (Intent::Patch(_), Some(entry)) => {
                    Some(match self.shared.parsed.take(route.id, &key.path, entry) {
                        Some(doc) => doc,
                        None => Document::parse(entry.body_bytes()).inspect_err(|_| {
                            self.shared.metrics.event(route.id, "patches_failed", "not-json");
                        })?,
                    })
                }
                _ => None,
            };
            let etag = current.as_ref().map(|e| e.etag());
            let state = Current {
                exists: current.is_some(),
                etag: etag.as_ref(),
                last_modified: current.as_ref().and_then(|e| e.last_modified()),
            };
            if evaluate(&conditions, &state, false) != Outcome::Proceed {
                self.shared.metrics.event(route.id, "precondition_failures", "");
                return self.enriched_412(route, current.as_ref(), &parts);
            }
            // The parsed document is consumed here, before the upstream wait.
            let mut batch = Claimed::default();
            let mut written = None;
            let new_body = match (&intent, document) {
                (Intent::Patch(patch), Some(doc)) => {
                    let mut doc = self.apply(route, patch, doc, current.as_deref())?;
                    // Its tests passed and it changes nothing: the document as it is.
                    if let (true, Some(entry)) = (patch.only_tests(), &current) {
                        self.shared.metrics.event(route.id, "patches", "unchanged");
                        return Ok(patched(entry, route, &parts));
                    }
                    if let (false, Some(signature)) = (alone, &signature) {
                        self.claim(route, &key.path, signature, &mut doc, &mut batch);
                    }
                    match doc.serialize(self.max_body()) {
                        Ok(bytes) => {
                            written = Some((doc, bytes.clone()));
                            Some(bytes)
                        }
                        Err(e) if batch.is_empty() => return Err(self.patch_failed(route, e)),
                        Err(_) => {
                            // Together too large: each one on its own.
                            batch.settle(|| Verdict::Alone);
                            alone = true;
                            continue;
                        }
                    }
                }
                (Intent::Put(bytes), _) => Some(bytes.clone()),
                _ => None,
            };
            let batched = !batch.is_empty();
            if batched {
                batch.mark_sent();
                self.shared.metrics.event(route.id, "batched_writes", "");
            }
            let write = Write {
                key: key.clone(),
                parts: clone_parts(&parts),
                method: self.write_method(route, &intent),
                current,
                new_body,
                batch,
                written,
            };
            let landing = self.launch(route, write, lock);
            let landed = match tokio::time::timeout(self.shared.request_timeout, landing).await {
                Ok(Some(landed)) => landed,
                // The write goes on, and keeps the lock until its answer has settled.
                Ok(None) | Err(_) => return Err(Error::WriteStillRunning),
            };
            lock = landed.lock;
            if landed.cache != "-" {
                exchange.cache = landed.cache;
            }
            match landed.result? {
                Attempt::Done(response, Some(_)) => return Ok(response),
                // Refused, so nothing was written: one of the others may be the cause.
                Attempt::Done(response, None) if batched && response.status().is_client_error() => {
                    alone = true;
                    continue;
                }
                Attempt::Done(response, None) => return Ok(response),
                Attempt::Conflict if !conditions.any_write_condition() => {
                    if retries < route.config.conflict_retries {
                        retries += 1;
                        self.shared.metrics.event(route.id, "conflict_retries", "");
                        continue;
                    }
                    let etag = match self.current(route, &key, &parts, true, exchange).await? {
                        Lookup::Found(entry) => Some(entry.etag().into_header_value()),
                        Lookup::Other(_) => None,
                    };
                    return Err(Error::ConflictRetriesExhausted { etag });
                }
                Attempt::Conflict => {
                    // The client stated a precondition: it decides, with the current body.
                    self.shared
                        .metrics
                        .event(route.id, "precondition_failures", "upstream");
                    return match self.current(route, &key, &parts, true, exchange).await? {
                        Lookup::Found(entry) => self.enriched_412(route, Some(&entry), &parts),
                        Lookup::Other(_) => self.enriched_412(route, None, &parts),
                    };
                }
            }
        }
    }

    /// Sends `write` on a task of its own that runs to the upstream's answer (or
    /// `write_timeout`) holding `lock`, whatever becomes of this request, and settles
    /// there what the answer decides. `None` if that task failed.
    fn launch(
        &self,
        route: &CompiledRoute,
        write: Write,
        lock: WriteGuard,
    ) -> impl std::future::Future<Output = Option<Landed>> + use<> {
        let ctx = self.clone();
        let route_id = route.id;
        let flying = self.shared.landings.fly();
        let task = tokio::spawn(async move {
            let _flying = flying;
            let Some(route) = ctx.shared.routes.get(route_id) else {
                return Landed {
                    result: Err(Error::NoRoute),
                    lock,
                    cache: "-",
                };
            };
            let (result, cache) = ctx.land(route, write).await;
            Landed { result, lock, cache }
        });
        async move { task.await.ok() }
    }

    /// The upstream write and everything its answer decides: the cache, the carried
    /// PATCHes' verdicts, the kept parsed document, whether the resource is uncertain.
    async fn land(&self, route: &CompiledRoute, write: Write) -> (Result<Attempt, Error>, &'static str) {
        let Write {
            key,
            parts,
            method,
            current,
            new_body,
            mut batch,
            written,
        } = write;
        let mut exchange = Exchange {
            route: Some(route.id),
            cache: "-",
            requester: key.requester.clone(),
        };
        let result = self
            .attempt(
                route,
                &key,
                &parts,
                method,
                current.as_deref(),
                new_body,
                &mut exchange,
            )
            .await;
        let landings = &self.shared.landings;
        match &result {
            Ok(Attempt::Done(_, Some(entry))) => {
                landings.confirm(route.id, &key.path);
                batch.settle(|| Verdict::Applied(Arc::clone(entry)));
                // The next PATCH of this document can start from the parsed form,
                // unless the upstream's copy (re-read) differs from what was sent.
                if let Some((doc, bytes)) = written
                    && entry.body_bytes() == bytes
                {
                    self.shared.parsed.keep(route.id, &key.path, entry, doc);
                }
            }
            Ok(Attempt::Done(response, None)) if !batch.is_empty() && response.status().is_client_error() => {
                batch.settle(|| Verdict::Alone);
            }
            Ok(Attempt::Done(response, None)) => {
                let status = response.status();
                if status.is_success() {
                    landings.confirm(route.id, &key.path);
                }
                let status = if status.is_server_error() {
                    status
                } else {
                    StatusCode::BAD_GATEWAY
                };
                batch.settle(|| Verdict::Failed(status));
            }
            Ok(Attempt::Conflict) => batch.settle(|| Verdict::Alone),
            Err(e) => {
                // No answer, or none that can be trusted: the write may land yet.
                landings.mark_uncertain(route.id, &key.path);
                self.shared.metrics.event(route.id, "writes_uncertain", e.kind());
                let status = e.status();
                batch.settle(|| Verdict::Failed(status));
            }
        }
        (result, exchange.cache)
    }

    /// The upstream request head a PATCH's write sends, apart from its body and the
    /// upstream's own `If-Match`: what another write must send too to carry it.
    fn write_signature(&self, route: &CompiledRoute, parts: &request::Parts) -> Result<Signature, Error> {
        let method = route.config.write_method.clone();
        let (head, _) = self.write_request(route, parts, method, None, None)?.into_parts();
        Ok(Signature {
            uri: head.uri,
            headers: head.headers,
        })
    }

    fn write_method(&self, route: &CompiledRoute, intent: &Intent) -> Method {
        match intent {
            Intent::Patch(_) => route.config.write_method.clone(),
            Intent::Put(_) => Method::PUT,
            Intent::Delete => Method::DELETE,
        }
    }

    /// What the client asked for, parsed before any lock is taken: 405, 415, 400, 413.
    async fn intent(
        &self,
        route: &CompiledRoute,
        parts: &request::Parts,
        body: Body,
    ) -> Result<Intent, Error> {
        match parts.method {
            Method::PATCH => {
                let Some(accept_patch) = &route.accept_patch else {
                    return Err(Error::MethodNotAllowed { allow: allow(route) });
                };
                let format = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| Format::from_content_type(v.as_bytes()))
                    .filter(|f| route.config.patch.contains(f))
                    .ok_or_else(|| Error::UnsupportedPatchFormat {
                        accept_patch: accept_patch.clone(),
                    })?;
                let bytes = self.client_body(parts, body).await?;
                let patch = Patch::parse(format, &bytes, route.config.patch_max_ops).map_err(Error::Patch);
                if let Err(e) = &patch {
                    self.shared.metrics.event(route.id, "patches_failed", e.kind());
                }
                Ok(Intent::Patch(Arc::new(patch?)))
            }
            Method::PUT => Ok(Intent::Put(self.client_body(parts, body).await?)),
            _ => Ok(Intent::Delete),
        }
    }

    /// Applies a patch; a failed `test` carries the ETag it was evaluated against.
    fn apply(
        &self,
        route: &CompiledRoute,
        patch: &Patch,
        doc: Document,
        current: Option<&Entry>,
    ) -> Result<Document, Error> {
        patch
            .apply_to_owned(doc, self.max_body())
            .map_err(|e| match (self.patch_failed(route, e), current) {
                (Error::Patch(e @ PatchError::TestFailed { .. }), Some(entry)) => Error::PatchConflict {
                    error: e,
                    etag: entry.etag().into_header_value(),
                },
                (error, _) => error,
            })
    }

    fn patch_failed(&self, route: &CompiledRoute, e: PatchError) -> Error {
        let error = Error::Patch(e);
        self.shared
            .metrics
            .event(route.id, "patches_failed", error.kind());
        error
    }

    fn max_body(&self) -> usize {
        usize::try_from(self.shared.max_body_bytes).unwrap_or(usize::MAX)
    }

    /// Waits for this write's turn: the resource's lock, or, for an unconditional PATCH,
    /// a leader that wrote it together with its own.
    #[allow(clippy::too_many_arguments)]
    async fn turn(
        &self,
        route: &CompiledRoute,
        path: &str,
        parts: &request::Parts,
        intent: &Intent,
        conditions: &Conditions,
        signature: Option<&Signature>,
        exchange: &mut Exchange,
    ) -> Result<Turn, Error> {
        let locks = &self.shared.locks;
        let (patch, signature) = match (intent, signature) {
            (Intent::Patch(patch), Some(signature)) if conditions.is_empty() => (patch, signature),
            _ => return Ok(Turn::Lock(locks.lock(route.id, path).await)),
        };
        let mut ticket = self
            .shared
            .batches
            .join(route.id, path, Arc::clone(patch), signature.clone());
        let verdict = tokio::select! {
            verdict = &mut ticket.rx => verdict,
            guard = locks.lock(route.id, path) => {
                if ticket.withdraw() {
                    return Ok(Turn::Lock(guard));
                }
                // Claimed just before the lock came: the verdict is on its way.
                drop(guard);
                (&mut ticket.rx).await
            }
        };
        drop(ticket);
        match verdict {
            Ok(Verdict::Applied(entry)) => {
                exchange.cache = "batched";
                self.shared.metrics.event(route.id, "patches", "applied");
                Ok(Turn::Done(patched(&entry, route, parts)))
            }
            Ok(Verdict::Alone) => Ok(Turn::Lock(locks.lock(route.id, path).await)),
            Ok(Verdict::Failed(status)) => Err(Error::BatchWriteFailed { status }),
            Err(_) => Err(Error::BatchWriteFailed {
                status: StatusCode::BAD_GATEWAY,
            }),
        }
    }

    /// Takes the PATCHes waiting for this resource and applies each that applies to
    /// `doc`, in arrival order; the others are sent back to write alone.
    fn claim(
        &self,
        route: &CompiledRoute,
        path: &str,
        signature: &Signature,
        doc: &mut Document,
        batch: &mut Claimed,
    ) {
        for joiner in self.shared.batches.take(route.id, path, signature) {
            match joiner.patch.apply_in_place(doc, self.max_body()) {
                Ok(()) => batch.push(joiner),
                Err(_) => joiner.release(),
            }
        }
    }

    fn too_large(&self) -> Error {
        Error::Patch(PatchError::TooLarge {
            max: usize::try_from(self.shared.max_body_bytes).unwrap_or(usize::MAX),
        })
    }

    /// One conditional upstream write and, on success, the cache update and the response.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        route: &CompiledRoute,
        key: &Key,
        parts: &request::Parts,
        method: Method,
        current: Option<&Entry>,
        new_body: Option<Bytes>,
        exchange: &mut Exchange,
    ) -> Result<Attempt, Error> {
        // A failed write must not leave a cached body the upstream may not hold.
        let mut guard = Invalidate::new(&self.shared.cache, route.id, &key.path);
        let upstream_tag = current
            .and_then(|e| e.upstream_etag())
            .filter(|v| EntityTag::parse(v.as_bytes()).is_some_and(|t| !t.is_weak()));
        let request = self.write_request(route, parts, method, new_body.clone(), upstream_tag)?;
        let response = self
            .send_within(route, request, self.shared.write_timeout)
            .await?;
        let status = response.status();
        if status == StatusCode::PRECONDITION_FAILED {
            return Ok(Attempt::Conflict);
        }
        if !status.is_success() {
            // The guard drops the entry: the upstream's state is unknown.
            return Ok(Attempt::Done(finish_response(response), None));
        }
        self.invalidate_after_write(route, &key.path);
        let Some(new_body) = new_body else {
            guard.disarm();
            return Ok(Attempt::Done(finish_response(response), None));
        };
        let (resp_parts, resp_body) = response.into_parts();
        // Let the upstream's response finish on its connection before replying.
        let upstream_body = self
            .read_body(resp_body, self.shared.max_body_bytes, self.shared.write_timeout)
            .await
            .unwrap_or_default();
        // Without a new upstream tag, an upstream that tags its documents must be asked
        // for it, or the next read would show another ETag for the same body.
        let tag_unknown = route.config.etag != EtagMode::Hash
            && current.is_some_and(|e| e.upstream_etag().is_some())
            && !resp_parts.headers.contains_key(header::ETAG);
        let entry = if route.config.refresh_after_write || tag_unknown {
            match self.current(route, key, parts, true, exchange).await? {
                Lookup::Found(entry) => entry,
                Lookup::Other(response) => return Ok(Attempt::Done(response, None)),
            }
        } else {
            let headers = written_headers(current, &resp_parts.headers, parts);
            let mut body = bytes::BytesMut::with_capacity(new_body.len() + tag_room(&headers));
            body.extend_from_slice(&new_body);
            let entry = make_entry(route.config.etag, &headers, body, &self.shared.cache);
            self.shared
                .cache
                .insert(key.clone(), &parts.headers, entry)
                .unwrap_or_else(Arc::new)
        };
        guard.disarm();
        if parts.method == Method::PATCH {
            self.shared.metrics.event(route.id, "patches", "applied");
            return Ok(Attempt::Done(patched(&entry, route, parts), Some(entry)));
        }
        let mut response = Response::from_parts(resp_parts, body::full(upstream_body));
        response
            .headers_mut()
            .insert(header::ETAG, entry.etag().into_header_value());
        Ok(Attempt::Done(finish_response(response), Some(entry)))
    }

    /// The whole client body, bounded by `max_body_bytes` (413).
    async fn client_body(&self, parts: &request::Parts, body: Body) -> Result<Bytes, Error> {
        let max = self.shared.max_body_bytes;
        if content_length(&parts.headers).is_some_and(|len| len > max) {
            return Err(Error::BodyTooLarge { max });
        }
        match collect(Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))).await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge { max }),
            Err(e) if crate::body::is_read_timeout(e.as_ref()) => Err(Error::BodyReadTimeout),
            Err(_) => Err(Error::ClientBody),
        }
    }

    fn write_request(
        &self,
        route: &CompiledRoute,
        client: &request::Parts,
        method: Method,
        body: Option<Bytes>,
        upstream_tag: Option<&HeaderValue>,
    ) -> Result<Request<Body>, Error> {
        let uri = self.upstream_uri(route, &client.uri)?;
        let is_patch = client.method == Method::PATCH;
        let mut request = if is_patch {
            upstream::own_request(method, uri, client, &route.host, body::empty())
        } else {
            let mut parts = clone_parts(client);
            parts.method = method;
            upstream::prepare(&mut parts, uri, &route.host);
            Request::from_parts(parts, body::empty())
        };
        let headers = request.headers_mut();
        for name in [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::CONTENT_LENGTH,
            PREFER,
        ] {
            headers.remove(name);
        }
        if is_patch {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(tag) = upstream_tag {
            headers.insert(header::IF_MATCH, tag.clone());
        }
        if let Some(bytes) = body {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            upstream::set_body(&mut request, bytes);
        }
        Ok(request)
    }

    /// 412 with the current representation, byte for byte what a GET returns now.
    fn enriched_412(
        &self,
        route: &CompiledRoute,
        current: Option<&Arc<Entry>>,
        parts: &request::Parts,
    ) -> Result<Response<Body>, Error> {
        let Some(entry) = current else {
            return Err(Error::PreconditionFailedMissing);
        };
        self.shared.metrics.event(route.id, "enriched_412", "");
        let mut response = represent(entry, route, StatusCode::PRECONDITION_FAILED, false);
        if !response.headers().contains_key(header::CONTENT_LOCATION)
            && let Ok(location) = HeaderValue::from_str(parts.uri.path())
        {
            response.headers_mut().insert(header::CONTENT_LOCATION, location);
        }
        Ok(response)
    }

    /// Drops the cached copies a write made stale: the resource and its collection.
    pub(crate) fn invalidate_after_write(&self, route: &CompiledRoute, path: &str) {
        self.shared.cache.invalidate(route.id, path);
        if let Some(parent) = parent_path(path) {
            self.shared.cache.invalidate(route.id, parent);
        }
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
            response = crate::layer::status_only(StatusCode::NO_CONTENT);
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

/// 200 with the new document, or 204 for `Prefer: return=minimal` (RFC 7240).
fn patched(entry: &Arc<Entry>, route: &CompiledRoute, parts: &request::Parts) -> Response<Body> {
    let minimal = parts
        .headers
        .get_all(PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"));
    if minimal {
        let mut response = crate::layer::status_only(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(header::ETAG, entry.etag().into_header_value());
        headers.insert(PREFERENCE_APPLIED, HeaderValue::from_static("return=minimal"));
        if let Some(accept) = &route.accept_patch {
            headers.insert(ACCEPT_PATCH, accept.clone());
        }
        return response;
    }
    represent(entry, route, StatusCode::OK, false)
}

/// The representation headers of what patchgate just wrote: the old document's, the
/// written body's type, and the validators the upstream's write response gave.
fn written_headers(current: Option<&Entry>, response: &HeaderMap, parts: &request::Parts) -> HeaderMap {
    let mut headers = current.map(|e| HeaderMap::clone(&e.headers)).unwrap_or_default();
    headers.remove(header::LAST_MODIFIED);
    let content_type = match (&parts.method, parts.headers.get(header::CONTENT_TYPE)) {
        (&Method::PUT, Some(ct)) => ct.clone(),
        _ => headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/json")),
    };
    headers.insert(header::CONTENT_TYPE, content_type);
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = response.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    headers
}

fn clone_parts(parts: &request::Parts) -> request::Parts {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        headers.clone_from(&parts.headers);
    }
    let (mut cloned, ()) = builder.body(()).unwrap_or_default().into_parts();
    cloned.extensions = parts.extensions.clone();
    cloned
}

/// The collection a resource belongs to: the path without its last segment.
pub(crate) fn parent_path(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    (cut > 0).then(|| &trimmed[..cut])
}

/// Drops the resource's cache entry unless disarmed after a confirmed write.
struct Invalidate<'a> {
    cache: &'a Cache,
    route: u32,
    path: &'a str,
    armed: bool,
}

impl<'a> Invalidate<'a> {
    fn new(cache: &'a Cache, route: u32, path: &'a str) -> Self {
        Invalidate {
            cache,
            route,
            path,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Invalidate<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cache.invalidate(self.route, self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parent_path;

    #[test]
    fn parent_is_the_path_without_its_last_segment() {
        assert_eq!(parent_path("/api/people/1"), Some("/api/people"));
        assert_eq!(parent_path("/api/people/1/"), Some("/api/people"));
        assert_eq!(parent_path("/people"), None);
        assert_eq!(parent_path("/"), None);
    }
}
