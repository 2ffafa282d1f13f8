//! The admin listener: `GET /healthz`, `GET /metrics` (Prometheus text),
//! `GET /changes` (the change feed, [`crate::feed`]), the last two when the server runs a
//! [`PatchLayer`], and `POST /reload` (re-reads the config file, [`crate::reload`]).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::watch};

use crate::body::{self, Body};
use crate::layer::PatchLayer;
use crate::reload::{Outcome, Reloader};

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    layer: Option<PatchLayer>,
    reloader: Option<Arc<Reloader>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let layer = layer.clone();
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let layer = layer.clone();
                let reloader = reloader.clone();
                async move {
                    let response = match (req.method(), req.uri().path(), layer.as_ref()) {
                        (&Method::POST, "/reload", _) => reload(reloader.as_deref()).await,
                        (&Method::GET, "/changes", Some(layer)) => {
                            layer
                                .changes(req.uri().query(), req.headers().get("last-event-id"))
                                .await
                        }
                        _ => respond(layer.as_ref(), req.method(), req.uri().path()),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// `POST /reload`: `200` with what was applied (and which keys need a restart), `422`
/// with the error when the file is invalid, `409` when the proxy has no file to re-read.
async fn reload(reloader: Option<&Reloader>) -> Response<Body> {
    let (status, text) = match reloader {
        Some(reloader) => {
            let outcome = reloader.reload().await;
            let status = match outcome {
                Outcome::Applied { .. } => StatusCode::OK,
                Outcome::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, outcome.to_json())
        }
        None => (
            StatusCode::CONFLICT,
            r#"{"result":"unavailable","error":"started without a configuration file"}"#.to_owned(),
        ),
    };
    let mut response = Response::new(body::full(text + "\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn respond(layer: Option<&PatchLayer>, method: &Method, path: &str) -> Response<Body> {
    let (status, content_type, text) = match (method, path, layer) {
        // Degraded: writes are refused (reads still work), so a balancer should prefer
        // another instance.
        (&Method::GET | &Method::HEAD, "/healthz", _) => match layer.and_then(PatchLayer::degraded) {
            Some(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("degraded: {cause}; writes are refused, reads go to the upstream\n"),
            ),
            None => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        },
        (&Method::GET | &Method::HEAD, "/metrics", Some(layer)) => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            layer.render_metrics(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
