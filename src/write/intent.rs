//! Phase **intent** of the write path: what the client asked to write, parsed before
//! any lock is taken (428, 415, 405, 400, 413, 408).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, header, request};
use http_body_util::Limited;

use super::{Intent, Walk};
use crate::body::collect;
use crate::body::{self, Body};
use crate::headers::content_length;
use crate::layer::{Ctx, Exchange, allow};
use crate::metrics::Event;
use crate::patch::{Format, Patch};
use crate::precondition::Conditions;
use crate::problem::Error;
use crate::route::CompiledRoute;

impl Ctx {
    /// Phase **intent**: what the client asked for, parsed before any lock is taken.
    pub(super) async fn intent<'r>(
        &self,
        route: &'r CompiledRoute,
        req: Request<Body>,
        exchange: &Exchange,
    ) -> Result<Walk<'r>, Error> {
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
                let patch = Patch::parse(format, &bytes, route.config.patch_max_ops).map_err(Error::Patch);
                if let Err(e) = &patch {
                    self.shared.metrics.event(route.id, Event::PatchFailed(e));
                }
                Intent::Patch(Arc::new(patch?))
            }
            Method::PUT => Intent::Put(self.client_body(&parts, body).await?),
            _ => Intent::Delete,
        };
        let key = self.cache_key(route, &parts, exchange);
        // Only a write that sends the very same request may carry another's PATCH.
        let batchable = matches!(intent, Intent::Patch(_)) && route.config.batch_patches;
        let resource = self.shared.resources.get(route.id, &key.path);
        Ok(Walk {
            route,
            alone: !batchable,
            carried: false,
            rebased_from: None,
            batchable,
            parts,
            key,
            conditions,
            intent,
            signature: None,
            resource,
            retries: 0,
        })
    }

    /// The whole client body, bounded by `max_body_bytes` (413).
    async fn client_body(&self, parts: &request::Parts, body: Body) -> Result<Bytes, Error> {
        let max = self.settings.max_body_bytes;
        if content_length(&parts.headers).is_some_and(|len| len > max) {
            return Err(Error::BodyTooLarge { max });
        }
        match collect(Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))).await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge { max }),
            Err(e) if body::is_read_timeout(e.as_ref()) => Err(Error::BodyReadTimeout),
            Err(_) => Err(Error::ClientBody),
        }
    }
}
