//! Deltas between two versions of one document (History): a JSON Patch, and a JSON Merge
//! Patch where one can say it, that turn `base` into `current`; the paths that changed;
//! the paths a patch touches; and which of those collide, so a stale write is merged only
//! when nothing it touches changed.
//!
//! Invariant: [`Patch::apply`](super::Patch::apply) of a delta to `base` serializes to
//! `current`'s bytes exactly (member order, number spelling). How:
//! - **Changed** means not byte-identical: `1.0` respelled `1` is a change (clients see bytes).
//! - **Objects**: `add` of a new member appends it, so the members that stay are the longest
//!   prefix of `current`'s members that are in `base` in the same relative order. Every
//!   other `base` member is removed, then every later `current` member added in order: a
//!   member inserted in the middle re-adds the members after it. When no member can stay
//!   although some are kept, the whole object is replaced (one op, not a remove and an add
//!   per member). A member that stays and changed is diffed where it is, so one changed
//!   member in a large document is one `replace`.
//! - **Arrays**: the common prefix and suffix (byte-identical elements) stay; the middle is
//!   diffed index by index, then its surplus removed (last first) or the rest inserted. A
//!   change of length is a change of the whole array: the indices after it shift.
//! - **Merge patch**: objects member by member, arrays and other values whole. `None` when
//!   it would have to write a `null` (RFC 7396 reads it as "remove") or reorder members
//!   (it can only append new ones).
//!
//! **Changed paths** are the paths the delta writes (so a member re-added to keep the order
//! counts as changed), except inside an array whose length changed: the array is named.
//! A stale patch collides when a path it touches ([`Patch::touched`](super::Patch::touched))
//! is a changed path, or an ancestor or descendant of one. When none does, the patch
//! reads and writes only values the delta leaves alone, through the same objects and
//! unshifted arrays, so applying it to `current` gives what applying the delta after it
//! to `base` gives, up to member order: members that both append to one object come in
//! the order they were written.
//!
//! Recursion follows the documents, whose depth the parser bounds.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use json_patch::jsonptr::Pointer;

use super::json::{self, Json, Object};
use super::ops::Op;
use super::{Document, Kind, Patch};

/// What turns `base` into `current`.
#[derive(Debug, Clone)]
pub struct Delta {
    json_patch: Bytes,
    merge_patch: Option<Bytes>,
    changed: Vec<String>,
}

impl Delta {
    /// An RFC 6902 patch (compact JSON array; `[]` when nothing changed).
    pub fn json_patch(&self) -> Bytes {
        self.json_patch.clone()
    }

    /// An RFC 7396 patch, or `None` when none gives `current` exactly (a `null` to write,
    /// members reordered).
    pub fn merge_patch(&self) -> Option<Bytes> {
        self.merge_patch.clone()
    }

    /// The JSON Pointers (RFC 6901, escaped) of the values the delta adds, removes or
    /// replaces, sorted and unique; an array whose length changed is named itself. Empty
    /// exactly when the two versions are byte-identical.
    pub fn changed(&self) -> &[String] {
        &self.changed
    }
}

/// The delta from `base` to `current`.
pub fn diff(base: &Document, current: &Document) -> Delta {
    let mut ops = Ops {
        out: vec![b'['],
        changed: Vec::new(),
    };
    ops.value(&mut String::new(), &base.root, &current.root, true);
    ops.out.push(b']');
    let mut changed = ops.changed;
    changed.sort_unstable();
    changed.dedup();
    Delta {
        json_patch: Bytes::from(ops.out),
        merge_patch: merge_delta(&base.root, &current.root).map(Bytes::from),
        changed,
    }
}

/// Pairs `(changed, touched)` where one pointer is the other or an ancestor of it, token by
/// token (`/a/b` is not an ancestor of `/a/bc`; `""` is everyone's). Empty: the write
/// may be merged.
pub fn collisions(changed: &[String], touched: &[String]) -> Vec<(String, String)> {
    changed
        .iter()
        .flat_map(|c| {
            touched
                .iter()
                .filter(move |t| within(c, t) || within(t, c))
                .map(move |t| (c.clone(), t.clone()))
        })
        .collect()
}

