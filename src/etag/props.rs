//! Property tests against small reference models written from RFC 9110 §8.8.3 and §5.6.1.

use super::*;
use proptest::prelude::*;

/// (weak, opaque) of one parsed tag.
type RefTag = (bool, Vec<u8>);

#[derive(Debug, PartialEq)]
enum RefCondition {
    Any,
    Tags(Vec<RefTag>),
}

fn ref_etagc(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x7e | 0x80..=0xff)
}

/// `entity-tag` at the start of `s`: the tag and what follows it.
fn ref_tag_prefix(s: &[u8]) -> Option<(RefTag, &[u8])> {
    let (weak, s) = match s {
        [b'W', b'/', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    let [b'"', rest @ ..] = s else { return None };
    let len = rest.iter().take_while(|&&b| ref_etagc(b)).count();
    match rest.get(len) {
        Some(b'"') => Some(((weak, rest[..len].to_vec()), &rest[len + 1..])),
        _ => None,
    }
}

fn ref_parse_tag(s: &[u8]) -> Option<RefTag> {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ows(b))?;
    let end = s.iter().rposition(|b| !ows(b))? + 1;
    match ref_tag_prefix(&s[start..end]) {
        Some((tag, [])) => Some(tag),
        _ => None,
    }
}

/// `If-Match = "*" / #entity-tag` over all lines: collect every element first, then
/// judge the whole list.
fn ref_condition(lines: &[&[u8]]) -> Result<RefCondition, ()> {
    enum El {
        Star,
        Tag(RefTag),
    }
    let mut elements = Vec::new();
    for line in lines {
        let mut rest: &[u8] = line;
        loop {
            while let [b' ' | b'\t' | b',', tail @ ..] = rest {
                rest = tail;
            }
            if rest.is_empty() {
                break;
            }
            if let [b'*', tail @ ..] = rest {
                elements.push(El::Star);
                rest = tail;
            } else {
                let (tag, tail) = ref_tag_prefix(rest).ok_or(())?;
                elements.push(El::Tag(tag));
                rest = tail;
            }
            while let [b' ' | b'\t', tail @ ..] = rest {
                rest = tail;
            }
            match rest {
                [] => break,
                [b',', tail @ ..] => rest = tail,
                _ => return Err(()),
            }
        }
    }
    let stars = elements.iter().filter(|e| matches!(e, El::Star)).count();
    match (stars, elements.len()) {
        (1, 1) => Ok(RefCondition::Any),
        (0, n) if n <= MAX_LISTED_TAGS => Ok(RefCondition::Tags(
            elements
                .into_iter()
                .filter_map(|e| match e {
                    El::Tag(t) => Some(t),
                    El::Star => None,
                })
                .collect(),
        )),
        _ => Err(()),
    }
}

/// Bytes built from pieces of the grammar, so that most inputs are valid or nearly so.
fn grammar_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces: &[&[u8]] = &[
        b"\"",
        b"W/",
        b"w/",
        b"*",
        b",",
        b" ",
        b"\t",
        b"a",
        b"v1",
        b"\xe9",
        b"\x7f",
        b"\x01",
        b"\"v1\"",
        b"W/\"v1\"",
        b"\"v2\"",
        b"W/\"\"",
        b"\"a,b\"",
    ];
    prop::collection::vec(prop::sample::select(pieces), 0..12).prop_map(|ps| ps.concat())
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![grammar_bytes(), prop::collection::vec(any::<u8>(), 0..24)]
}

fn ours(tag: &EntityTag) -> RefTag {
    (tag.is_weak(), tag.opaque().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_agrees_with_the_reference_and_round_trips(input in any_bytes()) {
        let parsed = EntityTag::parse(&input);
        prop_assert_eq!(parsed.as_ref().map(ours), ref_parse_tag(&input));
        if let Some(tag) = parsed {
            prop_assert_eq!(EntityTag::parse(tag.to_header_value().as_bytes()), Some(tag));
        }
    }

    #[test]
    fn every_valid_tag_parses_to_its_parts(
        weak in any::<bool>(),
        opaque in prop::collection::vec(any::<u8>().prop_filter("etagc", |b| ref_etagc(*b)), 0..16),
        before in "[ \t]{0,2}",
        after in "[ \t]{0,2}",
    ) {
        let mut input = before.into_bytes();
        if weak {
            input.extend_from_slice(b"W/");
        }
        input.push(b'"');
        input.extend_from_slice(&opaque);
        input.push(b'"');
        input.extend_from_slice(after.as_bytes());
        let tag = EntityTag::parse(&input).expect("a valid tag");
        prop_assert_eq!(ours(&tag), (weak, opaque));
    }

    #[test]
    fn constructors_accept_exactly_etagc(text in "\\PC{0,8}|[ -~]{0,8}") {
        let valid = text.bytes().all(ref_etagc);
        let strong = EntityTag::strong(&text);
        prop_assert_eq!(strong.is_some(), valid);
        if let Some(tag) = strong {
            prop_assert_eq!(ours(&tag), (false, text.as_bytes().to_vec()));
            prop_assert_eq!(EntityTag::parse(tag.to_string().as_bytes()), Some(tag));
        }
    }

    #[test]
    fn condition_agrees_with_the_reference_and_scan_with_parse(
        // Only what a client can send: a header value holds no control bytes but HTAB.
        lines in prop::collection::vec(
            any_bytes().prop_map(|l| l.into_iter().filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)).collect::<Vec<u8>>()),
            1..4,
        ),
    ) {
        let values: Vec<HeaderValue> = lines.iter().map(|l| HeaderValue::from_bytes(l).unwrap()).collect();
        let raw: Vec<&[u8]> = values.iter().map(HeaderValue::as_bytes).collect();
        let parsed = parse_condition(&values);
        let expected = ref_condition(&raw);
        match (&parsed, &expected) {
            (Ok(TagCondition::Any), Ok(RefCondition::Any)) | (Err(Malformed), Err(())) => {}
            (Ok(TagCondition::Tags(list)), Ok(RefCondition::Tags(reference))) => {
                prop_assert_eq!(&list.iter().map(ours).collect::<Vec<_>>(), reference);
            }
            _ => prop_assert!(false, "{:?} but the reference says {:?}", parsed, expected),
        }
        let currents = [EntityTag::strong("v1"), EntityTag::weak("v1"), EntityTag::strong("")];
        for current in currents.iter().map(Option::as_ref).chain([None]) {
            for comparison in [Comparison::Strong, Comparison::Weak] {
                let scanned = scan_condition(&values, current, comparison);
                let from_list = parsed.clone().map(|c| match c {
                    TagCondition::Any => Scan::Any,
                    TagCondition::Tags(list) => Scan::Listed {
                        matched: current.is_some_and(|cur| list.iter().any(|t| match comparison {
                            Comparison::Strong => cur.strong_eq(t),
                            Comparison::Weak => cur.weak_eq(t),
                        })),
                    },
                });
                prop_assert_eq!(scanned, from_list, "{:?} {:?}", current, comparison);
            }
        }
    }
}
