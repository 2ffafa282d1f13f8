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

use self::words::{ascii_run, fingerprint, plain_run};
use super::json::{Json, MAX_DEPTH, Object, Raw};

mod skip;
mod words;

/// Not indexed: invalid, not in compact form, or too large for [`Raw`]'s offsets.
#[derive(Debug)]
pub(super) struct Decline;

type Scanned<T> = Result<T, Decline>;

/// Decoded pointer tokens; the tree is built where a path still has tokens to go.
pub(super) type Path = Vec<String>;

/// Validates `src` and builds its tree along `paths`.
pub(super) fn index(src: &[u8], paths: &[Path]) -> Scanned<Json> {
    build(src, paths, false)
}

/// [`index`] for a body patchgate serialized itself: the values no path goes into are
/// skipped, not validated again (the caller vouches for the invariant).
pub(super) fn index_written(src: &[u8], paths: &[Path]) -> Scanned<Json> {
    build(src, paths, true)
}

fn build(src: &[u8], paths: &[Path], written: bool) -> Scanned<Json> {
    if u32::try_from(src.len()).is_err() {
        return Err(Decline);
    }
    let wanted: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
    let mut scan = Scan::new(src, 0);
    scan.written = written;
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

/// Whether two of these names may be equal: equal names have equal prints, which set
/// the same two bits of 128; most objects find no name whose both bits were set already,
/// and need no comparison.
#[inline(always)]
fn maybe_repeated(names: &[(usize, usize, u64)]) -> bool {
    let (mut low, mut high, mut both) = (0u64, 0u64, false);
    for &(_, _, print) in names {
        let mixed = print.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (a, b) = (1u64 << (mixed >> 58), 1u64 << ((mixed >> 52) & 63));
        both |= low & a != 0 && high & b != 0;
        low |= a;
        high |= b;
    }
    both
}

/// From a byte of 0x80 or above inside a string, to the next `"`, `\\` or control
/// character (bytes no multi-byte character holds), once that stretch is found to be
/// UTF-8. Outside strings such a byte is refused anyway: this is where a document's
/// UTF-8 is checked.
#[inline(never)]
fn utf8_run(b: &[u8], start: usize) -> Scanned<usize> {
    let mut end = plain_run(b, start);
    while let Some(0x20..) = b.get(end).filter(|&&c| c != b'"' && c != b'\\') {
        end += 1;
    }
    let stretch = b.get(start..end).ok_or(Decline)?;
    std::str::from_utf8(stretch).map_err(|_| Decline)?;
    Ok(end)
}

struct Scan<'a> {
    b: &'a [u8],
    pos: usize,
    /// Spans of the member names of the objects being scanned, innermost last, with
    /// their [`fingerprint`]s.
    names: Vec<(usize, usize, u64)>,
    /// Values no path goes into are skipped ([`skip`]), not validated.
    written: bool,
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8], pos: usize) -> Scan<'a> {
        Scan {
            b,
            pos,
            names: Vec::new(),
            written: false,
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
        let nested = if self.written {
            let (end, nested) = skip::skip(self.b, start).ok_or(Decline)?;
            self.pos = end;
            nested
        } else {
            self.value(depth)?
        };
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
        // Many paths: by first token, so that a large object with many paths through it
        // stays linear. A few (most patches): a search is cheaper than the map.
        let mut by_name: Option<HashMap<&str, Vec<&[String]>>> = (wanted.len() > 8).then(|| {
            let mut map: HashMap<&str, Vec<&[String]>> = HashMap::new();
            for w in wanted {
                if let (Some(first), Some(rest)) = (w.first(), w.get(1..)) {
                    map.entry(first.as_str()).or_default().push(rest);
                }
            }
            map
        });
        let mark = self.names.len();
        loop {
            let (start, end) = self.name()?;
            let name = words::decode(self.b.get(start..end).ok_or(Decline)?)?;
            let sub = match &mut by_name {
                Some(map) => map.remove(name.as_str()).unwrap_or_default(),
                None => wanted
                    .iter()
                    .filter(|w| w.first().is_some_and(|first| first.as_str() == name.as_str()))
                    .filter_map(|w| w.get(1..))
                    .collect(),
            };
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
            if !maybe_repeated(names) {
                self.names.truncate(mark);
                return Ok(());
            }
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
            pos = ascii_run(b, pos);
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
                Some(0x80..) => pos = utf8_run(b, pos)?,
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
