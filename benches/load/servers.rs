//! The servers under test, both in this process on 127.0.0.1:0: a minimal legacy
//! upstream and the real proxy, started the way the integration tests start them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The legacy upstream: GET and PUT of documents in memory, HTTP/1.1 keep-alive, no
/// validators, no conditional requests.
pub struct Upstream {
    pub addr: SocketAddr,
    // A std lock: nothing async happens while it is held.
    docs: Arc<RwLock<HashMap<String, Bytes>>>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let docs: Arc<RwLock<HashMap<String, Bytes>>> = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        let task = tokio::spawn(upstream_accept(listener, docs.clone(), counters.clone()));
        Upstream {
            addr,
            docs,
            counters,
            task,
        }
    }

    /// (requests, connections) received so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.requests.load(Ordering::Relaxed),
            self.counters.connections.load(Ordering::Relaxed),
        )
    }

    pub fn put(&self, path: &str, body: Bytes) {
        self.docs.write().unwrap().insert(path.to_owned(), body);
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn upstream_accept(
    listener: TcpListener,
    docs: Arc<RwLock<HashMap<String, Bytes>>>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stream.set_nodelay(true).unwrap();
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let (docs, counters) = (docs.clone(), counters.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                upstream_handle(docs.clone(), req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn upstream_handle(
    docs: Arc<RwLock<HashMap<String, Bytes>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let path = parts.uri.path();
    Ok(match parts.method {
        Method::GET | Method::HEAD => match docs.read().unwrap().get(path) {
            Some(doc) => {
                let mut response = Response::new(Full::new(doc.clone()));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            None => status(StatusCode::NOT_FOUND),
        },
        Method::PUT => {
            let created = docs.write().unwrap().insert(path.to_owned(), body).is_none();
            status(if created {
                StatusCode::CREATED
            } else {
                StatusCode::NO_CONTENT
            })
        }
        _ => {
            let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
            response
        }
    })
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

/// The proxy on 127.0.0.1:0, run as the binary runs it; logging stays off (no tracing
/// subscriber is installed).
pub struct RunningProxy {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Signals shutdown, waits for `run` to return and re-raises its panic.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("proxy task: {e}"),
            Err(_) => panic!("the proxy did not shut down within 15 s"),
        }
    }
}

/// The bench's proxy configuration: `/excl/…` and `/reval/…` in front of `upstream`.
fn proxy_toml(upstream: SocketAddr, listen: SocketAddr) -> String {
    // `PATCHGATE_BENCH_REDIS=redis://…`: the proxy coordinates through that Redis.
    let cluster = std::env::var("PATCHGATE_BENCH_REDIS")
        .ok()
        .filter(|url| !url.is_empty())
        .map(|url| format!("[cluster]\nredis = \"{url}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "{listen}"

[[route]]
name = "exclusive"
path = "/excl/{{*rest}}"
strip_prefix = "/excl"
upstream = "http://{upstream}"
freshness = "exclusive"

[[route]]
name = "revalidate"
path = "/reval/{{*rest}}"
strip_prefix = "/reval"
upstream = "http://{upstream}"
freshness = "revalidate"

{cluster}
"#
    )
}

pub async fn start_proxy(upstream: SocketAddr) -> RunningProxy {
    let toml = proxy_toml(upstream, ([127, 0, 0, 1], 0).into());
    let config =
        patchgate::Config::from_toml(&toml, "bench.toml").unwrap_or_else(|e| panic!("bench config: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = patchgate::Proxy::with_listeners(&config, listener, None).unwrap();
    let addr = proxy.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    RunningProxy { addr, stop, task }
}

/// The release binary with the same configuration, as a process of its own (as nginx
/// runs): its runtime shares no worker with the load generator and the upstream.
pub struct ChildProxy {
    pub addr: SocketAddr,
    child: std::process::Child,
    config: std::path::PathBuf,
}

impl ChildProxy {
    pub async fn start(upstream: SocketAddr) -> ChildProxy {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let config = std::env::temp_dir().join(format!("patchgate-bench-proxy-{}.toml", std::process::id()));
        std::fs::write(&config, proxy_toml(upstream, addr)).expect("write the proxy's config");
        let level = std::env::var("PATCHGATE_BENCH_LOG").unwrap_or_else(|_| "warn".into());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_patchgate"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", level)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start patchgate");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "patchgate did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ChildProxy { addr, child, config }
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
