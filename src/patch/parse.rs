//! An RFC 8259 parser into [`Json`] that keeps numbers as written and members in order.
//!
//! Strict like serde_json: UTF-8 only, no trailing commas, no lone surrogates, nesting at
//! most [`MAX_DEPTH`] (an error, never a stack overflow). Repeated member names are an
//! error that carries the path to the member: RFC 8259 §4 leaves their meaning open, so
//! neither a patch nor a document to patch may have them.

use std::fmt;

use super::json::{Json, MAX_DEPTH, Object, Text};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseError {
    message: String,
    line: usize,
    column: usize,
    /// For a repeated member name: the path to it, innermost segment first (it is built
    /// while the error unwinds out of the enclosing values).
    duplicate: Option<Vec<Text>>,
}

impl ParseError {
    /// For a repeated member name: the name and the JSON Pointer (RFC 6901) to it.
    pub(super) fn duplicate_member(&self) -> Option<(String, String)> {
        let segments = self.duplicate.as_ref()?;
        let name = segments.first()?.to_string();
        let mut pointer = String::new();
        for segment in segments.iter().rev() {
            pointer.push('/');
            pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        }
        Some((name, pointer))
    }

    /// Adds the enclosing member name or array index to a repeated member's path.
    fn within(mut self, segment: impl FnOnce() -> Text) -> ParseError {
        if let Some(path) = &mut self.duplicate {
            path.push(segment());
        }
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {}, column {}",
            self.message, self.line, self.column
        )
    }
}

/// RFC 8259: parses one JSON text (whitespace around it allowed).
pub(super) fn parse(bytes: &[u8]) -> Result<Json, ParseError> {
    let mut p = Parser::new(bytes)?;
    let value = p.value(0)?;
    p.end()?;
    Ok(value)
}

/// A top-level array read without keeping more than `max` items.
#[derive(Debug)]
pub(super) enum Bounded {
    Items(Vec<Json>),
    /// More than `max` items; the total count.
    TooMany(usize),
    NotArray,
}

/// Parses a JSON text that should be an array; items past `max` are checked, counted and
/// dropped at once, so a huge array costs no more memory than `max` items.
pub(super) fn parse_bounded_array(bytes: &[u8], max: usize) -> Result<Bounded, ParseError> {
    let mut p = Parser::new(bytes)?;
    p.skip_ws();
    if p.peek() != Some(b'[') {
        p.value(0)?;
        p.end()?;
        return Ok(Bounded::NotArray);
    }
    p.pos += 1;
    let mut items = Vec::new();
    let mut count = 0usize;
    p.skip_ws();
    if p.peek() == Some(b']') {
        p.pos += 1;
    } else {
        loop {
            let item = p.value(1).map_err(|e| e.within(|| count.to_string().into()))?;
            count += 1;
            if count <= max {
                items.push(item);
            }
            if p.list_next(b']')? {
                break;
            }
        }
    }
    p.end()?;
    Ok(if count > max {
        Bounded::TooMany(count)
    } else {
        Bounded::Items(items)
    })
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
            message: "invalid UTF-8".into(),
            line: 1,
            column: 1 + e.valid_up_to(),
            duplicate: None,
        })?;
        Ok(Parser { text, bytes, pos: 0 })
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        let before = self.bytes.get(..self.pos).unwrap_or(self.bytes);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        ParseError {
            message: message.into(),
            line,
            column: 1 + self.pos - line_start,
            duplicate: None,
        }
    }

    /// `what` was expected; at the end of the input, say so instead.
    fn expected(&self, what: impl Into<String>) -> ParseError {
        match self.peek() {
            None => self.error("unexpected end of input"),
            Some(_) => self.error(what),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn end(&mut self) -> Result<(), ParseError> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters after the JSON value")),
        }
    }

    /// After a list item: true at the closing byte, false after a comma.
    fn list_next(&mut self, close: u8) -> Result<bool, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(self.expected(format!("expected ',' or '{}'", char::from(close)))),
        }
    }

    /// `depth`: how many arrays and objects enclose this value.
    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[' | b'{') if depth >= MAX_DEPTH => {
                Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")))
            }
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(_) => Err(self.error("expected a JSON value")),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, ParseError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// RFC 8259 §6, kept as written.
    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number: no digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number: no digit in the exponent"));
            }
        }
        let text = self.text.get(start..self.pos).unwrap_or_default();
        Ok(Json::Number(text.into()))
    }

    fn string(&mut self) -> Result<Text, ParseError> {
        self.pos += 1; // the opening quote
        let mut out = Text::default();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Stops only at ASCII bytes, so both ends are char boundaries.
            out.push_str(self.text.get(start..self.pos).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    out.push(c);
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn escape(&mut self) -> Result<char, ParseError> {
        let b = self.peek().ok_or_else(|| self.error("unterminated string"))?;
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("unpaired surrogate in \\u escape"));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.error("unpaired surrogate in \\u escape"));
                        }
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(self.error("unpaired surrogate in \\u escape")),
                    _ => unit,
                };
                char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))?
            }
            _ => return Err(self.error("invalid escape")),
        })
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    fn array(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            let index = items.len();
            items.push(
                self.value(depth)
                    .map_err(|e| e.within(|| index.to_string().into()))?,
            );
            if self.list_next(b']')? {
                return Ok(Json::Array(items));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(Object::from_members(members)));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.expected("expected a member name in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.expected("expected ':' after a member name"));
            }
            self.pos += 1;
            let value = self.value(depth).map_err(|e| e.within(|| key.clone()))?;
            members.push((key, value));
            if self.list_next(b'}')? {
                break;
            }
        }
        if let Some(name) = first_duplicate(&members) {
            let mut error = self.error(format!("duplicate member name {name:?}"));
            error.duplicate = Some(vec![name]);
            return Err(error);
        }
        Ok(Json::Object(Object::from_members(members)))
    }
}

