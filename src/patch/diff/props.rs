//! Property tests over random documents (the generators of [`crate::patch::props`]) and
//! random edits, including ones no patch makes (members reordered or inserted in the
//! middle, numbers respelled):
//! 1. the delta turns `base` into `current` byte for byte (JSON Patch, and merge patch
//!    when offered);
//! 2. one edit at `P` changes paths related to `P` only, and some exactly when bytes differ;
//! 3. a stale patch whose touched paths do not collide gives the same document whichever
//!    order it and the delta apply in;
//! 4. a patch touching a changed path, or an ancestor or descendant of one, collides;
//! 5. what a patch changes is always under, or above, what it says it touches.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::patch::json::Text;
use crate::patch::parse::parse;
use crate::patch::props::{KEYS, doc_and_ops, object, op, path_pool, value};
use crate::patch::{Format, PatchError, pointer};

const MAX: usize = 1 << 20;

fn json(value: &Value) -> Json {
    parse(value.to_string().as_bytes()).unwrap()
}

fn document(value: &Value) -> Document {
    Document::parse(value.to_string().as_bytes()).unwrap()
}

fn bytes(doc: &Document) -> Bytes {
    doc.serialize(MAX).unwrap()
}

fn apply(format: Format, patch: &[u8], doc: &Document) -> Result<Document, PatchError> {
    Patch::parse(format, patch, usize::MAX)?.apply(doc.clone(), MAX)
}

