//! The pooled client the binary puts under the layer: keep-alive pools over HTTP and
//! HTTPS (rustls, webpki roots plus each origin's `ca_file`s), resending once on a new
//! connection when [`retry`]'s rule allows.

use std::{
    collections::{BTreeSet, HashMap},
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::{
    client::legacy::{self, Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use super::{retry, tracked};
use crate::body::Body;
use crate::config::Config;

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

/// Why the client could not be built; the text names the route key and the file.
#[derive(Debug)]
pub enum ClientError {
    CaFile {
        route: usize,
        path: PathBuf,
        problem: CaProblem,
    },
    /// rustls refused the client configuration.
    Tls(rustls::Error),
}

/// What is wrong with a `ca_file`.
#[derive(Debug)]
pub enum CaProblem {
    Unreadable(io::Error),
    NotPem(rustls::pki_types::pem::Error),
    NoCertificate,
    Unusable(rustls::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::CaFile { route, path, problem } => {
                write!(f, "route[{route}].ca_file: {}: ", path.display())?;
                match problem {
                    CaProblem::Unreadable(e) => write!(f, "cannot read: {e}"),
                    CaProblem::NotPem(e) => write!(f, "not valid PEM: {e}"),
                    CaProblem::NoCertificate => {
                        f.write_str("no PEM certificate (-----BEGIN CERTIFICATE-----) found")
                    }
                    CaProblem::Unusable(e) => write!(f, "not a usable CA certificate: {e}"),
                }
            }
            ClientError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<rustls::Error> for ClientError {
    fn from(e: rustls::Error) -> ClientError {
        ClientError::Tls(e)
    }
}

/// Builds the client: webpki roots, plus each https origin's `ca_file`s for that origin.
/// Errors name the route key and the file.
pub fn client(config: &Config) -> Result<Client, ClientError> {
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
                load_ca_file(path).map_err(|problem| ClientError::CaFile {
                    route: i,
                    path: path.clone(),
                    problem,
                })?,
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

fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaProblem> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(io) => CaProblem::Unreadable(io),
            e => CaProblem::NotPem(e),
        })?;
    if certs.is_empty() {
        return Err(CaProblem::NoCertificate);
    }
    // Parse each one now, so a bad file fails at start-up rather than on first use.
    let mut probe = rustls::RootCertStore::empty();
    for cert in &certs {
        probe.add(cert.clone()).map_err(CaProblem::Unusable)?;
    }
    Ok(certs)
}

fn tls_config(extra_roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_ca_file_error_names_the_route_key_and_the_file() {
        let path = Path::new("/nonexistent/patchgate/ca.pem");
        let problem = load_ca_file(path).unwrap_err();
        let text = ClientError::CaFile {
            route: 2,
            path: path.to_owned(),
            problem,
        }
        .to_string();
        assert!(
            text.starts_with("route[2].ca_file: /nonexistent/patchgate/ca.pem: cannot read: "),
            "{text}"
        );
    }
}