/// `inner` is `outer` or below it. Both are escaped pointers; an escaped token never holds
/// a `/`, and every token has exactly one escaped spelling.
fn within(outer: &str, inner: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// [`Patch::touched`]: the pointers under which the patch reads or writes.
pub(super) fn touched(patch: &Patch, target: &Document) -> Vec<String> {
    let mut out = Vec::new();
    match &patch.kind {
        Kind::Json(ops) => {
            for op in ops {
                match op {
                    Op::Replace { path, .. } | Op::Test { path, .. } => out.push(path.as_str().to_owned()),
                    Op::Add { path, .. } | Op::Remove { path } => out.push(shifting(path)),
                    Op::Move { from, path } => {
                        out.push(shifting(path));
                        out.push(shifting(from));
                    }
                    Op::Copy { from, path } => {
                        out.push(shifting(path));
                        out.push(from.as_str().to_owned());
                    }
                }
            }
        }
        Kind::Merge(patch) => merge_touched(patch, Some(&target.root), &mut String::new(), &mut out),
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Where an insertion or removal at `path` writes: the array itself when the last token
/// can be an index (the elements after it shift), else `path`. Without the document an
/// object member named like an index counts too: conservative.
fn shifting(path: &Pointer) -> String {
    match path.split_back() {
        Some((parent, last)) if last.to_index().is_ok() => parent.as_str().to_owned(),
        _ => path.as_str().to_owned(),
    }
}

/// A merge patch's leaves: a value that is not an object (set, or `null`: remove), an
/// empty object, and an object whose target is not an object (absent, or a scalar or array,
/// replaced whole). An object merged into an object touches what its members touch.
///
/// So every object of the patch has a leaf at or below it: where `target` and another
/// version differ in whether a node is an object, the node changed, and it collides with
/// that leaf in both versions. Hence either version may be the `target`. (An empty object
/// changes nothing in an object, but in a scalar it does.)
fn merge_touched(patch: &Json, target: Option<&Json>, path: &mut String, out: &mut Vec<String>) {
    match (patch, target) {
        (Json::Object(members), Some(Json::Object(target))) if members.len() > 0 => {
            let target: HashMap<&str, &Json> = target.iter().collect();
            for (name, value) in members.iter() {
                let len = push_token(path, name);
                merge_touched(value, target.get(name).copied(), path, out);
                path.truncate(len);
            }
        }
        _ => out.push(path.clone()),
    }
}

/// Appends `/name` escaped (RFC 6901 §3); returns the length to truncate back to.
fn push_token(path: &mut String, name: &str) -> usize {
    let len = path.len();
    path.push('/');
    for ch in name.chars() {
        match ch {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            ch => path.push(ch),
        }
    }
    len
}

/// Byte-identical once serialized: same shape, member order, number spelling, content.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Null, Json::Null) => true,
        (Json::Bool(x), Json::Bool(y)) => x == y,
        (Json::Number(x), Json::Number(y)) | (Json::String(x), Json::String(y)) => x == y,
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((k, v), (l, w))| k == l && same(v, w))
        }
        _ => false,
    }
}

/// The JSON Patch being written (`[` and the operations so far) and the changed paths.
struct Ops {
    out: Vec<u8>,
    changed: Vec<String>,
}

impl Ops {
    /// Operations turning `base` into `current` at `path`; `record`: their paths are
    /// changed paths (not inside an array whose length changed, which is recorded itself).
    fn value(&mut self, path: &mut String, base: &Json, current: &Json, record: bool) {
        match (base, current) {
            (Json::Object(b), Json::Object(c)) => self.object(path, b, c, current, record),
            (Json::Array(b), Json::Array(c)) => self.array(path, b, c, record),
            _ if same(base, current) => {}
            _ => self.op("replace", path, Some(current), record),
        }
    }

    fn object(&mut self, path: &mut String, base: &Object, current: &Object, whole: &Json, record: bool) {
        // Most objects keep their members: diff them pairwise, without an index.
        if base.len() == current.len() && base.iter().zip(current.iter()).all(|((a, _), (b, _))| a == b) {
            for ((name, old), (_, value)) in base.iter().zip(current.iter()) {
                let len = push_token(path, name);
                self.value(path, old, value, record);
                path.truncate(len);
            }
            return;
        }
        let in_base: HashMap<&str, (usize, &Json)> =
            base.iter().enumerate().map(|(i, (k, v))| (k, (i, v))).collect();
        let mut last = None;
        let stay = current
            .iter()
            .take_while(|(name, _)| match in_base.get(name) {
                Some(&(i, _)) if last.is_none_or(|l| i > l) => {
                    last = Some(i);
                    true
                }
                _ => false,
            })
            .count();
        if stay == 0 && current.iter().any(|(name, _)| in_base.contains_key(name)) {
            return self.op("replace", path, Some(whole), record);
        }
        let staying: HashSet<&str> = current.iter().take(stay).map(|(name, _)| name).collect();
        for (name, _) in base.iter().filter(|(name, _)| !staying.contains(name)) {
            let len = push_token(path, name);
            self.op("remove", path, None, record);
            path.truncate(len);
        }
        for (name, value) in current.iter() {
            let len = push_token(path, name);
            match in_base.get(name) {
                Some(&(_, old)) if staying.contains(name) => self.value(path, old, value, record),
                _ => self.op("add", path, Some(value), record),
            }
            path.truncate(len);
        }
    }

