//! What a write answers besides the new document: the enriched 412, `Prefer:
//! return=minimal`, and the cached copies a write makes stale.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header, request};

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
