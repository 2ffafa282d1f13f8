//! The module's behaviour end to end: RFC 6902 and RFC 7396 appendix examples, fidelity,
//! atomicity, limits and hostile input.

use super::*;

const MAX_OPS: usize = 1000;
const MAX_BYTES: usize = 1 << 20;

fn apply(format: Format, doc: &str, patch: &str) -> Result<String, PatchError> {
    let doc = Document::parse(doc.as_bytes())?;
    let patch = Patch::parse(format, patch.as_bytes(), MAX_OPS)?;
    let out = applied(&patch, &doc, MAX_BYTES)?;
    Ok(String::from_utf8(out.to_vec()).unwrap_or_default())
}

/// What the write path does: apply to the document, then serialize within `max`.
fn applied(patch: &Patch, doc: &Document, max: usize) -> Result<Bytes, PatchError> {
    patch.apply(doc.clone(), max)?.serialize(max)
}

fn json_patch(doc: &str, patch: &str) -> Result<String, PatchError> {
    apply(Format::JsonPatch, doc, patch)
}

fn merge_patch(doc: &str, patch: &str) -> Result<String, PatchError> {
    apply(Format::MergePatch, doc, patch)
}

fn cannot(op_index: usize, path: &str, detail: &str) -> PatchError {
    PatchError::CannotApply {
        op_index,
        path: path.into(),
        detail: detail.into(),
    }
}

fn test_failed(op_index: usize, path: &str) -> PatchError {
    PatchError::TestFailed {
        op_index,
        path: path.into(),
    }
}

fn malformed(detail: &str) -> PatchError {
    PatchError::Malformed {
        detail: detail.into(),
    }
}

