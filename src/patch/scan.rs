//! The fast path's one scan: validates a whole document and builds a tree only along the
//! paths a patch names; every other value stays a [`Raw`] span of the source, which the
//! writer copies verbatim.
//!
//! Invariant: a document is indexed only when it is valid JSON (as [`super::parse`]
//! accepts it: UTF-8, no repeated member name, nested at most [`MAX_DEPTH`]) *and* already
//! in the compact form [`super::json`] writes (no whitespace, strings escaped exactly as
//! `write_str` escapes them). So a raw span is the text the tree path would write for it,
//! the output is byte for byte the tree path's, and two member names are equal exactly
//! when their raw bytes are. Anything else declines, and the caller takes the tree path,
//! which also gives the exact error for an invalid document.

use std::borrow::Cow;
use std::collections::HashMap;

use super::json::{Json, MAX_DEPTH, Object, Raw, Text};

/// Not indexed: invalid, not in compact form, or too large for [`Raw`]'s offsets.
#[derive(Debug)]
pub(super) struct Decline;

type Scanned<T> = Result<T, Decline>;

/// Decoded pointer tokens; the tree is built where a path still has tokens to go.
pub(super) type Path = Vec<String>;

/// Validates `src` and builds its tree along `paths`.
pub(super) fn index(src: &[u8], paths: &[Path]) -> Scanned<Json> {
    if u32::try_from(src.len()).is_err() || std::str::from_utf8(src).is_err() {
        return Err(Decline);
    }
    let wanted: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
    let mut scan = Scan::new(src, 0);
    let root = scan.node(0, &wanted)?;
    if scan.pos != src.len() {
        return Err(Decline);
    }
    Ok(root)
}

/// A raw container turned into one level of tree (its children raw); anything else is
/// left as it is.
pub(super) fn expand(value: &mut Json, src: &[u8]) {
    let Json::Raw(raw) = *value else { return };
    if !raw.is_container() {
        return;
    }
    if let Ok(tree) = Scan::new(src, raw.start as usize).container(0, &[]) {
        *value = tree;
    }
}

/// The full tree of a value (a `test` compares it).
pub(super) fn materialize<'a>(value: &'a Json, src: &[u8]) -> Cow<'a, Json> {
    match value {
        Json::Raw(raw) => Cow::Owned(
            src.get(raw.range())
                .and_then(|text| super::parse::parse(text).ok())
                .unwrap_or(Json::Null),
        ),
        other => Cow::Borrowed(other),
    }
}

struct Scan<'a> {
    b: &'a [u8],
    pos: usize,
    /// Spans of the member names of the objects being scanned, innermost last, with
    /// their [`fingerprint`]s.
    names: Vec<(usize, usize, u64)>,
}

/// The index of the first byte of `w` (little endian) that is `"`, `\` or a control
/// character (below 0x20), or 8. Each test flags its first matching byte exactly (a
/// borrow only runs upwards from it), so the lowest flag is the answer.
fn special(w: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let flags = zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
    (flags.trailing_zeros() / 8) as usize
}

