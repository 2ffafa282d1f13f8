//! Header names patchgate uses that `http` does not define, hop-by-hop handling
//! (RFC 9110 §7.6.1), and the header helpers the layer, the cache and the upstream share.
//!
//! Invariant: a leaf module; it uses nothing from the crate.

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Response, Uri, Version, header};

pub const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");
pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The conditional request headers (RFC 9110 §13.1): patchgate evaluates a client's
/// conditions itself and asks the upstream only its own.
pub const CONDITIONALS: [HeaderName; 5] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// The `Via` entry patchgate adds to the requests and responses it passes on
/// (RFC 9110 §7.6.3).
pub const VIA_PATCHGATE: HeaderValue = HeaderValue::from_static("1.1 patchgate");

/// The fixed hop-by-hop set (RFC 9110 §7.6.1, and what proxies commonly add).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    PROXY_CONNECTION,
];

/// Removes the headers that describe one connection rather than the message: those
/// `Connection` names, and the fixed hop-by-hop set including every `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // Any other Proxy-* header is hop-by-hop too; rare, so only scan when present.
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let extra: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in extra {
            headers.remove(name);
        }
    }
}

/// Whether [`strip_hop_by_hop`] would remove `name` from `headers`, without changing
/// them.
pub fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(name)
        || name.as_str().starts_with("proxy-")
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Strips hop-by-hop headers from an upstream response and adds `Via` (RFC 9110 §7.6.3).
pub fn finish_response<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    strip_hop_by_hop(headers);
    headers.append(header::VIA, VIA_PATCHGATE);
    response
}

/// The `Content-Length` a message announces, when it is one valid number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether a request names its host acceptably:
/// - RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host` line, an HTTP/1.0 one at
///   most one; its value is empty or `uri-host [":" port]` (no userinfo). HTTP/2 and later
///   carry the authority in `:authority`, so only a present `Host` is checked there.
/// - RFC 9110 §4.2.4: userinfo in the target's authority (`http://user:pw@host/`, an
///   `:authority` with `@`) is an error, never a credential to pass on.
/// - RFC 9113 §8.3.1: on HTTP/2, a `Host` naming another entity than `:authority` makes
///   the request malformed. (On HTTP/1.1 an absolute-form target wins over `Host`, RFC 9112
///   §3.2.2, so a different `Host` there is ignored, not refused.)
pub fn host_is_valid(version: Version, target: &Uri, headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (first, more) = (hosts.next(), hosts.next().is_some());
    let authority = target.authority();
    if authority.is_some_and(|a| a.as_str().contains('@')) {
        return false;
    }
    let required = version == Version::HTTP_11;
    match first {
        None => !required,
        Some(_) if more => false,
        Some(value) => {
            let bytes = value.as_bytes();
            let valid = bytes.is_empty()
                || (!bytes.contains(&b'@') && Authority::try_from(bytes).is_ok_and(|a| has_digit_port(&a)));
            let h2 = version >= Version::HTTP_2;
            valid
                && match authority {
                    Some(authority) if h2 => same_entity(authority, bytes, target.scheme_str()),
                    _ => true,
                }
        }
    }
}

/// `host` names the same host and port as `authority`: host compared without case
/// (RFC 3986 §6.2.2.1), an absent port meaning the scheme's default (RFC 3986 §6.2.3).
fn same_entity(authority: &Authority, host: &[u8], scheme: Option<&str>) -> bool {
    let Ok(host) = Authority::try_from(host) else {
        return false;
    };
    let default = match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        _ => None,
    };
    authority.host().eq_ignore_ascii_case(host.host())
        && authority.port_u16().or(default) == host.port_u16().or(default)
}

/// `host`, `host:` or `host:digits` (RFC 3986 §3.2.3); `Authority` parses the port lazily.
fn has_digit_port(authority: &Authority) -> bool {
    let port = authority
        .as_str()
        .get(authority.host().len()..)
        .unwrap_or_default();
    match port.strip_prefix(':') {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    }
}

/// True when `Content-Encoding` names any coding other than `identity` (RFC 9110 §8.4).
pub fn has_content_coding(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|coding| {
            let coding = coding.trim_ascii();
            !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity")
        })
}

