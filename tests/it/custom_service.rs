//! The server runs any service, not only the layer over the pooled client: real HTTP to
//! a proxy whose upstream, or whose whole service, the caller supplied.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use patchgate::upstream::ConnInfo;
use patchgate::{Config, PatchLayer, Proxy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::*;

const MERGE_PATCH: (&str, &str) = ("content-type", "application/merge-patch+json");

type Docs = Arc<Mutex<HashMap<String, Bytes>>>;

/// A legacy API held in memory: GET and PUT of whole documents, nothing else.
async fn legacy(
    docs: Docs,
    req: Request<patchgate::body::Body>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let (status, body) = match *req.method() {
        Method::GET => match docs.lock().unwrap().get(&path) {
            Some(doc) => (StatusCode::OK, doc.clone()),
            None => (StatusCode::NOT_FOUND, Bytes::new()),
        },
        Method::PUT => {
            let doc = req.into_body().collect().await.unwrap().to_bytes();
            docs.lock().unwrap().insert(path, doc);
            (StatusCode::NO_CONTENT, Bytes::new())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
    }
    Ok(response)
}

/// Runs `proxy` until the returned sender fires; the handle re-raises its panic.
fn run<S, B>(proxy: Proxy<S>) -> (oneshot::Sender<()>, JoinHandle<()>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run(async move {
        let _ = rx.await;
    }));
    (tx, task)
}

async fn stop(tx: oneshot::Sender<()>, task: JoinHandle<()>) {
    let _ = tx.send(());
    if let Err(e) = task.await {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn the_layer_over_a_caller_supplied_upstream_service_serves_real_http() {
    let docs: Docs = Arc::default();
    docs.lock()
        .unwrap()
        .insert("/api/people/1".into(), Bytes::from(r#"{"id":1,"name":"Ada"}"#));
    let config = Config::from_toml(&one_route("http://legacy.invalid", "", ""), "test.toml").unwrap();
    let layer = PatchLayer::new(&config);
    let upstream = {
        let docs = Arc::clone(&docs);
        tower::service_fn(move |req| legacy(Arc::clone(&docs), req))
    };
    let service = tower::Layer::layer(&layer, upstream);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::with_service(&config, listener, Some(admin), service, Some(layer)).unwrap();
    let (addr, admin) = (proxy.local_addr().unwrap(), proxy.admin_addr().unwrap());
    let (tx, task) = run(proxy);

    let read = get(addr, "/api/people/1").await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.text(), r#"{"id":1,"name":"Ada"}"#);
    let etag = read.header("etag").expect("an ETag").to_owned();
    let patched = send(
        addr,
        "PATCH",
        "/api/people/1",
        &[MERGE_PATCH, ("if-match", &etag)],
        r#"{"name":"Grace"}"#,
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(
        docs.lock().unwrap()["/api/people/1"],
        r#"{"id":1,"name":"Grace"}"#
    );
    let metrics = get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("patchgate_requests_total{route=\"api\",method=\"PATCH\",status=\"200\"} 1"),
        "{}",
        metrics.text()
    );
    stop(tx, task).await;
}

#[tokio::test]
async fn a_service_without_the_layer_gets_the_connection_and_its_admin_has_no_metrics() {
    let config = Config::from_toml(&one_route("http://legacy.invalid", "", ""), "test.toml").unwrap();
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let peer = req.extensions().get::<ConnInfo>().map(|info| info.peer);
        let text = format!("{} {} from {peer:?}", req.method(), req.uri().path());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::with_service(&config, listener, Some(admin), service, None).unwrap();
    let (addr, admin) = (proxy.local_addr().unwrap(), proxy.admin_addr().unwrap());
    let (tx, task) = run(proxy);

    for got in [
        get(addr, "/anything").await,
        send_h2(addr, "GET", "/anything", &[], "").await,
    ] {
        assert_eq!(got.status, 200);
        assert!(
            got.text().starts_with("GET /anything from Some(127.0.0.1:"),
            "{}",
            got.text()
        );
    }
    assert_eq!(get(admin, "/healthz").await.status, 200);
    assert_eq!(get(admin, "/metrics").await.status, 404);
    stop(tx, task).await;
}
