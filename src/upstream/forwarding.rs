//! The request head patchgate sends upstream: the configured upstream's URI and `Host`,
//! hop-by-hop headers removed, forwarding headers (RFC 7239 `Forwarded`, `X-Forwarded-*`)
//! and `Via` added.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Method, Uri, header, request};

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
    let info = parts.extensions.get::<ConnInfo>().copied();
    add_forwarding(&mut parts.headers, info, original_host);
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

fn add_forwarding(headers: &mut HeaderMap, info: Option<ConnInfo>, host: Option<HeaderValue>) {
    let proto = if info.is_some_and(|i| i.tls) {
        "https"
    } else {
        "http"
    };
    if let Some(info) = info {
        let ip = info.peer.ip();
        let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let mut forwarded = format!("for={node};proto={proto}");
        if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
            forwarded.push_str(";host=\"");
            forwarded.push_str(h);
            forwarded.push('"');
        }
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            headers.append(header::FORWARDED, v);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST, h);
    }
    headers.append(header::VIA, crate::headers::VIA_PATCHGATE);
}

/// A request patchgate makes on its own behalf (reads for the write path, patched
/// writes), carrying the client's credentials and forwarding headers.
pub fn own_request(
    method: Method,
    uri: Uri,
    client: &request::Parts,
    upstream_host: &HeaderValue,
    body: Body,
) -> http::Request<Body> {
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    let parts_headers = req.headers_mut();
    for (name, value) in &client.headers {
        if is_credential_or_context(name) {
            parts_headers.append(name, value.clone());
        }
    }
    let info = client.extensions.get::<ConnInfo>().copied();
    let host = client_authority(&client.uri, &client.headers);
    add_forwarding(req.headers_mut(), info, host);
    req.headers_mut().insert(header::HOST, upstream_host.clone());
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
