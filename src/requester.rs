//! Who is asking: one fingerprint per request, made of every value, in order, of every
//! `cache.key_headers` field.
//!
//! The cache key, shared revalidations, batched writes, kept parsed documents and the
//! read behind an enriched 412 all decide "may this request see that one's data" by this
//! one value, so two requests can never be told apart by one mechanism and confused by
//! another. Every field line counts: two `Cookie` lines `theme=dark` + `sid=A` and
//! `theme=dark` + `sid=B` are different requesters.

use http::{HeaderMap, HeaderName, HeaderValue, Version, header};

/// The fingerprint: per key header, its number of field lines, then each line's length
/// and bytes (all lengths 4 bytes, little-endian), so no two header sets encode alike.
/// A request without any key-header value is anonymous and allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Requester(Box<[u8]>);

impl Requester {
    /// The fingerprint of `headers` for the configured key headers.
    pub fn of(key_headers: &[HeaderName], headers: &HeaderMap) -> Requester {
        if !key_headers.iter().any(|name| headers.contains_key(name)) {
            return Requester::default();
        }
        let size: usize = key_headers
            .iter()
            .map(|name| 4 + headers.get_all(name).iter().map(|v| 4 + v.len()).sum::<usize>())
            .sum();
        let mut bytes = Vec::with_capacity(size);
        for name in key_headers {
            let values = headers.get_all(name);
            bytes.extend_from_slice(&len32(values.iter().count()));
            for value in values {
                bytes.extend_from_slice(&len32(value.len()));
                bytes.extend_from_slice(value.as_bytes());
            }
        }
        Requester(bytes.into_boxed_slice())
    }

    /// The fingerprint's bytes (every key-header value, in order).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// No key-header value at all: a response may be shared with every such request.
    pub fn is_anonymous(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes held, for the cache's accounting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// RFC 9113 §8.2.3: an h2 client may split `Cookie` into one field per cookie; an
/// HTTP/1.1 upstream must get them as one line joined with `"; "`. Done once, before the
/// request is fingerprinted, so both protocols key a requester alike.
pub fn join_h2_cookies(version: Version, headers: &mut HeaderMap) {
    if version != Version::HTTP_2 {
        return;
    }
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::headers::map_of as headers;

    fn keys() -> Vec<HeaderName> {
        vec![header::AUTHORIZATION, header::COOKIE]
    }

    #[test]
    fn every_field_line_of_every_key_header_counts() {
        let a = Requester::of(
            &keys(),
            &headers(&[("cookie", "theme=dark"), ("cookie", "sid=A")]),
        );
        let b = Requester::of(
            &keys(),
            &headers(&[("cookie", "theme=dark"), ("cookie", "sid=B")]),
        );
        assert_ne!(a, b);
        let two_auth = |second| {
            Requester::of(
                &keys(),
                &headers(&[("authorization", "Basic x"), ("authorization", second)]),
            )
        };
        assert_ne!(two_auth("Bearer 1"), two_auth("Bearer 2"));
    }

    #[test]
    fn lines_are_not_confused_by_how_they_split() {
        let one = Requester::of(&keys(), &headers(&[("cookie", "ab")]));
        let two = Requester::of(&keys(), &headers(&[("cookie", "a"), ("cookie", "b")]));
        let moved = Requester::of(&keys(), &headers(&[("authorization", "ab")]));
        assert_ne!(one, two);
        assert_ne!(one, moved);
        assert_eq!(
            one,
            Requester::of(&keys(), &headers(&[("cookie", "ab"), ("x-other", "1")]))
        );
    }

    #[test]
    fn no_key_header_is_anonymous_and_an_empty_value_is_not() {
        let none = Requester::of(&keys(), &headers(&[("accept", "*/*")]));
        assert!(none.is_anonymous());
        assert_eq!(none, Requester::default());
        assert!(!Requester::of(&keys(), &headers(&[("cookie", "")])).is_anonymous());
    }

    #[test]
    fn h2_cookie_fields_are_joined_and_h1_left_alone() {
        let split = headers(&[("cookie", "theme=dark"), ("cookie", "sid=A")]);
        let mut h2 = split.clone();
        join_h2_cookies(Version::HTTP_2, &mut h2);
        assert_eq!(
            h2.get_all(header::COOKIE).iter().collect::<Vec<_>>(),
            ["theme=dark; sid=A"]
        );
        let mut h1 = split.clone();
        join_h2_cookies(Version::HTTP_11, &mut h1);
        assert_eq!(h1, split);
    }
}
