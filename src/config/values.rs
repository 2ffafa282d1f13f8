//! Single `proxy.toml` values → typed values. Pure functions over the raw text; errors are
//! messages saying how to fix the value, and the caller adds the key and position.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use http::Uri;
use http::uri::Scheme;

use super::raw::{RawDuration, RawSize};
use super::{EtagMode, Freshness, Upstream, parse_duration, parse_size};

type Result<T> = std::result::Result<T, String>;

pub(super) fn size(raw: &RawSize) -> Result<u64> {
    match raw {
        RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| format!("a size cannot be negative, found {n}")),
        RawSize::Text(s) => parse_size(s),
    }
}

pub(super) fn nonzero_size(raw: &RawSize) -> Result<u64> {
    match size(raw)? {
        0 => Err(positive("size", "\"1MiB\"")),
        n => Ok(n),
    }
}

pub(super) fn nonzero_duration(raw: &RawDuration) -> Result<Duration> {
    let d = parse_duration(&raw.0)?;
    if d.is_zero() {
        Err(positive("duration", "\"30s\""))
    } else {
        Ok(d)
    }
}

fn positive(what: &str, example: &str) -> String {
    format!("must be greater than zero; write a {what} such as {example}")
}

pub(super) fn listen(s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        let names = if s.chars().any(|c| c.is_ascii_alphabetic()) && !s.contains('[') {
            "; host names are not resolved, use an IP address"
        } else {
            ""
        };
        format!(
            "expected an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\", found {s:?}{names}"
        )
    })
}

pub(super) fn file_path(s: &str) -> Result<PathBuf> {
    if s.is_empty() {
        Err("must not be empty; give the path to a PEM file".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

/// A matchit 0.9 template: `{name}` is one segment, `{*rest}` the remainder.
pub(super) fn path_template(s: &str) -> Result<String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/', e.g. \"/api/people/{{id}}\""));
    }
    if s.chars()
        .any(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{s:?} may not contain '?', '#', spaces or control characters; a route matches paths only"
        ));
    }
    let problem = match matchit::Router::new().insert(s, ()) {
        Ok(()) => return Ok(s.to_owned()),
        Err(matchit::InsertError::InvalidParamSegment) => "only one {parameter} is allowed per path segment",
        Err(matchit::InsertError::InvalidParam) => {
            "a parameter needs a name between braces, like {id} or {*rest}"
        }
        Err(matchit::InsertError::InvalidCatchAll) => {
            "a {*catch_all} parameter is only allowed as the last segment"
        }
        Err(_) => "the template is not a valid matchit path",
    };
    Err(format!(
        "{s:?} is not a valid path template: {problem} (write literal braces as {{{{ and }}}})"
    ))
}

/// A literal, whole-segment leading part of the route's `path`.
pub(super) fn strip_prefix(s: &str, path: &str) -> Result<String> {
    if !s.starts_with('/') || s.len() < 2 || s.ends_with('/') {
        return Err(format!(
            "{s:?} must start with '/' and not end with '/', e.g. \"/api\""
        ));
    }
    if s.contains(['{', '}']) {
        return Err(format!(
            "{s:?} must be literal text; parameters such as {{id}} cannot be stripped"
        ));
    }
    let at_boundary = path
        .strip_prefix(s)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !at_boundary {
        return Err(format!(
            "{s:?} is not a leading part of the route path {path:?}; strip_prefix must match whole segments at its start"
        ));
    }
    Ok(s.to_owned())
}

