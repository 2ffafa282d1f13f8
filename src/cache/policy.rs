//! Which responses may be stored, and which stored variant a request selects.
//!
//! RFC 9111 §3 (storing), §3.2 and §4.3.4 (updating after a `304`), §4.1 (Vary),
//! §5.2.2 (`no-cache`, `no-store`, `private`). Pure functions over header maps. Anything unparsable makes a response unstorable rather than guessed at:
//! a refetch is cheap, serving the wrong variant is not.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::etag::EntityTag;

/// The request header values a stored response was chosen by: the headers its `Vary`
/// names, each with all of its field lines in order (absent = no lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Selectors(Box<[(HeaderName, Box<[HeaderValue]>)]>);

impl Selectors {
    /// Records `request`'s values for the `Vary` names of a response (RFC 9111 §4.1).
    pub(super) fn capture(names: Vec<HeaderName>, request: &HeaderMap) -> Selectors {
        Selectors(
            names
                .into_iter()
                .map(|name| {
                    let values = request
                        .get_all(&name)
                        .iter()
                        .map(crate::headers::detached)
                        .collect();
                    (name, values)
                })
                .collect(),
        )
    }

    /// RFC 9111 §4.1: every nominated header has the same field lines in `request` as in
    /// the request the response was stored for. Compared line by line without
    /// normalization, which can only cause a miss, never a wrong hit.
    pub(super) fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, values)| request.get_all(name).iter().eq(values.iter()))
    }

    /// No `Vary`: every request selects the response.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes held, for the cache's accounting.
    pub(super) fn bytes(&self) -> usize {
        self.0
            .iter()
            .map(|(name, values)| name.as_str().len() + values.iter().map(HeaderValue::len).sum::<usize>())
            .sum()
    }
}

/// RFC 9111 §5.2.2.5: `Cache-Control: no-store` in any field line forbids storing.
pub(super) fn no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|value| has_directive(value.as_bytes(), b"no-store"))
}

/// RFC 9111 §5.2.2.7: `private` is meant for one user. The qualified form
/// (`private="field"`) is treated as unqualified, as §5.2.2.7 notes caches often do.
pub(super) fn private(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|value| has_directive(value.as_bytes(), b"private"))
}

/// RFC 9111 §5.2.2.4: a `no-cache` response is not used without revalidating it. The
/// qualified form is treated as unqualified, as §5.2.2.4 notes caches often do.
pub(super) fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|value| has_directive(value.as_bytes(), b"no-cache"))
}

/// RFC 9111 §4.3.4: whether a `304` identifies the stored response it answers. A
/// strong `ETag` must be the stored strong one, a weak one must match weakly; without
/// an `ETag`, a `Last-Modified` must be the stored one; a `304` with neither answers
/// the one response that was asked about. Anything unparsable identifies nothing.
pub(super) fn confirms(
    stored_etag: Option<&HeaderValue>,
    stored_modified: Option<SystemTime>,
    not_modified: &HeaderMap,
) -> bool {
    if let Some(fresh) = not_modified.get(header::ETAG) {
        let fresh = EntityTag::parse(fresh.as_bytes());
        let stored = stored_etag.and_then(|value| EntityTag::parse(value.as_bytes()));
        return match (fresh, stored) {
            (Some(fresh), Some(stored)) if fresh.is_weak() => fresh.weak_eq(&stored),
            (Some(fresh), Some(stored)) => fresh.strong_eq(&stored),
            _ => false,
        };
    }
    match not_modified.get(header::LAST_MODIFIED) {
        None => true,
        Some(fresh) => fresh
            .to_str()
            .ok()
            .and_then(|fresh| httpdate::parse_http_date(fresh).ok())
            .is_some_and(|fresh| Some(fresh) == stored_modified),
    }
}

/// Fields a `304` never changes in a stored response (RFC 9111 §3.2): its length, and
/// the coding, range and digest that describe the stored bytes, which it depends upon.
const DESCRIBE_THE_BYTES: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    HeaderName::from_static("content-md5"),
];

