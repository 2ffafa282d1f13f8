//! Property tests of the fast path ([`Document::index`]): it indexes exactly the documents
//! already in patchgate's compact form, and on them every patch gives what the tree path
//! gives (the same bytes, or the same error) and what the json-patch crate gives.

use proptest::prelude::*;
use serde_json::Value;

use super::props::{doc_and_ops, object, reference, value};
use super::*;

const MAX_OPS: usize = 1000;
const MAX_BYTES: usize = 1 << 20;

fn patch(format: Format, body: &Value) -> Patch {
    Patch::parse(format, body.to_string().as_bytes(), MAX_OPS).unwrap()
}

/// Both paths on `body`: (tree, indexed); `None` when the fast path declines.
fn both(body: &Bytes, patch: &Patch) -> (Result<Bytes, PatchError>, Option<Result<Bytes, PatchError>>) {
    let run = |doc: Document| patch.apply(doc, MAX_BYTES).and_then(|d| d.serialize(MAX_BYTES));
    let tree = Document::parse(body).and_then(run);
    let indexed = Document::index(body, patch).map(run);
    // A body the fast path takes is one patchgate writes: skipping it gives the same.
    if indexed.is_some() {
        let written = Document::index_written(body, patch).map(run);
        assert_eq!(format!("{written:?}"), format!("{indexed:?}"), "{body:?}");
    }
    (tree, indexed)
}

