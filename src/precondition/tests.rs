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