/// RFC 9111 §3.2: `stored` with each field of `fresh` that `replayed` picks replacing
/// the stored lines of that name; `None` when that changes nothing (the usual `304`).
pub(super) fn updated(
    stored: &HeaderMap,
    fresh: &HeaderMap,
    replayed: impl Fn(&HeaderName) -> bool,
) -> Option<HeaderMap> {
    let names: Vec<&HeaderName> = fresh
        .keys()
        .filter(|name| replayed(name) && !DESCRIBE_THE_BYTES.contains(name))
        .collect();
    let changed = names
        .iter()
        .any(|&name| !stored.get_all(name).iter().eq(fresh.get_all(name).iter()));
    if !changed {
        return None;
    }
    let mut merged = stored.clone();
    for name in names {
        merged.remove(name);
        for value in fresh.get_all(name) {
            merged.append(name.clone(), crate::headers::detached(value));
        }
    }
    Some(merged)
}

/// The field names a response's `Vary` lists (RFC 9110 §12.5.5), lowercased and
/// deduplicated; `None` for `Vary: *` or a name that is not a valid field name, since
/// such a response cannot be selected safely (RFC 9111 §4.1).
pub(super) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            if item == b"*" {
                return None;
            }
            let name = HeaderName::from_bytes(item).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// Whether a `Cache-Control` field value holds the directive `wanted` (RFC 9111 §5.2):
