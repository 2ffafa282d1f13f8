//! Entity tags: parsing, rendering and comparison (RFC 9110 §8.8.3), and the tag lists of
//! `If-Match` / `If-None-Match` (RFC 9110 §13.1.1, §13.1.2).
//!
//! Invariant: an [`EntityTag`] only ever holds valid `etagc` characters, so rendering it as
//! a header value cannot fail. Parsing is linear in the input, never panics, and keeps at
//! most [`MAX_LISTED_TAGS`] tags from one field.

use http::HeaderValue;
use std::fmt;

/// Most tags one `If-Match` / `If-None-Match` field may list; a longer list is
/// [`Malformed`]. Real clients send one or a few; the bound caps the work a hostile request
/// can cause.
pub const MAX_LISTED_TAGS: usize = 256;

/// An entity tag (RFC 9110 §8.8.3): a weak flag and an opaque string of `etagc` octets
/// (`%x21 / %x23-7E / obs-text`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntityTag {
    // The rendered form (`"x"` or `W/"x"`), kept so that every response can send the tag
    // without allocating; weakness and opaque part are read back from it.
    value: HeaderValue,
}

impl EntityTag {
    /// A strong tag; `None` if `opaque` holds a character that is not `etagc`.
    pub fn strong(opaque: &str) -> Option<EntityTag> {
        Self::checked(false, opaque.as_bytes())
    }

    /// A weak tag; `None` if `opaque` holds a character that is not `etagc`.
    pub fn weak(opaque: &str) -> Option<EntityTag> {
        Self::checked(true, opaque.as_bytes())
    }

    /// A strong tag from BLAKE3 of the exact bytes (SPEC `etag = "hash"`): the same bytes
    /// give the same tag on every instance and after restarts. 128 bits as 32 hex digits.
    pub fn from_body(body: &[u8]) -> EntityTag {
        let value = HeaderValue::from_bytes(&Self::render_hash(body))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        EntityTag { value }
    }

    /// The rendered form of [`EntityTag::from_body`], without allocating: `"` and the
    /// first 16 bytes of the body's BLAKE3 hash in lowercase hex, then `"`.
    pub fn render_hash(body: &[u8]) -> [u8; 34] {
        let hash = blake3::hash(body);
        let mut rendered = [b'"'; 34];
        let digits = hash
            .as_bytes()
            .iter()
            .flat_map(|byte| [hex_digit(byte >> 4), hex_digit(byte & 0x0f)]);
        for (place, digit) in rendered.iter_mut().skip(1).take(32).zip(digits) {
            *place = digit;
        }
        rendered
    }

    /// What [`EntityTag::parse`] accepts, checked without allocating: whether the tag
    /// is weak, and its rendered form (`value` without surrounding whitespace).
    pub fn rendered_in(value: &[u8]) -> Option<(bool, &[u8])> {
        let trimmed = trim_ows(value);
        match parse_element(trimmed, 0) {
            Ok((Element::Tag { weak, .. }, end)) if end == trimmed.len() => Some((weak, trimmed)),
            _ => None,
        }
    }

    /// The tag whose rendered form is exactly `value` (no surrounding whitespace).
    pub fn from_rendered(value: &[u8]) -> Option<EntityTag> {
        let (_, rendered) = Self::rendered_in(value)?;
        if rendered.len() != value.len() {
            return None;
        }
        HeaderValue::from_bytes(value)
            .ok()
            .map(|value| EntityTag { value })
    }

    /// Parses one `entity-tag` (RFC 9110 §8.8.3), e.g. an upstream's `ETag` field:
    /// `"abc"` or `W/"abc"` with optional surrounding whitespace. Anything else, including
    /// an unquoted tag or a lowercase `w/`, is `None`.
    pub fn parse(value: &[u8]) -> Option<EntityTag> {
        let trimmed = trim_ows(value);
        match parse_element(trimmed, 0) {
            Ok((Element::Tag { weak, opaque }, end)) if end == trimmed.len() => Self::unchecked(weak, opaque),
            _ => None,
        }
    }

    pub fn is_weak(&self) -> bool {
        self.value.as_bytes().starts_with(b"W/")
    }

    /// The opaque part, without quotes or weak prefix.
    pub fn opaque(&self) -> &[u8] {
        let bytes = self.value.as_bytes();
        let start = if self.is_weak() { 3 } else { 1 };
        bytes
            .get(start..bytes.len().saturating_sub(1))
            .unwrap_or_default()
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and the same opaque part.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        Comparison::Strong.matches(self, other.is_weak(), other.opaque())
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the same opaque part, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        Comparison::Weak.matches(self, other.is_weak(), other.opaque())
    }

    /// The field value `"x"` or `W/"x"`; a cheap clone.
    pub fn to_header_value(&self) -> HeaderValue {
        self.value.clone()
    }

    /// The field value, without a clone.
    pub fn into_header_value(self) -> HeaderValue {
        self.value
    }

    fn checked(weak: bool, opaque: &[u8]) -> Option<EntityTag> {
        if opaque.iter().all(|&b| is_etagc(b)) {
            Self::unchecked(weak, opaque)
        } else {
            None
        }
    }

    /// `opaque` must already be known to hold only `etagc`.
    fn unchecked(weak: bool, opaque: &[u8]) -> Option<EntityTag> {
        let prefix: &[u8] = if weak { b"W/\"" } else { b"\"" };
        let mut rendered = Vec::with_capacity(prefix.len() + opaque.len() + 1);
        rendered.extend_from_slice(prefix);
        rendered.extend_from_slice(opaque);
        rendered.push(b'"');
        // Cannot fail for etagc octets; `ok()` keeps that a non-panicking fact.
        HeaderValue::try_from(rendered)
            .ok()
            .map(|value| EntityTag { value })
    }
}

