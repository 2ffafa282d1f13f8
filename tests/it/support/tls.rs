//! TLS for the integration tests: a private CA and leaf certificates made with rcgen, an
//! https front that terminates TLS before the plain legacy upstream (recording the SNI it
//! was asked for), the proxy started with a handle on its listener TLS, and an HTTPS
//! client over tokio-rustls that negotiates HTTP/1.1 or h2 by ALPN.
//!
//! Invariant: every client call is bounded by `CLIENT_TIMEOUT`; a test never hangs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use patchgate::server::ListenerTls;
use patchgate::{Config, Proxy};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{CLIENT_TIMEOUT, Response};

/// ALPN protocol ids.
pub const H2: &[u8] = b"h2";
pub const HTTP11: &[u8] = b"http/1.1";

/// A private certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this CA.
    pub fn leaf(&self, common_name: &str) -> Leaf {
        self.leaf_for(common_name, &["localhost", "127.0.0.1"])
    }

    /// A server certificate for `names`, signed by this CA.
    pub fn leaf_for(&self, common_name: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the CA certificate as `name` in `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }
}

/// A leaf certificate and its private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Leaf {
    /// Writes `cert.pem` and `key.pem` into `dir` (replacing what is there).
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs = vec![self.der.clone()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        config.alpn_protocols = vec![HTTP11.to_vec()];
        Arc::new(config)
    }
}

/// A fresh empty directory for one test's files.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("patchgate-tls-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `[server.tls]` lines for a TOML config.
pub fn server_tls(cert: &Path, key: &Path) -> String {
    format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// Terminates TLS on 127.0.0.1:0 with `leaf` and relays the plain bytes to `backend`.
pub struct TlsFront {
    addr: SocketAddr,
    server_names: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(backend: SocketAddr, leaf: &Leaf) -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(leaf.server_config());
        let server_names = Arc::new(Mutex::new(Vec::new()));
        let names = server_names.clone();
        // The JoinSet lives in this task, so aborting it drops every relay.
        let task = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while relays.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                let names = names.clone();
                relays.spawn(async move {
                    // A handshake the client aborts (it does not trust us) just ends here.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    names.lock().unwrap().push(sni);
                    if let Ok(mut plain) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            addr,
            server_names,
            task,
        }
    }

    /// `https://localhost:PORT`, so the proxy verifies (and sends SNI for) `localhost`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The SNI of every completed handshake, in order.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server_names.lock().unwrap().clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy on 127.0.0.1:0 with a handle on its listener TLS, for reload tests.
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub tls: Arc<ListenerTls>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start(toml: &str) -> TlsProxy {
        let config = Config::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::with_listeners(&config, listener, None).unwrap_or_else(|e| panic!("{e:#}"));
        let addr = proxy.local_addr().unwrap();
        let tls = proxy.tls().expect("the config has [server.tls]");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy.run(async move {
            let _ = rx.await;
        }));
        TlsProxy {
            addr,
            tls,
            stop: Some(tx),
            task,
        }
    }

    /// Stops the proxy and re-raises a panic of its task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("proxy task: {e}"),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection to `localhost` trusting only `ca`, speaking what ALPN chose.
pub struct HttpsConn {
    addr: SocketAddr,
    sender: Sender,
    /// The end-entity certificate the server presented.
    pub peer_cert: CertificateDer<'static>,
    pub version: Version,
}

impl HttpsConn {
    /// Connects offering `alpn` in order; panics if the handshake fails.
    pub async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> HttpsConn {
        bounded(format!("TLS connect to {addr}"), HttpsConn::open(addr, ca, alpn)).await
    }

    async fn open(addr: SocketAddr, ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> HttpsConn {
        let tls = tls_stream(addr, ca, alpn).await;
        let session = tls.get_ref().1;
        let peer_cert = session.peer_certificates().unwrap()[0].clone();
        let h2 = session.alpn_protocol() == Some(H2);
        let io = TokioIo::new(tls);
        let (sender, version) = if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            (Sender::H2(sender), Version::HTTP_2)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            (Sender::H1(sender), Version::HTTP_11)
        };
        HttpsConn {
            addr,
            sender,
            peer_cert,
            version,
        }
    }

    /// Sends one request on this connection and reads the whole response.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let what = format!("https {method} {path} to {}", self.addr);
        let mut request = Request::new(Full::new(body.into()));
        *request.method_mut() = Method::from_bytes(method.as_bytes()).unwrap();
        let authority = format!("localhost:{}", self.addr.port());
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let (sender, version) = (&mut self.sender, self.version);
        bounded(what.clone(), async move {
            let response = match sender {
                Sender::H1(sender) => {
                    *request.uri_mut() = path.parse().unwrap();
                    request
                        .headers_mut()
                        .insert(http::header::HOST, HeaderValue::from_str(&authority).unwrap());
                    sender.ready().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                    sender.send_request(request).await
                }
                Sender::H2(sender) => {
                    *request.uri_mut() = format!("https://{authority}{path}").parse().unwrap();
                    sender.ready().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                    sender.send_request(request).await
                }
            }
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"))
                .to_bytes();
            assert_eq!(parts.version, version, "{what}: response version");
            Response {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        })
        .await
    }
}

/// A TLS connection to `localhost` at `addr` trusting only `ca`, offering `alpn`, for
/// tests that write raw bytes over TLS; panics if the handshake fails.
pub async fn tls_stream(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// One request on a fresh HTTPS connection.
pub async fn send_tls(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    HttpsConn::connect(addr, ca, alpn)
        .await
        .send(method, path, headers, body)
        .await
}

async fn bounded<T>(what: String, work: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(CLIENT_TIMEOUT, work).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {CLIENT_TIMEOUT:?}"),
    }
}
