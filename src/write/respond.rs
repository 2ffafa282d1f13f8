//! What a write answers besides the new document: the enriched 412, `Prefer:
//! return=minimal`, and the cached copies a write makes stale.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header, request};

use crate::body::Body;
use crate::cache::Entry;
use crate::headers::{ACCEPT_PATCH, PREFER, PREFERENCE_APPLIED};
use crate::layer::Ctx;
use crate::metrics::Event;
use crate::problem::Error;
use crate::read::represent;
use crate::route::CompiledRoute;

impl Ctx {
    /// 412 with the current representation, byte for byte what a GET returns now.
    pub(super) fn enriched_412(
        &self,
        route: &CompiledRoute,
        current: Option<&Arc<Entry>>,
        parts: &request::Parts,
    ) -> Result<Response<Body>, Error> {
        let Some(entry) = current else {
            return Err(Error::PreconditionFailedMissing);
        };
        self.shared.metrics.event(route.id, Event::Enriched412);
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

    /// `freshness = "http"` (RFC 9111 §4.4): after an unsafe request's non-error
    /// answer, the `Location` and `Content-Location` targets go too, when they are paths
    /// of this origin that a route serves.
    pub(crate) fn invalidate_named(&self, request: &request::Parts, response: &HeaderMap) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            for value in response.get_all(&name) {
                let Some(path) = same_origin_path(value, request) else {
                    continue;
                };
                if let Some(route) = self.settings.routes.find(&path)
                    && route.config.freshness == crate::config::Freshness::Http
                {
                    self.shared
                        .cache
                        .invalidate(route.id, &route.upstream_path(&path));
                }
            }
        }
    }
}

/// The path a `Location` or `Content-Location` value names, resolved against the
/// request's target (RFC 3986 §5.2, without dot segments: a value with any is ignored),
/// when it is on the request's own origin; `None` otherwise.
pub(crate) fn same_origin_path(value: &HeaderValue, request: &request::Parts) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let text = text.split(['#', '?']).next()?;
    let path = if text.starts_with("//") || text.contains("://") {
        let uri: Uri = text.parse().ok()?;
        let host = request
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                request
                    .headers
                    .get(header::HOST)?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })?;
        if !uri.authority()?.as_str().eq_ignore_ascii_case(&host) {
            return None;
        }
        uri.path().to_owned()
    } else if text.starts_with('/') {
        text.to_owned()
    } else if text.is_empty() {
        request.uri.path().to_owned()
    } else {
        let base = request.uri.path();
        let dir = &base[..=base.rfind('/')?];
        format!("{dir}{text}")
    };
    (crate::route::is_safe_path(&path) && !path.split('/').any(|s| s == "." || s == "..")).then_some(path)
}

/// 200 with the new document, or 204 for `Prefer: return=minimal` (RFC 7240).
pub(super) fn patched(entry: &Arc<Entry>, route: &CompiledRoute, parts: &request::Parts) -> Response<Body> {
    let minimal = parts
        .headers
        .get_all(PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"));
    if minimal {
        let mut response = crate::body::status_only(StatusCode::NO_CONTENT);
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

pub(super) fn clone_parts(parts: &request::Parts) -> request::Parts {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{parent_path, same_origin_path};
    use http::{HeaderValue, Request};

    #[test]
    fn location_targets_resolve_on_the_same_origin_only() {
        let (parts, ()) = Request::put("/api/people/1?x=1")
            .header("host", "api.example")
            .body(())
            .unwrap()
            .into_parts();
        let path = |v: &str| same_origin_path(&HeaderValue::from_str(v).unwrap(), &parts);
        assert_eq!(path("/api/people/2").as_deref(), Some("/api/people/2"));
        assert_eq!(path("/api/people/2?y#z").as_deref(), Some("/api/people/2"));
        assert_eq!(path("3").as_deref(), Some("/api/people/3"));
        assert_eq!(path("").as_deref(), Some("/api/people/1"));
        assert_eq!(path("http://API.example/api/x").as_deref(), Some("/api/x"));
        assert_eq!(path("https://other.example/api/x"), None);
        assert_eq!(path("//other.example/api/x"), None);
        assert_eq!(path("/api/../admin"), None);
        assert_eq!(path("../admin"), None);
    }

    #[test]
    fn parent_is_the_path_without_its_last_segment() {
        assert_eq!(parent_path("/api/people/1"), Some("/api/people"));
        assert_eq!(parent_path("/api/people/1/"), Some("/api/people"));
        assert_eq!(parent_path("/people"), None);
        assert_eq!(parent_path("/"), None);
    }
}