/// A member name's first bytes, and its length when shorter than 8: names whose prints
/// differ differ (a name of 8 bytes or more has no control character in its 8th byte,
/// where a shorter one's print holds its length). `b[start..end]` is the name.
fn fingerprint(b: &[u8], start: usize, end: usize) -> u64 {
    let len = end.saturating_sub(start);
    let word = match b.get(start..).and_then(|rest| rest.first_chunk::<8>()) {
        Some(&word) => u64::from_le_bytes(word),
        None => {
            let mut word = [0u8; 8];
            for (slot, &byte) in word.iter_mut().zip(b.get(start..end).unwrap_or_default()) {
                *slot = byte;
            }
            u64::from_le_bytes(word)
        }
    };
    if len >= 8 {
        word
    } else {
        (word & ((1u64 << (8 * len)) - 1)) | ((len as u64) << 56)
    }
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8], pos: usize) -> Scan<'a> {
        Scan {
            b,
            pos,
            names: Vec::new(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Scanned<()> {
        if self.peek() != Some(byte) {
            return Err(Decline);
        }
        self.pos += 1;
        Ok(())
    }

    /// A value: a tree when it is a container some path goes into, else raw.
    fn node(&mut self, depth: usize, wanted: &[&[String]]) -> Scanned<Json> {
        if matches!(self.peek(), Some(b'{' | b'[')) && wanted.iter().any(|w| !w.is_empty()) {
            return self.container(depth, wanted);
        }
        let start = self.pos;
        let first = self.peek().ok_or(Decline)?;
        let nested = self.value(depth)?;
        Ok(Json::Raw(Raw {
            start: u32::try_from(start).map_err(|_| Decline)?,
            len: u32::try_from(self.pos - start).map_err(|_| Decline)?,
            depth: nested,
            first,
        }))
    }

    /// An object or array as a tree, each child built by [`Scan::node`] with the paths that
    /// go through it.
    fn container(&mut self, depth: usize, wanted: &[&[String]]) -> Scanned<Json> {
        if depth >= MAX_DEPTH {
            return Err(Decline);
        }
        let open = self.peek();
        self.pos += 1;
        if open == Some(b'[') {
            // Sorted, so that each element finds its paths in one step along them.
            let mut indices: Vec<(usize, &[String])> = wanted
                .iter()
                .filter_map(|w| Some((w.first()?.parse::<usize>().ok()?, w.get(1..)?)))
                .collect();
            indices.sort_unstable_by_key(|(n, _)| *n);
            let mut next = indices.as_slice();
            let mut items = Vec::new();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Json::Array(items));
            }
            loop {
                let i = items.len();
                let here = next.iter().take_while(|(n, _)| *n == i).count();
                let (these, rest) = next.split_at(here);
                next = rest;
                let sub: Vec<&[String]> = these.iter().map(|(_, w)| *w).collect();
                items.push(self.node(depth + 1, &sub)?);
                if self.list_next(b']')? {
                    return Ok(Json::Array(items));
                }
            }
        }
        let mut members = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(Object::from_members(members)));
        }
        // By first token, so that a large object with many paths through it stays linear.
        let mut by_name: HashMap<&str, Vec<&[String]>> = HashMap::new();
        for w in wanted {
            if let (Some(first), Some(rest)) = (w.first(), w.get(1..)) {
                by_name.entry(first.as_str()).or_default().push(rest);
            }
        }
        let mark = self.names.len();
        loop {
            let (start, end) = self.name()?;
            let name = self.decode(start, end)?;
            let sub = by_name.remove(name.as_str()).unwrap_or_default();
            members.push((name, self.node(depth + 1, &sub)?));
            if self.list_next(b'}')? {
                break;
            }
        }
        self.unique(mark)?;
        Ok(Json::Object(Object::from_members(members)))
    }

    /// Validates a value; its nesting depth.
    fn value(&mut self, depth: usize) -> Scanned<u8> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| 0),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| 0),
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'[' | b'{') if depth >= MAX_DEPTH => Err(Decline),
            Some(b'[') => {
                self.pos += 1;
                let mut inner = 0;
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(1);
                }
                loop {
                    inner = inner.max(self.element(depth + 1)?);
                    if self.list_next(b']')? {
                        return Ok(inner + 1);
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut inner = 0;
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(1);
                }
                let mark = self.names.len();
                loop {
                    self.name()?;
                    inner = inner.max(self.element(depth + 1)?);
                    if self.list_next(b'}')? {
                        break;
                    }
                }
                self.unique(mark)?;
                Ok(inner + 1)
            }
            _ => Err(Decline),
        }
    }

    /// [`Scan::value`] with strings and numbers, most of any document, handled without
    /// a recursive call.
    #[inline(always)]
    fn element(&mut self, depth: usize) -> Scanned<u8> {
        match self.peek() {
            Some(b'"') => self.string().map(|()| 0),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| 0),
            _ => self.value(depth),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scanned<u8> {
        if self.b.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(Decline);
        }
        self.pos += word.len();
        Ok(0)
    }

    /// True at the closing byte, false after a comma (no whitespace: compact form).
    #[inline(always)]
    fn list_next(&mut self, close: u8) -> Scanned<bool> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(Decline),
        }
    }

    /// A member name and its colon; the span inside the quotes, remembered for
    /// [`Scan::unique`].
    #[inline(always)]
    fn name(&mut self) -> Scanned<(usize, usize)> {
        if self.peek() != Some(b'"') {
            return Err(Decline);
        }
        let start = self.pos + 1;
        self.string()?;
        let span = (start, self.pos - 1);
        self.expect(b':')?;
        let print = fingerprint(self.b, span.0, span.1);
        self.names.push((span.0, span.1, print));
        Ok(span)
    }

    /// No member name since `mark` repeats (raw bytes compare as decoded names do: the
    /// escapes are canonical). Forgets them.
    #[inline(always)]
    fn unique(&mut self, mark: usize) -> Scanned<()> {
        let names = self.names.get(mark..).unwrap_or_default();
        let repeated = if names.len() <= 16 {
            // Prints first: the bytes are compared only when two prints are equal.
            names.iter().enumerate().any(|(i, x)| {
                names
                    .iter()
                    .skip(i + 1)
                    .any(|y| x.2 == y.2 && self.b.get(x.0..x.1) == self.b.get(y.0..y.1))
            })
        } else {
            self.repeated_among_many(mark)
        };
        self.names.truncate(mark);
        if repeated { Err(Decline) } else { Ok(()) }
    }

    /// [`Scan::unique`] for more than 16 names: sorted, then neighbours compared.
    #[inline(never)]
    fn repeated_among_many(&self, mark: usize) -> bool {
        let b = self.b;
        let names = self.names.get(mark..).unwrap_or_default();
        let mut sorted: Vec<&[u8]> = names
            .iter()
            .map(|&(s, e, _)| b.get(s..e).unwrap_or_default())
            .collect();
        sorted.sort_unstable();
        sorted.windows(2).any(|w| w.first() == w.get(1))
    }

    /// A string, opening quote at `pos`; only the escapes `write_str` writes are accepted.
    #[inline(always)]
    fn string(&mut self) -> Scanned<()> {
        // A local position: the loop stays in registers.
        let b = self.b;
        let mut pos = self.pos + 1;
        loop {
            while let Some(&chunk) = b.get(pos..).and_then(|rest| rest.first_chunk::<8>()) {
                let at = special(u64::from_le_bytes(chunk));
                pos += at;
                if at < 8 {
                    break;
                }
            }
            match b.get(pos) {
                Some(b'"') => {
                    self.pos = pos + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos = pos;
                    self.escape()?;
                    pos = self.pos;
                }
                Some(0x20..) => pos += 1,
                _ => return Err(Decline),
            }
        }
    }

    fn escape(&mut self) -> Scanned<()> {
        match self.b.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => self.pos += 2,
            Some(b'u') => {
                // `\u00xx`, lowercase, only for a control character without a short form.
                let code = match self.b.get(self.pos + 2..self.pos + 6) {
                    Some(&[b'0', b'0', hi @ b'0'..=b'1', lo @ (b'0'..=b'9' | b'a'..=b'f')]) => {
                        let digit = |d: u8| if d <= b'9' { d - b'0' } else { d - b'a' + 10 };
                        digit(hi) * 16 + digit(lo)
                    }
                    _ => return Err(Decline),
                };
                if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return Err(Decline);
                }
                self.pos += 6;
            }
            _ => return Err(Decline),
        }
        Ok(())
    }

    /// RFC 8259 §6.
    #[inline(always)]
    fn number(&mut self) -> Scanned<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Decline),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Decline);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Decline);
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A validated name's content (canonical escapes only).
    fn decode(&self, start: usize, end: usize) -> Scanned<Text> {
        let raw = self.b.get(start..end).ok_or(Decline)?;
        if !raw.contains(&b'\\') {
            return std::str::from_utf8(raw).map(Text::from).map_err(|_| Decline);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while let Some(&c) = raw.get(i) {
            if c != b'\\' {
                out.push(c);
                i += 1;
                continue;
            }
            let (byte, width) = match raw.get(i + 1) {
                Some(b'n') => (b'\n', 2),
                Some(b'r') => (b'\r', 2),
                Some(b't') => (b'\t', 2),
                Some(b'b') => (0x08, 2),
                Some(b'f') => (0x0c, 2),
                Some(b'u') => {
                    let hex = raw.get(i + 4..i + 6).ok_or(Decline)?;
                    let hex = std::str::from_utf8(hex).map_err(|_| Decline)?;
                    (u8::from_str_radix(hex, 16).map_err(|_| Decline)?, 6)
                }
                Some(&other) => (other, 2),
                None => return Err(Decline),
            };
            out.push(byte);
            i += width;
        }
        String::from_utf8(out).map(Text::from).map_err(|_| Decline)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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
}
