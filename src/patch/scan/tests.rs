//! The scan's unit tests.

use super::words::{fingerprint, special};
use super::*;
use crate::patch::json::to_vec_in;

fn path(p: &str) -> Path {
    p.split('/').skip(1).map(str::to_owned).collect()
}

#[test]
fn special_bytes_are_found_in_any_lane() {
    for lane in 0..8 {
        for byte in [b'"', b'\\', 0, 0x1f] {
            let mut word = [b'a'; 8];
            word[lane] = byte;
            assert_eq!(special(u64::from_le_bytes(word)), lane, "{byte} at {lane}");
            // Whatever follows the first one.
            for later in lane + 1..8 {
                word[later] = [b'"', 0, 0x80, b'\\'][later % 4];
            }
            assert_eq!(special(u64::from_le_bytes(word)), lane, "{byte} at {lane}");
        }
    }
    assert_eq!(special(u64::from_le_bytes(*b"az AZ~\x7f\xff")), 8);
    assert_eq!(
        special(u64::from_le_bytes(*b"\x20\x21\x23\x5b\x5d\x80\xc3\xa9")),
        8
    );
    assert_eq!(
        special(u64::from_le_bytes(*b"\xff\xa0\x9f\x80\x7f\x60\x5c\x00")),
        6
    );
    // The name is the `len` bytes after the opening quote; what follows varies.
    let print = |text: &[u8], len: usize| fingerprint(text, 1, 1 + len);
    assert_eq!(print(b"\"abc\":1", 3), print(b"\"abc\":2", 3));
    assert_eq!(print(b"\"abc\"", 3), print(b"\"abc\":{\"x\":1}", 3));
    assert_ne!(print(b"\"abc\"", 3), print(b"\"abc\\u0000\"", 9));
    assert_ne!(print(b"\"abcdefg\"", 7), print(b"\"abcdefgh\"", 8));
    assert_eq!(
        print(b"\"abcdefghX\"", 9),
        print(b"\"abcdefghY\"", 9),
        "a print, not an identity"
    );
}

