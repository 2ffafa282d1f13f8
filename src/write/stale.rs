//! `on_stale = "merge"`: a PATCH whose `If-Match` names a recent version that is no
//! longer current is applied to the current version when nothing it touches changed
//! since that version (a changed path equal to, inside or containing a touched one
//! collides); otherwise `412`, listing the colliding paths as a problem when the client
//! accepts `application/problem+json`.

use std::sync::Arc;

use http::{HeaderName, Response, StatusCode, header, request};
use serde_json::json;

use super::{Intent, Walk};
use crate::body::Body;
use crate::cache::Entry;
use crate::config::OnStale;
use crate::etag::EntityTag;
use crate::layer::Ctx;
use crate::patch::Document;
use crate::problem::{PROBLEM_JSON, problem_response};

/// Names the version a merged PATCH was rebased from.
pub(crate) const REBASED_FROM: HeaderName = HeaderName::from_static("rebased-from");

/// What a failed precondition becomes under `on_stale`.
pub(super) enum Stale {
    /// Not a mergeable case: the usual `412`.
    Reject,
    /// Merged: apply to the current version; the tag of the base.
    Rebase(EntityTag),
    /// The paths collide: this `412`.
    Collides(Response<Body>),
}

impl Ctx {
    pub(super) async fn stale(&self, walk: &Walk<'_>, current: Option<&Arc<Entry>>) -> Stale {
        let route = walk.route;
        if route.config.on_stale != OnStale::Merge || route.config.history == 0 {
            return Stale::Reject;
        }
        let (Intent::Patch(patch), Some(current)) = (&walk.intent, current) else {
            return Stale::Reject;
        };
        let Some(tag) = walk.conditions.sole_if_match() else {
            return Stale::Reject;
        };
        let Some(base) = self.version(route, &walk.key, &tag).await else {
            return Stale::Reject;
        };
        let (Ok(base_doc), Ok(current_doc)) = (
            Document::parse(base.body_bytes()),
            Document::parse(current.body_bytes()),
        ) else {
            return Stale::Reject;
        };
        let changed = crate::patch::diff(&base_doc, &current_doc);
        let touched = patch.touched(&base_doc);
        let collisions = crate::patch::collisions(changed.changed(), &touched);
        if collisions.is_empty() {
            return Stale::Rebase(tag);
        }
        let problem = accepts_problem(&walk.parts);
        if !problem {
            return Stale::Reject;
        }
        let requested = patch.apply(base_doc.clone(), usize::MAX).ok();
        Stale::Collides(collision_problem(
            &tag,
            current,
            &base_doc,
            &current_doc,
            requested.as_ref(),
            &collisions,
        ))
    }
}

/// The `412` problem: each colliding path with its base, current and requested values
/// (`null` where the value is absent).
fn collision_problem(
    base_tag: &EntityTag,
    current: &Arc<Entry>,
    base: &Document,
    now: &Document,
    requested: Option<&Document>,
    collisions: &[(String, String)],
) -> Response<Body> {
    let value = |doc: Option<&Document>, path: &str| -> serde_json::Value {
        doc.and_then(|d| d.value_at(path))
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let mut paths: Vec<&str> = Vec::new();
    for (changed, touched) in collisions {
        for path in [changed.as_str(), touched.as_str()] {
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    let listed: Vec<serde_json::Value> = paths
        .iter()
        .map(|path| {
            json!({
                "path": path,
                "base": value(Some(base), path),
                "current": value(Some(now), path),
                "requested": value(requested, path),
            })
        })
        .collect();
    let tag_text = |t: &EntityTag| String::from_utf8_lossy(t.to_header_value().as_bytes()).into_owned();
    let doc = json!({
        "type": "https://patchgate.dev/problems/stale-write-collides",
        "title": "Precondition Failed",
        "status": 412,
        "detail": "the resource changed since the version this patch was made for, at paths \
                   the patch touches: read it again, resolve, and retry",
        "base": tag_text(base_tag),
        "current": tag_text(&current.etag()),
        "collisions": listed,
    });
    let mut response = problem_response(StatusCode::PRECONDITION_FAILED, &doc);
    response
        .headers_mut()
        .insert(header::ETAG, current.etag().into_header_value());
    response
}

/// Whether `Accept` names `application/problem+json` (not refused with `q=0`).
fn accepts_problem(parts: &request::Parts) -> bool {
    parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut params = item.split(';');
            let name = params.next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case(PROBLEM_JSON)
                && !params.any(|p| {
                    let p = p.trim();
                    p.len() >= 2
                        && p[..2].eq_ignore_ascii_case("q=")
                        && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
        })
}

/// Adds `Rebased-From` to a merged PATCH's answer.
pub(super) fn mark_rebased(response: &mut Response<Body>, base: &EntityTag) {
    response
        .headers_mut()
        .insert(REBASED_FROM, base.to_header_value());
}
