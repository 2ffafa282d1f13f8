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
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
