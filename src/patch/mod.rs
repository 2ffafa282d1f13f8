//! PATCH bodies (RFC 5789): JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7396) parsed,
//! validated and applied to the current JSON document, producing the full new body.
//!
//! Invariant: a PATCH changes only what it names. Members keep their order, numbers their
//! exact spelling (`1e2`, `0.1000`, `12345678901234567890123`), strings their content; so the
//! document is held in a tree of our own ([`json`]), not `serde_json::Value`. json-patch's
//! jsonptr parses and decodes the pointers. Application is atomic: it works on a copy.

mod compare;
mod diff;
mod json;
mod merge;
mod ops;
mod parse;
mod pointer;
mod scan;

use std::fmt;

use bytes::Bytes;

pub use self::diff::{Delta, collisions, diff};
use self::json::Json;
use self::ops::{Budget, Op};
use self::parse::Bounded;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    JsonPatch,
    MergePatch,
}

impl Format {
    pub const fn media_type(self) -> &'static str {
        match self {
            Format::JsonPatch => "application/json-patch+json",
            Format::MergePatch => "application/merge-patch+json",
        }
    }

    /// From a Content-Type value (RFC 9110 §8.3.1): the media type compared
    /// case-insensitively, parameters (e.g. `charset=utf-8`) ignored.
    pub fn from_content_type(value: &[u8]) -> Option<Format> {
        let essence = value
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        [Format::JsonPatch, Format::MergePatch]
            .into_iter()
            .find(|f| essence.eq_ignore_ascii_case(f.media_type().as_bytes()))
    }
}

/// A current representation ready to patch: parsed into a tree (kept so a retry or the
/// cache need not re-parse), or indexed for one patch ([`Document::index`]): a tree only
/// along the patch's paths, every other value a span of `src` written back verbatim.
#[derive(Debug, Clone)]
pub struct Document {
    root: Json,
    /// The source length: an upper bound of the compact form, which only drops whitespace
    /// and escapes that were not needed.
    source_len: usize,
    /// An indexed document's source (the raw spans' text); empty for a parsed one.
    src: Bytes,
}

/// More JSON Patch operations than this take the tree path: each one walks its path, and
/// a patch that reaches that much of a document gains little from leaving the rest raw.
const MAX_INDEXED_OPS: usize = 64;

impl Document {
    /// RFC 8259 text, nested at most 128 levels. A repeated member name is
    /// [`PatchError::DuplicateMember`]: keeping either value would silently drop the other
    /// on the next write.
    pub fn parse(body: &[u8]) -> Result<Document, PatchError> {
        let root = parse::parse(body).map_err(|e| match e.duplicate_member() {
            Some((name, path)) => PatchError::DuplicateMember { name, path },
            None => PatchError::NotJson {
                detail: e.to_string(),
            },
        })?;
        Ok(Document {
            root,
            source_len: body.len(),
            src: Bytes::new(),
        })
    }

    /// The fast path: `body` validated in one scan and built into a tree only along the
    /// paths `patch` names; patching and serializing it gives exactly what the parsed
    /// document would. `None` (take [`Document::parse`]) when the body is not valid JSON
    /// (`parse` gives the error), not in the compact form patchgate writes (whitespace,
    /// escapes it would drop), or the patch has more than 64 operations or a `test` of
    /// the root.
    pub fn index(body: &Bytes, patch: &Patch) -> Option<Document> {
        Document::indexed(body, patch, scan::index)
    }

    /// [`Document::index`] for a body patchgate serialized itself (a PATCH's result): it
    /// is valid and compact by construction, so only the values the patch names are
    /// read, the rest skipped without validating them again.
    pub fn index_written(body: &Bytes, patch: &Patch) -> Option<Document> {
        Document::indexed(body, patch, scan::index_written)
    }

    fn indexed(
        body: &Bytes,
        patch: &Patch,
        index: fn(&[u8], &[scan::Path]) -> Result<json::Json, scan::Decline>,
    ) -> Option<Document> {
        let paths = patch.paths()?;
        let root = index(body, &paths).ok()?;
        Some(Document {
            root,
            source_len: body.len(),
            src: body.clone(),
        })
    }

    /// Indexed for one patch: holds its source, so not worth keeping for the next one.
    pub fn is_indexed(&self) -> bool {
        !self.src.is_empty()
    }

    /// Compact serialization; TooLarge past `max_output_bytes`.
    pub fn serialize(&self, max_output_bytes: usize) -> Result<Bytes, PatchError> {
        json::to_vec_in(&self.root, &self.src, max_output_bytes, self.source_len)
            .map(Bytes::from)
            .map_err(|_| PatchError::TooLarge {
                max: max_output_bytes,
            })
    }

