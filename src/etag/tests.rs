use super::*;

fn tag(text: &str) -> EntityTag {
    EntityTag::parse(text.as_bytes()).unwrap()
}

fn condition(lines: &[&[u8]]) -> Result<TagCondition, Malformed> {
    let values: Vec<HeaderValue> = lines
        .iter()
        .map(|l| HeaderValue::from_bytes(l).unwrap())
        .collect();
    parse_condition(&values)
}

fn tags(texts: &[&str]) -> Result<TagCondition, Malformed> {
    Ok(TagCondition::Tags(texts.iter().map(|t| tag(t)).collect()))
}

#[test]
fn comparison_follows_rfc_9110_example_table() {
    // RFC 9110 §8.8.3.2: (a, b, strong, weak).
    let rows = [
        (r#"W/"1""#, r#"W/"1""#, false, true),
        (r#"W/"1""#, r#"W/"2""#, false, false),
        (r#"W/"1""#, r#""1""#, false, true),
        (r#""1""#, r#""1""#, true, true),
    ];
    for (a, b, strong, weak) in rows {
        let (a, b) = (tag(a), tag(b));
        assert_eq!(a.strong_eq(&b), strong, "{a} strong {b}");
        assert_eq!(b.strong_eq(&a), strong, "{b} strong {a}");
        assert_eq!(a.weak_eq(&b), weak, "{a} weak {b}");
        assert_eq!(b.weak_eq(&a), weak, "{b} weak {a}");
    }
}

#[test]
fn parse_accepts_strong_weak_empty_and_surrounding_whitespace() {
    let rows: [(&[u8], bool, &[u8]); 6] = [
        (b"\"abc\"", false, b"abc"),
        (b"W/\"abc\"", true, b"abc"),
        (b" \t\"abc\"\t ", false, b"abc"),
        (b"\"\"", false, b""),
        (b"W/\"\"", true, b""),
        (b"\"!#~/W\"", false, b"!#~/W"),
    ];
    for (input, weak, opaque) in rows {
        let parsed = EntityTag::parse(input).unwrap();
        assert_eq!(parsed.is_weak(), weak);
        assert_eq!(parsed.opaque(), opaque);
    }
}

#[test]
fn parse_keeps_obs_text_octets_exactly() {
    let parsed = EntityTag::parse(b"\"a\x80\xffb\"").unwrap();
    assert_eq!(parsed.opaque(), b"a\x80\xffb");
    assert_eq!(parsed.to_header_value().as_bytes(), b"\"a\x80\xffb\"");
}

#[test]
fn parse_rejects_anything_but_one_entity_tag() {
    let rows: [&[u8]; 19] = [
        b"",
        b"   ",
        b"abc",
        b"W/abc",
        b"W/",
        b"w/\"x\"",
        b"W/ \"x\"",
        b"W /\"x\"",
        b"\"abc",
        b"\"",
        b"\"a\"b\"",
        b"\"a b\"",
        b"\"a\tb\"",
        b"\"a\x01\"",
        b"\"a\x7f\"",
        b"*",
        b"\"a\", \"b\"",
        b"\"a\",",
        b"\"a\"\"b\"",
    ];
    for input in rows {
        assert_eq!(
            EntityTag::parse(input),
            None,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn constructors_reject_non_etagc_and_accept_utf8() {
    assert_eq!(EntityTag::strong("a\"b"), None);
    assert_eq!(EntityTag::strong("a b"), None);
    assert_eq!(EntityTag::weak("a\u{7f}"), None);
    assert_eq!(EntityTag::weak("a\nb"), None);
    assert_eq!(EntityTag::strong("é").unwrap().to_string(), "\"é\"");
    assert_eq!(EntityTag::strong("").unwrap().to_string(), "\"\"");
}

#[test]
fn rendering_is_quoted_with_weak_prefix() {
    let strong = EntityTag::strong("v1").unwrap();
    let weak = EntityTag::weak("v1").unwrap();
    assert_eq!(strong.to_string(), "\"v1\"");
    assert_eq!(weak.to_string(), "W/\"v1\"");
    assert_eq!(strong.to_header_value(), HeaderValue::from_static("\"v1\""));
    assert_eq!(weak.to_header_value(), HeaderValue::from_static("W/\"v1\""));
    assert_eq!(tag("W/\"v1\""), weak);
    assert_ne!(strong, weak);
}

#[test]
fn from_body_is_stable_short_strong_and_distinct() {
    let a = EntityTag::from_body(b"{\"a\":1}");
    assert_eq!(a, EntityTag::from_body(b"{\"a\":1}"));
    assert_ne!(a, EntityTag::from_body(b"{\"a\": 1}"));
    assert!(!a.is_weak());
    assert_eq!(a.opaque().len(), 32);
    assert_eq!(EntityTag::parse(a.to_header_value().as_bytes()), Some(a));
}

#[test]
fn from_body_golden_values_never_change() {
    // Tags must survive upgrades: a changed value would invalidate every client's tag.
    assert_eq!(
        EntityTag::from_body(b"").to_string(),
        "\"af1349b9f5f9a1a6a0404dea36dcc949\""
    );
    assert_eq!(
        EntityTag::from_body(b"hello").to_string(),
        "\"ea8f163db38682925e4491c5e58d4bb3\""
    );
}

#[test]
fn condition_star_is_any() {
    assert_eq!(condition(&[b"*"]), Ok(TagCondition::Any));
    assert_eq!(condition(&[b" * , "]), Ok(TagCondition::Any));
}

#[test]
fn condition_skips_empty_elements_and_whitespace() {
    let expected = tags(&["\"a\"", "W/\"b\""]);
    assert_eq!(condition(&[b"\"a\", , W/\"b\""]), expected);
    assert_eq!(condition(&[b",\"a\",,\tW/\"b\" ,,"]), expected);
    assert_eq!(condition(&[b"\"a\",W/\"b\""]), expected);
    assert_eq!(condition(&[b""]), tags(&[]));
    assert_eq!(condition(&[b" , ,"]), tags(&[]));
}

#[test]
fn condition_combines_lines_in_order() {
    assert_eq!(
        condition(&[b"\"a\"", b"\"b\", \"c\""]),
        tags(&["\"a\"", "\"b\"", "\"c\""])
    );
}

#[test]
fn condition_keeps_obs_text_tags() {
    let TagCondition::Tags(list) = condition(&[b"\"\xe9\", W/\"\x80\xff\""]).unwrap() else {
        panic!("not a list")
    };
    let opaques: Vec<(bool, &[u8])> = list.iter().map(|t| (t.is_weak(), t.opaque())).collect();
    assert_eq!(opaques, [(false, &b"\xe9"[..]), (true, &b"\x80\xff"[..])]);
}

#[test]
fn condition_rejects_hostile_fields() {
    let rows: [&[&[u8]]; 14] = [
        &[b"*, \"a\""],
        &[b"\"a\", *"],
        &[b"*, *"],
        &[b"*", b"*"],
        &[b"*", b"\"a\""],
        &[b"abc"],
        &[b"\"a\", abc"],
        &[b"\"abc"],
        &[b"\"a\", \"b"],
        &[b"W/"],
        &[b"w/\"x\""],
        &[b"\"a\" \"b\""],
        &[b"\"a\tb\""],
        &[b"\"a\"", b"b"],
    ];
    for lines in rows {
        assert_eq!(condition(lines), Err(Malformed), "{lines:?}");
    }
}

#[test]
fn condition_keeps_at_most_256_tags() {
    let list = |n: usize| vec!["\"t\""; n].join(", ");
    let TagCondition::Tags(kept) = condition(&[list(256).as_bytes()]).unwrap() else {
        panic!("not a list")
    };
    assert_eq!(kept.len(), 256);
    assert_eq!(condition(&[list(257).as_bytes()]), Err(Malformed));
    assert_eq!(
        condition(&[list(200).as_bytes(), list(57).as_bytes()]),
        Err(Malformed)
    );
}

#[test]
fn condition_with_100k_tags_is_malformed_not_slow() {
    let huge = vec!["W/\"0123456789\""; 100_000].join(",");
    assert_eq!(condition(&[huge.as_bytes()]), Err(Malformed));
    let current = tag("\"x\"");
    let values = [HeaderValue::from_str(&huge).unwrap()];
    assert_eq!(
        scan_condition(&values, Some(&current), Comparison::Weak),
        Err(Malformed)
    );
}

#[test]
fn condition_with_100k_empty_elements_is_an_empty_list() {
    assert_eq!(condition(&[",".repeat(100_000).as_bytes()]), tags(&[]));
}

#[test]
fn scan_compares_strongly_or_weakly() {
    let values = |s: &'static str| [HeaderValue::from_static(s)];
    let strong = tag("\"v1\"");
    let weak = tag("W/\"v1\"");
    let rows = [
        (
            "\"v0\", \"v1\"",
            Some(&strong),
            Comparison::Strong,
            Ok(Scan::Listed { matched: true }),
        ),
        (
            "W/\"v1\"",
            Some(&strong),
            Comparison::Strong,
            Ok(Scan::Listed { matched: false }),
        ),
        (
            "\"v1\"",
            Some(&weak),
            Comparison::Strong,
            Ok(Scan::Listed { matched: false }),
        ),
        (
            "W/\"v1\"",
            Some(&strong),
            Comparison::Weak,
            Ok(Scan::Listed { matched: true }),
        ),
        (
            "\"v1\"",
            Some(&weak),
            Comparison::Weak,
            Ok(Scan::Listed { matched: true }),
        ),
        (
            "\"v1\"",
            None,
            Comparison::Weak,
            Ok(Scan::Listed { matched: false }),
        ),
        ("*", None, Comparison::Strong, Ok(Scan::Any)),
        ("\"v1\", v2", Some(&strong), Comparison::Strong, Err(Malformed)),
    ];
    for (field, current, comparison, expected) in rows {
        assert_eq!(
            scan_condition(&values(field), current, comparison),
            expected,
            "{field}"
        );
    }
}