/// An http(s) base URL (RFC 9110 §4.2; parts as in RFC 3986 §3). Userinfo is refused
/// (RFC 9110 §4.2.4 deprecates it) and so are query and fragment, since request paths are
/// appended to it. Trailing slashes are dropped from the base path.
pub(super) fn upstream(s: &str) -> Result<Upstream> {
    const HINT: &str = "write a base URL such as \"http://127.0.0.1:3000\" or \"https://api.internal/v1\"";
    if s.contains('#') {
        return Err(format!("{s:?} has a #fragment; {HINT}"));
    }
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a valid URL ({e}); {HINT}"))?;
    let parts = uri.into_parts();
    let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
        return Err(format!("{s:?} is not an absolute URL; {HINT}"));
    };
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "unsupported scheme {:?} in {s:?}; use http or https",
            scheme.as_str()
        ));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?} contains user info (user@host); remove it, clients' own credentials are forwarded"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{s:?} has no host; {HINT}"));
    }
    // `port()` is None for an unparsable port, so look at the text after the host.
    let port = authority
        .as_str()
        .rsplit_once(':')
        .filter(|(_, port)| !port.contains(']'));
    if port.is_some_and(|(_, port)| port.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(format!("{s:?} has an invalid port; use 1-65535"));
    }
    let path_and_query = parts
        .path_and_query
        .map(|pq| (pq.path().to_owned(), pq.query().is_some()));
    let (path, has_query) = path_and_query.unwrap_or_default();
    if has_query || s.contains('?') {
        return Err(format!(
            "{s:?} has a ?query; an upstream is a base URL the request path is appended to"
        ));
    }
    let base_path = path.trim_end_matches('/').to_owned();
    Ok(Upstream {
        scheme,
        authority,
        base_path,
    })
}

/// "revalidate" | "exclusive" | "http" | a duration greater than zero.
pub(super) fn freshness(s: &str) -> Result<Freshness> {
    match s {
        "revalidate" => Ok(Freshness::Revalidate),
        "exclusive" => Ok(Freshness::Exclusive),
        "http" => Ok(Freshness::Http),
        _ if s
            .trim_start()
            .starts_with(|c: char| c.is_ascii_digit() || c == '-') =>
        {
            match parse_duration(s)? {
                d if d.is_zero() => {
                    Err("a freshness of zero means always ask the upstream; write \"revalidate\"".to_owned())
                }
                d => Ok(Freshness::For(d)),
            }
        }
        _ => Err(format!(
            "expected \"revalidate\", \"exclusive\", \"http\" or a duration such as \"5s\", found {s:?}"
        )),
    }
}

pub(super) fn etag(s: &str) -> Result<EtagMode> {
    match s {
        "auto" => Ok(EtagMode::Auto),
        "upstream" => Ok(EtagMode::Upstream),
        "hash" => Ok(EtagMode::Hash),
        _ => Err(format!(
            "expected \"auto\", \"upstream\" or \"hash\", found {s:?}"
        )),
    }
}

/// Methods are case-sensitive (RFC 9110 §9.1), so "put" is not "PUT".
pub(super) fn write_method(s: &str) -> Result<Method> {
    match s {
        "PUT" => Ok(Method::PUT),
        "POST" => Ok(Method::POST),
        _ => Err(format!("expected \"PUT\" or \"POST\" (upper case), found {s:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn upstream_base_path_loses_trailing_slashes_only() {
        let table = [
            ("http://h", "h", ""),
            ("http://h/", "h", ""),
            ("https://h:8443/api/", "h:8443", "/api"),
            ("http://h/a/b//", "h", "/a/b"),
            ("http://10.0.0.1:80/a//b", "10.0.0.1:80", "/a//b"),
            ("http://[::1]", "[::1]", ""),
        ];
        for (url, authority, base) in table {
            let u = upstream(url).unwrap();
            assert_eq!(
                (u.authority.as_str(), u.base_path.as_str()),
                (authority, base),
                "{url}"
            );
        }
        assert_eq!(upstream("HTTPS://h").unwrap().scheme, Scheme::HTTPS);
    }

    #[test]
    fn freshness_accepts_keywords_and_positive_durations() {
        assert_eq!(freshness("revalidate"), Ok(Freshness::Revalidate));
        assert_eq!(freshness("exclusive"), Ok(Freshness::Exclusive));
        assert_eq!(freshness("http"), Ok(Freshness::Http));
        assert_eq!(freshness("250ms"), Ok(Freshness::For(Duration::from_millis(250))));
        assert!(
            freshness("Revalidate")
                .unwrap_err()
                .contains("found \"Revalidate\"")
        );
        assert!(freshness("-5s").unwrap_err().contains("cannot be negative"));
    }

    #[test]
    fn listen_needs_an_ip_and_port() {
        assert_eq!(listen("0.0.0.0:0"), Ok(SocketAddr::from(([0, 0, 0, 0], 0))));
        assert!(
            listen("127.0.0.1")
                .unwrap_err()
                .contains("expected an IP address and port")
        );
        assert!(
            listen("example.com:80")
                .unwrap_err()
                .contains("host names are not resolved")
        );
    }
}
