//! Property tests: a random JSON Patch applies completely or not at all, and agrees with
//! an independent implementation (the json-patch crate over `serde_json::Value`); a random
//! merge patch agrees with that crate's RFC 7396 merge.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

const MAX_OPS: usize = 1000;
const MAX_BYTES: usize = 1 << 20;
/// Member names, including ones that need `~0` / `~1` escapes and ones that look like
/// array indices.
pub(super) const KEYS: [&str; 8] = ["a", "b", "c", "0", "1", "-", "~x", "/y"];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // Integers only: the reference compares numbers as serde_json does, by
        // representation, where 1 and 1.0 differ; RFC 6902 §4.6 compares them by value.
        (-3i64..40).prop_map(Value::from),
        prop::sample::select(vec!["", "x", "y", "é"]).prop_map(Value::from),
    ]
}

pub(super) fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), inner, 0..4)
                .prop_map(|m| { Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) }),
        ]
    })
}

pub(super) fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every pointer that exists in `doc`, root included.
fn pointers(doc: &Value, prefix: String, out: &mut Vec<String>) {
    out.push(prefix.clone());
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(v, format!("{prefix}/{}", escape(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Pointers that exist, one level below ones that exist (new members, `-`, an index past
/// the end, a leading zero), and ones into nowhere.
pub(super) fn path_pool(doc: &Value) -> Vec<String> {
    let mut existing = Vec::new();
    pointers(doc, String::new(), &mut existing);
    let mut pool = existing.clone();
    for p in &existing {
        for extra in ["new", "-", "7", "00", "~0x", "a"] {
            pool.push(format!("{p}/{extra}"));
        }
    }
    pool.extend(["/nowhere/a", "/a/b/c/d", "/-", "/0/0"].map(String::from));
    pool
}

pub(super) fn op(pool: Vec<String>) -> impl Strategy<Value = Value> {
    let path = prop::sample::select(pool);
    (0..6usize, path.clone(), path, value()).prop_map(|(kind, path, from, value)| match kind {
        0 => json!({"op": "add", "path": path, "value": value}),
        1 => json!({"op": "remove", "path": path}),
        2 => json!({"op": "replace", "path": path, "value": value}),
        3 => json!({"op": "move", "from": from, "path": path}),
        4 => json!({"op": "copy", "from": from, "path": path}),
        _ => json!({"op": "test", "path": path, "value": value}),
    })
}

pub(super) fn doc_and_ops() -> impl Strategy<Value = (Value, Vec<Value>)> {
    object().prop_flat_map(|doc| {
        let ops = prop::collection::vec(op(path_pool(&doc)), 0..6);
        (Just(doc), ops)
    })
}

/// The reference, one operation at a time. It differs from RFC 6902 in one place: a
/// `move` onto its own location removes first, so it fails on the root and reorders
/// nothing else; the RFC makes it a no-op once `from` exists.
pub(super) fn reference(
    doc: &mut Value,
    ops: &[json_patch::PatchOperation],
) -> Result<(), json_patch::PatchError> {
    for (i, op) in ops.iter().enumerate() {
        if let json_patch::PatchOperation::Move(m) = op
            && m.from == m.path
            && doc.pointer(m.from.as_str()).is_some()
        {
            continue;
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(|mut e| {
            e.operation = i;
            e
        })?;
    }
    Ok(())
}

fn ours(doc: &Document, format: Format, patch: &Value) -> Result<Bytes, PatchError> {
    Patch::parse(format, patch.to_string().as_bytes(), MAX_OPS)?
        .apply(doc.clone(), MAX_BYTES)?
        .serialize(MAX_BYTES)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_patch_applies_completely_or_not_at_all((doc, ops) in doc_and_ops()) {
        let document = Document::parse(doc.to_string().as_bytes()).unwrap();
        let before = document.to_bytes();
        let result = ours(&document, Format::JsonPatch, &Value::Array(ops.clone()));
        prop_assert_eq!(document.to_bytes(), before.clone(), "the document changed");

        let reference_ops: Vec<json_patch::PatchOperation> =
            serde_json::from_value(Value::Array(ops.clone())).unwrap();
        let mut expected = doc.clone();
        let expected_result = reference(&mut expected, &reference_ops);
        match (&result, &expected_result) {
            (Ok(bytes), Ok(())) => {
                let got: Value = serde_json::from_slice(bytes).unwrap();
                prop_assert_eq!(got, expected, "ops {}", Value::Array(ops.clone()));
            }
            (Err(PatchError::TestFailed { op_index, .. } | PatchError::CannotApply { op_index, .. }), Err(e)) => {
                prop_assert_eq!(*op_index, e.operation, "ops {}", Value::Array(ops.clone()));
            }
            _ => prop_assert!(
                false,
                "ours {:?}, reference {:?}, ops {}",
                result,
                expected_result,
                Value::Array(ops.clone())
            ),
        }

        // The same operations followed by one that must fail: nothing of them survives.
        let mut failing = ops.clone();
        failing.push(json!({"op": "test", "path": "", "value": "never the document"}));
        let result = ours(&document, Format::JsonPatch, &Value::Array(failing));
        prop_assert!(
            matches!(
                result,
                Err(PatchError::TestFailed { op_index, .. } | PatchError::CannotApply { op_index, .. })
                    if op_index <= ops.len()
            ),
            "{:?}",
            result
        );
        prop_assert_eq!(document.to_bytes(), before);
    }

    /// The group-commit path applies patches one after another to one document in place:
    /// each must give what `apply` gives, and leave the document as it was when it fails.
    #[test]
    fn in_place_application_agrees_with_apply_and_is_atomic(
        (doc, ops) in doc_and_ops(),
        merge in prop_oneof![1 => value(), 4 => object()],
        split in 0usize..4,
    ) {
        let mut document = Document::parse(doc.to_string().as_bytes()).unwrap();
        let split = split.min(ops.len());
        let patches = [
            (Format::JsonPatch, Value::Array(ops[..split].to_vec())),
            (Format::JsonPatch, Value::Array(ops[split..].to_vec())),
            (Format::JsonPatch, Value::Array(ops.iter().take(1).cloned().collect())),
            (Format::MergePatch, merge),
        ];
        for (format, patch) in &patches {
            let parsed = Patch::parse(*format, patch.to_string().as_bytes(), MAX_OPS).unwrap();
            let before = document.to_bytes();
            let expected = parsed
                .apply(document.clone(), MAX_BYTES)
                .and_then(|d| d.serialize(MAX_BYTES));
            let result = parsed.apply_in_place(&mut document, MAX_BYTES);
            match (&expected, result) {
                (Ok(bytes), Ok(())) => {
                    prop_assert_eq!(&document.serialize(MAX_BYTES).unwrap(), bytes);
                }
                (Err(e), Err(got)) => {
                    prop_assert_eq!(e, &got);
                    prop_assert_eq!(document.to_bytes(), before, "a failed patch changed the document");
                }
                (expected, got) => prop_assert!(false, "apply {:?}, in place {:?}", expected, got),
            }
        }
    }

    #[test]
    fn merge_patch_agrees_with_rfc_7396(doc in object(), patch in prop_oneof![1 => value(), 4 => object()]) {
        let document = Document::parse(doc.to_string().as_bytes()).unwrap();
        let before = document.to_bytes();
        let got = ours(&document, Format::MergePatch, &patch).unwrap();
        prop_assert_eq!(document.to_bytes(), before);
        let mut expected = doc.clone();
        json_patch::merge(&mut expected, &patch);
        let got: Value = serde_json::from_slice(&got).unwrap();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn parsing_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for format in [Format::JsonPatch, Format::MergePatch] {
            let _ = Patch::parse(format, &bytes, 3);
        }
        if let Ok(doc) = Document::parse(&bytes) {
            // What parsed serializes to JSON that parses to the same value.
            let again = Document::parse(&doc.to_bytes()).unwrap();
            prop_assert_eq!(again.to_bytes(), doc.to_bytes());
        }
    }
}

#[test]
fn an_empty_object_merge_patch_changes_nothing() {
    let document = Document::parse(br#"{"b":1e2,"a":[0.10]}"#).unwrap();
    let got = ours(&document, Format::MergePatch, &Value::Object(Map::new())).unwrap();
    assert_eq!(got, document.to_bytes());
}
