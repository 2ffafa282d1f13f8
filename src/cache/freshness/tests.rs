#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::*;

use crate::headers::map_of as headers;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

fn life(pairs: &[(&str, &str)]) -> u32 {
    lifetime(&headers(pairs), at(1000), false)
}

#[test]
fn directives_are_split_lowercased_and_unquoted_across_lines() {
    let cc = directives(&headers(&[
        ("cache-control", r#"Max-Age=60, x="a,\"b", no-cache"#),
        ("cache-control", " PRIVATE ,,"),
    ]));
    let names: Vec<&str> = cc.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["max-age", "x", "no-cache", "private"]);
    assert_eq!(cc[0].1.as_deref(), Some("60"));
    assert_eq!(cc[1].1.as_deref(), Some("a,\"b"));
    assert_eq!(cc[2].1, None);
}

#[test]
fn delta_seconds_are_digits_only_and_capped() {
    assert_eq!(delta_seconds("003600"), Some(3600));
    assert_eq!(delta_seconds("0"), Some(0));
    assert_eq!(delta_seconds("2147483648"), Some(CAP));
    assert_eq!(delta_seconds("99999999999999999999999"), Some(CAP));
    for bad in ["", "-1", "1.5", "a1", "1a", " 1", "'1'"] {
        assert_eq!(delta_seconds(bad), None, "{bad}");
    }
}