/// The same value in an allocation of its own. Values parsed from a request or response
/// head are slices of the connection's read buffer; anything kept beyond the exchange
/// would pin that whole buffer.
pub fn detached(value: &http::HeaderValue) -> http::HeaderValue {
    let copy = bytes::Bytes::copy_from_slice(value.as_bytes());
    let mut copy = http::HeaderValue::from_maybe_shared(copy).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// Test support: a header map from (name, value) pairs, repeated names appended.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn map_of(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn is_hop_by_hop_names_exactly_what_strip_removes() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "X-Trace, keep-alive"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-foo", "1"),
            ("content-type", "application/json"),
            ("etag", "\"a\""),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let mut stripped = headers.clone();
        strip_hop_by_hop(&mut stripped);
        for name in headers.keys() {
            assert_eq!(
                is_hop_by_hop(name, &headers),
                !stripped.contains_key(name),
                "{name}"
            );
        }
    }

    #[test]
    fn strips_connection_named_and_fixed_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-foo", HeaderValue::from_static("y"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn host_must_be_single_and_valid_on_http_1_1() {
        let map = |hosts: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in hosts {
                h.append(header::HOST, HeaderValue::from_bytes(v).unwrap());
            }
            h
        };
        let rows: [(&[&[u8]], bool, bool, bool); 10] = [
            // (Host lines, valid on HTTP/1.1, on HTTP/1.0, on HTTP/2)
            (&[], false, true, true),
            (&[b"example.com"], true, true, true),
            (&[b"127.0.0.1:8080"], true, true, true),
            (&[b"[::1]:80"], true, true, true),
            (&[b""], true, true, true),
            (&[b"a", b"a"], false, false, false),
            (&[b"a b"], false, false, false),
            (&[b"user@host"], false, false, false),
            (&[b"host/path"], false, false, false),
            (&[b"host:port"], false, false, false),
        ];
        for (hosts, h11, h10, h2) in rows {
            let h = map(hosts);
            let origin_form = Uri::from_static("/x");
            assert_eq!(
                host_is_valid(Version::HTTP_11, &origin_form, &h),
                h11,
                "{hosts:?}"
            );
            assert_eq!(
                host_is_valid(Version::HTTP_10, &origin_form, &h),
                h10,
                "{hosts:?}"
            );
            assert_eq!(host_is_valid(Version::HTTP_2, &origin_form, &h), h2, "{hosts:?}");
        }
    }

    #[test]
    fn a_target_with_userinfo_or_an_h2_host_naming_another_entity_is_refused() {
        let host = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(v));
            h
        };
        let none = HeaderMap::new();
        let rows: [(Version, &str, &HeaderMap, bool); 14] = [
            // RFC 9112 §3.2.2: absolute-form wins over a different Host on HTTP/1.1.
            (Version::HTTP_11, "http://a.example/x", &host("b.example"), true),
            (
                Version::HTTP_11,
                "http://user:pw@a.example/x",
                &host("a.example"),
                false,
            ),
            (
                Version::HTTP_11,
                "http://user@a.example/x",
                &host("a.example"),
                false,
            ),
            (Version::HTTP_10, "http://user@a.example/x", &none, false),
            // RFC 9113 §8.3.1: :authority alone, or a Host naming the same entity.
            (Version::HTTP_2, "https://a.example/x", &none, true),
            (Version::HTTP_2, "https://a.example/x", &host("a.example"), true),
            (
                Version::HTTP_2,
                "https://A.Example:443/x",
                &host("a.example"),
                true,
            ),
            (Version::HTTP_2, "http://a.example/x", &host("a.example:80"), true),
            (
                Version::HTTP_2,
                "https://a.example:8443/x",
                &host("a.example:8443"),
                true,
            ),
            (Version::HTTP_2, "https://a.example/x", &host("b.example"), false),
            (
                Version::HTTP_2,
                "https://a.example:8443/x",
                &host("a.example"),
                false,
            ),
            (Version::HTTP_2, "https://a.example/x", &host(""), false),
            (Version::HTTP_2, "https://u@a.example/x", &none, false),
            (Version::HTTP_2, "/x", &host("b.example"), true),
        ];
        for (version, target, headers, valid) in rows {
            let uri = Uri::from_static(target);
            assert_eq!(
                host_is_valid(version, &uri, headers),
                valid,
                "{version:?} {target} {headers:?}"
            );
        }
    }

    #[test]
    fn only_identity_is_no_content_coding() {
        let coded = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            has_content_coding(&h)
        };
        assert!(!coded(&[]));
        assert!(!coded(&["identity"]));
        assert!(!coded(&["Identity, "]));
        assert!(coded(&["gzip"]));
        assert!(coded(&["identity, br"]));
        assert!(coded(&["identity", "deflate"]));
    }
}
