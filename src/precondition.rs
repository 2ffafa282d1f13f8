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
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const EARLIER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const RFC850: &str = "Sunday, 06-Nov-94 08:49:37 GMT";
    const ASCTIME: &str = "Sun Nov  6 08:49:37 1994";

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    #[derive(Clone, Copy)]
    enum Tag {
        None,
        Strong,
        Weak,
    }

    #[derive(Clone, Copy)]
    enum Lm {
        None,
        /// Seconds after T0 (may be fractional).
        At(f64),
    }

    struct Row {
        name: &'static str,
        fields: &'static [(&'static str, &'static str)],
        exists: bool,
        tag: Tag,
        lm: Lm,
        safe: bool,
        expected: Outcome,
    }

    const fn row(
        name: &'static str,
        fields: &'static [(&'static str, &'static str)],
        (exists, tag, lm): (bool, Tag, Lm),
        safe: bool,
        expected: Outcome,
    ) -> Row {
        Row {
            name,
            fields,
            exists,
            tag,
            lm,
            safe,
            expected,
        }
    }

    /// The current representation: exists with strong `"v1"` last modified at T0.
    const CUR: (bool, Tag, Lm) = (true, Tag::Strong, Lm::At(0.0));
    const MISSING: (bool, Tag, Lm) = (false, Tag::None, Lm::None);
    const GET: bool = true;
    const PUT: bool = false;
    use Outcome::{Failed, NotModified, Proceed};

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        // Step 5 alone.
        row("no_conditions_get_proceeds", &[], CUR, GET, Proceed),
        row("no_conditions_put_proceeds", &[], CUR, PUT, Proceed),
        row("no_conditions_missing_proceeds", &[], MISSING, PUT, Proceed),
        // Step 1: If-Match, strong comparison.
        row("if_match_star_existing_proceeds", &[("if-match", "*")], CUR, PUT, Proceed),
        row("if_match_star_missing_fails", &[("if-match", "*")], MISSING, PUT, Failed),
        row("if_match_star_without_tag_proceeds", &[("if-match", "*")], (true, Tag::None, Lm::None), PUT, Proceed),
        row("if_match_current_tag_proceeds", &[("if-match", "\"v1\"")], CUR, PUT, Proceed),
        row("if_match_tag_later_in_list_proceeds", &[("if-match", "\"v0\", , \"v1\"")], CUR, PUT, Proceed),
        row("if_match_tag_on_second_line_proceeds", &[("if-match", "\"v0\""), ("if-match", "\"v1\"")], CUR, PUT, Proceed),
        row("if_match_stale_tag_fails", &[("if-match", "\"v0\"")], CUR, PUT, Failed),
        row("if_match_stale_tag_fails_get_too", &[("if-match", "\"v0\"")], CUR, GET, Failed),
        row("weak_listed_tag_never_matches_if_match", &[("if-match", "W/\"v1\"")], CUR, PUT, Failed),
        row("weak_current_tag_never_matches_if_match", &[("if-match", "\"v1\"")], (true, Tag::Weak, Lm::None), PUT, Failed),
        row("if_match_without_current_tag_fails", &[("if-match", "\"v1\"")], (true, Tag::None, Lm::None), PUT, Failed),
        row("if_match_on_missing_resource_fails", &[("if-match", "\"v1\"")], (false, Tag::Strong, Lm::None), PUT, Failed),
        row("if_match_unquoted_fails", &[("if-match", "v1")], CUR, PUT, Failed),
        row("if_match_malformed_tail_fails_despite_match", &[("if-match", "\"v1\", v2")], CUR, PUT, Failed),
        row("if_match_star_mixed_with_tag_fails", &[("if-match", "*, \"v1\"")], CUR, PUT, Failed),
        row("if_match_malformed_fails_get_too", &[("if-match", "\"v1")], CUR, GET, Failed),
        row("if_match_empty_fails", &[("if-match", "")], CUR, PUT, Failed),
        // Step 1 true skips step 2; step 1 false wins over everything after it.
        row("if_match_true_ignores_failing_ius", &[("if-match", "\"v1\""), ("if-unmodified-since", EARLIER)], CUR, PUT, Proceed),
        row("if_match_false_ignores_passing_ius", &[("if-match", "\"v0\""), ("if-unmodified-since", T0)], CUR, PUT, Failed),
        row("if_match_false_beats_if_none_match_on_get", &[("if-match", "\"v0\""), ("if-none-match", "\"v1\"")], CUR, GET, Failed),
        row("if_match_true_then_inm_match_on_get_is_304", &[("if-match", "\"v1\""), ("if-none-match", "\"v1\"")], CUR, GET, NotModified),
        row("if_match_true_then_inm_match_on_put_fails", &[("if-match", "\"v1\""), ("if-none-match", "\"v1\"")], CUR, PUT, Failed),
        row("if_match_true_then_ims_on_get_is_304", &[("if-match", "\"v1\""), ("if-modified-since", T0)], CUR, GET, NotModified),
        // Step 2: If-Unmodified-Since.
        row("ius_same_second_proceeds", &[("if-unmodified-since", T0)], CUR, PUT, Proceed),
        row("ius_subsecond_modification_same_second_proceeds", &[("if-unmodified-since", T0)], (true, Tag::Strong, Lm::At(0.5)), PUT, Proceed),
        row("ius_older_modification_proceeds", &[("if-unmodified-since", T0)], (true, Tag::Strong, Lm::At(-3600.0)), PUT, Proceed),
        row("ius_modified_after_date_fails", &[("if-unmodified-since", EARLIER)], CUR, PUT, Failed),
        row("ius_modified_one_second_later_fails", &[("if-unmodified-since", T0)], (true, Tag::Strong, Lm::At(1.0)), PUT, Failed),
        row("ius_without_last_modified_fails", &[("if-unmodified-since", T0)], (true, Tag::Strong, Lm::None), PUT, Failed),
        row("ius_on_missing_resource_fails", &[("if-unmodified-since", T0)], MISSING, PUT, Failed),
        row("ius_rfc850_date_is_read", &[("if-unmodified-since", "Saturday, 05-Nov-94 08:49:37 GMT")], CUR, PUT, Failed),
        row("ius_rfc850_same_date_proceeds", &[("if-unmodified-since", RFC850)], CUR, PUT, Proceed),
        row("ius_asctime_date_is_read", &[("if-unmodified-since", "Sat Nov  5 08:49:37 1994")], CUR, PUT, Failed),
        row("ius_asctime_same_date_proceeds", &[("if-unmodified-since", ASCTIME)], CUR, PUT, Proceed),
        row("ius_invalid_date_is_ignored", &[("if-unmodified-since", "yesterday")], CUR, PUT, Proceed),
        row("ius_list_of_dates_is_ignored", &[("if-unmodified-since", EARLIER), ("if-unmodified-since", EARLIER)], CUR, PUT, Proceed),
        row("ius_failing_on_get_fails", &[("if-unmodified-since", EARLIER)], CUR, GET, Failed),
        row("ius_true_then_inm_match_on_get_is_304", &[("if-unmodified-since", T0), ("if-none-match", "\"v1\"")], CUR, GET, NotModified),
        row("ius_false_beats_inm_on_get", &[("if-unmodified-since", EARLIER), ("if-none-match", "\"v1\"")], CUR, GET, Failed),
        // Step 3: If-None-Match, weak comparison.
        row("inm_star_existing_get_is_304", &[("if-none-match", "*")], CUR, GET, NotModified),
        row("inm_star_existing_put_fails", &[("if-none-match", "*")], CUR, PUT, Failed),
        row("inm_star_missing_put_creates", &[("if-none-match", "*")], MISSING, PUT, Proceed),
        row("inm_current_tag_get_is_304", &[("if-none-match", "\"v1\"")], CUR, GET, NotModified),
        row("inm_current_tag_in_list_get_is_304", &[("if-none-match", "\"a\", \"b\", \"v1\"")], CUR, GET, NotModified),
        row("inm_current_tag_put_fails", &[("if-none-match", "\"v1\"")], CUR, PUT, Failed),
        row("inm_weak_listed_tag_matches_strong_current", &[("if-none-match", "W/\"v1\"")], CUR, GET, NotModified),
        row("inm_strong_listed_tag_matches_weak_current", &[("if-none-match", "\"v1\"")], (true, Tag::Weak, Lm::None), GET, NotModified),
        row("inm_other_tag_get_proceeds", &[("if-none-match", "\"v0\"")], CUR, GET, Proceed),
        row("inm_other_tag_put_proceeds", &[("if-none-match", "\"v0\"")], CUR, PUT, Proceed),
        row("inm_without_current_tag_proceeds", &[("if-none-match", "\"v1\"")], (true, Tag::None, Lm::None), GET, Proceed),
        row("inm_tag_on_missing_resource_proceeds", &[("if-none-match", "\"v1\"")], (false, Tag::Strong, Lm::None), PUT, Proceed),
        row("inm_malformed_get_is_ignored", &[("if-none-match", "v1")], CUR, GET, Proceed),
        row("inm_malformed_put_fails", &[("if-none-match", "v1")], CUR, PUT, Failed),
        row("inm_star_mixed_put_fails", &[("if-none-match", "*, \"v0\"")], MISSING, PUT, Failed),
        // Step 3 present skips step 4, whatever its result.
        row("inm_no_match_get_ignores_ims", &[("if-none-match", "\"v0\""), ("if-modified-since", T0)], CUR, GET, Proceed),
        row("inm_malformed_get_ignores_ims", &[("if-none-match", "\"v1"), ("if-modified-since", T0)], CUR, GET, Proceed),
        row("inm_match_get_ignores_failing_ims", &[("if-none-match", "\"v1\""), ("if-modified-since", EARLIER)], CUR, GET, NotModified),
        // Step 4: If-Modified-Since, safe methods only.
        row("ims_same_second_get_is_304", &[("if-modified-since", T0)], CUR, GET, NotModified),
        row("ims_subsecond_modification_same_second_is_304", &[("if-modified-since", T0)], (true, Tag::Strong, Lm::At(0.999)), GET, NotModified),
        row("ims_modified_after_date_get_proceeds", &[("if-modified-since", EARLIER)], CUR, GET, Proceed),
        row("ims_on_put_is_ignored", &[("if-modified-since", T0)], CUR, PUT, Proceed),
        row("ims_invalid_date_is_ignored", &[("if-modified-since", "-1")], CUR, GET, Proceed),
        row("ims_list_of_dates_is_ignored", &[("if-modified-since", T0), ("if-modified-since", T0)], CUR, GET, Proceed),
        row("ims_without_last_modified_proceeds", &[("if-modified-since", T0)], (true, Tag::Strong, Lm::None), GET, Proceed),
        row("ims_on_missing_resource_proceeds", &[("if-modified-since", T0)], MISSING, GET, Proceed),
        row("ims_asctime_date_is_read", &[("if-modified-since", ASCTIME)], CUR, GET, NotModified),
    ];

    #[test]
    fn evaluate_follows_rfc_9110_13_2_2_table() {
        let strong = EntityTag::strong("v1").unwrap();
        let weak = EntityTag::weak("v1").unwrap();
        for row in ROWS {
            let current = Current {
                exists: row.exists,
                etag: match row.tag {
                    Tag::None => None,
                    Tag::Strong => Some(&strong),
                    Tag::Weak => Some(&weak),
                },
                last_modified: match row.lm {
                    Lm::None => None,
                    Lm::At(offset) if offset >= 0.0 => Some(t0() + Duration::from_secs_f64(offset)),
                    Lm::At(offset) => Some(t0() - Duration::from_secs_f64(-offset)),
                },
            };
            let conditions = Conditions::from_headers(&headers(row.fields));
            assert_eq!(
                evaluate(&conditions, &current, row.safe),
                row.expected,
                "{}",
                row.name
            );
        }
    }

    #[test]
    fn fixed_dates_parse_to_t0() {
        for text in [T0, RFC850, ASCTIME] {
            assert_eq!(httpdate::parse_http_date(text).unwrap(), t0(), "{text}");
        }
    }

    #[test]
    fn seconds_round_down_before_and_after_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(2)), -2);
    }

    #[test]
    fn which_fields_count_as_conditions() {
        // (fields, is_empty, has_write_precondition, any_write_condition)
        type Fields = &'static [(&'static str, &'static str)];
        let rows: [(Fields, bool, bool, bool); 9] = [
            (&[], true, false, false),
            (&[("if-match", "\"v1\"")], false, true, true),
            (&[("if-match", "garbage")], false, true, true),
            (&[("if-unmodified-since", T0)], false, true, true),
            (&[("if-unmodified-since", "garbage")], false, false, true),
            (&[("if-none-match", "*")], false, false, true),
            (&[("if-none-match", "garbage")], false, false, true),
            (&[("if-modified-since", T0)], false, false, false),
            (&[("if-range", "\"v1\""), ("etag", "\"v1\"")], true, false, false),
        ];
        for (fields, empty, write_precondition, any_write) in rows {
            let conditions = Conditions::from_headers(&headers(fields));
            assert_eq!(conditions.is_empty(), empty, "{fields:?}");
            assert_eq!(
                conditions.has_write_precondition(),
                write_precondition,
                "{fields:?}"
            );
            assert_eq!(conditions.any_write_condition(), any_write, "{fields:?}");
        }
        assert!(Conditions::default().is_empty());
    }
}

