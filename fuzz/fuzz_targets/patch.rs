//! PATCH parsing and application: the input is `document NUL patch`; the first byte of
//! the patch part picks JSON Patch or merge patch. A document that does not parse is
//! replaced by a fixed one, so every input reaches `apply`.
//!
//! Checks: no panic; the document is never changed; a result is JSON that parses again,
//! fits the limit and is the same on a second apply; applying in place (the batched
//! PATCH path) gives the same result, or the same error and an unchanged document.
//! The fast path (`Document::index`) takes exactly the documents the tree path accepts
//! and writes back unchanged, and on them gives the tree path's bytes or error, applied
//! whole or in place.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use patchgate::patch::{Document, Format, Patch};

const FALLBACK: &[u8] = br#"{"id":1,"name":"Ada","tags":["a","b"],"n":1e2,"o":{"x":[0,{"y":null}]}}"#;
const MAX_OPS: usize = 64;
const MAX_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let (doc_part, patch_part) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (FALLBACK, data),
    };
    let Some((&selector, patch_body)) = patch_part.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::JsonPatch
    } else {
        Format::MergePatch
    };
    let doc = Document::parse(doc_part)
        .or_else(|_| Document::parse(FALLBACK))
        .expect("the fallback document parses");
    let before = doc.to_bytes();
    let Ok(patch) = Patch::parse(format, patch_body, MAX_OPS) else {
        return;
    };
    // The write path: apply to a document it gives up, then serialize within the limit.
    let apply = || {
        patch
            .apply(doc.clone(), MAX_BYTES)
            .and_then(|d| d.serialize(MAX_BYTES))
    };
    let result = apply();
    assert_eq!(doc.to_bytes(), before, "apply changed the document");
    if let Ok(out) = &result {
        assert!(out.len() <= MAX_BYTES, "result over the limit: {}", out.len());
        let reparsed = Document::parse(out).expect("a patch result is JSON");
        assert_eq!(&reparsed.to_bytes(), out, "a result is already compact");
    }
    assert_eq!(apply(), result, "apply is deterministic");

    splice_agrees(doc_part, &patch);

    let mut in_place = doc.clone();
    match (patch.apply_in_place(&mut in_place, MAX_BYTES), &result) {
        (Ok(()), Ok(out)) => assert_eq!(&in_place.serialize(MAX_BYTES).expect("fits"), out),
        // Only the final serialization enforces the limit in place.
        (Ok(()), Err(patchgate::patch::PatchError::TooLarge { .. })) => {
            assert!(in_place.serialize(MAX_BYTES).is_err());
        }
        (Err(e), Err(expected)) => {
            assert_eq!(&e, expected);
            assert_eq!(in_place.to_bytes(), before, "a failed in-place apply changed the document");
        }
        (got, expected) => panic!("in place {got:?}, apply {expected:?}"),
    }
});

/// The indexed document against the parsed one, on the fuzzer's own document bytes.
fn splice_agrees(doc_part: &[u8], patch: &Patch) {
    let body = Bytes::copy_from_slice(doc_part);
    let parsed = Document::parse(&body);
    let compact = parsed.as_ref().is_ok_and(|d| d.to_bytes() == body);
    // Whether the patch itself is left to the tree path (a `test` of the root).
    let indexable = Document::index(&Bytes::from_static(b"{}"), patch).is_some();
    // Bytes that are not a written body: whatever the skipping walk makes of them, no panic.
    let written = Document::index_written(&body, patch);
    let Some(indexed) = Document::index(&body, patch) else {
        assert!(!(compact && indexable), "a compact document was not indexed");
        return;
    };
    let tree = parsed.expect("an indexed document parses");
    assert!(compact, "indexed, yet the tree path writes it differently");
    let run = |doc: Document| patch.apply(doc, MAX_BYTES).and_then(|d| d.serialize(MAX_BYTES));
    assert_eq!(run(indexed.clone()), run(tree.clone()), "whole");
    // A compact document is what patchgate writes: skipping it gives the same.
    let written = written.expect("a compact document is indexed when written");
    assert_eq!(run(written), run(tree.clone()), "written");
    let (mut a, mut b) = (indexed, tree);
    assert_eq!(patch.apply_in_place(&mut a, MAX_BYTES), patch.apply_in_place(&mut b, MAX_BYTES));
    assert_eq!(a.serialize(MAX_BYTES), b.serialize(MAX_BYTES), "in place");
}