    /// Compact serialization, numbers and member order as parsed.
    pub fn to_bytes(&self) -> Bytes {
        json::to_vec_in(&self.root, &self.src, usize::MAX, self.source_len)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// The compact text of the value at `pointer` (RFC 6901); `None` when the pointer is
    /// not one or names nothing.
    pub fn value_at(&self, pointer: &str) -> Option<Bytes> {
        let pointer = json_patch::jsonptr::Pointer::parse(pointer).ok()?;
        if self.is_indexed() {
            let mut root = self.root.clone();
            let value = pointer::get_mut(&mut root, pointer, &self.src).ok()?;
            return json::to_vec_in(value, &self.src, usize::MAX, 0)
                .ok()
                .map(Bytes::from);
        }
        let value = pointer::get(&self.root, pointer).ok()?;
        json::to_vec(value, usize::MAX, 0).ok().map(Bytes::from)
    }
}

/// A parsed patch document, validated (ops count, pointer syntax) but not yet applied.
#[derive(Debug, Clone)]
pub struct Patch {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Json(Vec<Op>),
    Merge(Json),
}

impl Patch {
    /// Malformed (400) if the body is not valid JSON, not the format's shape or has a bad
    /// pointer; TooManyOps (413) when a JSON Patch has more than `max_ops` operations.
    /// Repeated member names are malformed in a patch: which one was meant is unknowable.
    pub fn parse(format: Format, body: &[u8], max_ops: usize) -> Result<Patch, PatchError> {
        let malformed = |e: parse::ParseError| PatchError::Malformed {
            detail: format!("not valid JSON: {e}"),
        };
        let kind = match format {
            // RFC 6902 §3: an array of operation objects.
            Format::JsonPatch => match parse::parse_bounded_array(body, max_ops) {
                Ok(Bounded::Items(items)) => Kind::Json(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| Op::from_json(i, item))
                        .collect::<Result<_, _>>()?,
                ),
                Ok(Bounded::TooMany(count)) => {
                    return Err(PatchError::TooManyOps { count, max: max_ops });
                }
                Ok(Bounded::NotArray) => {
                    return Err(PatchError::Malformed {
                        detail: "a JSON Patch must be an array of operations".into(),
                    });
                }
                Err(e) => return Err(malformed(e)),
            },
            // RFC 7396 §2: any JSON value.
            Format::MergePatch => Kind::Merge(parse::parse(body).map_err(malformed)?),
        };
        Ok(Patch { kind })
    }

    #[cfg(test)]
    pub fn format(&self) -> Format {
        match self.kind {
            Kind::Json(_) => Format::JsonPatch,
            Kind::Merge(_) => Format::MergePatch,
        }
    }

