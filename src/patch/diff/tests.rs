//! Deltas, touched paths and collisions on hand-picked cases.

use super::*;
use crate::patch::Format;

const MAX: usize = 1 << 20;

fn doc(text: &str) -> Document {
    Document::parse(text.as_bytes()).unwrap()
}

fn text(bytes: &Bytes) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// The delta from `base` to `current`, checked: each patch it offers gives `current`'s bytes.
fn delta(base: &str, current: &str) -> Delta {
    let (b, c) = (doc(base), doc(current));
    let delta = diff(&b, &c);
    let expected = c.serialize(MAX).unwrap();
    let patch = Patch::parse(Format::JsonPatch, &delta.json_patch(), usize::MAX).unwrap();
    let got = patch.apply(b.clone(), MAX).unwrap().serialize(MAX).unwrap();
    assert_eq!(
        text(&got),
        text(&expected),
        "json patch {}",
        text(&delta.json_patch())
    );
    if let Some(merge) = delta.merge_patch() {
        let patch = Patch::parse(Format::MergePatch, &merge, usize::MAX).unwrap();
        let got = patch.apply(b, MAX).unwrap().serialize(MAX).unwrap();
        assert_eq!(text(&got), text(&expected), "merge patch {}", text(&merge));
    }
    delta
}

fn json_patch(delta: &Delta) -> String {
    text(&delta.json_patch()).to_owned()
}

fn merge_patch(delta: &Delta) -> Option<String> {
    delta.merge_patch().map(|m| text(&m).to_owned())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn one_changed_member_in_a_large_document_is_one_replace() {
    let members: Vec<String> = (0..200)
        .map(|i| format!("\"k{i}\":{{\"n\":{i},\"s\":\"v{i}\"}}"))
        .collect();
    let base = format!("{{{}}}", members.join(","));
    let current = base.replace("\"s\":\"v150\"", "\"s\":\"changed\"");
    let d = delta(&base, &current);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"replace","path":"/k150/s","value":"changed"}]"#
    );
    assert_eq!(merge_patch(&d).as_deref(), Some(r#"{"k150":{"s":"changed"}}"#));
    assert_eq!(d.changed(), strings(&["/k150/s"]));
}

#[test]
fn identical_documents_give_empty_deltas() {
    let d = delta(
        r#"{"a":[1,{"b":null}],"n":1e2}"#,
        r#"{ "a" : [1, {"b":null}], "n" : 1e2 }"#,
    );
    assert_eq!(json_patch(&d), "[]");
    assert_eq!(merge_patch(&d).as_deref(), Some("{}"));
    assert!(d.changed().is_empty());
    // Only an object merges: any other patch replaces the document, with itself here.
    let d = delta("[1,null]", "[1,null]");
    assert_eq!(json_patch(&d), "[]");
    assert_eq!(merge_patch(&d).as_deref(), Some("[1,null]"));
}

#[test]
fn a_respelled_number_is_a_change() {
    let d = delta(r#"{"a":1.0,"b":1e2,"c":0.10}"#, r#"{"a":1,"b":1e2,"c":0.100}"#);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"replace","path":"/a","value":1},{"op":"replace","path":"/c","value":0.100}]"#
    );
    assert_eq!(merge_patch(&d).as_deref(), Some(r#"{"a":1,"c":0.100}"#));
    assert_eq!(d.changed(), strings(&["/a", "/c"]));
}

#[test]
fn removed_and_appended_members() {
    let d = delta(r#"{"a":1,"b":2,"c":3}"#, r#"{"a":1,"c":3,"d":{"e":4}}"#);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"remove","path":"/b"},{"op":"add","path":"/d","value":{"e":4}}]"#
    );
    assert_eq!(merge_patch(&d).as_deref(), Some(r#"{"b":null,"d":{"e":4}}"#));
    assert_eq!(d.changed(), strings(&["/b", "/d"]));
}

#[test]
fn a_member_inserted_in_the_middle_re_adds_the_ones_after_it() {
    let d = delta(
        r#"{"a":1,"b":2,"c":{"x":3}}"#,
        r#"{"a":1,"new":0,"b":2,"c":{"x":3}}"#,
    );
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"remove","path":"/b"},{"op":"remove","path":"/c"},{"op":"add","path":"/new","value":0},{"op":"add","path":"/b","value":2},{"op":"add","path":"/c","value":{"x":3}}]"#
    );
    // A merge patch only appends.
    assert_eq!(merge_patch(&d), None);
    assert_eq!(d.changed(), strings(&["/b", "/c", "/new"]));
}

#[test]
fn moved_members_keep_the_longest_ordered_prefix() {
    // a and c stay (in base order), b goes to the end.
    let d = delta(r#"{"a":1,"b":2,"c":3}"#, r#"{"a":1,"c":3,"b":2}"#);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"remove","path":"/b"},{"op":"add","path":"/b","value":2}]"#
    );
    assert_eq!(merge_patch(&d), None);
    assert_eq!(d.changed(), strings(&["/b"]));
    // No member can stay: the object is replaced whole (here the document).
    let d = delta(r#"{"a":1,"b":2}"#, r#"{"x":0,"a":1,"b":2}"#);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"replace","path":"","value":{"x":0,"a":1,"b":2}}]"#
    );
    assert_eq!(d.changed(), strings(&[""]));
    let d = delta(r#"{"o":{"a":1,"b":2},"z":[]}"#, r#"{"o":{"b":2,"a":1},"z":[]}"#);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"remove","path":"/o/a"},{"op":"add","path":"/o/a","value":1}]"#
    );
    let d = delta(r#"{"o":{"a":1,"b":2},"z":[]}"#, r#"{"o":{"c":0,"b":2},"z":[]}"#);
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"replace","path":"/o","value":{"c":0,"b":2}}]"#
    );
    assert_eq!(d.changed(), strings(&["/o"]));
}