/// comma-separated `name[=value]` items, where a quoted value may contain commas.
fn has_directive(value: &[u8], wanted: &[u8]) -> bool {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b',' => {
                if directive_is(value.get(start..i).unwrap_or_default(), wanted) {
                    return true;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    directive_is(value.get(start..).unwrap_or_default(), wanted)
}

fn directive_is(item: &[u8], wanted: &[u8]) -> bool {
    let name = item.split(|&b| b == b'=').next().unwrap_or_default();
    name.trim_ascii().eq_ignore_ascii_case(wanted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::headers::map_of as headers;

    #[test]
    fn no_store_is_found_among_other_directives_in_any_case() {
        assert!(no_store(&headers(&[("cache-control", "max-age=60, No-Store")])));
        assert!(no_store(&headers(&[
            ("cache-control", "public"),
            ("cache-control", " no-store ")
        ])));
    }

    #[test]
    fn no_store_inside_a_quoted_value_or_as_a_prefix_is_not_the_directive() {
        assert!(!no_store(&headers(&[(
            "cache-control",
            r#"no-cache="no-store, x", max-age=5"#
        )])));
        assert!(!no_store(&headers(&[("cache-control", "no-stored, private")])));
        assert!(!no_store(&headers(&[("cache-control", r#"x="a\"b,no-store""#)])));
        assert!(!no_store(&HeaderMap::new()));
    }

    #[test]
    fn private_and_no_cache_do_not_prevent_storing() {
        assert!(!no_store(&headers(&[("cache-control", "private, no-cache")])));
    }

    #[test]
    fn private_and_no_cache_are_found_qualified_or_not_and_only_as_directives() {
        let cc = |value: &str| headers(&[("cache-control", value)]);
        assert!(private(&cc("max-age=60, Private")));
        assert!(private(&cc(r#"private="x-user", max-age=5"#)));
        assert!(!private(&cc(r#"no-cache="private", public"#)));
        assert!(!private(&cc("privately")));
        assert!(no_cache(&headers(&[
            ("cache-control", "public"),
            ("cache-control", "no-cache")
        ])));
        assert!(no_cache(&cc(r#"no-cache="set-cookie""#)));
        assert!(!no_cache(&cc("no-store, no-cached")));
        assert!(!no_cache(&HeaderMap::new()) && !private(&HeaderMap::new()));
    }

    #[test]
    fn a_304_confirms_the_stored_response_only_with_its_validator() {
        let tag = HeaderValue::from_static("\"a\"");
        let weak = HeaderValue::from_static("W/\"a\"");
        let date = "Wed, 01 Jan 2020 00:00:00 GMT";
        let when = httpdate::parse_http_date(date).ok();
        let etag = |value: &str| headers(&[("etag", value)]);
        assert!(confirms(Some(&tag), None, &etag("\"a\"")));
        assert!(confirms(Some(&tag), None, &etag("W/\"a\"")));
        assert!(confirms(Some(&weak), None, &etag("W/\"a\"")));
        // A strong validator identifies only a stored strong one.
        assert!(!confirms(Some(&weak), None, &etag("\"a\"")));
        assert!(!confirms(Some(&tag), None, &etag("\"b\"")));
        assert!(!confirms(None, when, &etag("\"a\"")));
        assert!(!confirms(Some(&tag), None, &etag("a")));
        // Without an ETag, Last-Modified decides.
        assert!(confirms(Some(&tag), when, &headers(&[("last-modified", date)])));
        assert!(!confirms(
            Some(&tag),
            when,
            &headers(&[("last-modified", "Thu, 02 Jan 2020 00:00:00 GMT")])
        ));
        assert!(!confirms(Some(&tag), None, &headers(&[("last-modified", date)])));
        assert!(!confirms(None, when, &headers(&[("last-modified", "yesterday")])));
        // No validator: it answers the one response asked about.
        assert!(confirms(Some(&tag), when, &HeaderMap::new()));
        assert!(confirms(None, None, &headers(&[("test-header", "b")])));
    }

    #[test]
    fn a_304_replaces_stored_fields_but_not_what_describes_the_bytes() {
        let stored = headers(&[
            ("content-type", "application/json"),
            ("cache-control", "max-age=1"),
            ("test-header", "a"),
            ("x-many", "1"),
            ("x-many", "2"),
        ]);
        let all = |_: &HeaderName| true;
        let fresh = headers(&[
            ("cache-control", "max-age=3600"),
            ("x-many", "3"),
            ("x-new", "n"),
            ("content-length", "10"),
            ("content-encoding", "gzip"),
            ("content-md5", "N7UdGUp1E+RbVvZSTy1R8g=="),
            ("x-dropped", "d"),
        ]);
        let merged = updated(&stored, &fresh, |name| name != "x-dropped").unwrap();
        let expected = headers(&[
            ("content-type", "application/json"),
            ("cache-control", "max-age=3600"),
            ("test-header", "a"),
            ("x-many", "3"),
            ("x-new", "n"),
        ]);
        assert_eq!(merged, expected);
        // Nothing new: no copy.
        assert_eq!(updated(&stored, &headers(&[("test-header", "a")]), all), None);
        assert_eq!(updated(&stored, &headers(&[("content-length", "3")]), all), None);
        assert_eq!(updated(&stored, &HeaderMap::new(), all), None);
        // Every line of a field counts, in order.
        assert!(updated(&stored, &headers(&[("x-many", "2"), ("x-many", "1")]), all).is_some());
    }

    #[test]
    fn vary_names_are_lowercased_deduplicated_and_span_field_lines() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Language, accept"),
            ("vary", "ACCEPT-language,,"),
        ]))
        .unwrap();
        assert_eq!(names, vec![header::ACCEPT_LANGUAGE, header::ACCEPT]);
        assert_eq!(vary_names(&HeaderMap::new()).unwrap(), Vec::<HeaderName>::new());
    }

    #[test]
    fn vary_star_or_an_invalid_name_is_unstorable() {
        assert_eq!(vary_names(&headers(&[("vary", "accept, *")])), None);
        assert_eq!(vary_names(&headers(&[("vary", "bad name")])), None);
    }

    #[test]
    fn selectors_match_only_the_same_values_absent_included() {
        let names = vec![header::ACCEPT_LANGUAGE];
        let en = Selectors::capture(names.clone(), &headers(&[("accept-language", "en")]));
        let none = Selectors::capture(names, &HeaderMap::new());
        assert!(en.matches(&headers(&[("accept-language", "en"), ("accept", "x")])));
        assert!(!en.matches(&headers(&[("accept-language", "fr")])));
        assert!(!en.matches(&HeaderMap::new()));
        assert!(none.matches(&HeaderMap::new()));
        assert!(!none.matches(&headers(&[("accept-language", "en")])));
        assert_eq!(en.bytes(), "accept-language".len() + 2);
    }

    #[test]
    fn selectors_compare_every_field_line_in_order() {
        let names = vec![header::ACCEPT];
        let two = Selectors::capture(names, &headers(&[("accept", "a"), ("accept", "b")]));
        assert!(two.matches(&headers(&[("accept", "a"), ("accept", "b")])));
        assert!(!two.matches(&headers(&[("accept", "a")])));
        assert!(!two.matches(&headers(&[("accept", "b"), ("accept", "a")])));
    }
}
