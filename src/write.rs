//! The write path: PATCH, PUT and DELETE.
//!
//! Under the resource's write lock: read the current representation, evaluate the
//! preconditions (RFC 9110 §13.2.2), apply the patch, write the whole document upstream
//! (conditionally on the upstream's own strong ETag), and update the cache only with what
//! the upstream confirmed. An upstream 412 with no client precondition means another
//! writer bypassed patchgate: re-read, re-apply, retry up to `conflict_retries`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header, request};
use http_body_util::Limited;

use crate::body::{self, Body};
use crate::cache::{Cache, Entry};
use crate::etag::EntityTag;
use crate::headers::{ACCEPT_PATCH, PREFER, PREFERENCE_APPLIED};
use crate::layer::{Ctx, Exchange, allow, collect, content_length, finish_response};
use crate::patch::{Document, Format, Patch};
use crate::precondition::{Conditions, Current, Outcome, evaluate};
use crate::problem::Error;
use crate::read::{Lookup, duplicate, make_entry, represent};
use crate::route::CompiledRoute;
use crate::upstream;

/// What the client asked to write, parsed before the lock is taken.
enum Intent {
    Patch(Patch),
    Put(Bytes),
    Delete,
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
        let intent = match parts.method {
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
                let bytes = self.client_body(&parts, body).await?;
                let patch = Patch::parse(format, &bytes, route.config.patch_max_ops);
                if let Err(e) = &patch {
                    self.shared
                        .metrics
                        .event(route.id, "patches_failed", Error::Patch(e.clone()).kind());
                }
                Intent::Patch(patch?)
            }
            Method::PUT => Intent::Put(self.client_body(&parts, body).await?),
            _ => Intent::Delete,
        };

        let key = self.cache_key(route, &parts);
        let _lock = self.shared.locks.lock(route.id, &key.path).await;
        let mut retries = 0;
        loop {
            let force_upstream = retries > 0;
            let current = match self
                .current(route, &key, &parts, force_upstream, exchange)
                .await?
            {
                Lookup::Found(entry) => Some(entry),
                Lookup::Other(response) if response.status() == StatusCode::NOT_FOUND => {
                    if matches!(intent, Intent::Put(_)) {
                        None
                    } else {
                        // §13.2.1: a missing resource is 404 whatever the preconditions.
                        return Ok(response);
                    }
                }
                Lookup::Other(response) if response.status() == StatusCode::OK => {
                    return Err(Error::Patch(crate::patch::PatchError::TooLarge {
                        max: usize::try_from(self.shared.max_body_bytes).unwrap_or(usize::MAX),
                    }));
                }
                Lookup::Other(response) => return Ok(response),
            };

            let document = match (&intent, &current) {
                (Intent::Patch(_), Some(entry)) => match Document::parse(&entry.body) {
                    Ok(doc) => Some(doc),
                    Err(e) => {
                        self.shared.metrics.event(route.id, "patches_failed", "not-json");
                        return Err(e.into());
                    }
                },
                _ => None,
            };

            let state = Current {
                exists: current.is_some(),
                etag: current.as_ref().map(|e| &e.etag),
                last_modified: current.as_ref().and_then(|e| e.last_modified),
            };
            if evaluate(&conditions, &state, false) != Outcome::Proceed {
                self.shared.metrics.event(route.id, "precondition_failures", "");
                return self.enriched_412(route, current.as_deref(), &parts);
            }

            let (method, new_body) = match (&intent, &document) {
                (Intent::Patch(patch), Some(doc)) => {
                    let max = usize::try_from(self.shared.max_body_bytes).unwrap_or(usize::MAX);
                    match patch.apply(doc, max) {
                        Ok(bytes) => (route.config.write_method.clone(), Some(bytes)),
                        Err(e) => {
                            let error = Error::Patch(e);
                            self.shared
                                .metrics
                                .event(route.id, "patches_failed", error.kind());
                            if error.status() == StatusCode::CONFLICT {
                                return Err(with_etag(error, current.as_deref()));
                            }
                            return Err(error);
                        }
                    }
                }
                (Intent::Put(bytes), _) => (Method::PUT, Some(bytes.clone())),
                _ => (Method::DELETE, None),
            };

            // A dropped future (client gone) or a failed write must not leave a cached
            // body the upstream may not hold.
            let mut guard = Invalidate::new(&self.shared.cache, route.id, &key.path);
            let upstream_tag = current
                .as_ref()
                .and_then(|e| e.upstream_etag.as_ref())
                .filter(|v| EntityTag::parse(v.as_bytes()).is_some_and(|t| !t.is_weak()));
            let request = self.write_request(route, &parts, method, new_body.clone(), upstream_tag)?;
            let response = self.send(route, request).await?;
            let status = response.status();

            if status == StatusCode::PRECONDITION_FAILED {
                drop(guard);
                if !conditions.any_write_condition() && retries < route.config.conflict_retries {
                    retries += 1;
                    self.shared.metrics.event(route.id, "conflict_retries", "");
                    continue;
                }
                if !conditions.any_write_condition() {
                    let fresh = self.current(route, &key, &parts, true, exchange).await?;
                    let etag = match fresh {
                        Lookup::Found(entry) => Some(entry.etag.to_header_value()),
                        Lookup::Other(_) => None,
                    };
                    return Err(Error::ConflictRetriesExhausted { etag });
                }
                self.shared
                    .metrics
                    .event(route.id, "precondition_failures", "upstream");
                return match self.current(route, &key, &parts, true, exchange).await? {
                    Lookup::Found(entry) => self.enriched_412(route, Some(&entry), &parts),
                    Lookup::Other(_) => self.enriched_412(route, None, &parts),
                };
            }
            if !status.is_success() {
                // The guard drops the entry: the upstream's state is unknown.
                return Ok(finish_response(response));
            }

            let parent = parent_path(&key.path);
            self.shared.cache.invalidate(route.id, &key.path);
            if let Some(parent) = parent {
                self.shared.cache.invalidate(route.id, parent);
            }
            let Some(new_body) = new_body else {
                guard.disarm();
                return Ok(finish_response(response));
            };
            let (resp_parts, resp_body) = response.into_parts();
            // Let the upstream's response finish on the connection before replying.
            let upstream_body = self
                .read_body(resp_body, self.shared.max_body_bytes)
                .await
                .unwrap_or_default();
            let entry = if route.config.refresh_after_write {
                match self.current(route, &key, &parts, true, exchange).await? {
                    Lookup::Found(entry) => entry,
                    Lookup::Other(response) => return Ok(response),
                }
            } else {
                let mut headers = resp_parts.headers.clone();
                headers.insert(header::CONTENT_TYPE, content_type_of(current.as_deref(), &parts));
                if let Some(old) = &current {
                    for name in [header::CACHE_CONTROL, header::VARY, header::CONTENT_LOCATION] {
                        if let Some(v) = old.headers.get(&name) {
                            headers.insert(name, v.clone());
                        }
                    }
                }
                let entry = make_entry(route.config.etag, &headers, new_body);
                self.shared
                    .cache
                    .insert(key.clone(), &parts.headers, duplicate(&entry))
                    .unwrap_or_else(|| Arc::new(entry))
            };
            guard.disarm();
            if matches!(intent, Intent::Patch(_)) {
                self.shared.metrics.event(route.id, "patches", "applied");
                return Ok(patched(&entry, route, &parts));
            }
            let mut response = Response::from_parts(resp_parts, body::full(upstream_body));
            response
                .headers_mut()
                .insert(header::ETAG, entry.etag.to_header_value());
            return Ok(finish_response(response));
        }
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
            *request.body_mut() = body::full(bytes);
        }
        Ok(request)
    }

    /// 412 with the current representation, byte for byte what a GET returns now.
    fn enriched_412(
        &self,
        route: &CompiledRoute,
        current: Option<&Entry>,
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
fn patched(entry: &Entry, route: &CompiledRoute, parts: &request::Parts) -> Response<Body> {
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
        headers.insert(header::ETAG, entry.etag.to_header_value());
        headers.insert(PREFERENCE_APPLIED, HeaderValue::from_static("return=minimal"));
        if let Some(accept) = &route.accept_patch {
            headers.insert(ACCEPT_PATCH, accept.clone());
        }
        return response;
    }
    represent(entry, route, StatusCode::OK, false)
}

fn with_etag(error: Error, current: Option<&Entry>) -> Error {
    match (error, current) {
        (Error::Patch(e), Some(entry)) => Error::PatchConflict {
            error: e,
            etag: entry.etag.to_header_value(),
        },
        (error, _) => error,
    }
}

fn content_type_of(current: Option<&Entry>, parts: &request::Parts) -> HeaderValue {
    if parts.method == Method::PUT
        && let Some(ct) = parts.headers.get(header::CONTENT_TYPE)
    {
        return ct.clone();
    }
    current
        .and_then(|e| e.headers.get(header::CONTENT_TYPE).cloned())
        .unwrap_or_else(|| HeaderValue::from_static("application/json"))
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