    /// Operations in a JSON Patch; 1 for a merge patch.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Json(ops) => ops.len(),
            Kind::Merge(_) => 1,
        }
    }

    /// True for a JSON Patch with no operations (which changes nothing).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decoded paths the fast path builds a tree along: each operation's `path` and
    /// `from`, or each member of a merge patch; `None` past [`MAX_INDEXED_OPS`] or for a
    /// `test` of the root.
    fn paths(&self) -> Option<Vec<scan::Path>> {
        let decoded = |p: &json_patch::jsonptr::Pointer| -> scan::Path {
            p.tokens().map(|t| t.decoded().into_owned()).collect()
        };
        match &self.kind {
            Kind::Json(ops) if ops.len() > MAX_INDEXED_OPS => None,
            // A `test` of the whole document compares it as a tree: parse it once, not twice.
            Kind::Json(ops) if ops.iter().any(Op::tests_root) => None,
            Kind::Json(ops) => Some(
                ops.iter()
                    .flat_map(|op| {
                        let (path, from) = op.pointers();
                        std::iter::once(decoded(path)).chain(from.map(decoded))
                    })
                    .collect(),
            ),
            Kind::Merge(patch) => {
                let mut paths = Vec::new();
                merge_paths(patch, &mut Vec::new(), &mut paths);
                Some(paths)
            }
        }
    }

    /// A JSON Patch that only tests (or has no operations): applying it changes nothing,
    /// so it needs no write.
    pub fn only_tests(&self) -> bool {
        match &self.kind {
            Kind::Json(ops) => ops.iter().all(|op| matches!(op, Op::Test { .. })),
            Kind::Merge(_) => false,
        }
    }

    /// The JSON Pointers (RFC 6901, escaped) under which the patch reads or writes, sorted
    /// and unique: a stale write may be merged when none collides with a changed path
    /// ([`collisions`]). JSON Patch: each operation's `path`, and `from` for `move` and
    /// `copy`; where an `add`, `remove` or `move` inserts or removes (not `copy`'s `from`,
    /// which is only read), a last token that can be an array index names its parent
    /// instead: the elements after it shift. Merge patch: its leaves (values other than objects, and empty objects), where
    /// `target` (the version the patch was written against; `current` gives the same
    /// collisions) decides what a leaf is: an object merged into a non-object replaces it
    /// whole, so it is a leaf there.
    pub fn touched(&self, target: &Document) -> Vec<String> {
        diff::touched(self, target)
    }

    /// Applies the whole patch to `doc`, which the caller gives up (the write path): no
    /// copy is made, and a failure leaves nothing behind but the error. The result's size
    /// is checked by [`Document::serialize`]; `max_output_bytes` bounds the document while
    /// JSON Patch operations run.
    pub fn apply(&self, mut doc: Document, max_output_bytes: usize) -> Result<Document, PatchError> {
        match &self.kind {
            Kind::Json(ops) => {
                let mut budget = Budget::new(doc.source_len, max_output_bytes);
                ops::apply(&mut doc.root, &doc.src, ops, &mut budget)?;
                doc.source_len = budget.estimate();
            }
            Kind::Merge(_) => self.apply_in_place(&mut doc, max_output_bytes)?,
        }
        Ok(doc)
    }

    /// Applies the patch to `doc` in place, atomically: on failure `doc` is unchanged (the
    /// batched-PATCH path, which goes on with the document when a joiner does not apply).
    /// The result's size is checked by [`Document::serialize`]; `max_output_bytes` bounds
    /// the working copy while operations run. The document is copied first only when a
    /// failure could follow a change (a JSON Patch of several operations, or a `move`).
    pub fn apply_in_place(&self, doc: &mut Document, max_output_bytes: usize) -> Result<(), PatchError> {
        match &self.kind {
            Kind::Merge(patch) => {
                let grown = json::encoded_len(patch, usize::MAX).unwrap_or(usize::MAX);
                merge::merge(&mut doc.root, patch, &doc.src);
                doc.source_len = doc.source_len.saturating_add(grown).saturating_add(1);
            }
            // One operation other than `move` fails, if at all, before it changes anything
            // (an indexed document may have expanded a raw container on the way: the same
            // value, written the same).
            Kind::Json(ops) if ops.len() == 1 && !matches!(ops[0], Op::Move { .. }) => {
                let mut budget = Budget::new(doc.source_len, usize::MAX);
                ops::apply(&mut doc.root, &doc.src, ops, &mut budget)?;
                doc.source_len = budget.estimate();
            }
            Kind::Json(ops) => {
                let mut root = doc.root.clone();
                let mut budget = Budget::new(doc.source_len, max_output_bytes);
                ops::apply(&mut root, &doc.src, ops, &mut budget)?;
                doc.root = root;
                doc.source_len = budget.estimate();
            }
        }
        Ok(())
    }
}

/// Every member path of a merge patch (the target is built along them).
fn merge_paths(patch: &Json, prefix: &mut Vec<String>, out: &mut Vec<scan::Path>) {
    if let Json::Object(members) = patch {
        for (name, value) in members.iter() {
            prefix.push(name.to_owned());
            out.push(prefix.clone());
            merge_paths(value, prefix, out);
            prefix.pop();
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// 400: the patch body is not JSON or not the format's shape.
    Malformed { detail: String },
    /// 413: more operations than the route's `patch_max_ops`.
    TooManyOps { count: usize, max: usize },
    /// 422: the current representation is not JSON.
    NotJson { detail: String },
    /// 422: the current representation repeats a member name (RFC 8259 §4); `path` is the
    /// JSON Pointer to it.
    DuplicateMember { name: String, path: String },
    /// 409: a `test` operation did not hold.
    TestFailed { op_index: usize, path: String },
    /// 422: an operation cannot be applied (missing path, bad index, move into a child…).
    CannotApply {
        op_index: usize,
        path: String,
        detail: String,
    },
    /// 413: the patched document would exceed `server.max_body_bytes`.
    TooLarge { max: usize },
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Malformed { detail } => write!(f, "malformed patch: {detail}"),
            PatchError::TooManyOps { count, max } => {
                write!(f, "the patch has {count} operations; at most {max} are allowed")
            }
            PatchError::NotJson { detail } => {
                write!(f, "the current representation is not JSON: {detail}")
            }
            PatchError::DuplicateMember { name, path } => write!(
                f,
                "the current representation has the member name {name:?} more than once \
                 (at {path:?}); which value is meant is unknowable, so it is not patched"
            ),
            PatchError::TestFailed { op_index, path } => write!(
                f,
                "test operation {op_index} failed: the value at {path:?} is not the expected one"
            ),
            PatchError::CannotApply {
                op_index,
                path,
                detail,
            } => {
                write!(f, "operation {op_index} at {path:?} cannot be applied: {detail}")
            }
            PatchError::TooLarge { max } => {
                write!(f, "the patched document would be larger than {max} bytes")
            }
        }
    }
}

impl std::error::Error for PatchError {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props_index;
