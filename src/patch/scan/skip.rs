//! Skipping a value of a body patchgate serialized itself (valid JSON in compact form,
//! nested at most [`super::MAX_DEPTH`]): where the value ends and how deeply it nests,
//! found without validating it again.
//!
//! On bytes that are not what they were said to be the walk gives nonsense offsets or
//! `None`, never a panic.

use super::words::{ONES, plain_run};

/// The end of the value at `pos` (one past its last byte) and its nesting depth.
pub(super) fn skip(b: &[u8], pos: usize) -> Option<(usize, u8)> {
    match *b.get(pos)? {
        b'"' => Some((string_end(b, pos + 1)?, 0)),
        b'[' | b'{' => container_end(b, pos),
        _ => Some((scalar_end(b, pos), 0)),
    }
}

/// One past the closing quote of the string whose content starts at `pos`.
fn string_end(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        pos = plain_run(b, pos);
        match *b.get(pos)? {
            b'"' => return Some(pos + 1),
            // The escaped byte is never the closing quote; a `\u` escape's hex digits
            // pass as content.
            b'\\' => pos += 2,
            _ => pos += 1,
        }
    }
}

/// A number or literal ends before the `,`, `]` or `}` that follows it, or with the body.
fn scalar_end(b: &[u8], pos: usize) -> usize {
    b.get(pos..)
        .and_then(|rest| rest.iter().position(|c| matches!(c, b',' | b']' | b'}')))
        .map_or(b.len(), |n| pos + n)
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// The high bit of each byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `x`, exactly (no borrow crosses bytes).
fn zeros(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// A container's end, eight bytes a step without a branch per token: the quotes of a word
/// give, by a prefix XOR, which of its bytes are inside a string; the brackets and braces
/// outside strings are the only bytes looked at one by one. A word with a backslash (or
/// after one) goes byte by byte, as does the tail.
fn container_end(b: &[u8], mut pos: usize) -> Option<(usize, u8)> {
    let mut walk = Walk::default();
    while let Some(&chunk) = b.get(pos..).and_then(|rest| rest.first_chunk::<8>()) {
        let w = u64::from_le_bytes(chunk);
        let end = if walk.escaped || zeros(w ^ (ONES * u64::from(b'\\'))) != 0 {
            walk.bytes(&chunk)
        } else {
            walk.word(w)
        };
        if let Some(at) = end {
            return Some((pos + at, walk.deepest));
        }
        pos += 8;
    }
    let at = walk.bytes(b.get(pos..)?)?;
    Some((pos + at, walk.deepest))
}

#[derive(Default)]
struct Walk {
    depth: u8,
    deepest: u8,
    in_string: bool,
    /// The next byte is escaped.
    escaped: bool,
}

impl Walk {
    /// One word without backslashes; the offset just past the container's end if it is in it.
    #[inline(always)]
    fn word(&mut self, w: u64) -> Option<usize> {
        let quotes = zeros(w ^ (ONES * u64::from(b'"')));
        // Bit 7 of byte k: an odd number of quotes in bytes 0..=k.
        let mut inside = quotes ^ (quotes << 8);
        inside ^= inside << 16;
        inside ^= inside << 32;
        if self.in_string {
            inside ^= HIGH;
        }
        self.in_string = inside >> 63 != 0;
        // Outside strings, a byte of `b & 0xd9 == 0x59` is a bracket or a brace (the other
        // bytes it matches, `Y`, `_`, `y` and DEL, occur only inside strings).
        let mut brackets = zeros((w & (ONES * 0xd9)) ^ (ONES * 0x59)) & !inside;
        while brackets != 0 {
            let k = (brackets.trailing_zeros() / 8) as usize;
            brackets &= brackets - 1;
            // `[` and `{` have bit 1 set, `]` and `}` do not.
            if (w >> (8 * k + 1)) & 1 != 0 {
                self.open();
            } else if self.close() {
                return Some(k + 1);
            }
        }
        None
    }

    /// Bytes one at a time; the offset just past the container's end if it is in them.
    fn bytes(&mut self, bytes: &[u8]) -> Option<usize> {
        for (k, &c) in bytes.iter().enumerate() {
            if self.escaped {
                self.escaped = false;
            } else if self.in_string {
                match c {
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => self.open(),
                    b']' | b'}' if self.close() => return Some(k + 1),
                    _ => {}
                }
            }
        }
        None
    }

    fn open(&mut self) {
        self.depth = self.depth.saturating_add(1);
        self.deepest = self.deepest.max(self.depth);
    }

    /// Whether this closes the container.
    fn close(&mut self) -> bool {
        self.depth = self.depth.saturating_sub(1);
        self.depth == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::patch::Document;

    #[test]
    fn skips_each_kind_of_value_to_its_end_with_its_depth() {
        let doc = br#"{"a":"x\"y\\","b":[1,{"c":[[]]},"]}"],"d":-1.5e3,"e":true}"#;
        let find = |needle: &str| {
            let at = doc
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap();
            at + needle.len()
        };
        assert_eq!(skip(doc, 0), Some((doc.len(), 5)));
        let a = find(r#""a":"#);
        assert_eq!(skip(doc, a), Some((find(r#""x\"y\\""#), 0)));
        let b = find(r#""b":"#);
        assert_eq!(skip(doc, b), Some((find(r#""]}"]"#), 4)));
        let d = find(r#""d":"#);
        assert_eq!(skip(doc, d), Some((find("-1.5e3"), 0)));
        let e = find(r#""e":"#);
        assert_eq!(skip(doc, e), Some((find("true"), 0)));
        assert_eq!(skip(b"[1,2", 0), None);
        assert_eq!(skip(br#""open"#, 0), None);
    }

    /// Strings full of the bytes the walk looks at: quotes and backslashes (escaped), the
    /// brackets and braces, the other bytes the bracket test matches, control characters.
    fn text() -> impl Strategy<Value = String> {
        let chars = vec![
            '"', '\\', '[', ']', '{', '}', 'Y', '_', 'y', '\u{7f}', '\u{1}', '\n', 'a', 'é', ',', ':', '0',
        ];
        prop::collection::vec(prop::sample::select(chars), 0..12).prop_map(|v| v.into_iter().collect())
    }

    fn tricky() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            text().prop_map(Value::from),
            (-5i64..500).prop_map(Value::from),
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(text(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every path into `value`, `levels` deep at most.
    fn paths(value: &Value, prefix: &mut Vec<String>, levels: usize, out: &mut Vec<Vec<String>>) {
        out.push(prefix.clone());
        if levels == 0 {
            return;
        }
        let children: Vec<(String, &Value)> = match value {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => return,
        };
        for (token, child) in children {
            prefix.push(token);
            paths(child, prefix, levels - 1, out);
            prefix.pop();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// On a body patchgate wrote, the tree built by skipping is the validated one: the
        /// same spans, the same depths.
        #[test]
        fn skipping_a_written_body_finds_what_validating_finds(doc in tricky(), levels in 0usize..3) {
            let written = Document::parse(doc.to_string().as_bytes()).unwrap().to_bytes();
            let mut wanted = Vec::new();
            paths(&doc, &mut Vec::new(), levels, &mut wanted);
            let checked = super::super::index(&written, &wanted).unwrap();
            let skipped = super::super::index_written(&written, &wanted).unwrap();
            prop_assert_eq!(format!("{skipped:?}"), format!("{checked:?}"));
            prop_assert_eq!(skip(&written, 0).map(|(end, _)| end), Some(written.len()));
        }

        /// Bytes that are not a written body: no panic, whatever the offsets.
        #[test]
        fn any_bytes_are_walked_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            for pos in 0..bytes.len() {
                let _ = skip(&bytes, pos);
            }
        }
    }
}