/// Property tests: [`evaluate`] against a reference model of RFC 9110 §13.2.2 written
/// over plain values, with patchgate's documented choices where the RFC leaves room.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// RFC 9110's example date, 784111777 s after the epoch.
    const T0: u64 = 784_111_777;
    /// Opaque parts the model draws from, so that matches are frequent.
    const OPAQUES: [&str; 3] = ["v0", "v1", "v2"];

    #[derive(Clone, Debug)]
    enum TagField {
        Star,
        /// (weak, index into OPAQUES); rendered on one line or split over two.
        List(Vec<(bool, usize)>, bool),
        Malformed(&'static str),
    }

    #[derive(Clone, Debug)]
    enum DateField {
        /// Seconds after T0.
        At(i64),
        Invalid,
        /// The same valid date on two lines: a list, so not an HTTP-date.
        Twice(i64),
    }

    #[derive(Clone, Debug)]
    struct Request {
        if_match: Option<TagField>,
        if_none_match: Option<TagField>,
        if_unmodified_since: Option<DateField>,
        if_modified_since: Option<DateField>,
        safe: bool,
    }

    #[derive(Clone, Debug)]
    struct Representation {
        exists: bool,
        etag: Option<(bool, usize)>,
        /// Milliseconds after T0.
        last_modified: Option<i64>,
    }

    fn tag_field() -> impl Strategy<Value = TagField> {
        let tag = (any::<bool>(), 0..OPAQUES.len());
        prop_oneof![
            1 => Just(TagField::Star),
            4 => (prop::collection::vec(tag, 0..4), any::<bool>()).prop_map(|(t, s)| TagField::List(t, s)),
            1 => prop::sample::select(vec!["v1", "\"v1", "*, \"v1\"", "W/ \"v1\"", "\"v1\" \"v2\"", "w/\"v1\""])
                .prop_map(TagField::Malformed),
        ]
    }

    fn date_field() -> impl Strategy<Value = DateField> {
        prop_oneof![
            4 => (-3i64..=3).prop_map(DateField::At),
            1 => Just(DateField::Invalid),
            1 => (-3i64..=3).prop_map(DateField::Twice),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            prop::option::weighted(0.4, tag_field()),
            prop::option::weighted(0.4, tag_field()),
            prop::option::weighted(0.3, date_field()),
            prop::option::weighted(0.3, date_field()),
            any::<bool>(),
        )
            .prop_map(|(im, inm, ius, ims, safe)| Request {
                if_match: im,
                if_none_match: inm,
                if_unmodified_since: ius,
                if_modified_since: ims,
                safe,
            })
    }

    fn representation() -> impl Strategy<Value = Representation> {
        (
            any::<bool>(),
            prop::option::weighted(0.8, (any::<bool>(), 0..OPAQUES.len())),
            prop::option::weighted(0.7, -3000i64..=3000),
        )
            .prop_map(|(exists, etag, last_modified)| Representation {
                exists,
                etag,
                last_modified,
            })
    }

    fn at(offset_ms: i64) -> SystemTime {
        let t0 = UNIX_EPOCH + Duration::from_secs(T0);
        let d = Duration::from_millis(offset_ms.unsigned_abs());
        if offset_ms >= 0 { t0 + d } else { t0 - d }
    }

    fn render_tag((weak, i): (bool, usize)) -> String {
        format!("{}\"{}\"", if weak { "W/" } else { "" }, OPAQUES[i])
    }

    fn put_tags(map: &mut HeaderMap, name: header::HeaderName, field: &TagField) {
        let lines: Vec<String> = match field {
            TagField::Star => vec!["*".into()],
            TagField::Malformed(text) => vec![(*text).into()],
            TagField::List(tags, split) if *split && tags.len() > 1 => {
                let (a, b) = tags.split_at(1);
                [a, b]
                    .iter()
                    .map(|part| part.iter().map(|t| render_tag(*t)).collect::<Vec<_>>().join(", "))
                    .collect()
            }
            TagField::List(tags, _) => {
                vec![tags.iter().map(|t| render_tag(*t)).collect::<Vec<_>>().join(", ")]
            }
        };
        for line in lines {
            map.append(name.clone(), HeaderValue::from_str(&line).unwrap());
        }
    }

    fn put_date(map: &mut HeaderMap, name: header::HeaderName, field: &DateField) {
        let date = |s: i64| HeaderValue::from_str(&httpdate::fmt_http_date(at(s * 1000))).unwrap();
        match field {
            DateField::At(s) => map.append(name, date(*s)),
            DateField::Invalid => map.append(name, HeaderValue::from_static("yesterday")),
            DateField::Twice(s) => {
                map.append(name.clone(), date(*s));
                map.append(name, date(*s))
            }
        };
    }

    fn headers(req: &Request) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(f) = &req.if_match {
            put_tags(&mut map, header::IF_MATCH, f);
        }
        if let Some(f) = &req.if_none_match {
            put_tags(&mut map, header::IF_NONE_MATCH, f);
        }
        if let Some(f) = &req.if_unmodified_since {
            put_date(&mut map, header::IF_UNMODIFIED_SINCE, f);
        }
        if let Some(f) = &req.if_modified_since {
            put_date(&mut map, header::IF_MODIFIED_SINCE, f);
        }
        map
    }

    /// RFC 9110 §13.2.2 steps 1–5 over the model's values.
    fn model(req: &Request, rep: &Representation) -> Outcome {
        let etag = rep.etag.filter(|_| rep.exists);
        // HTTP-dates have whole seconds: compare the modification time rounded down.
        let modified = rep
            .last_modified
            .filter(|_| rep.exists)
            .map(|ms| ms.div_euclid(1000));
        let unmodified_since = |date: i64| modified.is_some_and(|m| m <= date);
        // Step 1: If-Match, strong comparison (§13.1.1); unreadable is false.
        if let Some(field) = &req.if_match {
            let holds = match field {
                TagField::Star => rep.exists,
                TagField::List(tags, _) => tags.iter().any(|&(weak, i)| !weak && etag == Some((false, i))),
                TagField::Malformed(_) => false,
            };
            if !holds {
                return Outcome::Failed;
            }
        // Step 2: If-Unmodified-Since (§13.1.4); an invalid date is ignored, an unknown
        // Last-Modified proves nothing.
        } else if let Some(DateField::At(date)) = req.if_unmodified_since
            && !unmodified_since(date)
        {
            return Outcome::Failed;
        }
        // Step 3: If-None-Match, weak comparison (§13.1.2).
        if let Some(field) = &req.if_none_match {
            let holds = match field {
                TagField::Star => !rep.exists,
                TagField::List(tags, _) => !tags.iter().any(|&(_, i)| etag.is_some_and(|(_, cur)| cur == i)),
                TagField::Malformed(_) => req.safe,
            };
            if !holds {
                return if req.safe {
                    Outcome::NotModified
                } else {
                    Outcome::Failed
                };
            }
        // Step 4: If-Modified-Since, GET/HEAD only (§13.1.3).
        } else if req.safe
            && let Some(DateField::At(date)) = req.if_modified_since
            && unmodified_since(date)
        {
            return Outcome::NotModified;
        }
        Outcome::Proceed
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn evaluate_agrees_with_the_rfc_9110_model(req in request(), rep in representation()) {
            let tag = rep.etag.map(|(weak, i)| {
                if weak { EntityTag::weak(OPAQUES[i]) } else { EntityTag::strong(OPAQUES[i]) }.unwrap()
            });
            let current = Current {
                exists: rep.exists,
                etag: tag.as_ref(),
                last_modified: rep.last_modified.map(at),
            };
            let map = headers(&req);
            let conditions = Conditions::from_headers(&map);
            prop_assert_eq!(evaluate(&conditions, &current, req.safe), model(&req, &rep), "{:?}", map);

            prop_assert_eq!(conditions.is_empty(), map.is_empty());
            prop_assert_eq!(
                conditions.has_write_precondition(),
                req.if_match.is_some() || matches!(req.if_unmodified_since, Some(DateField::At(_)))
            );
            prop_assert_eq!(
                conditions.any_write_condition(),
                req.if_match.is_some() || req.if_none_match.is_some() || req.if_unmodified_since.is_some()
            );
        }
    }
}