    fn array(&mut self, path: &mut String, base: &[Json], current: &[Json], record: bool) {
        let prefix = base.iter().zip(current).take_while(|(b, c)| same(b, c)).count();
        let common = base.len().min(current.len()).saturating_sub(prefix);
        let suffix = base
            .iter()
            .rev()
            .zip(current.iter().rev())
            .take(common)
            .take_while(|(b, c)| same(b, c))
            .count();
        let removed = base.len().saturating_sub(prefix + suffix);
        let added = current.len().saturating_sub(prefix + suffix);
        let resized = base.len() != current.len();
        if resized && record {
            self.changed.push(path.clone());
        }
        let record = record && !resized;
        let paired = removed.min(added);
        let index = |path: &mut String, i: usize| push_token(path, &i.to_string());
        for i in prefix..prefix + paired {
            if let (Some(b), Some(c)) = (base.get(i), current.get(i)) {
                let len = index(path, i);
                self.value(path, b, c, record);
                path.truncate(len);
            }
        }
        for i in (prefix + paired..prefix + removed).rev() {
            let len = index(path, i);
            self.op("remove", path, None, record);
            path.truncate(len);
        }
        for i in prefix + paired..prefix + added {
            if let Some(c) = current.get(i) {
                let len = index(path, i);
                self.op("add", path, Some(c), record);
                path.truncate(len);
            }
        }
    }

    fn op(&mut self, op: &str, path: &str, value: Option<&Json>, record: bool) {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"{\"op\":\"");
        self.out.extend_from_slice(op.as_bytes());
        self.out.extend_from_slice(b"\",\"path\":");
        json::write_str_to(&mut self.out, path);
        if let Some(value) = value {
            self.out.extend_from_slice(b",\"value\":");
            json::write_to(&mut self.out, value);
        }
        self.out.push(b'}');
        if record {
            self.changed.push(path.to_owned());
        }
    }
}

/// A `null` would have to be written, or members reordered: no merge patch says it.
struct Inexpressible;

/// The RFC 7396 patch from `base` to `current`, if one gives `current` exactly.
fn merge_delta(base: &Json, current: &Json) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match (base, current) {
        (Json::Object(b), Json::Object(c)) => merge_members(&mut out, b, c),
        // Anything but an object replaces the target; an object replaces a non-object.
        _ => fresh(&mut out, current),
    }
    .ok()?;
    Some(out)
}

/// An object patch turning the members of `base` into those of `current`.
fn merge_members(out: &mut Vec<u8>, base: &Object, current: &Object) -> Result<(), Inexpressible> {
    let in_current: HashSet<&str> = current.iter().map(|(name, _)| name).collect();
    let in_base: HashMap<&str, &Json> = base.iter().collect();
    // Kept members stay where they are and new ones are appended: `current` must be the
    // kept members in `base`'s order, then the new ones.
    let kept: Vec<&str> = base
        .iter()
        .map(|(name, _)| name)
        .filter(|name| in_current.contains(name))
        .collect();
    if !current.iter().map(|(name, _)| name).take(kept.len()).eq(kept) {
        return Err(Inexpressible);
    }
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, name: &str| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        json::write_str_to(out, name);
        out.push(b':');
    };
    for (name, _) in base.iter().filter(|(name, _)| !in_current.contains(name)) {
        member(out, name);
        out.extend_from_slice(b"null");
    }
    for (name, value) in current.iter() {
        match (in_base.get(name), value) {
            (Some(old), _) if same(old, value) => {}
            (_, Json::Null) => return Err(Inexpressible),
            (Some(Json::Object(old)), Json::Object(new)) => {
                member(out, name);
                merge_members(out, old, new)?;
            }
            _ => {
                member(out, name);
                fresh(out, value)?;
            }
        }
    }
    out.push(b'}');
    Ok(())
}

/// `value` as a patch member replacing its target (or creating it): written as is, but an
/// object is merged into an empty one, which drops `null` members, so it may hold none.
fn fresh(out: &mut Vec<u8>, value: &Json) -> Result<(), Inexpressible> {
    let Json::Object(members) = value else {
        json::write_to(out, value);
        return Ok(());
    };
    out.push(b'{');
    for (i, (name, value)) in members.iter().enumerate() {
        if matches!(value, Json::Null) {
            return Err(Inexpressible);
        }
        if i > 0 {
            out.push(b',');
        }
        json::write_str_to(out, name);
        out.push(b':');
        fresh(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