#[test]
fn pointers_and_names_are_escaped() {
    let d = delta(
        r#"{"a/b":{"m~n":1},"q\"":[0],"":{"":1}}"#,
        r#"{"a/b":{"m~n":2},"q\"":[0,1],"":{"":2}}"#,
    );
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"replace","path":"/a~1b/m~0n","value":2},{"op":"add","path":"/q\"/1","value":1},{"op":"replace","path":"//","value":2}]"#
    );
    assert_eq!(
        merge_patch(&d).as_deref(),
        Some(r#"{"a/b":{"m~n":2},"q\"":[0,1],"":{"":2}}"#)
    );
    assert_eq!(d.changed(), strings(&["//", "/a~1b/m~0n", "/q\""]));
}

#[test]
fn arrays_keep_their_common_ends_and_diff_the_middle() {
    let cases = [
        // Appended: the array's length changed, so the array itself changed.
        (
            "[1,2]",
            "[1,2,3,4]",
            r#"[{"op":"add","path":"/a/2","value":3},{"op":"add","path":"/a/3","value":4}]"#,
            &["/a"][..],
        ),
        (
            "[1,2,3,4]",
            "[1,4]",
            r#"[{"op":"remove","path":"/a/2"},{"op":"remove","path":"/a/1"}]"#,
            &["/a"],
        ),
        (
            "[0,1]",
            "[9,0,1]",
            r#"[{"op":"add","path":"/a/0","value":9}]"#,
            &["/a"],
        ),
        // Same length: element by element, as deep as the change.
        (
            "[1,2,3]",
            "[1,9,3]",
            r#"[{"op":"replace","path":"/a/1","value":9}]"#,
            &["/a/1"],
        ),
        (
            r#"[{"x":1},{"x":2}]"#,
            r#"[{"x":1},{"x":3}]"#,
            r#"[{"op":"replace","path":"/a/1/x","value":3}]"#,
            &["/a/1/x"],
        ),
        // Both: the middle is paired index by index, then the rest inserted.
        (
            "[1,2,3,4]",
            "[1,7,3,8,9]",
            r#"[{"op":"replace","path":"/a/1","value":7},{"op":"replace","path":"/a/3","value":8},{"op":"add","path":"/a/4","value":9}]"#,
            &["/a"],
        ),
        (
            "[1,2]",
            "[]",
            r#"[{"op":"remove","path":"/a/1"},{"op":"remove","path":"/a/0"}]"#,
            &["/a"],
        ),
    ];
    for (base, current, patch, changed) in cases {
        let d = delta(&format!(r#"{{"a":{base}}}"#), &format!(r#"{{"a":{current}}}"#));
        assert_eq!(json_patch(&d), patch, "{base} -> {current}");
        assert_eq!(d.changed(), strings(changed), "{base} -> {current}");
        // A merge patch replaces arrays whole.
        assert_eq!(merge_patch(&d), Some(format!(r#"{{"a":{current}}}"#)));
    }
}

#[test]
fn merge_patch_cannot_write_null_but_arrays_may_hold_it() {
    for (base, current) in [
        (r#"{"a":1}"#, r#"{"a":null}"#),
        (r#"{"a":{"b":1}}"#, r#"{"a":{"b":null}}"#),
        (r#"{}"#, r#"{"a":null}"#),
        (r#"{}"#, r#"{"a":{"b":{"c":null}}}"#),
        (r#"{"a":1}"#, r#"{"a":{"b":null}}"#),
        (r#"[]"#, r#"{"a":null}"#),
    ] {
        let d = delta(base, current);
        assert_eq!(merge_patch(&d), None, "{base} -> {current}");
        assert_ne!(json_patch(&d), "[]");
    }
    let d = delta(r#"{"a":[1],"n":null}"#, r#"{"a":[null,{"b":null}],"n":null}"#);
    assert_eq!(merge_patch(&d).as_deref(), Some(r#"{"a":[null,{"b":null}]}"#));
    // The whole document: a null or any other non-object replaces it.
    assert_eq!(merge_patch(&delta(r#"{"a":1}"#, "null")).as_deref(), Some("null"));
    assert_eq!(
        merge_patch(&delta(r#"[1]"#, r#"{"a":{"b":1}}"#)).as_deref(),
        Some(r#"{"a":{"b":1}}"#)
    );
}

#[test]
fn a_changed_type_is_replaced() {
    let d = delta(
        r#"{"a":{"x":1},"b":1,"c":[1]}"#,
        r#"{"a":[1],"b":{"x":1},"c":{"0":1}}"#,
    );
    assert_eq!(
        json_patch(&d),
        r#"[{"op":"replace","path":"/a","value":[1]},{"op":"replace","path":"/b","value":{"x":1}},{"op":"replace","path":"/c","value":{"0":1}}]"#
    );
    assert_eq!(
        merge_patch(&d).as_deref(),
        Some(r#"{"a":[1],"b":{"x":1},"c":{"0":1}}"#)
    );
    assert_eq!(d.changed(), strings(&["/a", "/b", "/c"]));
    let d = delta("1", r#""one""#);
    assert_eq!(json_patch(&d), r#"[{"op":"replace","path":"","value":"one"}]"#);
    assert_eq!(d.changed(), strings(&[""]));
}

fn touched(format: Format, patch: &str, target: &str) -> Vec<String> {
    Patch::parse(format, patch.as_bytes(), usize::MAX)
        .unwrap()
        .touched(&doc(target))
}

#[test]
fn a_json_patch_touches_its_paths_and_the_arrays_it_resizes() {
    let patch = r#"[
        {"op":"test","path":"/t/0","value":1},
        {"op":"replace","path":"/r/1","value":1},
        {"op":"add","path":"/list/-","value":1},
        {"op":"add","path":"/obj/name","value":1},
        {"op":"remove","path":"/list2/3"},
        {"op":"remove","path":"/obj/01"},
        {"op":"move","from":"/m/2","path":"/n/x"},
        {"op":"copy","from":"/c~1d","path":"/e~0f/0"},
        {"op":"copy","from":"/k/1","path":"/r/1"}
    ]"#;
    assert_eq!(
        touched(Format::JsonPatch, patch, "{}"),
        strings(&[
            "/c~1d",
            "/e~0f",
            "/k/1",
            "/list",
            "/list2",
            "/m",
            "/n/x",
            "/obj/01",
            "/obj/name",
            "/r",
            "/r/1",
            "/t/0"
        ])
    );
    assert!(touched(Format::JsonPatch, "[]", "{}").is_empty());
    assert_eq!(
        touched(Format::JsonPatch, r#"[{"op":"add","path":"","value":1}]"#, "{}"),
        strings(&[""])
    );
}

#[test]
fn a_merge_patch_touches_its_leaves_as_the_target_shapes_them() {
    let target = r#"{"a":{"b":0},"d":{"z":1},"e":5,"l":[1,2],"o":{"p":{}}}"#;
    let patch =
        r#"{"a":{"b":1,"c~":null},"d":{},"e":{"f":1},"l":{"0":1},"n":{"x":{"y":1}},"o":{"p":{"q/":[]}}}"#;
    assert_eq!(
        touched(Format::MergePatch, patch, target),
        strings(&["/a/b", "/a/c~0", "/d", "/e", "/l", "/n", "/o/p/q~1"])
    );
    assert_eq!(touched(Format::MergePatch, "{}", target), strings(&[""]));
    assert_eq!(touched(Format::MergePatch, "[1]", target), strings(&[""]));
    assert_eq!(touched(Format::MergePatch, r#"{"a":1}"#, "[]"), strings(&[""]));
}

#[test]
fn collisions_follow_tokens_not_characters() {
    let changed = strings(&["/a/b", "/x/0", "/m~1n"]);
    assert_eq!(
        collisions(
            &changed,
            &strings(&["/a/bc", "/a/c", "/x/00", "/m", "/m~1n0", "/"])
        ),
        Vec::<(String, String)>::new()
    );
    assert_eq!(
        collisions(&changed, &strings(&["/a", "/a/b/c", "/x/0", "/m~1n/z"])),
        vec![
            ("/a/b".to_owned(), "/a".to_owned()),
            ("/a/b".to_owned(), "/a/b/c".to_owned()),
            ("/x/0".to_owned(), "/x/0".to_owned()),
            ("/m~1n".to_owned(), "/m~1n/z".to_owned()),
        ]
    );
    // The root is everyone's ancestor; "/" is the member named "".
    assert_eq!(collisions(&strings(&[""]), &strings(&["/q"])).len(), 1);
    assert_eq!(collisions(&strings(&["/q"]), &strings(&[""])).len(), 1);
    assert_eq!(collisions(&strings(&["/"]), &strings(&["//x"])).len(), 1);
}

/// Whether a stale `patch` written against `base` may be merged into `current`.
fn merges(base: &str, current: &str, format: Format, patch: &str) -> bool {
    let d = delta(base, current);
    collisions(d.changed(), &touched(format, patch, base)).is_empty()
}

#[test]
fn stale_writes_merge_only_away_from_the_changes() {
    let base = r#"{"a":{"b":1,"c":2},"list":[1,2,3,4],"s":"x"}"#;
    let edited = r#"{"a":{"b":1,"c":3},"list":[1,2,3,4],"s":"x"}"#;
    assert!(merges(
        base,
        edited,
        Format::JsonPatch,
        r#"[{"op":"replace","path":"/a/b","value":0}]"#
    ));
    assert!(!merges(
        base,
        edited,
        Format::JsonPatch,
        r#"[{"op":"replace","path":"/a/c","value":0}]"#
    ));
    assert!(!merges(
        base,
        edited,
        Format::JsonPatch,
        r#"[{"op":"remove","path":"/a"}]"#
    ));
    assert!(merges(
        base,
        edited,
        Format::MergePatch,
        r#"{"a":{"b":0},"s":"y"}"#
    ));
    assert!(!merges(base, edited, Format::MergePatch, r#"{"a":{"c":null}}"#));
    // Elements of a same-length array are apart, but an insertion shifts them all.
    let element = r#"{"a":{"b":1,"c":2},"list":[1,2,9,4],"s":"x"}"#;
    assert!(merges(
        base,
        element,
        Format::JsonPatch,
        r#"[{"op":"replace","path":"/list/0","value":0}]"#
    ));
    assert!(!merges(
        base,
        element,
        Format::JsonPatch,
        r#"[{"op":"add","path":"/list/0","value":0}]"#
    ));
    assert!(!merges(
        base,
        element,
        Format::JsonPatch,
        r#"[{"op":"remove","path":"/list/3"}]"#
    ));
    assert!(!merges(base, element, Format::MergePatch, r#"{"list":{"0":1}}"#));
    let grown = r#"{"a":{"b":1,"c":2},"list":[1,2,3,4,5],"s":"x"}"#;
    assert!(!merges(
        base,
        grown,
        Format::JsonPatch,
        r#"[{"op":"replace","path":"/list/0","value":0}]"#
    ));
    assert!(merges(
        base,
        grown,
        Format::JsonPatch,
        r#"[{"op":"test","path":"/s","value":"x"}]"#
    ));
    // A member turned into a scalar: an empty object would now replace it.
    let scalar = r#"{"a":5,"list":[1,2,3,4],"s":"x"}"#;
    assert!(!merges(base, scalar, Format::MergePatch, r#"{"a":{}}"#));
    assert!(!merges(scalar, base, Format::MergePatch, r#"{"a":{}}"#));
}

#[test]
fn value_at_reads_compact_json() {
    let d = doc(r#"{"a" : [ 1e2 , {"b/c" : "x"} ] , "n" : null}"#);
    let at = |p: &str| d.value_at(p).map(|b| text(&b).to_owned());
    assert_eq!(at("").as_deref(), Some(r#"{"a":[1e2,{"b/c":"x"}],"n":null}"#));
    assert_eq!(at("/a/0").as_deref(), Some("1e2"));
    assert_eq!(at("/a/1/b~1c").as_deref(), Some(r#""x""#));
    assert_eq!(at("/n").as_deref(), Some("null"));
    assert_eq!(at("/a/2"), None);
    assert_eq!(at("/missing"), None);
    assert_eq!(at("no slash"), None);
}