/// Every pointer in `value`, root included.
fn pointers(value: &Json, path: &mut String, out: &mut Vec<String>) {
    out.push(path.clone());
    match value {
        Json::Object(members) => {
            for (name, item) in members.iter() {
                let len = push_token(path, name);
                pointers(item, path, out);
                path.truncate(len);
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = push_token(path, &i.to_string());
                pointers(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// An edit at one node: (which node, modulo their count; what; where in it; a value).
type NodeEdit = (usize, u8, usize, Value);

fn node_edit() -> impl Strategy<Value = NodeEdit> {
    (any::<usize>(), 0..5u8, any::<usize>(), value())
}

/// Applies a node edit; returns the node's pointer, or `None` when it did not apply.
/// 0: replace the node; 1: insert a member or element at a position; 2: remove one;
/// 3: rotate members or elements; 4: respell every number under the node.
fn edit_node(doc: &mut Document, (at, kind, pos, value): &NodeEdit) -> Option<String> {
    let mut all = Vec::new();
    pointers(&doc.root, &mut String::new(), &mut all);
    let path = all.get(at % all.len())?.clone();
    let node = pointer::get_mut(&mut doc.root, Pointer::parse(&path).unwrap(), &[]).unwrap();
    match (kind, node) {
        (0, node) => *node = json(value),
        (1, Json::Array(items)) => items.insert(pos % (items.len() + 1), json(value)),
        (1, Json::Object(members)) => {
            let names = ["new", "a/b", "m~n", "q\"", "0", "", "a"];
            let name = (0..names.len())
                .map(|i| names[(pos + i) % names.len()])
                .find(|n| members.get(n).is_none())?;
            let mut list = listed(members);
            list.insert(pos % (list.len() + 1), (name.into(), json(value)));
            *members = Object::from_members(list);
        }
        (2, Json::Array(items)) if !items.is_empty() => {
            items.remove(pos % items.len());
        }
        (2, Json::Object(members)) if members.len() > 0 => {
            let mut list = listed(members);
            list.remove(pos % list.len());
            *members = Object::from_members(list);
        }
        (3, Json::Array(items)) if !items.is_empty() => {
            let by = pos % items.len();
            items.rotate_left(by);
        }
        (3, Json::Object(members)) if members.len() > 0 => {
            let mut list = listed(members);
            let by = pos % list.len();
            list.rotate_left(by);
            *members = Object::from_members(list);
        }
        (4, node) => respell(node),
        _ => return None,
    }
    Some(path)
}

fn listed(members: &Object) -> Vec<(Text, Json)> {
    members.iter().map(|(k, v)| (k.into(), v.clone())).collect()
}

/// Every number under `value` spelled otherwise, equal by value: `5` → `5e0` → `5E0`.
fn respell(value: &mut Json) {
    match value {
        Json::Number(text) => {
            *text = if text.contains('e') {
                text.replace('e', "E").into()
            } else if text.contains('E') {
                text.replace('E', "e").into()
            } else {
                format!("{text}e0").into()
            }
        }
        Json::Array(items) => items.iter_mut().for_each(respell),
        Json::Object(members) => {
            let mut list = listed(members);
            list.iter_mut().for_each(|(_, v)| respell(v));
            *members = Object::from_members(list);
        }
        _ => {}
    }
}

/// Applies one JSON Patch operation (a generated one); returns where it edited (its
/// `path` and `from`, but the array where it inserts or removes an element: the elements
/// after it shift), or nothing when it failed.
fn edit_op(doc: &mut Document, op: &Value) -> Vec<String> {
    let kind = op["op"].as_str().unwrap_or_default();
    let at: Vec<String> = ["path", "from"]
        .iter()
        .filter_map(|k| Some((*k, op.get(k)?.as_str()?)))
        .map(|(k, p)| {
            let ptr = Pointer::parse(p).unwrap();
            let resizes = matches!((kind, k), ("add" | "remove" | "move", "path") | ("move", "from"));
            match ptr.split_back() {
                Some((parent, _))
                    if resizes && matches!(pointer::get(&doc.root, parent), Ok(Json::Array(_))) =>
                {
                    parent.as_str().to_owned()
                }
                _ => p.to_owned(),
            }
        })
        .collect();
    let patch = Value::Array(vec![op.clone()]).to_string();
    match Patch::parse(Format::JsonPatch, patch.as_bytes(), 1).and_then(|p| p.apply_in_place(doc, MAX)) {
        Ok(()) => at,
        Err(_) => Vec::new(),
    }
}

/// `current`: `base` with the operations (each applied alone, skipped when it fails) and
/// node edits applied, or `other` instead.
fn edited(base: &Document, ops: &[Value], nodes: &[NodeEdit], other: Option<&Value>) -> Document {
    if let Some(other) = other {
        return document(other);
    }
    let mut doc = base.clone();
    for op in ops {
        edit_op(&mut doc, op);
    }
    for node in nodes {
        edit_node(&mut doc, node);
    }
    doc
}

/// `value` with the members of every object sorted by name: the bytes a document has
/// whatever order members were appended in.
fn sorted(value: &Json) -> Json {
    match value {
        Json::Array(items) => Json::Array(items.iter().map(sorted).collect()),
        Json::Object(members) => {
            let mut list: Vec<(Text, Json)> = members.iter().map(|(k, v)| (k.into(), sorted(v))).collect();
            list.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(Object::from_members(list))
        }
        other => other.clone(),
    }
}

fn sorted_bytes(doc: &Document) -> Vec<u8> {
    json::to_vec(&sorted(&doc.root), usize::MAX, 0).unwrap()
}

fn related(a: &str, b: &str) -> bool {
    within(a, b) || within(b, a)
}

/// A random object with an array `/l` of 2 to 5 elements: edits and patches meet in it
/// more often than in arrays that happen to be generated.
fn with_array() -> impl Strategy<Value = Value> {
    (object(), prop::collection::vec(value(), 2..6)).prop_map(|(mut base, list)| {
        if let Value::Object(members) = &mut base {
            members.insert("l".into(), Value::Array(list));
        }
        base
    })
}

/// A random base, a current made from it, and a stale patch written against the base
/// (JSON Patch operations over its paths, or a merge patch).
fn scenario() -> impl Strategy<Value = (Value, Vec<Value>, Vec<NodeEdit>, Option<Value>, Format, Value)> {
    with_array().prop_flat_map(|base| {
        let pool = path_pool(&base);
        let stale = prop_oneof![
            2 => prop::collection::vec(op(pool.clone()), 1..4).prop_map(|ops| (Format::JsonPatch, Value::Array(ops))),
            1 => prop_oneof![1 => value(), 4 => object()].prop_map(|m| (Format::MergePatch, m)),
        ];
        (
            Just(base),
            prop::collection::vec(op(pool), 0..3),
            prop::collection::vec(node_edit(), 1..3),
            prop::option::weighted(0.1, object()),
            stale,
        )
            .prop_map(|(base, ops, nodes, other, (format, stale))| (base, ops, nodes, other, format, stale))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (1) The delta gives `current`'s bytes; nothing changed exactly when they are the same.
    #[test]
    fn the_delta_turns_base_into_current_byte_for_byte(
        (base, ops) in doc_and_ops(),
        nodes in prop::collection::vec(node_edit(), 0..4),
        other in prop::option::weighted(0.1, object()),
    ) {
        let base = document(&base);
        let current = edited(&base, &ops, &nodes, other.as_ref());
        let delta = diff(&base, &current);
        let expected = bytes(&current);
        let got = apply(Format::JsonPatch, &delta.json_patch(), &base).unwrap();
        prop_assert_eq!(bytes(&got), expected.clone(), "json patch {:?}", delta.json_patch());
        if let Some(merge) = delta.merge_patch() {
            let got = apply(Format::MergePatch, &merge, &base).unwrap();
            prop_assert_eq!(bytes(&got), expected.clone(), "merge patch {:?}", merge);
        }
        let same = bytes(&base) == expected;
        prop_assert_eq!(delta.changed().is_empty(), same);
        prop_assert_eq!(&delta.json_patch()[..] == b"[]", same);
        for path in delta.changed() {
            prop_assert!(Pointer::parse(path).is_ok(), "{}", path);
        }
    }

    /// (1) Values replaced in place by values other than `null` (which a merge patch cannot
    /// write) and objects (whose members could come in another order) always have a merge
    /// patch.
    #[test]
    fn replaced_values_have_a_merge_patch(
        base in object(),
        nodes in prop::collection::vec(
            (any::<usize>(), Just(0u8), Just(0usize), value().prop_map(|v| match v {
                Value::Null => Value::from(0),
                Value::Object(members) => Value::Array(members.into_iter().map(|(_, v)| v).collect()),
                v => v,
            })),
            1..4,
        ),
    ) {
        let base = document(&base);
        let current = edited(&base, &[], &nodes, None);
        let merge = diff(&base, &current).merge_patch();
        prop_assert!(merge.is_some(), "{:?} -> {:?}", bytes(&base), bytes(&current));
    }

    /// (2) One edit at `P` (an operation's `path` and `from`, or the array it resizes; a node
    /// edit's node) changes only `P`, its ancestors and its descendants; some path exactly
    /// when bytes differ.
    #[test]
    fn one_edit_changes_only_paths_related_to_it(
        (base, ops) in doc_and_ops(),
        node in node_edit(),
        by_op in any::<bool>(),
    ) {
        let base = document(&base);
        let mut current = base.clone();
        let edited_at = match ops.first() {
            Some(op) if by_op => edit_op(&mut current, op),
            _ => edit_node(&mut current, &node).into_iter().collect(),
        };
        let delta = diff(&base, &current);
        prop_assert_eq!(delta.changed().is_empty(), bytes(&base) == bytes(&current));
        for changed in delta.changed() {
            prop_assert!(
                edited_at.iter().any(|p| related(changed, p)),
                "{} changed, edited at {:?}", changed, edited_at
            );
        }
    }

    /// (5) Everything a patch changes is related to a path it touches (so a changed path
    /// that collides with no touched path was left alone by the patch).
    #[test]
    fn a_patch_changes_nothing_it_does_not_touch(
        (base, _, _, _, format, stale) in scenario(),
    ) {
        let base = document(&base);
        let patch = Patch::parse(format, stale.to_string().as_bytes(), usize::MAX).unwrap();
        if let Ok(after) = patch.apply(base.clone(), MAX) {
            let touched = patch.touched(&base);
            for changed in diff(&base, &after).changed() {
                prop_assert!(touched.iter().any(|t| related(changed, t)), "{} not in {:?}", changed, touched);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// (3) A stale patch that collides with nothing applies to `current` as it would have
    /// to `base` before the delta: both fail alike, or both give the same document up to
    /// member order. Compared as bytes with every object's members sorted: two writes that
    /// each append a new member to one object append them in the order they land, and
    /// that is all that may differ (values, number spellings and array order may not,
    /// which `compare::equal` would let through). The collision check is the same against
    /// `current` as against `base`.
    #[test]
    fn a_stale_patch_that_does_not_collide_commutes_with_the_delta(
        (base, ops, nodes, other, format, stale) in scenario(),
    ) {
        let base = document(&base);
        let current = edited(&base, &ops, &nodes, other.as_ref());
        let delta = diff(&base, &current);
        let patch = Patch::parse(format, stale.to_string().as_bytes(), usize::MAX).unwrap();
        let collide = collisions(delta.changed(), &patch.touched(&base));
        prop_assert_eq!(collide.is_empty(), collisions(delta.changed(), &patch.touched(&current)).is_empty());
        if !collide.is_empty() {
            return Ok(());
        }
        let merged = patch.apply(current.clone(), MAX);
        let first = patch
            .apply(base.clone(), MAX)
            .map(|d| apply(Format::JsonPatch, &delta.json_patch(), &d).unwrap());
        match (merged, first) {
            (Ok(merged), Ok(first)) => prop_assert_eq!(
                sorted_bytes(&merged), sorted_bytes(&first),
                "delta {:?}", delta.json_patch()
            ),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "on current {:?}, on base {:?}", a.map(|d| bytes(&d)), b.map(|d| bytes(&d))),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (4) A patch that writes a changed path, an ancestor or a descendant of one collides
    /// with it, whichever way it writes.
    #[test]
    fn a_patch_at_a_changed_path_collides(
        (base, ops) in doc_and_ops(),
        nodes in prop::collection::vec(node_edit(), 1..4),
        pick in any::<usize>(),
        up in 0usize..3,
        down in prop::option::of(prop::sample::select(KEYS.to_vec())),
        kind in 0..5u8,
    ) {
        let base = document(&base);
        let current = edited(&base, &ops, &nodes, None);
        let delta = diff(&base, &current);
        let Some(changed) = delta.changed().get(pick % delta.changed().len().max(1)) else {
            return Ok(());
        };
        // The changed path, `up` tokens shorter, or (`up` = 0) one token longer.
        let mut tokens: Vec<&str> = changed.split('/').skip(1).collect();
        tokens.truncate(tokens.len().saturating_sub(up));
        let mut target = String::new();
        for token in &tokens {
            target.push('/');
            target.push_str(token);
        }
        let mut decoded: Vec<String> = tokens.iter().map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
        if let Some(name) = down.filter(|_| up == 0) {
            push_token(&mut target, name);
            decoded.push(name.to_owned());
        }
        let (format, patch) = match kind {
            0 => (Format::JsonPatch, serde_json::json!([{"op": "replace", "path": target, "value": 1}])),
            1 => (Format::JsonPatch, serde_json::json!([{"op": "add", "path": target, "value": 1}])),
            2 => (Format::JsonPatch, serde_json::json!([{"op": "remove", "path": target}])),
            3 => (Format::JsonPatch, serde_json::json!([{"op": "copy", "from": target, "path": "/elsewhere"}])),
            _ => {
                let mut patch = serde_json::json!("x");
                for name in decoded.iter().rev() {
                    patch = serde_json::json!({ name.as_str(): patch });
                }
                (Format::MergePatch, patch)
            }
        };
        let patch = Patch::parse(format, patch.to_string().as_bytes(), usize::MAX).unwrap();
        for target in [&base, &current] {
            let found = collisions(delta.changed(), &patch.touched(target));
            prop_assert!(found.iter().any(|(c, _)| c == changed), "{} vs {:?}", changed, patch.touched(target));
        }
    }
}
