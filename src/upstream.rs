//! The upstream side: a pooled keep-alive hyper client (HTTP and HTTPS through rustls),
//! the request head patchgate sends upstream, and the classification of upstream failures.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue, Method, Uri, header, request};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::body::{Body, BoxError};
use crate::config::Config;
use crate::headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::problem::Error;

/// The pooled client the binary puts under the layer.
pub type Client = HyperClient<HttpsConnector<HttpConnector>, Body>;

/// What the server knows of the client connection; inserted into request extensions.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Builds the client: webpki roots plus every route's `ca_file`.
pub fn client(config: &Config) -> anyhow::Result<Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for route in &config.routes {
        if let Some(path) = &route.ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| anyhow::anyhow!("route {}: ca_file {}: {e}", route.name, path.display()))?;
            if certs.is_empty() {
                anyhow::bail!(
                    "route {}: ca_file {}: no certificate found",
                    route.name,
                    path.display()
                );
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("route {}: ca_file {}: {e}", route.name, path.display()))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector))
}

/// Rewrites the client's request head for the upstream: absolute URI on the configured
/// upstream (never the client's authority), hop-by-hop headers removed, `Host` set,
/// forwarding headers and `Via` added.
pub fn prepare(parts: &mut request::Parts, uri: Uri, upstream_host: &HeaderValue) {
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    let info = parts.extensions.get::<ConnInfo>().copied();
    add_forwarding(&mut parts.headers, info, original_host);
    parts.headers.insert(header::HOST, upstream_host.clone());
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
    headers.append(header::VIA, HeaderValue::from_static("1.1 patchgate"));
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
    let host = client.headers.get(header::HOST).cloned();
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

/// Maps a client error to the problem patchgate answers with.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut text = err.to_string();
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return Error::BodyTooLarge { max: 0 };
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Error::UpstreamTls {
                detail: tls.to_string(),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Error::UpstreamTls {
                    detail: inner.to_string(),
                };
            }
            text = io.to_string();
        }
        source = e.source();
    }
    if let Some(hyper_err) = find::<hyper::Error>(err) {
        if hyper_err.is_parse() || hyper_err.is_parse_status() {
            return Error::UpstreamInvalid {
                detail: hyper_err.to_string(),
            };
        }
        if hyper_err.is_user() {
            return Error::ClientBody;
        }
    }
    Error::UpstreamUnreachable { detail: text }
}

fn find<'a, T: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        source = e.source();
    }
    None
}

/// Boxed error from any upstream service, for [`classify`].
pub fn classify_boxed(err: &BoxError) -> Error {
    classify(err.as_ref())
}
