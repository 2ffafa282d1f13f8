//! The request head patchgate sends upstream: the configured upstream's URI and `Host`,
//! hop-by-hop headers removed, forwarding headers (RFC 7239 `Forwarded`, `X-Forwarded-*`)
//! and `Via` added.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header, request};

use crate::body::Body;
use crate::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// What the server knows of the client connection; inserted into request extensions.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Rewrites the client's request head for the upstream: absolute URI on the configured
/// upstream (never the client's authority), hop-by-hop headers removed, `Host` set,
/// forwarding headers and `Via` added.
pub fn prepare(parts: &mut request::Parts, uri: Uri, upstream_host: &HeaderValue) {
    let original_host = client_authority(&parts.uri, &parts.headers);
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    let peer = parts
        .extensions
        .get::<ConnInfo>()
        .map(|info| (info.peer.ip(), info.tls));
    add_forwarding(&mut parts.headers, peer, original_host);
    parts.headers.insert(header::HOST, upstream_host.clone());
}

/// The authority the client addressed, for the forwarding headers: the target's own
/// (absolute-form, RFC 9112 §3.2.2; h2 `:authority`, RFC 9113 §8.3.1) before `Host`,
/// as RFC 9110 §7.2 reconstructs the target URI.
fn client_authority(target: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match target.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

fn add_forwarding(headers: &mut HeaderMap, peer: Option<(IpAddr, bool)>, host: Option<HeaderValue>) {
    let proto = if peer.is_some_and(|(_, tls)| tls) {
        "https"
    } else {
        "http"
    };
    // Each value is written once into a buffer the header then owns (no copy).
    if let Some((ip, _)) = peer {
        let prior = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
        let mut xff = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
        if let Some(prior) = prior {
            xff.push_str(prior);
            xff.push_str(", ");
        }
        push_ip(&mut xff, ip);
        if let Some(v) = shared(xff) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        let host = host.as_ref().and_then(|h| h.to_str().ok());
        let mut forwarded = String::with_capacity(64 + host.map_or(0, str::len));
        if ip.is_ipv6() {
            forwarded.push_str("for=\"[");
            push_ip(&mut forwarded, ip);
            forwarded.push_str("]\"");
        } else {
            forwarded.push_str("for=");
            push_ip(&mut forwarded, ip);
        }
        forwarded.push_str(";proto=");
        forwarded.push_str(proto);
        if let Some(h) = host {
            forwarded.push_str(";host=\"");
            forwarded.push_str(h);
            forwarded.push('"');
        }
        if let Some(v) = shared(forwarded) {
            headers.append(header::FORWARDED, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST, h);
    }
    headers.append(header::VIA, crate::headers::VIA_PATCHGATE);
}

/// Appends `ip` as `Display` writes it; IPv4 without the formatting machinery, which
/// cost more than the rest of the forwarding headers.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A header value that takes `text`'s buffer (checked, not copied).
fn shared(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// Everything of a client's request that goes into the head of a request patchgate
/// makes on its behalf ([`own_request`]): two clients with equal identities get equal
/// heads for the same target, which is what lets one write carry another's PATCH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The credential and context lines, in order.
    context: Vec<(HeaderName, HeaderValue)>,
    /// The client's address and whether it came over TLS.
    peer: Option<(IpAddr, bool)>,
    authority: Option<HeaderValue>,
}

/// The [`Identity`] of `client`.
pub fn identity(client: &request::Parts) -> Identity {
    Identity {
        context: client
            .headers
            .iter()
            .filter(|(name, _)| is_credential_or_context(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        peer: client
            .extensions
            .get::<ConnInfo>()
            .map(|info| (info.peer.ip(), info.tls)),
        authority: client_authority(&client.uri, &client.headers),
    }
}

/// A request patchgate makes on its own behalf (reads for the write path, patched
/// writes), carrying the client's credentials and forwarding headers: made of the
/// client's [`Identity`] alone.
pub fn own_request(
    method: Method,
    uri: Uri,
    client: &request::Parts,
    upstream_host: &HeaderValue,
    body: Body,
) -> http::Request<Body> {
    let Identity {
        context,
        peer,
        authority,
    } = identity(client);
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    let headers = req.headers_mut();
    for (name, value) in context {
        headers.append(name, value);
    }
    add_forwarding(headers, peer, authority);
    headers.insert(header::HOST, upstream_host.clone());
    *req.uri_mut() = uri;
    req
}

/// Client headers worth carrying on patchgate's own requests: who is asking and on
/// what terms, never conditionals or the client's body framing.
fn is_credential_or_context(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "cookie" | "accept-language" | "user-agent" | "x-request-id"
    ) || name.as_str().starts_with("x-api-")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    fn client(headers: &[(&str, &str)], peer: &str) -> request::Parts {
        let mut request = http::Request::builder().uri("/d?x=1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts.extensions.insert(ConnInfo {
            peer: peer.parse().unwrap(),
            tls: false,
        });
        parts
    }

    fn head(client: &request::Parts) -> (Uri, HeaderMap) {
        let host = HeaderValue::from_static("up");
        let uri: Uri = "http://up/d?x=1".parse().unwrap();
        let (parts, _) = own_request(Method::PUT, uri, client, &host, crate::body::empty()).into_parts();
        (parts.uri, parts.headers)
    }

    #[test]
    fn equal_identities_make_equal_heads_and_every_input_tells_them_apart() {
        let alice = client(
            &[("authorization", "a"), ("host", "h"), ("accept", "x")],
            "10.0.0.1:1",
        );
        let same = client(
            &[("authorization", "a"), ("host", "h"), ("accept", "y")],
            "10.0.0.1:2",
        );
        assert_eq!(
            identity(&alice),
            identity(&same),
            "neither Accept nor the port goes upstream"
        );
        assert_eq!(head(&alice), head(&same));
        for other in [
            client(&[("authorization", "b"), ("host", "h")], "10.0.0.1:1"),
            client(&[("authorization", "a"), ("host", "other")], "10.0.0.1:1"),
            client(&[("authorization", "a"), ("host", "h")], "10.0.0.2:1"),
            client(
                &[("authorization", "a"), ("host", "h"), ("cookie", "c")],
                "10.0.0.1:1",
            ),
        ] {
            assert_ne!(identity(&alice), identity(&other));
            assert_ne!(head(&alice), head(&other));
        }
    }
}
