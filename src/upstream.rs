//! The upstream side: a pooled keep-alive hyper client (HTTP and HTTPS through rustls),
//! the request head patchgate sends upstream, and the classification of upstream failures.

mod retry;
mod tracked;

pub use retry::{ReplayBody, set_body};

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderValue, Method, Uri, header, request};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::{
    client::legacy::{self, Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::body::{Body, BoxError};
use crate::config::Config;
use crate::headers::{self, VIA_PATCHGATE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::problem::Error;

/// What the server knows of the client connection; inserted into request extensions.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// A connection with its exchanges recorded for [`retry`]; `Tracked` speaks tokio's IO
/// traits, hence the `TokioIo` on both sides.
type Io = TokioIo<tracked::Tracked<TokioIo<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>>>;
type Connector = tower::util::MapResponse<
    HttpsConnector<HttpConnector>,
    fn(MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>) -> Io,
>;

/// A keep-alive pool, and a client over the same connector that opens a new connection
/// for every request (for [`retry`]).
#[derive(Clone)]
struct Pooled {
    pool: HyperClient<Connector, Body>,
    fresh: HyperClient<Connector, Body>,
}

/// The pooled client the binary puts under the layer: one hyper client per distinct
/// trust set, chosen by the request's origin.
///
/// Trust is per upstream origin (`https://host:port`): an origin that routes give a
/// `ca_file` is verified against the webpki roots plus exactly those files; every other
/// origin against the webpki roots alone. Routes sharing an origin share its trust, as
/// they would share its connections.
#[derive(Clone)]
pub struct Client {
    default: Pooled,
    by_origin: Arc<HashMap<String, Pooled>>,
}

impl Client {
    fn pick(&self, uri: &Uri) -> &Pooled {
        origin_key(uri.scheme_str(), uri.host(), uri.port_u16())
            .and_then(|key| self.by_origin.get(&key))
            .unwrap_or(&self.default)
    }
}

type ResponseFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, legacy::Error>> + Send>>;

impl tower::Service<http::Request<Body>> for Client {
    type Response = http::Response<Incoming>;
    type Error = legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), legacy::Error>> {
        // hyper's pooled client is always ready; it waits for a connection per call.
        Poll::Ready(Ok(()))
    }

    /// One pooled attempt and, when [`retry`]'s rule allows, one more on a new connection.
    fn call(&mut self, req: http::Request<Body>) -> ResponseFuture {
        let pooled = self.pick(req.uri());
        let replay = retry::Replay::of(&req);
        let fresh = replay.as_ref().map(|_| pooled.fresh.clone());
        let first = pooled.pool.request(req);
        Box::pin(async move {
            match (first.await, replay, fresh) {
                (Err(err), Some(replay), Some(fresh)) => retry::after_failure(err, replay, fresh).await,
                (result, _, _) => result,
            }
        })
    }
}

/// Builds the client: webpki roots, plus each https origin's `ca_file`s for that origin.
/// Errors name the route key and the file.
pub fn client(config: &Config) -> anyhow::Result<Client> {
    let mut trust: HashMap<String, BTreeSet<PathBuf>> = HashMap::new();
    let mut loaded: HashMap<PathBuf, Vec<CertificateDer<'static>>> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let Some(path) = &route.ca_file else { continue };
        let up = &route.upstream;
        let Some(key) = origin_key(
            Some(up.scheme.as_str()),
            Some(up.authority.host()),
            up.authority.port_u16(),
        ) else {
            continue;
        };
        if !loaded.contains_key(path) {
            loaded.insert(
                path.clone(),
                load_ca_file(path).map_err(|e| anyhow::anyhow!("route[{i}].ca_file: {e}"))?,
            );
        }
        trust.entry(key).or_default().insert(path.clone());
    }
    let default = pooled(tls_config(&[])?);
    let mut by_set: HashMap<BTreeSet<PathBuf>, Pooled> = HashMap::new();
    let mut by_origin = HashMap::new();
    for (origin, files) in trust {
        let client = match by_set.get(&files) {
            Some(client) => client.clone(),
            None => {
                let extra: Vec<_> = files
                    .iter()
                    .filter_map(|f| loaded.get(f))
                    .flatten()
                    .cloned()
                    .collect();
                let client = pooled(tls_config(&extra)?);
                by_set.insert(files, client.clone());
                client
            }
        };
        by_origin.insert(origin, client);
    }
    Ok(Client {
        default,
        by_origin: Arc::new(by_origin),
    })
}

/// `https://host:port` in lowercase with the port spelled out; `None` for anything but https.
fn origin_key(scheme: Option<&str>, host: Option<&str>, port: Option<u16>) -> Option<String> {
    if !scheme?.eq_ignore_ascii_case("https") {
        return None;
    }
    let host = host?.to_ascii_lowercase();
    Some(format!("https://{host}:{}", port.unwrap_or(443)))
}

fn load_ca_file(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(io) => anyhow::anyhow!("{}: cannot read: {io}", path.display()),
            e => anyhow::anyhow!("{}: not valid PEM: {e}", path.display()),
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
            path.display()
        );
    }
    // Parse each one now, so a bad file fails at start-up rather than on first use.
    let mut probe = rustls::RootCertStore::empty();
    for cert in &certs {
        probe
            .add(cert.clone())
            .map_err(|e| anyhow::anyhow!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(certs)
}

fn tls_config(extra_roots: &[CertificateDer<'static>]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A keep-alive pool over HTTP or HTTPS; SNI and verification use the URI's host.
fn pooled(tls: rustls::ClientConfig) -> Pooled {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let track: fn(MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>) -> Io =
        |io| TokioIo::new(tracked::Tracked::new(TokioIo::new(io)));
    let connector = tower::ServiceExt::<Uri>::map_response(connector, track);
    let mut builder = HyperClient::builder(TokioExecutor::new());
    builder.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    let fresh = builder.clone().pool_max_idle_per_host(0).build(connector.clone());
    let pool = builder
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector);
    Pooled { pool, fresh }
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
    headers.append(header::VIA, VIA_PATCHGATE);
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

/// Maps a client error to the problem patchgate answers with.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Error {
    let mut text = err.to_string();
    for e in chain(err) {
        if e.is::<http_body_util::LengthLimitError>() {
            return Error::BodyTooLarge { max: 0 };
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Error::UpstreamTls {
                detail: tls.to_string(),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            text = io.to_string();
        }
    }
    if let Some(hyper_err) = chain(err).find_map(|e| e.downcast_ref::<hyper::Error>()) {
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

/// Every error in `err`'s chain. `io::Error::source` returns the source of the error it
/// wraps, skipping that error itself; hyper-rustls wraps rustls's io::Error in another
/// io::Error, so following `source` alone would never reach the `rustls::Error`.
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| {
        match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

/// Boxed error from any upstream service, for [`classify`].
pub fn classify_boxed(err: &BoxError) -> Error {
    classify(err.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for hyper-util's client error: a wrapper whose `source` is the connector's.
    #[derive(Debug)]
    struct Wrapper(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_certificate_error_inside_nested_io_errors_is_a_tls_failure() {
        // What hyper-rustls returns: io::Error::other(tokio-rustls's io::Error(rustls::Error)).
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let tokio_rustls = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let err = Wrapper(Box::new(std::io::Error::other(tokio_rustls)));
        match classify(&err) {
            Error::UpstreamTls { detail } => assert!(detail.contains("UnknownIssuer"), "{detail}"),
            other => panic!("expected UpstreamTls, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_connection_is_unreachable_with_the_io_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Wrapper(Box::new(io));
        match classify(&err) {
            Error::UpstreamUnreachable { detail } => assert_eq!(detail, "connection refused"),
            other => panic!("expected UpstreamUnreachable, got {other:?}"),
        }
    }

    #[test]
    fn origin_keys_spell_out_the_port_and_ignore_plain_http() {
        assert_eq!(
            origin_key(Some("https"), Some("API.Example"), None).as_deref(),
            Some("https://api.example:443")
        );
        assert_eq!(
            origin_key(Some("https"), Some("127.0.0.1"), Some(8443)).as_deref(),
            Some("https://127.0.0.1:8443")
        );
        assert_eq!(origin_key(Some("http"), Some("h"), Some(80)), None);
        assert_eq!(origin_key(None, Some("h"), None), None);
    }
}
