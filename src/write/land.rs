//! A write that was sent: it runs to its end, never cancelled, holding the resource's
//! write lock, until the upstream answers or `server.write_timeout` passes, whatever
//! becomes of the request that sent it; its answer decides the cache, the verdicts of
//! the PATCHes it carries, the kept parsed document and whether the resource is
//! uncertain.
//!
//! Invariant: the cache holds the written body only once the upstream confirmed it; a
//! write that failed, or ended without an answer, drops the resource's entry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request};

use super::{Sending, Write, clone_parts, patched};
use crate::body::{self, Body};
use crate::cache::{Cache, Entry, make_entry, tag_room};
use crate::cluster::Lease;
use crate::config::{EtagMode, Freshness};
use crate::etag::EntityTag;
use crate::headers::finish_response;
use crate::headers::{CONDITIONALS, PREFER};
use crate::layer::{Ctx, Exchange};
use crate::metrics::Event;
use crate::problem::Error;
use crate::read::{Lookup, Target};
use crate::resource::{Verdict, WriteGuard};
use crate::route::CompiledRoute;
use crate::upstream;

/// A future that is never cancelled: dropped before it is done, it goes on as a task of
/// its own. Awaiting it in place spares a task and a wake-up of another worker per write.
pub(super) struct Detached<T: Send + 'static> {
    future: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Detached<T> {
    fn new(future: impl Future<Output = T> + Send + 'static) -> Detached<T> {
        Detached {
            future: Some(Box::pin(future)),
        }
    }
}

impl<T: Send + 'static> Future for Detached<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) = (self.future.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(future);
        }
    }
}

/// The outcome of one upstream write.
pub(super) enum Attempt {
    /// With the new representation when the write was confirmed and it is known.
    Done(Response<Body>, Option<Arc<Entry>>),
    /// The upstream refused patchgate's conditional write: someone else wrote first.
    Conflict,
}

/// What a sent write's task hands back: its outcome and, while the client still
/// waits, the resource's lock for a retry.
pub(super) struct Landed {
    pub result: Result<Attempt, Error>,
    pub lock: WriteGuard,
    pub cache: &'static str,
}

impl Ctx {
    /// The sent write, run to the upstream's answer (or `write_timeout`) holding `lock`,
    /// settling there what the answer decides: awaited in the request's own task while
    /// the client waits, and moved to a task of its own if the request is dropped first
    /// (its client left, or its `request_timeout` passed).
    pub(super) fn launch(
        &self,
        route: &CompiledRoute,
        write: Write,
        mut lock: WriteGuard,
    ) -> Detached<Landed> {
        let ctx = self.clone();
        let lease = lock.take_lease();
        let route_id = route.id;
        let flying = self.shared.landings.fly();
        Detached::new(async move {
            let _flying = flying;
            let Some(route) = ctx.settings.routes.get(route_id) else {
                return Landed {
                    result: Err(Error::NoRoute),
                    lock,
                    cache: "-",
                };
            };
            let (result, cache) = ctx.land(route, write, &lock, lease).await;
            Landed { result, lock, cache }
        })
    }