fn first_duplicate(members: &[(Text, Json)]) -> Option<Text> {
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .find(|(i, (k, _))| members.iter().skip(i + 1).any(|(other, _)| other == k))
            .map(|(_, (k, _))| k.clone());
    }
    let mut names: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names
        .windows(2)
        .find(|w| w.first() == w.get(1))
        .and_then(|w| w.first())
        .map(|k| Text::from(*k))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn duplicate_names_are_rejected_with_the_path_to_the_member() {
        let many: String = (0..20).map(|i| format!("\"k{i}\":{i},")).collect();
        assert_eq!(
            error(r#"{"a":1,"a":2}"#),
            r#"duplicate member name "a" at line 1, column 14"#
        );
        assert_eq!(
            error(&format!("{{{many}\"k3\":\"x\"}}")).split(" at ").next(),
            Some(r#"duplicate member name "k3""#)
        );
        let member = |text: &str| parse(text.as_bytes()).unwrap_err().duplicate_member();
        for (text, name, pointer) in [
            (r#"{"a":1,"b":2,"a":3}"#, "a", "/a"),
            (r#"{"x":[0,{"y":{"id":1,"id":1}}]}"#, "id", "/x/1/y/id"),
            (r#"[{"a/b":{"~":1,"~":2}}]"#, "~", "/0/a~1b/~0"),
            (r#"{"":{"":1,"":2}}"#, "", "//"),
        ] {
            assert_eq!(
                member(text),
                Some((name.to_owned(), pointer.to_owned())),
                "{text}"
            );
        }
        assert_eq!(
            member(&format!("{{\"o\":{{{many}\"k3\":\"x\"}}}}")),
            Some(("k3".into(), "/o/k3".into()))
        );
        let Err(e) = parse_bounded_array(br#"[{},{"op":1,"op":2}]"#, 1) else {
            panic!("expected an error");
        };
        assert_eq!(e.duplicate_member(), Some(("op".into(), "/1/op".into())));
        assert_eq!(parse(b"[1,]").unwrap_err().duplicate_member(), None);
    }

    #[test]
    fn nesting_is_limited_to_128_levels() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(parse(ok.as_bytes()).unwrap().depth(), 128);
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            error(&deep),
            "nested deeper than 128 levels at line 1, column 129"
        );
        let hostile = "[".repeat(100_000);
        assert_eq!(
            error(&hostile),
            "nested deeper than 128 levels at line 1, column 129"
        );
        let objects = "{\"a\":".repeat(100_000);
        assert!(error(&objects).starts_with("nested deeper than 128 levels"));
    }

    #[test]
    fn invalid_json_is_rejected_with_a_position() {
        for (text, expected) in [
            ("", "unexpected end of input at line 1, column 1"),
            ("  \n ", "unexpected end of input at line 2, column 2"),
            ("[1,]", "expected a JSON value at line 1, column 4"),
            (
                "{\"a\" 1}",
                "expected ':' after a member name at line 1, column 6",
            ),
            (
                "{a:1}",
                "expected a member name in double quotes at line 1, column 2",
            ),
            ("[1 2]", "expected ',' or ']' at line 1, column 4"),
            (
                "01",
                "trailing characters after the JSON value at line 1, column 2",
            ),
            ("1.", "invalid number: no digit after '.' at line 1, column 3"),
            (
                "1e",
                "invalid number: no digit in the exponent at line 1, column 3",
            ),
            ("-", "invalid number at line 1, column 2"),
            ("+1", "expected a JSON value at line 1, column 1"),
            (".5", "expected a JSON value at line 1, column 1"),
            ("nul", "expected a JSON value at line 1, column 1"),
            ("\"abc", "unterminated string at line 1, column 5"),
            ("\"a\nb\"", "control character in a string at line 1, column 3"),
            (r#""\x""#, "invalid escape at line 1, column 4"),
            (r#""\u12G4""#, "invalid \\u escape at line 1, column 6"),
            (
                r#""\ud800""#,
                "unpaired surrogate in \\u escape at line 1, column 8",
            ),
            (
                r#""\udc00""#,
                "unpaired surrogate in \\u escape at line 1, column 8",
            ),
            (
                r#""\ud800\u0041""#,
                "unpaired surrogate in \\u escape at line 1, column 14",
            ),
            (
                "{} {}",
                "trailing characters after the JSON value at line 1, column 4",
            ),
            ("NaN", "expected a JSON value at line 1, column 1"),
        ] {
            assert_eq!(error(text), expected, "{text:?}");
        }
        assert_eq!(
            parse(b"\"\xff\"").unwrap_err().to_string(),
            "invalid UTF-8 at line 1, column 2"
        );
    }

    #[test]
    fn bounded_array_counts_past_max_without_keeping_items() {
        let Bounded::TooMany(n) = parse_bounded_array(b"[1,2,3,[4],{}]", 2).unwrap() else {
            panic!("expected TooMany");
        };
        assert_eq!(n, 5);
        let Bounded::Items(items) = parse_bounded_array(b" [1,2] ", 2).unwrap() else {
            panic!("expected Items");
        };
        assert_eq!(items.len(), 2);
        assert!(matches!(parse_bounded_array(b"[]", 0), Ok(Bounded::Items(v)) if v.is_empty()));
        assert!(matches!(parse_bounded_array(b"{}", 2), Ok(Bounded::NotArray)));
        assert!(parse_bounded_array(b"[1,2,3", 1).is_err());
    }
}
