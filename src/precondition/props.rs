//! Property tests: [`evaluate`] against a reference model of RFC 9110 §13.2.2 written
//! over plain values, with patchgate's documented choices where the RFC leaves room.

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