#[test]
fn compact_valid_documents_are_indexed_and_written_back_unchanged() {
    for text in [
        r#"{"a":[1,{"b":"x\"y\\z\n\u0001"}],"c":{},"d":[],"e":-0.5e+3,"f":null,"g":true}"#,
        r#"[1e2,1E-2,0,"é😀",false]"#,
        r#""just a string""#,
        "12345678901234567890123",
    ] {
        let root = index(text.as_bytes(), &[path("/a/1/b"), path("/c")]).unwrap();
        assert_eq!(
            to_vec_in(&root, text.as_bytes(), usize::MAX, 0).unwrap(),
            text.as_bytes()
        );
    }
    let root = index(br#"{"a":{"b":[0,{"c":1}]}}"#, &[path("/a/b/1/c")]).unwrap();
    let Json::Object(obj) = root else { panic!() };
    let Some(Json::Object(a)) = obj.get("a") else {
        panic!()
    };
    let Some(Json::Array(b)) = a.get("b") else {
        panic!()
    };
    assert!(matches!(b.first(), Some(Json::Raw(_))));
    assert!(matches!(b.get(1), Some(Json::Object(_))));
}

#[test]
fn anything_the_tree_path_would_write_differently_or_reject_declines() {
    for text in [
        " {}",
        "{} ",
        r#"{"a": 1}"#,
        "[1, 2]",
        r#""\/""#,
        r#""\u0041""#,
        r#""\u000a""#,
        r#""\u001F""#,
        r#""\ud83d\ude00""#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":{"x":1,"x":1}}"#,
        "[1,]",
        "01",
        "1.",
        "-",
        "nul",
        "\"\u{1}\"",
        "[",
        "",
        "\"abc",
    ] {
        assert!(index(text.as_bytes(), &[]).is_err(), "{text:?}");
        assert!(index(text.as_bytes(), &[path("/a/x")]).is_err(), "{text:?}");
    }
    assert!(index(b"\"\xff\"", &[]).is_err());
    let many: String = (0..20).map(|i| format!("\"k{i}\":{i},")).collect();
    assert!(index(format!("{{{many}\"k3\":0}}").as_bytes(), &[]).is_err());
    assert!(index(format!("{{{many}\"k\":0}}").as_bytes(), &[]).is_ok());
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    assert!(index(deep(MAX_DEPTH).as_bytes(), &[]).is_ok());
    assert!(index(deep(MAX_DEPTH + 1).as_bytes(), &[]).is_err());
    let zeros = vec!["0"; MAX_DEPTH + 1].join("/");
    assert!(index(deep(MAX_DEPTH + 1).as_bytes(), &[path(&format!("/{zeros}"))]).is_err());
}

#[test]
fn several_paths_through_one_container_each_reach_their_child() {
    let text = br#"{"a":[{"x":0},{"x":1},{"x":2,"y":[3]}],"b":{"c":{"d":4}}}"#;
    let paths = ["/a/2/y/0", "/b/c/d", "/a/0/x", "/a/2/x", "/b/c/e"].map(path);
    let Json::Object(root) = index(text, &paths).unwrap() else {
        panic!()
    };
    let Some(Json::Array(a)) = root.get("a") else {
        panic!()
    };
    let kinds: Vec<bool> = a.iter().map(|v| matches!(v, Json::Object(_))).collect();
    assert_eq!(kinds, [true, false, true]);
    let Some(Json::Object(two)) = a.get(2) else {
        panic!()
    };
    assert!(matches!(two.get("y"), Some(Json::Array(_))));
    let Some(Json::Object(b)) = root.get("b") else {
        panic!()
    };
    assert!(matches!(b.get("c"), Some(Json::Object(_))));
}

#[test]
fn escaped_names_decode_and_raw_depth_is_counted() {
    let text = br#"{"a\"\n\u0001":[[{}]]}"#;
    let root = index(text, &[path("/x")]).unwrap();
    let Json::Object(obj) = root else { panic!() };
    let Some(Json::Raw(raw)) = obj.get("a\"\n\u{1}") else {
        panic!()
    };
    assert_eq!(raw.depth, 3);
}

#[test]
fn multi_byte_characters_stop_only_the_validating_run() {
    use super::words::special_or_high;
    for lane in 0..8 {
        for byte in [0x80, 0xc3, 0xff] {
            let mut word = [b'a'; 8];
            word[lane] = byte;
            assert_eq!(
                special_or_high(u64::from_le_bytes(word)),
                lane,
                "{byte} at {lane}"
            );
            assert_eq!(special(u64::from_le_bytes(word)), 8, "{byte} at {lane}");
        }
    }
    assert_eq!(special_or_high(u64::from_le_bytes(*b"az AZ~\x7f ")), 8);
}

#[test]
fn a_document_is_indexed_only_when_it_is_utf8() {
    let valid: [&[u8]; 5] = [
        "{\"é\":\"naïve café — 東京 😀\",\"n\":1}".as_bytes(),
        "[\"ü\\\"ü\\\\ü\\nü\",\"😀😀😀😀😀😀😀😀\"]".as_bytes(),
        "\"long ascii before the character: é\"".as_bytes(),
        "\"ééééééééééééééééééééééé\"".as_bytes(),
        "{\"a\":\"\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}\"}".as_bytes(),
    ];
    let invalid: [&[u8]; 9] = [
        b"\"\x80\"",
        b"\"abc\xc3\"",
        b"\"abc\xc3\\n\"",
        b"\"\xc0\xaf\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"12345678\xe6\x9d\"",
        b"{\"\xff\":1}",
        b"[1,\xc3\xa9]",
    ];
    for text in valid {
        assert!(std::str::from_utf8(text).is_ok());
        let root = index(text, &[]).unwrap();
        assert_eq!(to_vec_in(&root, text, usize::MAX, 0).unwrap(), text);
    }
    for text in invalid {
        assert!(index(text, &[]).is_err(), "{text:?}");
        assert!(index(text, &[path("/a")]).is_err(), "{text:?}");
    }
}
