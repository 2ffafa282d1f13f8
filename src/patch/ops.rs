//! RFC 6902 JSON Patch operations: reading them from a patch document (§4) and applying
//! them in order (§3, §5) to a working copy of the document.
//!
//! Invariant: every result stays within [`MAX_DEPTH`] nesting and, checked after each
//! operation, within the output size limit, so a chain of `copy`s cannot blow up memory.

use json_patch::jsonptr::{Pointer, PointerBuf};

use super::PatchError;
use super::compare::equal;
use super::json::{self, Json, MAX_DEPTH};
use super::pointer;

#[derive(Debug, Clone)]
pub(super) enum Op {
    Add { path: PointerBuf, value: Json },
    Remove { path: PointerBuf },
    Replace { path: PointerBuf, value: Json },
    Move { from: PointerBuf, path: PointerBuf },
    Copy { from: PointerBuf, path: PointerBuf },
    Test { path: PointerBuf, value: Json },
}

impl Op {
    /// RFC 6902 §4: one operation object; members other than the ones its `op` needs are
    /// ignored.
    pub(super) fn from_json(op_index: usize, item: Json) -> Result<Op, PatchError> {
        let malformed = |detail: String| PatchError::Malformed {
            detail: format!("operation {op_index}: {detail}"),
        };
        let Json::Object(mut obj) = item else {
            return Err(malformed(format!("expected an object, found {}", item.kind())));
        };
        let member_pointer = |name: &str| match obj.get(name) {
            Some(Json::String(s)) => Pointer::parse(s)
                .map(Pointer::to_buf)
                .map_err(|e| malformed(format!("\"{name}\" {s:?} is not a JSON Pointer: {e}"))),
            Some(other) => Err(malformed(format!(
                "\"{name}\" must be a string, found {}",
                other.kind()
            ))),
            None => Err(malformed(format!("\"{name}\" is missing"))),
        };
        let op = match obj.get("op") {
            Some(Json::String(s)) => s.clone(),
            Some(other) => {
                return Err(malformed(format!(
                    "\"op\" must be a string, found {}",
                    other.kind()
                )));
            }
            None => return Err(malformed("\"op\" is missing".into())),
        };
        if !matches!(
            op.as_str(),
            "add" | "remove" | "replace" | "move" | "copy" | "test"
        ) {
            return Err(malformed(format!("unknown op {op:?}")));
        }
        let path = member_pointer("path")?;
        let from = || member_pointer("from");
        let op = match op.as_str() {
            "remove" => Op::Remove { path },
            "move" => Op::Move { from: from()?, path },
            "copy" => Op::Copy { from: from()?, path },
            "add" | "replace" | "test" => {
                let value = obj
                    .remove("value")
                    .ok_or_else(|| malformed("\"value\" is missing".into()))?;
                match op.as_str() {
                    "add" => Op::Add { path, value },
                    "replace" => Op::Replace { path, value },
                    _ => Op::Test { path, value },
                }
            }
            other => return Err(malformed(format!("unknown op {other:?}"))),
        };
        Ok(op)
    }

    /// `path`, and `from` for `move` and `copy`.
    pub(super) fn pointers(&self) -> (&Pointer, Option<&Pointer>) {
        match self {
            Op::Move { from, path } | Op::Copy { from, path } => (path, Some(from)),
            other => (other.path(), None),
        }
    }

    /// A `test` of the whole document.
    pub(super) fn tests_root(&self) -> bool {
        matches!(self, Op::Test { path, .. } if path.is_root())
    }

    fn path(&self) -> &Pointer {
        match self {
            Op::Add { path, .. }
            | Op::Remove { path }
            | Op::Replace { path, .. }
            | Op::Move { path, .. }
            | Op::Copy { path, .. }
            | Op::Test { path, .. } => path,
        }
    }
}

/// An upper bound of the working document's serialized size, made exact when it goes past
/// the limit. Between operations the document may stay as large as it was at the start
/// (a patch may shrink an oversized document); only the final result must fit `max`.
pub(super) struct Budget {
    estimate: usize,
    limit: usize,
    max: usize,
}

impl Budget {
    /// `source_len`: the current document's source length, which its compact form never
    /// exceeds.
    pub(super) fn new(source_len: usize, max: usize) -> Budget {
        Budget {
            estimate: source_len,
            limit: max.max(source_len),
            max,
        }
    }

    /// The current upper bound of the serialized size.
    pub(super) fn estimate(&self) -> usize {
        self.estimate
    }

    fn grow(&mut self, n: usize) {
        self.estimate = self.estimate.saturating_add(n);
    }

    fn shrink(&mut self, n: usize) {
        self.estimate = self.estimate.saturating_sub(n);
    }

    fn check(&mut self, doc: &Json, src: &[u8]) -> Result<(), PatchError> {
        if self.estimate > self.limit {
            self.estimate = json::encoded_len_in(doc, src, self.limit)
                .map_err(|_| PatchError::TooLarge { max: self.max })?;
        }
        Ok(())
    }
}

