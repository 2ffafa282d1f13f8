//! What a confirmed write leaves in the cache on a `freshness = "http"` route.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode, header, request};

use super::land::written_headers;
use crate::cache::{Entry, Key, make_entry, tag_room};
use crate::layer::Ctx;
use crate::read::http_cache::{self, Timing};
use crate::route::CompiledRoute;

impl Ctx {
    /// `freshness = "http"`: a PUT whose answer is a full representation of the target
    /// (a `200` with a body and `Content-Location` naming the target, RFC 9110 §9.3.4 and
    /// §8.7) stores that answer as the upstream sent it; any other write stores nothing
    /// (the entry was dropped), and the new body is only the client's answer.
    pub(super) fn http_written(
        &self,
        route: &CompiledRoute,
        key: &Key,
        parts: &request::Parts,
        current: Option<&Entry>,
        new_body: &Bytes,
        (answer, upstream_body, asked): (&http::response::Parts, &Bytes, Timing),
    ) -> Arc<Entry> {
        let representation = parts.method == Method::PUT
            && answer.status == StatusCode::OK
            && !upstream_body.is_empty()
            && answer
                .headers
                .get_all(header::CONTENT_LOCATION)
                .iter()
                .any(|value| {
                    super::respond::same_origin_path(value, parts)
                        .is_some_and(|path| path == parts.uri.path())
                });
        if representation {
            let mut body = bytes::BytesMut::with_capacity(upstream_body.len() + tag_room(&answer.headers));
            body.extend_from_slice(upstream_body);
            let mut entry = make_entry(route.config.etag, &answer.headers, body, &self.shared.cache);
            http_cache::keep_date(&mut entry, &answer.headers, &self.shared.cache);
            http_cache::stamp(route, &entry, &answer.headers, &answer.headers, asked);
            if http_cache::refused(&entry, &parts.headers) {
                return Arc::new(entry);
            }
            return self
                .shared
                .cache
                .insert(key.clone(), &parts.headers, entry)
                .unwrap_or_else(Arc::new);
        }
        let headers = written_headers(current, &answer.headers, parts);
        let mut body = bytes::BytesMut::with_capacity(new_body.len() + tag_room(&headers));
        body.extend_from_slice(new_body);
        let entry = Arc::new(make_entry(route.config.etag, &headers, body, &self.shared.cache));
        self.remember(route, key, &entry);
        entry
    }
}