/// Bytes near JSON: a compact document with one byte inserted, replaced or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::sample::select(b" \n\t\"\\/u0aE.-,:[]{}}x\x01\xc3\xa9".to_vec());
    (object(), any::<prop::sample::Index>(), noise, 0..4u8).prop_map(|(doc, at, byte, how)| {
        let mut bytes = doc.to_string().into_bytes();
        let i = at.index(bytes.len() + 1);
        match how {
            0 => bytes.insert(i, byte),
            1 if i < bytes.len() => bytes[i] = byte,
            2 if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_patch_indexed_agrees_with_the_tree_and_the_reference((doc, ops) in doc_and_ops()) {
        let body = Bytes::from(doc.to_string());
        let parsed = patch(Format::JsonPatch, &Value::Array(ops.clone()));
        let (tree, indexed) = both(&body, &parsed);
        let Some(indexed) = indexed else {
            // Only a `test` of the root is left to the tree path, up to 64 operations.
            let tests_root = ops.iter().any(|op| op["op"] == "test" && op["path"] == "");
            prop_assert!(tests_root, "not indexed: {}", Value::Array(ops.clone()));
            return Ok(());
        };
        prop_assert_eq!(&indexed, &tree, "ops {}", Value::Array(ops.clone()));

        let reference_ops: Vec<json_patch::PatchOperation> =
            serde_json::from_value(Value::Array(ops.clone())).unwrap();
        let mut expected = doc.clone();
        match (indexed, reference(&mut expected, &reference_ops)) {
            (Ok(bytes), Ok(())) => {
                prop_assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
            }
            (Err(PatchError::TestFailed { op_index, .. } | PatchError::CannotApply { op_index, .. }), Err(e)) => {
                prop_assert_eq!(op_index, e.operation);
            }
            (ours, theirs) => prop_assert!(false, "ours {:?}, reference {:?}", ours, theirs),
        }
    }

    #[test]
    fn merge_patch_indexed_agrees_with_the_tree_and_rfc_7396(
        doc in object(),
        merge in prop_oneof![1 => value(), 4 => object()],
    ) {
        let body = Bytes::from(doc.to_string());
        let (tree, indexed) = both(&body, &patch(Format::MergePatch, &merge));
        let indexed = indexed.expect("indexed");
        prop_assert_eq!(&indexed, &tree);
        let mut expected = doc.clone();
        json_patch::merge(&mut expected, &merge);
        prop_assert_eq!(serde_json::from_slice::<Value>(&indexed.unwrap()).unwrap(), expected);
    }

    /// Carried PATCHes apply in place one after another: the indexed document agrees with
    /// the parsed one after each, and a failure leaves either as it was.
    #[test]
    fn in_place_sequences_agree((doc, ops) in doc_and_ops(), merge in object(), split in 0usize..4) {
        let body = Bytes::from(doc.to_string());
        let split = split.min(ops.len());
        let patches = [
            patch(Format::JsonPatch, &Value::Array(ops[..split].to_vec())),
            patch(Format::MergePatch, &merge),
            patch(Format::JsonPatch, &Value::Array(ops[split..].to_vec())),
        ];
        let mut tree = Document::parse(&body).unwrap();
        let mut indexed = Document::index(&body, &patches[1]).expect("indexed");
        for p in &patches {
            let expected = p.apply_in_place(&mut tree, MAX_BYTES);
            prop_assert_eq!(p.apply_in_place(&mut indexed, MAX_BYTES), expected);
            prop_assert_eq!(indexed.serialize(MAX_BYTES), tree.serialize(MAX_BYTES));
        }
    }

    /// Indexed exactly when the tree path accepts the bytes and writes them back unchanged;
    /// then both paths agree on any patch, errors included.
    #[test]
    fn only_compact_valid_documents_are_indexed(
        bytes in prop_oneof![mutated(), prop::collection::vec(any::<u8>(), 0..24)],
        ops in prop::collection::vec(super::props::op(vec!["/a".into(), "/a/0".into(), "/b/-".into(), "/c".into()]), 0..3),
    ) {
        let body = Bytes::from(bytes);
        let parsed = patch(Format::JsonPatch, &Value::Array(ops));
        let compact = Document::parse(&body).is_ok_and(|d| d.to_bytes() == body);
        let (tree, indexed) = both(&body, &parsed);
        prop_assert_eq!(indexed.is_some(), compact, "{:?}", body);
        // Not what it is said to be: whatever it makes of them, no panic.
        let _ = Document::index_written(&body, &parsed);
        if let Some(indexed) = indexed {
            prop_assert_eq!(indexed, tree);
        }
    }
}

#[test]
fn a_test_of_the_root_is_left_to_the_tree_path() {
    let body = Bytes::from_static(br#"{"a":1}"#);
    let root = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"test","path":"","value":{"a":1.0}}]"#,
        9,
    )
    .unwrap();
    assert!(Document::index(&body, &root).is_none());
    let member = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"test","path":"/a","value":1.0}]"#,
        9,
    )
    .unwrap();
    assert!(Document::index(&body, &member).is_some());
}

#[test]
fn a_test_then_replace_on_a_large_document_changes_only_that_member() {
    let items: Vec<String> = (0..500).map(|i| format!(r#"{{"i":{i},"s":"x\"y"}}"#)).collect();
    let body = Bytes::from(format!(
        r#"{{"version":3,"items":[{}],"n":1e2}}"#,
        items.join(",")
    ));
    let ops = br#"[{"op":"test","path":"/version","value":3.0},{"op":"replace","path":"/version","value":4},
        {"op":"add","path":"/items/1/t","value":[1e2]},{"op":"remove","path":"/items/0"},
        {"op":"copy","from":"/items/0","path":"/c"}]"#;
    let p = Patch::parse(Format::JsonPatch, ops, MAX_OPS).unwrap();
    let (tree, indexed) = both(&body, &p);
    assert_eq!(indexed.unwrap(), tree);
    let text = String::from_utf8(tree.unwrap().to_vec()).unwrap();
    assert!(text.starts_with(r#"{"version":4,"items":[{"i":1,"s":"x\"y","t":[1e2]},{"i":2,"#));
    assert!(text.ends_with(r#"{"i":499,"s":"x\"y"}],"n":1e2,"c":{"i":1,"s":"x\"y","t":[1e2]}}"#));
}
