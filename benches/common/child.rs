//! A legacy upstream with a distinct document for every `/docs/{n}`, and the release
//! binary started as a child process in front of it: shared by the benches that read
//! the child's resident memory (`memory`, `growth`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::common;

pub const CONNS: usize = 32;

/// A document of exactly `size` bytes (the generator's stops at the first item that
/// reaches it): a shorter one with a `"pad"` member making up the difference.
pub fn exact_document(size: usize) -> String {
    const PAD: usize = r#","pad":"""#.len();
    let mut target = size;
    loop {
        let doc = String::from_utf8(common::document(target)).expect("documents are UTF-8");
        if doc.len() + PAD <= size || target == 0 {
            let fill = "x".repeat(size.saturating_sub(doc.len() + PAD));
            return format!("{},\"pad\":\"{fill}\"}}", &doc[..doc.len() - 1]);
        }
        target -= 1;
    }
}

/// A legacy upstream with a distinct document for every `/docs/{n}`: the template with
/// its `"n":0` member set to `n`, padded so every document has the same length.
pub async fn start_upstream(template: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let template: &'static str = Box::leak(template.into_boxed_str());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let n: u64 = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    // `"n":0,` becomes `"n":12345,` and `"ada Lovelace"` loses as many
                    // characters, so the length stays the same.
                    let digits = n.to_string();
                    let name = "Ada Lovelace";
                    let cut = (digits.len() - 1).min(name.len() - 1);
                    let body = template
                        .replacen("\"n\":0,", &format!("\"n\":{digits},"), 1)
                        .replacen(name, &name[cut..], 1);
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr, max_bytes: u64) -> Proxy {
        let (addr, admin) = (free_port(), free_port());
        let dir = TempDir::new();
        let config = dir.0.join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
                 [cache]\nmax_bytes = {max_bytes}\nmax_entry_bytes = \"64KiB\"\n\n\
                 [[route]]\nname = \"docs\"\npath = \"/docs/{{id}}\"\n\
                 upstream = \"http://{upstream}\"\nfreshness = \"exclusive\"\n"
            ),
        )
        .expect("write proxy.toml");
        let child = Command::new(env!("CARGO_BIN_EXE_patchgate"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start patchgate");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "patchgate did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Proxy {
            child,
            addr,
            admin,
            _dir: dir,
        }
    }

    /// A `/proc/<pid>/status` field, in bytes.
    pub fn status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = get(self.admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8_lossy(&body).into_owned()
    }

    pub fn stop(mut self) {
        // SIGTERM: a graceful exit, so allocator statistics (MIMALLOC_SHOW_STATS=1) print.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Reads `/docs/0` … `/docs/{docs - 1}` once each over `CONNS` keep-alive connections.
pub async fn fill(proxy: SocketAddr, docs: usize) {
    let auth = std::env::var_os("PATCHGATE_MEM_AUTH").is_some();
    let tasks: Vec<_> = (0..CONNS)
        .map(|k| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(proxy).await.expect("connect");
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                let user = format!("Bearer user-{k}");
                for n in (k..docs).step_by(CONNS) {
                    let mut request = Request::get(format!("/docs/{n}"))
                        .header(header::HOST, "bench")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    if auth {
                        let value = header::HeaderValue::from_str(&user).expect("header value");
                        request.headers_mut().insert(header::AUTHORIZATION, value);
                    }
                    let response = sender.send_request(request).await.expect("response");
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.expect("body");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("fill task");
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, "bench")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "patchgate-memory-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