/// RFC 6902 §5: applies `ops` in order; the first failure stops and is returned. The caller
/// owns `doc` as a copy, so a failure leaves the original untouched. `src`: the source of
/// an indexed document's raw spans (empty for a parsed one); values are reached with
/// `get_mut`, which expands raw containers on the way.
pub(super) fn apply(doc: &mut Json, src: &[u8], ops: &[Op], budget: &mut Budget) -> Result<(), PatchError> {
    for (op_index, op) in ops.iter().enumerate() {
        let path = op.path();
        let fail = |detail: String| PatchError::CannotApply {
            op_index,
            path: path.as_str().to_owned(),
            detail,
        };
        match op {
            Op::Add { value, .. } => {
                check_depth(path, value).map_err(fail)?;
                add(doc, src, path, value.clone(), full_len(value, src), budget).map_err(fail)?;
            }
            Op::Remove { .. } => {
                let removed = pointer::remove(doc, path, src).map_err(fail)?;
                budget.shrink(full_len(&removed, src));
            }
            Op::Replace { value, .. } => {
                check_depth(path, value).map_err(fail)?;
                let target = pointer::get_mut(doc, path, src).map_err(fail)?;
                let old = std::mem::replace(target, value.clone());
                budget.grow(full_len(value, src));
                budget.shrink(full_len(&old, src));
            }
            Op::Move { from, .. } => {
                // §4.4: "from" MUST NOT be a proper prefix of "path".
                if path.starts_with(from) && path.len() != from.len() {
                    return Err(fail(format!(
                        "cannot move {:?} into one of its own children",
                        from.as_str()
                    )));
                }
                let from_fail = |e: String| fail(format!("from {:?}: {e}", from.as_str()));
                if path.as_str() == from.as_str() {
                    // Removing and re-adding would send the member to the end of its object.
                    pointer::get_mut(doc, from, src).map_err(from_fail)?;
                    continue;
                }
                if pointer::level(path) > pointer::level(from) {
                    check_depth(path, pointer::get_mut(doc, from, src).map_err(from_fail)?).map_err(fail)?;
                }
                let value = pointer::remove(doc, from, src).map_err(from_fail)?;
                add(doc, src, path, value, 0, budget).map_err(fail)?;
            }
            Op::Copy { from, .. } => {
                let source = pointer::get_mut(doc, from, src)
                    .map_err(|e| fail(format!("from {:?}: {e}", from.as_str())))?;
                check_depth(path, source).map_err(fail)?;
                let size = full_len(source, src);
                let value = source.clone();
                add(doc, src, path, value, size, budget).map_err(fail)?;
            }
            Op::Test { value, .. } => match pointer::get_mut(doc, path, src) {
                Ok(actual) if equal(actual, value, src) => {}
                _ => {
                    return Err(PatchError::TestFailed {
                        op_index,
                        path: path.as_str().to_owned(),
                    });
                }
            },
        }
        budget.check(doc, src)?;
    }
    Ok(())
}

/// §4.1 add, accounting `size` (the value's serialized length) plus the member name.
fn add(
    doc: &mut Json,
    src: &[u8],
    path: &Pointer,
    value: Json,
    size: usize,
    budget: &mut Budget,
) -> Result<(), String> {
    let name = path.back().map_or(0, |t| json::encoded_str_len(&t.decoded()));
    let old = pointer::add(doc, path, value, src)?;
    budget.grow(size.saturating_add(name).saturating_add(2));
    if let Some(old) = old {
        budget.shrink(full_len(&old, src));
    }
    Ok(())
}

/// A value's serialized length.
fn full_len(value: &Json, src: &[u8]) -> usize {
    json::encoded_len_in(value, src, usize::MAX).unwrap_or(usize::MAX)
}

/// Keeps results parseable again: `value` placed at `path` must stay within [`MAX_DEPTH`].
fn check_depth(path: &Pointer, value: &Json) -> Result<(), String> {
    if pointer::level(path).saturating_add(value.depth()) > MAX_DEPTH {
        return Err(format!(
            "the result would be nested deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::parse::parse;

    #[test]
    fn budget_recounts_exactly_when_the_estimate_passes_the_limit() {
        let doc = parse(br#"{"a":[1,2]}"#).unwrap();
        let mut budget = Budget::new(11, 11);
        budget.grow(100);
        assert_eq!(budget.check(&doc, &[]), Ok(()));
        assert_eq!(budget.estimate, 11);
        let mut budget = Budget::new(5, 10);
        budget.grow(6);
        assert_eq!(budget.check(&doc, &[]), Err(PatchError::TooLarge { max: 10 }));
    }

    #[test]
    fn whitespace_in_the_source_does_not_count_against_the_limit() {
        let source = format!("{{\"a\" : 1 {}}}", " ".repeat(1000));
        let mut doc = parse(source.as_bytes()).unwrap();
        let ops = [Op::from_json(0, parse(br#"{"op":"add","path":"/b","value":2}"#).unwrap()).unwrap()];
        let mut budget = Budget::new(source.len(), 13);
        assert_eq!(apply(&mut doc, &[], &ops, &mut budget), Ok(()));
        assert_eq!(json::to_vec(&doc, 13, 0).map(|v| v.len()), Ok(13));
    }
}