#[test]
fn rfc6902_appendix_a_examples() {
    let ok = |s: &str| Ok(s.to_owned());
    let cases: &[(&str, &str, &str, Result<String, PatchError>)] = &[
        (
            "A.1 adding an object member",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","value":"qux"}]"#,
            ok(r#"{"foo":"bar","baz":"qux"}"#),
        ),
        (
            "A.2 adding an array element",
            r#"{"foo":["bar","baz"]}"#,
            r#"[{"op":"add","path":"/foo/1","value":"qux"}]"#,
            ok(r#"{"foo":["bar","qux","baz"]}"#),
        ),
        (
            "A.3 removing an object member",
            r#"{"baz":"qux","foo":"bar"}"#,
            r#"[{"op":"remove","path":"/baz"}]"#,
            ok(r#"{"foo":"bar"}"#),
        ),
        (
            "A.4 removing an array element",
            r#"{"foo":["bar","qux","baz"]}"#,
            r#"[{"op":"remove","path":"/foo/1"}]"#,
            ok(r#"{"foo":["bar","baz"]}"#),
        ),
        (
            "A.5 replacing a value",
            r#"{"baz":"qux","foo":"bar"}"#,
            r#"[{"op":"replace","path":"/baz","value":"boo"}]"#,
            ok(r#"{"baz":"boo","foo":"bar"}"#),
        ),
        (
            "A.6 moving a value",
            r#"{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}"#,
            r#"[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]"#,
            ok(r#"{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}"#),
        ),
        (
            "A.7 moving an array element",
            r#"{"foo":["all","grass","cows","eat"]}"#,
            r#"[{"op":"move","from":"/foo/1","path":"/foo/3"}]"#,
            ok(r#"{"foo":["all","cows","eat","grass"]}"#),
        ),
        (
            "A.8 testing a value: success",
            r#"{"baz":"qux","foo":["a",2,"c"]}"#,
            r#"[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]"#,
            ok(r#"{"baz":"qux","foo":["a",2,"c"]}"#),
        ),
        (
            "A.9 testing a value: error",
            r#"{"baz":"qux"}"#,
            r#"[{"op":"test","path":"/baz","value":"bar"}]"#,
            Err(test_failed(0, "/baz")),
        ),
        (
            "A.10 adding a nested member object",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/child","value":{"grandchild":{}}}]"#,
            ok(r#"{"foo":"bar","child":{"grandchild":{}}}"#),
        ),
        (
            "A.11 ignoring unrecognized elements",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","value":"qux","xyz":123}]"#,
            ok(r#"{"foo":"bar","baz":"qux"}"#),
        ),
        (
            "A.12 adding to a nonexistent target",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz/bat","value":"qux"}]"#,
            Err(cannot(0, "/baz/bat", r#"member "baz" does not exist"#)),
        ),
        (
            "A.13 invalid JSON Patch document",
            r#"{"foo":"bar"}"#,
            r#"[{"op":"add","path":"/baz","value":"qux","op":"remove"}]"#,
            Err(malformed(
                r#"not valid JSON: duplicate member name "op" at line 1, column 56"#,
            )),
        ),
        (
            "A.14 ~ escape ordering",
            r#"{"/":9,"~1":10}"#,
            r#"[{"op":"test","path":"/~01","value":10}]"#,
            ok(r#"{"/":9,"~1":10}"#),
        ),
        (
            "A.15 comparing strings and numbers",
            r#"{"/":9,"~1":10}"#,
            r#"[{"op":"test","path":"/~01","value":"10"}]"#,
            Err(test_failed(0, "/~01")),
        ),
        (
            "A.16 adding an array value",
            r#"{"foo":["bar"]}"#,
            r#"[{"op":"add","path":"/foo/-","value":["abc","def"]}]"#,
            ok(r#"{"foo":["bar",["abc","def"]]}"#),
        ),
    ];
    for (name, doc, patch, expected) in cases {
        assert_eq!(&json_patch(doc, patch), expected, "{name}");
    }
}

#[test]
fn rfc7396_appendix_a_examples() {
    let cases = [
        (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
        (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
        (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
        (
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":{"b":"d","c":null}}"#,
            r#"{"a":{"b":"d"}}"#,
        ),
        (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
        (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
        (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
        (r#"{"a":"foo"}"#, "null", "null"),
        (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
        (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
        ("[1,2]", r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
        ("{}", r#"{"a":{"bb":{"ccc":null}}}"#, r#"{"a":{"bb":{}}}"#),
    ];
    for (doc, patch, expected) in cases {
        assert_eq!(
            merge_patch(doc, patch).as_deref(),
            Ok(expected),
            "{doc} + {patch}"
        );
    }
}

#[test]
fn rfc7396_section3_example() {
    let doc = r#"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}"#;
    let patch = r#"{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}"#;
    assert_eq!(
        merge_patch(doc, patch).as_deref(),
        Ok(
            r#"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}"#
        )
    );
}

const FIDELITY_DOC: &str = r#"{"b":1,"a":1e2,"c":12345678901234567890123,"d":0.1000,"e":"x"}"#;

#[test]
fn json_patch_changes_only_what_it_names() {
    assert_eq!(
        json_patch(FIDELITY_DOC, r#"[{"op":"replace","path":"/e","value":"y"}]"#).as_deref(),
        Ok(r#"{"b":1,"a":1e2,"c":12345678901234567890123,"d":0.1000,"e":"y"}"#)
    );
}

#[test]
fn merge_patch_changes_only_what_it_names() {
    assert_eq!(
        merge_patch(FIDELITY_DOC, r#"{"e":"y"}"#).as_deref(),
        Ok(r#"{"b":1,"a":1e2,"c":12345678901234567890123,"d":0.1000,"e":"y"}"#)
    );
}

#[test]
fn patch_values_keep_their_spelling_too() {
    assert_eq!(
        json_patch("{}", r#"[{"op":"add","path":"/n","value":[1E2,-0.0,1e-7]}]"#).as_deref(),
        Ok(r#"{"n":[1E2,-0.0,1e-7]}"#)
    );
    assert_eq!(merge_patch("{}", r#"{"n":1E+2}"#).as_deref(), Ok(r#"{"n":1E+2}"#));
}

#[test]
fn removing_a_middle_member_keeps_the_others_in_order() {
    let doc = r#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#;
    assert_eq!(
        json_patch(doc, r#"[{"op":"remove","path":"/b"}]"#).as_deref(),
        Ok(r#"{"a":1,"c":3,"d":4,"e":5}"#)
    );
    assert_eq!(
        json_patch(doc, r#"[{"op":"move","from":"/b","path":"/z"}]"#).as_deref(),
        Ok(r#"{"a":1,"c":3,"d":4,"e":5,"z":2}"#)
    );
    assert_eq!(
        merge_patch(doc, r#"{"b":null,"d":null}"#).as_deref(),
        Ok(r#"{"a":1,"c":3,"e":5}"#)
    );
}

#[test]
fn merge_null_removals_keep_order_in_large_objects() {
    let members: Vec<String> = (0..50).map(|i| format!("\"k{i}\":{i}")).collect();
    let doc = format!("{{{}}}", members.join(","));
    let patch = r#"{"k3":null,"k10":"ten","new":1,"k49":null,"k0":{"x":null,"y":1}}"#;
    let mut expected: Vec<String> = members
        .iter()
        .filter(|m| !m.starts_with("\"k3\"") && !m.starts_with("\"k49\""))
        .cloned()
        .collect();
    for m in expected.iter_mut() {
        if m == "\"k10\":10" {
            *m = "\"k10\":\"ten\"".into();
        }
        if m == "\"k0\":0" {
            *m = "\"k0\":{\"y\":1}".into();
        }
    }
    expected.push("\"new\":1".into());
    assert_eq!(
        merge_patch(&doc, patch),
        Ok(format!("{{{}}}", expected.join(",")))
    );
}

#[test]
fn replacing_existing_members_keeps_their_position() {
    assert_eq!(
        json_patch(
            r#"{"a":1,"b":2,"c":3}"#,
            r#"[{"op":"add","path":"/a","value":0}]"#
        )
        .as_deref(),
        Ok(r#"{"a":0,"b":2,"c":3}"#)
    );
    assert_eq!(
        json_patch(
            r#"{"a":1,"b":2,"c":3}"#,
            r#"[{"op":"move","from":"/a","path":"/a"}]"#
        )
        .as_deref(),
        Ok(r#"{"a":1,"b":2,"c":3}"#)
    );
}

#[test]
fn test_compares_numbers_by_value_and_objects_regardless_of_order() {
    let doc = r#"{"one":1.0,"zero":-0,"hundred":1e2,"ten":10,"obj":{"x":1,"y":[1,2]},"big":12345678901234567890123}"#;
    for (path, value) in [
        ("/one", "1"),
        ("/zero", "0"),
        ("/hundred", "100"),
        ("/ten", "10.0"),
        ("/obj", r#"{"y":[1.0,2e0],"x":1}"#),
        ("/big", "12345678901234567890123"),
    ] {
        let patch = format!(r#"[{{"op":"test","path":"{path}","value":{value}}}]"#);
        assert_eq!(json_patch(doc, &patch).as_deref(), Ok(doc), "{path} == {value}");
    }
    for (path, value) in [
        ("/ten", r#""10""#),
        ("/big", "12345678901234567890124"),
        ("/obj", r#"{"x":1}"#),
    ] {
        let patch = format!(
            r#"[{{"op":"test","path":"/one","value":1}},{{"op":"test","path":"{path}","value":{value}}}]"#
        );
        assert_eq!(
            json_patch(doc, &patch),
            Err(test_failed(1, path)),
            "{path} != {value}"
        );
    }
}

#[test]
fn test_with_huge_exponents_is_exact_and_cheap() {
    let doc = r#"{"n":1e999999999,"m":1e99999999999999999999999999999999999999999}"#;
    for (path, value, ok) in [
        ("/n", "10e999999998", true),
        ("/n", "1e999999998", false),
        ("/m", "0.01e100000000000000000000000000000000000000001", true),
        ("/m", "1e99999999999999999999999999999999999999998", false),
        ("/m", "1e-99999999999999999999999999999999999999999", false),
    ] {
        let patch = format!(r#"[{{"op":"test","path":"{path}","value":{value}}}]"#);
        let result = json_patch(doc, &patch);
        if ok {
            assert_eq!(result.as_deref(), Ok(doc), "{path} == {value}");
        } else {
            assert_eq!(result, Err(test_failed(0, path)), "{path} != {value}");
        }
    }
}

#[test]
fn a_failing_operation_leaves_the_document_unchanged() {
    let mut doc = Document::parse(br#"{"a":1,"list":[1,2]}"#).expect("doc");
    let before = doc.to_bytes();
    let patch = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/a"},{"op":"replace","path":"/list/5","value":0}]"#,
        MAX_OPS,
    )
    .expect("patch");
    assert_eq!(
        patch.apply_in_place(&mut doc, MAX_BYTES),
        Err(cannot(2, "/list/5", "index 5 is out of bounds (array length 2)"))
    );
    assert_eq!(doc.to_bytes(), before);
    assert_eq!(&before[..], br#"{"a":1,"list":[1,2]}"#);
}

#[test]
fn pointer_edge_cases() {
    let doc = r#"{"a/b":1,"~1":2,"m~n":3,"arr":[10,20],"s":"str","":{"":5}}"#;
    let cases: &[(&str, Result<&str, PatchError>)] = &[
        (r#"{"op":"test","path":"/a~1b","value":1}"#, Ok(doc)),
        (r#"{"op":"test","path":"/~01","value":2}"#, Ok(doc)),
        (r#"{"op":"test","path":"/m~0n","value":3}"#, Ok(doc)),
        (r#"{"op":"test","path":"//","value":5}"#, Ok(doc)),
        (
            r#"{"op":"add","path":"/arr/-","value":30}"#,
            Ok(r#"{"a/b":1,"~1":2,"m~n":3,"arr":[10,20,30],"s":"str","":{"":5}}"#),
        ),
        (
            r#"{"op":"add","path":"/arr/2","value":30}"#,
            Ok(r#"{"a/b":1,"~1":2,"m~n":3,"arr":[10,20,30],"s":"str","":{"":5}}"#),
        ),
        (
            r#"{"op":"add","path":"/arr/3","value":30}"#,
            Err(cannot(0, "/arr/3", "index 3 is out of bounds (array length 2)")),
        ),
        (
            r#"{"op":"add","path":"/arr/01","value":30}"#,
            Err(cannot(0, "/arr/01", r#""01" is not an array index"#)),
        ),
        (
            r#"{"op":"remove","path":"/arr/-"}"#,
            Err(cannot(
                0,
                "/arr/-",
                r#""-" names no existing element (array length 2)"#,
            )),
        ),
        (
            r#"{"op":"replace","path":"/arr/-","value":1}"#,
            Err(cannot(
                0,
                "/arr/-",
                r#""-" names no existing element (array length 2)"#,
            )),
        ),
        (
            r#"{"op":"replace","path":"/arr/2","value":1}"#,
            Err(cannot(0, "/arr/2", "index 2 is out of bounds (array length 2)")),
        ),
        (
            r#"{"op":"add","path":"/arr/-/x","value":1}"#,
            Err(cannot(
                0,
                "/arr/-/x",
                r#""-" names no existing element (array length 2)"#,
            )),
        ),
        (
            r#"{"op":"add","path":"/s/x","value":1}"#,
            Err(cannot(0, "/s/x", r#"cannot reach "x" inside a string"#)),
        ),
        (
            r#"{"op":"remove","path":"/s/0"}"#,
            Err(cannot(0, "/s/0", r#"cannot reach "0" inside a string"#)),
        ),
        (
            r#"{"op":"test","path":"/arr/-","value":1}"#,
            Err(test_failed(0, "/arr/-")),
        ),
        (
            r#"{"op":"test","path":"/missing","value":null}"#,
            Err(test_failed(0, "/missing")),
        ),
        (
            r#"{"op":"move","from":"/arr/-","path":"/x"}"#,
            Err(cannot(
                0,
                "/x",
                r#"from "/arr/-": "-" names no existing element (array length 2)"#,
            )),
        ),
        (
            r#"{"op":"copy","from":"/nope","path":"/x"}"#,
            Err(cannot(0, "/x", r#"from "/nope": member "nope" does not exist"#)),
        ),
        (
            r#"{"op":"move","from":"/arr","path":"/arr/0"}"#,
            Err(cannot(
                0,
                "/arr/0",
                r#"cannot move "/arr" into one of its own children"#,
            )),
        ),
        (
            r#"{"op":"move","from":"","path":"/x"}"#,
            Err(cannot(0, "/x", r#"cannot move "" into one of its own children"#)),
        ),
        (
            r#"{"op":"remove","path":""}"#,
            Err(cannot(0, "", "the whole document cannot be removed")),
        ),
        (r#"{"op":"replace","path":"","value":[1e2]}"#, Ok("[1e2]")),
        (r#"{"op":"add","path":"","value":{"z":0}}"#, Ok(r#"{"z":0}"#)),
        (
            r#"{"op":"move","from":"/a~1b","path":"/arr"}"#,
            Ok(r#"{"~1":2,"m~n":3,"arr":1,"s":"str","":{"":5}}"#),
        ),
        (
            r#"{"op":"move","from":"/arr","path":"/arrow"}"#,
            Ok(r#"{"a/b":1,"~1":2,"m~n":3,"s":"str","":{"":5},"arrow":[10,20]}"#),
        ),
        (
            r#"{"op":"copy","from":"/arr","path":"/arr/0"}"#,
            Ok(r#"{"a/b":1,"~1":2,"m~n":3,"arr":[[10,20],10,20],"s":"str","":{"":5}}"#),
        ),
    ];
    for (op, expected) in cases {
        let expected = expected.clone().map(str::to_owned);
        assert_eq!(json_patch(doc, &format!("[{op}]")), expected, "{op}");
    }
}

#[test]
fn move_up_into_the_parent_replaces_it() {
    assert_eq!(
        json_patch(
            r#"{"a":{"b":{"c":1}},"z":0}"#,
            r#"[{"op":"move","from":"/a/b","path":"/a"}]"#
        )
        .as_deref(),
        Ok(r#"{"a":{"c":1},"z":0}"#)
    );
}

#[test]
fn malformed_patches_are_rejected_before_applying() {
    let cases = [
        (
            r#"{"op":"add","path":"/a","value":1}"#,
            "a JSON Patch must be an array of operations",
        ),
        ("", "not valid JSON: unexpected end of input at line 1, column 1"),
        ("[", "not valid JSON: unexpected end of input at line 1, column 2"),
        ("[1]", "operation 0: expected an object, found number"),
        (
            r#"[{"op":"test","path":"/a","value":1},"add"]"#,
            "operation 1: expected an object, found string",
        ),
        (
            r#"[{"op":"add","path":"/a"}]"#,
            r#"operation 0: "value" is missing"#,
        ),
        (
            r#"[{"op":"replace","path":"/a"}]"#,
            r#"operation 0: "value" is missing"#,
        ),
        (
            r#"[{"op":"test","path":"/a"}]"#,
            r#"operation 0: "value" is missing"#,
        ),
        (r#"[{"op":"remove"}]"#, r#"operation 0: "path" is missing"#),
        (
            r#"[{"op":"move","path":"/a"}]"#,
            r#"operation 0: "from" is missing"#,
        ),
        (
            r#"[{"op":"copy","path":"/a"}]"#,
            r#"operation 0: "from" is missing"#,
        ),
        (r#"[{"path":"/a"}]"#, r#"operation 0: "op" is missing"#),
        (
            r#"[{"op":"frobnicate","path":"/a"}]"#,
            r#"operation 0: unknown op "frobnicate""#,
        ),
        (
            r#"[{"op":"ADD","path":"/a","value":1}]"#,
            r#"operation 0: unknown op "ADD""#,
        ),
        (
            r#"[{"op":1,"path":"/a"}]"#,
            r#"operation 0: "op" must be a string, found number"#,
        ),
        (
            r#"[{"op":"remove","path":1}]"#,
            r#"operation 0: "path" must be a string, found number"#,
        ),
        (
            r#"[{"op":"remove","path":"a"}]"#,
            r#"operation 0: "path" "a" is not a JSON Pointer: json pointer failed to parse; does not start with a slash ('/') and is not empty"#,
        ),
        (
            r#"[{"op":"remove","path":"/a~2"}]"#,
            r#"operation 0: "path" "/a~2" is not a JSON Pointer: json pointer failed to parse; the first token in the partial-pointer starting at offset 0 is malformed"#,
        ),
        (
            r#"[{"op":"copy","from":"x","path":"/a"}]"#,
            r#"operation 0: "from" "x" is not a JSON Pointer: json pointer failed to parse; does not start with a slash ('/') and is not empty"#,
        ),
    ];
    for (patch, detail) in cases {
        assert_eq!(
            Patch::parse(Format::JsonPatch, patch.as_bytes(), MAX_OPS).map(|p| p.len()),
            Err(malformed(detail)),
            "{patch}"
        );
    }
    assert_eq!(
        Patch::parse(Format::MergePatch, br#"{"a":1,"a":null}"#, MAX_OPS).map(|p| p.len()),
        Err(malformed(
            r#"not valid JSON: duplicate member name "a" at line 1, column 17"#
        ))
    );
    assert_eq!(
        Patch::parse(Format::MergePatch, b"{", MAX_OPS).map(|p| p.len()),
        Err(malformed(
            "not valid JSON: unexpected end of input at line 1, column 2"
        ))
    );
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    assert_eq!(
        Patch::parse(Format::JsonPatch, deep.as_bytes(), MAX_OPS).map(|p| p.len()),
        Err(malformed(
            "not valid JSON: nested deeper than 128 levels at line 1, column 129"
        ))
    );
    assert_eq!(
        Patch::parse(Format::MergePatch, deep.as_bytes(), MAX_OPS).map(|p| p.len()),
        Err(malformed(
            "not valid JSON: nested deeper than 128 levels at line 1, column 129"
        ))
    );
    assert_eq!(
        Document::parse(deep.as_bytes()).map(|d| d.to_bytes()),
        Err(PatchError::NotJson {
            detail: "nested deeper than 128 levels at line 1, column 129".into()
        })
    );
    let deep_value = format!(
        r#"[{{"op":"test","path":"","value":{}{}}}]"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        Patch::parse(Format::JsonPatch, deep_value.as_bytes(), MAX_OPS),
        Err(PatchError::Malformed { .. })
    ));
}

#[test]
fn deepest_allowed_values_are_compared_cloned_and_written() {
    // 126 levels inside the patch's array and operation object: the most a patch can carry.
    let value = "[".repeat(126) + &"]".repeat(126);
    let doc = format!(r#"{{"d":{value}}}"#);
    let patch =
        format!(r#"[{{"op":"test","path":"/d","value":{value}}},{{"op":"copy","from":"/d","path":"/e"}}]"#);
    assert_eq!(
        json_patch(&doc, &patch),
        Ok(format!(r#"{{"d":{value},"e":{value}}}"#))
    );
}

#[test]
fn results_never_nest_deeper_than_a_parse_would_allow() {
    let value = "[".repeat(127) + &"]".repeat(127);
    let doc = format!(r#"{{"d":{value}}}"#);
    assert_eq!(
        Document::parse(doc.as_bytes()).map(|d| d.to_bytes().len()),
        Ok(doc.len())
    );
    assert_eq!(
        json_patch(&doc, r#"[{"op":"copy","from":"/d","path":"/d/0"}]"#),
        Err(cannot(
            0,
            "/d/0",
            "the result would be nested deeper than 128 levels"
        ))
    );
    assert_eq!(
        json_patch(
            r#"{"a":{"b":[]}}"#,
            r#"[{"op":"copy","from":"","path":"/a/b/0"}]"#
        ),
        Ok(r#"{"a":{"b":[{"a":{"b":[]}}]}}"#.to_owned())
    );
}

#[test]
fn too_many_operations_is_refused_with_the_count() {
    let op = r#"{"op":"test","path":"","value":null}"#;
    let ops = |n: usize| format!("[{}]", vec![op; n].join(","));
    assert_eq!(
        Patch::parse(Format::JsonPatch, ops(3).as_bytes(), 3).map(|p| p.len()),
        Ok(3)
    );
    assert_eq!(
        Patch::parse(Format::JsonPatch, ops(4).as_bytes(), 3).map(|p| p.len()),
        Err(PatchError::TooManyOps { count: 4, max: 3 })
    );
    assert_eq!(
        Patch::parse(Format::JsonPatch, ops(100_000).as_bytes(), 1000).map(|p| p.len()),
        Err(PatchError::TooManyOps {
            count: 100_000,
            max: 1000
        })
    );
    assert_eq!(Patch::parse(Format::JsonPatch, b"[]", 0).map(|p| p.len()), Ok(0));
    assert_eq!(Patch::parse(Format::MergePatch, b"{}", 0).map(|p| p.len()), Ok(1));
}

#[test]
fn an_empty_json_patch_returns_the_document_as_it_was() {
    let patch = Patch::parse(Format::JsonPatch, b" [ ] ", MAX_OPS).expect("patch");
    assert!(patch.is_empty());
    assert_eq!(patch.format(), Format::JsonPatch);
    assert_eq!(json_patch("{ \"a\" : 1e2 }", "[]").as_deref(), Ok(r#"{"a":1e2}"#));
}

#[test]
fn results_larger_than_the_limit_are_refused() {
    let doc = Document::parse(br#"{"a":"0123456789"}"#).expect("doc");
    let copy = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"copy","from":"/a","path":"/b"}]"#,
        MAX_OPS,
    )
    .expect("patch");
    assert_eq!(applied(&copy, &doc, 35).map(|b| b.len()), Ok(35));
    assert_eq!(applied(&copy, &doc, 34), Err(PatchError::TooLarge { max: 34 }));
    let merge = Patch::parse(Format::MergePatch, br#"{"b":"0123456789"}"#, MAX_OPS).expect("patch");
    assert_eq!(applied(&merge, &doc, 34), Err(PatchError::TooLarge { max: 34 }));
    let whole = Patch::parse(Format::MergePatch, b"\"0123456789\"", MAX_OPS).expect("patch");
    assert_eq!(applied(&whole, &doc, 11), Err(PatchError::TooLarge { max: 11 }));
    assert_eq!(applied(&whole, &doc, 12).map(|b| b.len()), Ok(12));
}

#[test]
fn doubling_copies_stop_at_the_limit_without_building_the_result() {
    // Each op doubles the document; 1000 of them would need 2^1000 bytes.
    let op = r#"{"op":"copy","from":"/a","path":"/a/-"}"#;
    let patch = format!("[{}]", vec![op; 1000].join(","));
    let doc = Document::parse(br#"{"a":["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]}"#).expect("doc");
    let patch = Patch::parse(Format::JsonPatch, patch.as_bytes(), 1000).expect("patch");
    assert_eq!(
        applied(&patch, &doc, MAX_BYTES),
        Err(PatchError::TooLarge { max: MAX_BYTES })
    );
}

#[test]
fn removals_make_room_for_later_additions() {
    let big = "x".repeat(100);
    let doc_text = format!(r#"{{"a":"{big}"}}"#);
    let doc = Document::parse(doc_text.as_bytes()).expect("doc");
    let patch = format!(r#"[{{"op":"remove","path":"/a"}},{{"op":"add","path":"/b","value":"{big}"}}]"#);
    let patch = Patch::parse(Format::JsonPatch, patch.as_bytes(), MAX_OPS).expect("patch");
    assert_eq!(
        applied(&patch, &doc, doc_text.len()).map(|b| b.len()),
        Ok(doc_text.len())
    );
}

#[test]
fn document_round_trips_compactly_and_rejects_non_json() {
    let doc = Document::parse(b" {\"z\": [1E2, \"\\u00e9\"], \"a\": {} }\n").expect("doc");
    assert_eq!(&doc.to_bytes()[..], "{\"z\":[1E2,\"é\"],\"a\":{}}".as_bytes());
    assert_eq!(
        Document::parse(b"<html>").map(|d| d.to_bytes()),
        Err(PatchError::NotJson {
            detail: "expected a JSON value at line 1, column 1".into()
        })
    );
    assert_eq!(
        Document::parse(br#"{"a":{"b":[{"c":1,"c":2}]}}"#).map(|d| d.to_bytes()),
        Err(PatchError::DuplicateMember {
            name: "c".into(),
            path: "/a/b/0/c".into()
        })
    );
}

#[test]
fn format_from_content_type_ignores_case_and_parameters() {
    for (value, expected) in [
        (&b"application/json-patch+json"[..], Some(Format::JsonPatch)),
        (
            b"Application/JSON-Patch+JSON; charset=utf-8",
            Some(Format::JsonPatch),
        ),
        (b"application/merge-patch+json", Some(Format::MergePatch)),
        (
            b" application/merge-patch+json ;charset=UTF-8",
            Some(Format::MergePatch),
        ),
        (b"application/json", None),
        (b"application/json-patch+jsonx", None),
        (b"", None),
        (b"\xff\xfe", None),
    ] {
        assert_eq!(Format::from_content_type(value), expected, "{value:?}");
    }
    assert_eq!(Format::JsonPatch.media_type(), "application/json-patch+json");
    assert_eq!(Format::MergePatch.media_type(), "application/merge-patch+json");
}

#[test]
fn errors_display_a_human_detail() {
    assert_eq!(
        test_failed(2, "/a/b").to_string(),
        r#"test operation 2 failed: the value at "/a/b" is not the expected one"#
    );
    assert_eq!(
        cannot(1, "/x", r#"member "x" does not exist"#).to_string(),
        r#"operation 1 at "/x" cannot be applied: member "x" does not exist"#
    );
    assert_eq!(
        PatchError::TooManyOps { count: 5, max: 3 }.to_string(),
        "the patch has 5 operations; at most 3 are allowed"
    );
    assert_eq!(
        PatchError::TooLarge { max: 10 }.to_string(),
        "the patched document would be larger than 10 bytes"
    );
    assert_eq!(malformed("x").to_string(), "malformed patch: x");
    assert_eq!(
        PatchError::NotJson { detail: "y".into() }.to_string(),
        "the current representation is not JSON: y"
    );
}

#[test]
fn an_oversized_document_may_be_patched_down_to_the_limit() {
    let doc =
        Document::parse(br#"{"keep":1,"drop":"0123456789012345678901234567890123456789"}"#).expect("doc");
    let patch = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"test","path":"/keep","value":1},{"op":"remove","path":"/drop"}]"#,
        MAX_OPS,
    )
    .expect("patch");
    assert_eq!(
        applied(&patch, &doc, 20).map(|b| b.to_vec()),
        Ok(br#"{"keep":1}"#.to_vec())
    );
    let grow = Patch::parse(
        Format::JsonPatch,
        br#"[{"op":"add","path":"/x","value":1}]"#,
        MAX_OPS,
    )
    .expect("patch");
    assert_eq!(applied(&grow, &doc, 20), Err(PatchError::TooLarge { max: 20 }));
}
