//! Entity tags and precondition headers: the input is split on `\n` into header lines;
//! each line's first byte picks `If-Match`, `If-None-Match`, `If-Unmodified-Since` or
//! `If-Modified-Since`. Lines a client could not send (control bytes) are dropped.
//!
//! Checks: no panic; `EntityTag::parse` round-trips; `scan_condition` agrees with
//! `parse_condition` for every current tag and comparison; `evaluate` runs for every
//! kind of current representation and method.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use patchgate::etag::{self, Comparison, EntityTag, Scan, TagCondition};
use patchgate::precondition::{Conditions, Current, evaluate};

fuzz_target!(|data: &[u8]| {
    if let Some(tag) = EntityTag::parse(data) {
        assert_eq!(EntityTag::parse(tag.to_header_value().as_bytes()), Some(tag));
    }

    let names = [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_MODIFIED_SINCE,
    ];
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(8) {
        let Some((&which, value)) = line.split_first() else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(names[usize::from(which) % names.len()].clone(), value);
        }
    }

    let strong = EntityTag::strong("v1").expect("etagc");
    let weak = EntityTag::weak("v1").expect("etagc");
    let listed = headers
        .get_all(header::IF_MATCH)
        .iter()
        .next()
        .and_then(|v| EntityTag::parse(v.as_bytes()));
    let currents = [Some(&strong), Some(&weak), listed.as_ref(), None];

    for name in [header::IF_MATCH, header::IF_NONE_MATCH] {
        let lines: Vec<&HeaderValue> = headers.get_all(&name).iter().collect();
        if lines.is_empty() {
            continue;
        }
        let parsed = etag::parse_condition(lines.iter().copied());
        for current in currents {
            for comparison in [Comparison::Strong, Comparison::Weak] {
                let scanned = etag::scan_condition(lines.iter().copied(), current, comparison);
                let expected = parsed.clone().map(|c| match c {
                    TagCondition::Any => Scan::Any,
                    TagCondition::Tags(tags) => Scan::Listed {
                        matched: current.is_some_and(|cur| {
                            tags.iter().any(|t| match comparison {
                                Comparison::Strong => cur.strong_eq(t),
                                Comparison::Weak => cur.weak_eq(t),
                            })
                        }),
                    },
                });
                assert_eq!(scanned, expected, "scan and parse disagree");
            }
        }
    }

    let conditions = Conditions::from_headers(&headers);
    let modified = UNIX_EPOCH + Duration::from_secs(784_111_777);
    for current in currents {
        for exists in [true, false] {
            for last_modified in [Some(modified), None] {
                for safe in [true, false] {
                    let state = Current {
                        exists,
                        etag: current,
                        last_modified,
                    };
                    let _ = evaluate(&conditions, &state, safe);
                }
            }
        }
    }
});
