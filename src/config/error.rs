//! `ConfigError`: `file:line:column: key: message`, plus turning toml's byte spans into
//! line:column and into the dotted key they belong to.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// A configuration problem, pointing at the key and (when known) the position to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    position: Option<(usize, usize)>,
    key: String,
    message: String,
}

impl ConfigError {
    /// An error at byte offset `at` of `src`.
    pub(super) fn at(
        src: &str,
        file: &str,
        at: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_owned(),
            position: Some(line_col(src, at)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error with no position (file unreadable, something missing from the whole file).
    pub(super) fn nowhere(file: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            position: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Converts a toml parse (`syntax`) or deserialization error, finding the key from its
    /// span in `doc`.
    pub(super) fn from_toml(
        src: &str,
        file: &str,
        doc: &DeTable<'_>,
        err: &toml::de::Error,
        syntax: bool,
    ) -> Self {
        let key = err.span().and_then(|span| key_at(doc, &span)).unwrap_or_default();
        let message = if syntax {
            // The partial document does not hold the repeated key, so quote it from the source.
            let quoted = err
                .span()
                .and_then(|span| src.get(span))
                .filter(|_| err.message() == "duplicate key");
            match quoted {
                Some(key) => {
                    format!("invalid TOML: duplicate key `{key}`; each key may appear once per table")
                }
                None => format!("invalid TOML: {}", err.message()),
            }
        } else {
            friendly(err.message())
        };
        match err.span() {
            Some(span) => ConfigError::at(src, file, span.start, key, message),
            None => ConfigError::nowhere(file, key, message),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based line, when the position is known.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(line, _)| line)
    }

    /// 1-based column in characters, when the position is known.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|(_, column)| column)
    }

    /// The dotted key, e.g. `route[1].freshness`; empty when the problem is not under a key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte offset `at`; past the end means the end.
pub(super) fn line_col(src: &str, at: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (i, c) in src.char_indices() {
        if i >= at {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

const MAX_PATH: usize = 256;

/// The dotted key whose key or value span most tightly contains `span`.
///
/// Table values are spanned by their `[header]` only, so "contains" rather than
/// "inside the value" is what finds keys under headers. Walks with an explicit stack so a
/// deeply nested document cannot overflow the call stack.
fn key_at(doc: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    let contains =
        |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end && outer.start < outer.end;
    let mut best: Option<(usize, String)> = None;
    let mut consider = |outer: Range<usize>, path: &str| {
        let len = outer.end.saturating_sub(outer.start);
        if contains(outer) && best.as_ref().is_none_or(|(best_len, _)| len <= *best_len) {
            best = Some((len, path.to_owned()));
        }
    };
    let mut stack: Vec<(String, &DeValue<'_>)> = Vec::new();
    push_table(doc, "", &mut stack, &mut consider);
    while let Some((path, value)) = stack.pop() {
        // No real key is this deep; stop before hostile nesting makes the paths quadratic.
        if path.len() > MAX_PATH {
            continue;
        }
        match value {
            DeValue::Table(table) => push_table(table, &path, &mut stack, &mut consider),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    consider(item.span(), &item_path);
                    stack.push((item_path, item.get_ref()));
                }
            }
            _ => {}
        }
    }
    best.map(|(_, path)| path)
}

fn push_table<'a, 'i>(
    table: &'a DeTable<'i>,
    parent: &str,
    stack: &mut Vec<(String, &'a DeValue<'i>)>,
    consider: &mut impl FnMut(Range<usize>, &str),
) {
    for (key, value) in table.iter() {
        let path = join_key(parent, key.get_ref());
        consider(key.span(), &path);
        consider(value.span(), &path);
        stack.push((path, value.get_ref()));
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys so the path stays unambiguous.
pub(super) fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Rewrites serde's wording into TOML terms and says how to fix unknown keys.
fn friendly(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let allowed = match allowed.strip_prefix("one of ") {
            Some(list) => format!("allowed keys here are {list}"),
            None if allowed.contains(" or ") => {
                format!("allowed keys here are {}", allowed.replace(" or ", ", "))
            }
            None => format!("the only allowed key here is {allowed}"),
        };
        return format!("unknown key {field}; {allowed} (check the spelling)");
    }
    let mut out = message
        .replace("a sequence", "an array")
        .replace("a map", "a table");
    for (from, to) in [
        ("i64", "an integer"),
        ("u64", "an integer"),
        ("bool", "true or false"),
    ] {
        if let Some(prefix) = out.strip_suffix(&format!("expected {from}")) {
            out = format!("{prefix}expected {to}");
        }
    }
    if let Some((prefix, _)) = out.split_once("expected struct Raw") {
        out = format!("{prefix}expected a table");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters_from_one() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 4), (1, 5));
        assert_eq!(line_col(src, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(src, 12), (2, 6));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn display_omits_unknown_position_and_empty_key() {
        let e = ConfigError::nowhere("proxy.toml", "", "cannot read the file");
        assert_eq!(e.to_string(), "proxy.toml: cannot read the file");
        let e = ConfigError::at("x\ny", "p.toml", 2, "a.b", "bad");
        assert_eq!(e.to_string(), "p.toml:2:1: a.b: bad");
        assert_eq!(
            (e.line(), e.column(), e.key(), e.message()),
            (Some(2), Some(1), "a.b", "bad")
        );
    }

    #[test]
    fn odd_keys_are_quoted_in_paths() {
        assert_eq!(join_key("", "server"), "server");
        assert_eq!(join_key("route[0]", "a.b"), "route[0].\"a.b\"");
        assert_eq!(join_key("x", ""), "x.\"\"");
    }

    #[test]
    fn serde_wording_is_rewritten_in_toml_terms() {
        assert_eq!(
            friendly("unknown field `bogus`, expected one of `a`, `b`"),
            "unknown key `bogus`; allowed keys here are `a`, `b` (check the spelling)"
        );
        assert_eq!(
            friendly("invalid type: string \"3\", expected i64"),
            "invalid type: string \"3\", expected an integer"
        );
        assert_eq!(
            friendly("invalid type: integer `5`, expected struct RawServer"),
            "invalid type: integer `5`, expected a table"
        );
        assert_eq!(
            friendly("invalid type: integer `5`, expected a sequence"),
            "invalid type: integer `5`, expected an array"
        );
    }
}