#[test]
fn s_maxage_wins_over_max_age_which_wins_over_expires() {
    let expires = date(1000 + 500);
    assert_eq!(life(&[("cache-control", "max-age=60, s-maxage=5")]), 5);
    assert_eq!(
        life(&[("cache-control", "s-maxage=5"), ("cache-control", "max-age=60")]),
        5
    );
    assert_eq!(
        life(&[("cache-control", "max-age=60"), ("expires", &expires)]),
        60
    );
    assert_eq!(life(&[("cache-control", "max-age=0"), ("expires", &expires)]), 0);
    assert_eq!(life(&[("expires", &expires)]), 500);
    // The first occurrence counts; an invalid one is stale.
    assert_eq!(life(&[("cache-control", "max-age=60, max-age=5")]), 60);
    assert_eq!(life(&[("cache-control", "max-age=-60")]), 0);
    assert_eq!(life(&[("cache-control", "max-age='60'")]), 0);
    assert_eq!(life(&[("cache-control", r#"max-age="60""#)]), 60);
    // A quoted extension value is not a directive.
    assert_eq!(life(&[("cache-control", r#"ext="max-age=3600", max-age=1"#)]), 1);
    assert_eq!(life(&[("cache-control", "no-cache")]), 0);
}

#[test]
fn expires_in_the_past_invalid_or_repeated_is_stale() {
    assert_eq!(life(&[("expires", &date(10))]), 0);
    assert_eq!(life(&[("expires", "0")]), 0);
    let later = date(2000);
    assert_eq!(life(&[("expires", &later), ("expires", &later)]), 0);
    assert_eq!(life(&[]), 0);
}

#[test]
fn heuristic_freshness_only_when_asked_a_tenth_capped_at_a_day() {
    let modified = headers(&[("last-modified", &date(0))]);
    assert_eq!(lifetime(&modified, at(1000), false), 0);
    assert_eq!(lifetime(&modified, at(1000), true), 100);
    assert_eq!(lifetime(&modified, at(10_000_000), true), 86_400);
    // Explicit freshness is never replaced by the heuristic.
    let explicit = headers(&[("last-modified", &date(0)), ("cache-control", "max-age=0")]);
    assert_eq!(lifetime(&explicit, at(1000), true), 0);
    assert_eq!(
        lifetime(&headers(&[("last-modified", "yesterday")]), at(1000), true),
        0
    );
}

#[test]
fn initial_age_is_the_larger_of_apparent_age_and_age_plus_delay() {
    let sent = at(100);
    let got = at(102);
    // No Date, no Age: the response delay.
    assert_eq!(initial_age(&HeaderMap::new(), sent, got), Duration::from_secs(2));
    // Date 10 s before receipt.
    let dated = headers(&[("date", &date(92))]);
    assert_eq!(initial_age(&dated, sent, got), Duration::from_secs(10));
    // Age 60 + delay 2.
    let aged = headers(&[("date", &date(102)), ("age", "60")]);
    assert_eq!(initial_age(&aged, sent, got), Duration::from_secs(62));
    // A Date in the future is no negative age.
    let future = headers(&[("date", &date(500))]);
    assert_eq!(initial_age(&future, sent, got), Duration::from_secs(2));
}

#[test]
fn age_is_its_first_member_without_parameters_and_0_when_invalid() {
    let age = |lines: &[&str]| {
        let pairs: Vec<(&str, &str)> = lines.iter().map(|v| ("age", *v)).collect();
        age_value(&headers(&pairs))
    };
    assert_eq!(age(&[]), 0);
    assert_eq!(age(&["7200"]), 7200);
    assert_eq!(age(&["7200, 0"]), 7200);
    assert_eq!(age(&["0,7200"]), 0);
    assert_eq!(age(&["7200", "0"]), 7200);
    assert_eq!(age(&["0", "7200"]), 0);
    assert_eq!(age(&["7200;foo=bar"]), 7200);
    assert_eq!(age(&["2147483649"]), CAP);
    for invalid in ["abc", "-7200", "7200.0", ""] {
        assert_eq!(age(&[invalid]), 0, "{invalid}");
    }
    let old = headers(&[("age", "2147483648")]);
    assert_eq!(
        initial_age(&old, at(0), at(0)),
        Duration::from_secs(u64::from(CAP))
    );
}

#[test]
fn request_directives_and_pragma() {
    let wants = Wants::of(&headers(&[(
        "cache-control",
        "max-age=5, min-fresh=2, max-stale, only-if-cached, no-store",
    )]));
    assert_eq!(
        wants,
        Wants {
            no_cache: false,
            no_store: true,
            only_if_cached: true,
            max_age: Some(5),
            min_fresh: Some(2),
            max_stale: Some(CAP),
        }
    );
    assert_eq!(
        Wants::of(&headers(&[("cache-control", "max-stale=10")])).max_stale,
        Some(10)
    );
    assert!(Wants::of(&headers(&[("pragma", "no-cache")])).no_cache);
    assert!(!Wants::of(&headers(&[("pragma", "x")])).no_cache);
    // Cache-Control present: Pragma is ignored (RFC 9111 §5.4).
    assert!(
        !Wants::of(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=9")
        ]))
        .no_cache
    );
    // Invalid values read strictly.
    assert_eq!(
        Wants::of(&headers(&[("cache-control", "max-age=x")])).max_age,
        Some(0)
    );
    assert_eq!(
        Wants::of(&headers(&[("cache-control", "max-stale=x")])).max_stale,
        Some(0)
    );
}

#[test]
fn usable_follows_lifetime_and_request_directives() {
    let s = Duration::from_secs;
    let any = Wants::default();
    assert!(usable(s(5), 10, &any, || true));
    assert!(!usable(s(10), 10, &any, || true));
    assert!(!usable(s(0), 0, &any, || true));
    let no_cache = Wants {
        no_cache: true,
        ..any
    };
    assert!(!usable(s(0), 100, &no_cache, || true));
    let max_age = Wants {
        max_age: Some(3),
        ..any
    };
    assert!(usable(s(3), 100, &max_age, || true));
    assert!(!usable(s(4), 100, &max_age, || true));
    let min_fresh = Wants {
        min_fresh: Some(50),
        ..any
    };
    assert!(usable(s(50), 100, &min_fresh, || true));
    assert!(!usable(s(51), 100, &min_fresh, || true));
    let max_stale = Wants {
        max_stale: Some(20),
        ..any
    };
    assert!(usable(s(120), 100, &max_stale, || true));
    assert!(!usable(s(121), 100, &max_stale, || true));
    // must-revalidate and friends forbid it.
    assert!(!usable(s(101), 100, &max_stale, || false));
}

#[test]
fn stale_serving_is_forbidden_by_revalidation_directives() {
    let stale_ok = |cc: &str| may_serve_stale(&headers(&[("cache-control", cc)]));
    assert!(stale_ok("max-age=5"));
    assert!(!stale_ok("max-age=5, must-revalidate"));
    assert!(!stale_ok("max-age=5, Proxy-Revalidate"));
    assert!(!stale_ok("s-maxage=5"));
    assert!(!stale_ok("no-cache"));
}

#[test]
fn authorized_requests_store_only_what_the_response_allows() {
    let ok = |cc: &str| authorized_storable(&headers(&[("cache-control", cc)]));
    assert!(ok("public, max-age=5"));
    assert!(ok("s-maxage=5"));
    assert!(ok("must-revalidate"));
    assert!(ok("private, max-age=5"));
    assert!(!ok("max-age=5"));
    assert!(!authorized_storable(&HeaderMap::new()));
}

#[test]
fn age_header_is_whole_seconds() {
    assert_eq!(age_header(Duration::from_millis(2999)), "2");
    assert_eq!(age_header(Duration::from_secs(u64::MAX)), "2147483648");
}
