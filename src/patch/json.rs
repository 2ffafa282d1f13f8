//! A JSON tree that keeps what a generic value would change: member order and the exact
//! spelling of every number (RFC 8259), so a PATCH changes only what it names.
//!
//! serde_json with `arbitrary_precision` still rewrites `1e2` as `1e+2` and `1E2` as `1e+2`,
//! and its `Map::remove` reorders members, hence this tree, its writer here and its parser
//! in [`super::parse`].
//! Invariant: no tree is nested deeper than [`MAX_DEPTH`], so every recursive walk here
//! (clone, drop, compare, write) is bounded.

/// Deepest nesting of arrays and objects accepted (serde_json's default limit is 127).
pub(super) const MAX_DEPTH: usize = 128;

/// Short text (up to 24 bytes: most member names, numbers and values) lives inline, so a
/// parse does not allocate for it; parsing and dropping whole documents is the write
/// path's main cost.
pub(super) type Text = compact_str::CompactString;

#[derive(Debug, Clone)]
pub(super) enum Json {
    Null,
    Bool(bool),
    /// The number exactly as written; valid RFC 8259 §6 grammar.
    Number(Text),
    String(Text),
    Array(Vec<Json>),
    Object(Object),
    /// A value left as it is in the source document of an indexed [`super::Document`]
    /// (the fast path, [`super::scan`]): validated, in compact form, not yet needed as a tree.
    Raw(Raw),
}

/// A span of the indexed source: `len` bytes from `start`, whose first byte is `first`,
/// nested `depth` levels (0 for a scalar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Raw {
    pub(super) start: u32,
    pub(super) len: u32,
    pub(super) depth: u8,
    pub(super) first: u8,
}

impl Raw {
    pub(super) fn range(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }

    pub(super) fn is_container(self) -> bool {
        matches!(self.first, b'{' | b'[')
    }
}

impl Json {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
            Json::Raw(raw) => match raw.first {
                b'n' => "null",
                b't' | b'f' => "boolean",
                b'"' => "string",
                b'[' => "array",
                b'{' => "object",
                _ => "number",
            },
        }
    }

    /// Nesting of arrays and objects: 0 for a scalar.
    pub(super) fn depth(&self) -> usize {
        match self {
            Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Object(obj) => 1 + obj.values().map(Json::depth).max().unwrap_or(0),
            Json::Raw(raw) => usize::from(raw.depth),
            _ => 0,
        }
    }
}

/// Object members in document order, names unique.
#[derive(Debug, Clone, Default)]
pub(super) struct Object(Vec<(Text, Json)>);

impl Object {
    pub(super) fn from_members(members: Vec<(Text, Json)>) -> Object {
        Object(members)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn values(&self) -> impl Iterator<Item = &Json> {
        self.0.iter().map(|(_, v)| v)
    }

    pub(super) fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k == key)
    }

    pub(super) fn get(&self, key: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(super) fn value_at_mut(&mut self, index: usize) -> Option<&mut Json> {
        self.0.get_mut(index).map(|(_, v)| v)
    }

    /// Replaces the value in place when the name exists (its position is kept), else appends.
    pub(super) fn insert(&mut self, key: &str, value: Json) -> Option<Json> {
        match self.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((key.into(), value));
                None
            }
        }
    }

    pub(super) fn push(&mut self, key: Text, value: Json) {
        self.0.push((key, value));
    }

    /// Removes a member keeping the others in order (never a swap-remove).
    pub(super) fn remove(&mut self, key: &str) -> Option<Json> {
        let index = self.position(key)?;
        Some(self.0.remove(index).1)
    }

    /// Keeps the members whose index `keep` accepts, in order.
    pub(super) fn retain_indices(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut index = 0;
        self.0.retain(|_| {
            let kept = keep(index);
            index += 1;
            kept
        });
    }
}

/// The output went past its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Overflow;

trait Sink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow>;
}

struct Limited<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
}

impl Sink for Limited<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        if self.out.len().saturating_add(bytes.len()) > self.limit {
            return Err(Overflow);
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

struct Count {
    n: usize,
    limit: usize,
}

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.n = self.n.saturating_add(bytes.len());
        if self.n > self.limit {
            Err(Overflow)
        } else {
            Ok(())
        }
    }
}

/// Compact RFC 8259 text, numbers as written; `Overflow` past `limit` bytes.
pub(super) fn to_vec(value: &Json, limit: usize, capacity: usize) -> Result<Vec<u8>, Overflow> {
    to_vec_in(value, &[], limit, capacity)
}

/// [`to_vec`] of a value whose [`Raw`] parts are spans of `src`, copied verbatim.
pub(super) fn to_vec_in(
    value: &Json,
    src: &[u8],
    limit: usize,
    capacity: usize,
) -> Result<Vec<u8>, Overflow> {
    let mut out = Vec::with_capacity(capacity.min(limit));
    write(&mut Limited { out: &mut out, limit }, value, src)?;
    Ok(out)
}

