//! Conditional requests: reading `If-Match`, `If-None-Match`, `If-Modified-Since` and
//! `If-Unmodified-Since` (RFC 9110 §13.1) and evaluating them in §13.2.2 order.
//!
//! Invariant: a write never proceeds on doubt. A malformed `If-Match`, or an
//! `If-Unmodified-Since` that cannot be proven true, fails; only a safe method may ignore
//! a malformed `If-None-Match`.

use crate::etag::{self, Comparison, EntityTag, Malformed, Scan};
use http::{HeaderMap, HeaderValue, header};
use std::time::{SystemTime, UNIX_EPOCH};

/// The precondition fields of one request, as received.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    if_match: Option<Lines>,
    if_none_match: Option<Lines>,
    /// `Some(None)`: present but not a valid HTTP-date.
    if_modified_since: Option<Option<SystemTime>>,
    if_unmodified_since: Option<Option<SystemTime>>,
}

/// The lines of a tag-list field, kept unparsed (cheap `Bytes` clones) so that evaluation
/// scans them without building a list; a second line is rare, so only it costs a `Vec`.
#[derive(Clone, Debug)]
struct Lines {
    first: HeaderValue,
    rest: Vec<HeaderValue>,
}

impl Lines {
    fn from_headers(headers: &HeaderMap, name: header::HeaderName) -> Option<Lines> {
        let mut values = headers.get_all(name).into_iter();
        let first = values.next()?.clone();
        Some(Lines {
            first,
            rest: values.cloned().collect(),
        })
    }

    fn scan(&self, current: Option<&EntityTag>, comparison: Comparison) -> Result<Scan, Malformed> {
        etag::scan_condition(
            std::iter::once(&self.first).chain(&self.rest),
            current,
            comparison,
        )
    }
}

impl Conditions {
    /// Reads the four fields (RFC 9110 §13.1). A date field sent on several lines is a list
    /// of dates and so not a valid HTTP-date (§13.1.3, §13.1.4).
    pub fn from_headers(headers: &HeaderMap) -> Conditions {
        Conditions {
            if_match: Lines::from_headers(headers, header::IF_MATCH),
            if_none_match: Lines::from_headers(headers, header::IF_NONE_MATCH),
            if_modified_since: date(headers, header::IF_MODIFIED_SINCE),
            if_unmodified_since: date(headers, header::IF_UNMODIFIED_SINCE),
        }
    }

    /// True when the request carries none of the four fields.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }

    /// True when the request carries `If-Match` (even malformed: it will fail) or a valid
    /// `If-Unmodified-Since`: what `require_precondition` demands (RFC 6585 §3). An invalid
    /// date does not count, since §13.1.4 makes the server ignore it.
    pub fn has_write_precondition(&self) -> bool {
        self.if_match.is_some() || matches!(self.if_unmodified_since, Some(Some(_)))
    }

    /// The one strong tag of an `If-Match` that is the request's only condition: the
    /// base a stale PATCH may be merged from (`on_stale = "merge"`).
    pub fn sole_if_match(&self) -> Option<EntityTag> {
        let lines = self.if_match.as_ref()?;
        if self.if_none_match.is_some()
            || self.if_modified_since.is_some()
            || self.if_unmodified_since.is_some()
            || !lines.rest.is_empty()
        {
            return None;
        }
        match etag::parse_condition([&lines.first]) {
            Ok(etag::TagCondition::Tags(tags)) if tags.len() == 1 => {
                tags.into_iter().next().filter(|t| !t.is_weak())
            }
            _ => None,
        }
    }

    /// The tags `If-None-Match` lists (none for `*` or a malformed field): the versions
    /// a client holds, for a delta read.
    pub fn if_none_match_tags(&self) -> Vec<EntityTag> {
        let Some(lines) = &self.if_none_match else {
            return Vec::new();
        };
        match etag::parse_condition(std::iter::once(&lines.first).chain(&lines.rest)) {
            Ok(etag::TagCondition::Tags(tags)) => tags,
            _ => Vec::new(),
        }
    }

    /// True when the client stated any expectation about the current state: `If-Match`,
    /// `If-Unmodified-Since` or `If-None-Match`, valid or not. Patchgate then never
    /// silently retries a write the upstream refused with 412.
    pub fn any_write_condition(&self) -> bool {
        self.if_match.is_some() || self.if_unmodified_since.is_some() || self.if_none_match.is_some()
    }
}

/// What patchgate knows of the selected representation now. When `exists` is false,
/// `etag` and `last_modified` are disregarded.
#[derive(Clone, Copy, Debug)]
pub struct Current<'a> {
    pub exists: bool,
    pub etag: Option<&'a EntityTag>,
    pub last_modified: Option<SystemTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    NotModified,
    Failed,
}

/// Evaluates the preconditions in RFC 9110 §13.2.2 order; `safe` is true for GET and HEAD.
/// Whether a missing resource is answered 404 before this runs is the caller's decision
/// (§13.2.1).
///
/// Patchgate's choices where the RFC leaves room: `If-Unmodified-Since` with no known
/// `Last-Modified` is false (nothing proves the resource unmodified), and a malformed
/// `If-Match`, or a malformed `If-None-Match` on an unsafe method, fails.
pub fn evaluate(conditions: &Conditions, current: &Current<'_>, safe: bool) -> Outcome {
    let etag = current.etag.filter(|_| current.exists);
    let last_modified = current.last_modified.filter(|_| current.exists);

    // Step 1 (§13.1.1), else step 2 (§13.1.4).
    if let Some(lines) = &conditions.if_match {
        let holds = match lines.scan(etag, Comparison::Strong) {
            Ok(Scan::Any) => current.exists,
            Ok(Scan::Listed { matched }) => matched,
            Err(Malformed) => false,
        };
        if !holds {
            return Outcome::Failed;
        }
    } else if let Some(Some(date)) = conditions.if_unmodified_since
        && !last_modified.is_some_and(|lm| not_after(lm, date))
    {
        return Outcome::Failed;
    }

    // Step 3 (§13.1.2), else step 4 (§13.1.3).
    let not_modified = if safe {
        Outcome::NotModified
    } else {
        Outcome::Failed
    };
    if let Some(lines) = &conditions.if_none_match {
        let holds = match lines.scan(etag, Comparison::Weak) {
            Ok(Scan::Any) => !current.exists,
            Ok(Scan::Listed { matched }) => !matched,
            // A GET may ignore what it cannot read; a write must not.
            Err(Malformed) => safe,
        };
        if !holds {
            return not_modified;
        }
    } else if safe
        && let Some(Some(date)) = conditions.if_modified_since
        && last_modified.is_some_and(|lm| not_after(lm, date))
    {
        return Outcome::NotModified;
    }

    Outcome::Proceed
}

/// One HTTP-date field; `Some(None)` when present but invalid.
fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<Option<SystemTime>> {
    let mut values = headers.get_all(name).into_iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(None);
    }
    Some(
        first
            .to_str()
            .ok()
            .and_then(|text| httpdate::parse_http_date(text).ok()),
    )
}

/// `last_modified <= date` at one-second resolution: HTTP-dates have no fractions, so a
/// resource modified at 08:49:37.5 is not newer than `08:49:37 GMT`.
fn not_after(last_modified: SystemTime, date: SystemTime) -> bool {
    unix_seconds(last_modified) <= unix_seconds(date)
}

/// Whole seconds since the epoch, rounded down (also before 1970).
fn unix_seconds(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::from(after.as_secs()),
        Err(before) => {
            let before = before.duration();
            -i128::from(before.as_secs()) - i128::from(before.subsec_nanos() > 0)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