    /// The upstream write and everything its answer decides: the cache, the carried
    /// PATCHes' verdicts, the kept parsed document, whether the resource is uncertain.
    /// With `[cluster]`, the lease is proven before sending (else nothing is sent) and
    /// released, publishing the write to the other instances, before anyone is answered.
    async fn land(
        &self,
        route: &CompiledRoute,
        write: Write,
        lock: &WriteGuard,
        lease: Option<Lease>,
    ) -> (Result<Attempt, Error>, &'static str) {
        let Write {
            sending,
            mut batch,
            written,
        } = write;
        if let Some(lease) = &lease
            && let Err(error) = lease.prove(self.settings.write_timeout).await
        {
            batch.settle(|| Verdict::Alone);
            return (Err(error), "-");
        }
        let mut exchange = Exchange {
            route: Some(route.id),
            cache: "-",
            requester: sending.key.requester.clone(),
        };
        let result = self.attempt(route, &sending, &mut exchange).await;
        if let Some(lease) = lease {
            lease
                .release_written(route.config.freshness != Freshness::Revalidate)
                .await;
        }
        let (resources, resource) = (&self.shared.resources, lock.resource());
        match &result {
            Ok(Attempt::Done(_, Some(entry))) => {
                resource.confirm(resources);
                batch.settle(|| Verdict::Applied(Arc::clone(entry)));
                // The next PATCH of this document can start from the parsed form,
                // unless the upstream's copy (re-read) differs from what was sent.
                if let Some((doc, bytes)) = written
                    && entry.body_bytes() == bytes
                {
                    resource.keep(resources, entry, doc);
                }
            }
            Ok(Attempt::Done(response, None)) if !batch.is_empty() && response.status().is_client_error() => {
                batch.settle(|| Verdict::Alone);
            }
            Ok(Attempt::Done(response, None)) => {
                let status = response.status();
                if status.is_success() {
                    resource.confirm(resources);
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
                resource.mark_uncertain(resources);
                self.shared.metrics.event(route.id, Event::WriteUncertain(e));
                let status = e.status();
                batch.settle(|| Verdict::Failed(status));
            }
        }
        (result, exchange.cache)
    }

    /// One conditional upstream write and, on success, the cache update and the response.
    async fn attempt(
        &self,
        route: &CompiledRoute,
        sending: &Sending,
        exchange: &mut Exchange,
    ) -> Result<Attempt, Error> {
        let Sending {
            key,
            parts,
            method,
            current,
            current_known,
            new_body,
            patched: from_patch,
        } = sending;
        let (current, method) = (current.as_deref(), method.clone());
        // What the change feed says the write replaced: only a version read for it.
        let replaced = current.filter(|_| *current_known);
        // A failed write must not leave a cached body the upstream may not hold.
        let mut guard = Invalidate::new(&self.shared.cache, route.id, &key.path);
        let upstream_tag = current
            .and_then(|e| e.upstream_etag())
            .filter(|v| EntityTag::parse(v.as_bytes()).is_some_and(|t| !t.is_weak()));
        let request = self.write_request(route, parts, method, new_body.clone(), upstream_tag)?;
        let mut asked = crate::read::http_cache::Timing::now();
        let response = self
            .send_within(route, request, self.settings.write_timeout)
            .await?;
        asked.received = std::time::SystemTime::now();
        let status = response.status();
        if status == StatusCode::PRECONDITION_FAILED {
            return Ok(Attempt::Conflict);
        }
        if !status.is_success() {
            // The guard drops the entry: the upstream's state is unknown.
            return Ok(Attempt::Done(finish_response(response), None));
        }
        self.invalidate_after_write(route, &key.path);
        let http = route.config.freshness == Freshness::Http;
        if http {
            self.invalidate_named(parts, response.headers());
        }
        let Some(new_body) = new_body else {
            guard.disarm();
            self.shared.publish_change(route, &key.path, replaced, None).await;
            return Ok(Attempt::Done(finish_response(response), None));
        };
        let (resp_parts, resp_body) = response.into_parts();
        // Let the upstream's response finish on its connection before replying.
        let upstream_body = self
            .read_body(
                resp_body,
                self.settings.max_body_bytes,
                self.settings.write_timeout,
            )
            .await
            .unwrap_or_default();
        // Without a new upstream tag, an upstream that tags its documents must be asked
        // for it, or the next read would show another ETag for the same body.
        let tag_unknown = route.config.etag != EtagMode::Hash
            && current.is_some_and(|e| e.upstream_etag().is_some())
            && !resp_parts.headers.contains_key(header::ETAG);
        let entry = if route.config.refresh_after_write || tag_unknown {
            match self.current(Target { route, key, parts }, true, exchange).await? {
                Lookup::Found(entry) => entry,
                Lookup::Other(response) => return Ok(Attempt::Done(response, None)),
            }
        } else if http {
            let answer = (&resp_parts, &upstream_body, asked);
            self.http_written(route, key, parts, current, new_body, answer)
        } else {
            let headers = written_headers(current, &resp_parts.headers, parts);
            let mut body = bytes::BytesMut::with_capacity(new_body.len() + tag_room(&headers));
            body.extend_from_slice(new_body);
            let mut entry = make_entry(route.config.etag, &headers, body, &self.shared.cache);
            if *from_patch {
                entry = entry.mark_patched();
            }
            self.shared
                .cache
                .insert(key.clone(), &parts.headers, entry)
                .unwrap_or_else(|unstored| {
                    let entry = Arc::new(unstored);
                    self.remember(route, key, &entry);
                    entry
                })
        };
        guard.disarm();
        // The version the write replaced becomes history (the new one is in the cache).
        if let Some(old) = &sending.current
            && !old.same_tag(&entry)
        {
            self.remember(route, key, old);
        }
        self.shared
            .publish_change(route, &key.path, replaced, Some(&entry))
            .await;
        if parts.method == Method::PATCH {
            self.shared.metrics.event(route.id, Event::PatchApplied);
            return Ok(Attempt::Done(patched(&entry, route, parts), Some(entry)));
        }
        let mut response = Response::from_parts(resp_parts, body::full(upstream_body));
        response
            .headers_mut()
            .insert(header::ETAG, entry.etag().into_header_value());
        Ok(Attempt::Done(finish_response(response), Some(entry)))
    }

    pub(super) fn write_request(
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
        for name in CONDITIONALS.into_iter().chain([header::CONTENT_LENGTH, PREFER]) {
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
}

/// The representation headers of what patchgate just wrote: the old document's, the
/// written body's type, and the validators the upstream's write response gave.
pub(super) fn written_headers(
    current: Option<&Entry>,
    response: &HeaderMap,
    parts: &request::Parts,
) -> HeaderMap {
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_detached_future_dropped_half_way_runs_to_its_end() {
        let (done_tx, done_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let mut detached = Box::pin(Detached::new(async move {
            let _ = go_rx.await;
            let _ = done_tx.send("landed");
        }));
        let polled = std::future::poll_fn(|cx| Poll::Ready(detached.as_mut().poll(cx).is_pending())).await;
        assert!(polled, "waits for its answer");
        drop(detached);
        go_tx.send(()).unwrap();
        assert_eq!(done_rx.await.unwrap(), "landed");
    }

    #[tokio::test]
    async fn a_detached_future_awaited_in_place_gives_its_output() {
        assert_eq!(Detached::new(async { 7 }).await, 7);
    }
}