/// The length of [`to_vec`]'s output, counting stopped past `limit`.
pub(super) fn encoded_len(value: &Json, limit: usize) -> Result<usize, Overflow> {
    encoded_len_in(value, &[], limit)
}

/// [`encoded_len`] of a value whose [`Raw`] parts are spans of `src`.
pub(super) fn encoded_len_in(value: &Json, src: &[u8], limit: usize) -> Result<usize, Overflow> {
    let mut count = Count { n: 0, limit };
    write(&mut count, value, src)?;
    Ok(count.n)
}

/// Appends the compact text of `value` to `out` (no limit).
pub(super) fn write_to(out: &mut Vec<u8>, value: &Json) {
    let mut sink = Limited {
        out,
        limit: usize::MAX,
    };
    let _ = write(&mut sink, value, &[]);
}

/// Appends `s` as a JSON string to `out`, escaped as [`to_vec`] escapes strings.
pub(super) fn write_str_to(out: &mut Vec<u8>, s: &str) {
    let mut sink = Limited {
        out,
        limit: usize::MAX,
    };
    let _ = write_str(&mut sink, s);
}

/// The length of a member name or string as written.
pub(super) fn encoded_str_len(s: &str) -> usize {
    let mut count = Count {
        n: 0,
        limit: usize::MAX,
    };
    let _ = write_str(&mut count, s);
    count.n
}

fn write(sink: &mut impl Sink, value: &Json, src: &[u8]) -> Result<(), Overflow> {
    match value {
        // Indexed sources are compact and escaped as `write_str` escapes: already this text.
        Json::Raw(raw) => sink.put(src.get(raw.range()).unwrap_or_default()),
        Json::Null => sink.put(b"null"),
        Json::Bool(true) => sink.put(b"true"),
        Json::Bool(false) => sink.put(b"false"),
        Json::Number(text) => sink.put(text.as_bytes()),
        Json::String(s) => write_str(sink, s),
        Json::Array(items) => {
            sink.put(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sink.put(b",")?;
                }
                write(sink, item, src)?;
            }
            sink.put(b"]")
        }
        Json::Object(obj) => {
            sink.put(b"{")?;
            for (i, (key, item)) in obj.iter().enumerate() {
                if i > 0 {
                    sink.put(b",")?;
                }
                write_str(sink, key)?;
                sink.put(b":")?;
                write(sink, item, src)?;
            }
            sink.put(b"}")
        }
    }
}

/// RFC 8259 §7: escapes only what must be escaped, so content is kept as it was.
fn write_str(sink: &mut impl Sink, s: &str) -> Result<(), Overflow> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    sink.put(b"\"")?;
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        sink.put(bytes.get(start..i).unwrap_or_default())?;
        if short.is_empty() {
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            sink.put(&[b'\\', b'u', b'0', b'0', hi, lo])?;
        } else {
            sink.put(short)?;
        }
        start = i + 1;
    }
    sink.put(bytes.get(start..).unwrap_or_default())?;
    sink.put(b"\"")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::parse::parse;

    fn round_trip(text: &str) -> String {
        let value = parse(text.as_bytes()).unwrap();
        String::from_utf8(to_vec(&value, usize::MAX, 0).unwrap()).unwrap()
    }

    #[test]
    fn numbers_keep_their_exact_spelling() {
        let text = r#"[1e2,1E2,1e+2,1E-02,-0,-0.0,0.1000,12345678901234567890123,1e999999999,-1.5e-7]"#;
        assert_eq!(round_trip(text), text);
    }

    #[test]
    fn members_keep_their_order_and_whitespace_is_dropped() {
        assert_eq!(
            round_trip("{ \"z\" : 1 ,\n \"a\" : [ true , false , null ] , \"m\" : { } }"),
            r#"{"z":1,"a":[true,false,null],"m":{}}"#
        );
    }

    #[test]
    fn strings_keep_their_content_with_minimal_escapes() {
        assert_eq!(
            round_trip(r#""a\"b\\c\/d\u00e9\ud83d\ude00\n\t\b\f\r\u0001\u001f""#),
            "\"a\\\"b\\\\c/dé😀\\n\\t\\b\\f\\r\\u0001\\u001f\""
        );
        assert_eq!(round_trip("\"é\u{2028}\""), "\"é\u{2028}\"");
    }

    #[test]
    fn encoded_len_matches_output_and_stops_past_limit() {
        let value = parse(br#"{"a":"x\ny","b":[1e2,null]}"#).unwrap();
        let out = to_vec(&value, usize::MAX, 0).unwrap();
        assert_eq!(encoded_len(&value, usize::MAX), Ok(out.len()));
        assert_eq!(encoded_len(&value, 5), Err(Overflow));
        assert_eq!(to_vec(&value, out.len() - 1, 0), Err(Overflow));
        assert_eq!(encoded_str_len("a\"\u{1}"), 11);
    }
}