/// Renders `"x"` or `W/"x"`. An opaque part of obs-text that is not UTF-8 is rendered
/// lossily; [`EntityTag::to_header_value`] keeps the exact octets.
impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.value.as_bytes()))
    }
}

/// A parsed `If-Match` / `If-None-Match` field (RFC 9110 §13.1.1, §13.1.2): `*` or a
/// list of tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagCondition {
    Any,
    Tags(Vec<EntityTag>),
}

/// The field is not `"*" / #entity-tag`, or lists more than [`MAX_LISTED_TAGS`] tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses an `If-Match` / `If-None-Match` field from all its lines, combined into one list
/// (RFC 9110 §5.3). Empty list elements are skipped (§5.6.1); `*` mixed with anything,
/// an unquoted tag or more than [`MAX_LISTED_TAGS`] tags is [`Malformed`]. A field whose
/// lines hold no element at all is `Tags(vec![])`, which no tag matches.
pub fn parse_condition<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<TagCondition, Malformed> {
    let mut tags = Vec::new();
    let any = walk(values, |weak, opaque| {
        tags.push(EntityTag::unchecked(weak, opaque).ok_or(Malformed)?);
        Ok(())
    })?;
    Ok(if any {
        TagCondition::Any
    } else {
        TagCondition::Tags(tags)
    })
}

/// How a listed tag is compared with the current one (RFC 9110 §8.8.3.2): strong for
/// `If-Match`, weak for `If-None-Match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Strong,
    Weak,
}

impl Comparison {
    fn matches(self, current: &EntityTag, listed_weak: bool, listed_opaque: &[u8]) -> bool {
        let weakness_ok = match self {
            Comparison::Strong => !listed_weak && !current.is_weak(),
            Comparison::Weak => true,
        };
        weakness_ok && current.opaque() == listed_opaque
    }
}

/// What [`scan_condition`] found in a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The field is `*`.
    Any,
    /// The field is a list; `matched` says whether a listed tag matches the current one.
    Listed { matched: bool },
}

/// Evaluates an `If-Match` / `If-None-Match` field against `current` in one pass without
/// building the list (the hot path of every conditional request). The whole field is
/// validated, so a malformed tail is [`Malformed`] even after a match. `None` as the
/// current tag matches nothing.
pub fn scan_condition<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    current: Option<&EntityTag>,
    comparison: Comparison,
) -> Result<Scan, Malformed> {
    let mut matched = false;
    let any = walk(values, |weak, opaque| {
        matched = matched || current.is_some_and(|c| comparison.matches(c, weak, opaque));
        Ok(())
    })?;
    Ok(if any { Scan::Any } else { Scan::Listed { matched } })
}

/// Walks every element of every line, enforcing the field grammar and the tag bound;
/// returns whether the field is `*`.
fn walk<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    mut on_tag: impl FnMut(bool, &'a [u8]) -> Result<(), Malformed>,
) -> Result<bool, Malformed> {
    let mut any = false;
    let mut count = 0usize;
    for value in values {
        let bytes = value.as_bytes();
        let mut pos = 0;
        while let Some(start) = next_element(bytes, pos) {
            let (element, end) = parse_element(bytes, start)?;
            pos = after_element(bytes, end)?;
            match element {
                Element::Any if !any && count == 0 => any = true,
                Element::Tag { weak, opaque } if !any && count < MAX_LISTED_TAGS => {
                    count += 1;
                    on_tag(weak, opaque)?;
                }
                Element::Any | Element::Tag { .. } => return Err(Malformed),
            }
        }
    }
    Ok(any)
}

enum Element<'a> {
    Any,
    Tag { weak: bool, opaque: &'a [u8] },
}

/// Skips whitespace and empty list elements; the start of the next element, if any.
fn next_element(bytes: &[u8], pos: usize) -> Option<usize> {
    let rest = bytes.get(pos..)?;
    let skipped = rest.iter().position(|&b| b != b' ' && b != b'\t' && b != b',')?;
    Some(pos + skipped)
}

/// After an element only whitespace, then a comma or the end, may follow.
fn after_element(bytes: &[u8], mut pos: usize) -> Result<usize, Malformed> {
    while let Some(&b) = bytes.get(pos) {
        match b {
            b' ' | b'\t' => pos += 1,
            b',' => return Ok(pos + 1),
            _ => return Err(Malformed),
        }
    }
    Ok(pos)
}

/// Parses `*` or `entity-tag` starting exactly at `start`; returns it and the index after.
fn parse_element(bytes: &[u8], start: usize) -> Result<(Element<'_>, usize), Malformed> {
    let rest = bytes.get(start..).unwrap_or_default();
    if rest.first() == Some(&b'*') {
        return Ok((Element::Any, start + 1));
    }
    // `W/` is case-sensitive (RFC 9110 §8.8.3: %s"W/"), and no whitespace may follow it.
    let (weak, quoted) = match rest.strip_prefix(b"W/") {
        Some(after) => (true, after),
        None => (false, rest),
    };
    let body = quoted.strip_prefix(b"\"").ok_or(Malformed)?;
    let len = body.iter().position(|&b| !is_etagc(b)).ok_or(Malformed)?;
    if body.get(len) != Some(&b'"') {
        return Err(Malformed);
    }
    let opaque = body.get(..len).unwrap_or_default();
    let consumed = rest.len() - body.len() + len + 1;
    Ok((Element::Tag { weak, opaque }, start + consumed))
}

fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn hex_digit(nibble: u8) -> u8 {
    let n = nibble & 0x0f;
    if n < 10 { b'0' + n } else { b'a' + n - 10 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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
}

/// Property tests against small reference models written from RFC 9110 §8.8.3 and §5.6.1.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props {
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
}
