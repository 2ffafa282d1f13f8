//! `patchgate demo`: an in-memory legacy JSON API (GET/PUT/DELETE/POST only, no ETags,
//! PATCH → 405) on a free port, and the proxy in front of it.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::{Config, Proxy};

const SEED: &[(&str, &str)] = &[
    (
        "/api/people/1",
        r#"{"id":1,"name":"Ada Lovelace","email":"ada@example.com","tags":["math"],"born":1815}"#,
    ),
    (
        "/api/people/2",
        r#"{"id":2,"name":"Alan Turing","email":"alan@example.com","tags":["logic"],"born":1912}"#,
    ),
    (
        "/api/orders/7",
        r#"{"id":7,"item":"difference engine","qty":1,"price":1.50}"#,
    ),
];

const CONFIG: &str = r#"
[server]
listen = "@LISTEN@"

[admin]
listen = "127.0.0.1:0"

[[route]]
name = "orders"
path = "/api/orders/{id}"
upstream = "@UPSTREAM@"
require_precondition = true

[[route]]
name = "catalog"
path = "/api/catalog/{id}"
upstream = "@UPSTREAM@"
freshness = "exclusive"

[[route]]
name = "api"
path = "/api/{*rest}"
upstream = "@UPSTREAM@"
"#;

/// The in-memory legacy API: a map from path to JSON document.
#[derive(Clone, Default)]
pub struct LegacyApi {
    docs: Arc<std::sync::Mutex<BTreeMap<String, Bytes>>>,
}

impl LegacyApi {
    pub fn seeded() -> LegacyApi {
        let api = LegacyApi::default();
        if let Ok(mut docs) = api.docs.lock() {
            for (path, doc) in SEED {
                docs.insert((*path).to_owned(), Bytes::from_static(doc.as_bytes()));
            }
        }
        api
    }

    /// Serves the API on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let api = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let body = match req.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return reply(StatusCode::BAD_REQUEST, r#"{"error":"bad body"}"#),
        };
        // A std mutex: nothing awaits while it is held.
        let Ok(mut docs) = self.docs.lock() else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"poisoned"}"#);
        };
        let is_collection = path.matches('/').count() == 2;
        match (method, is_collection) {
            (Method::GET | Method::HEAD, false) => match docs.get(&path) {
                Some(doc) => reply(StatusCode::OK, doc.clone()),
                None => reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
            },
            (Method::GET | Method::HEAD, true) => {
                let prefix = format!("{path}/");
                let items: Vec<&[u8]> = docs
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.as_ref())
                    .collect();
                reply(
                    StatusCode::OK,
                    format!(
                        "[{}]",
                        items
                            .iter()
                            .map(|i| String::from_utf8_lossy(i))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                )
            }
            (Method::PUT, false) => {
                if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                    return reply(StatusCode::BAD_REQUEST, r#"{"error":"not json"}"#);
                }
                let created = docs.insert(path, body.clone()).is_none();
                reply(
                    if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    },
                    body,
                )
            }
            (Method::DELETE, false) => match docs.remove(&path) {
                Some(_) => reply(StatusCode::NO_CONTENT, Bytes::new()),
                None => reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
            },
            (Method::POST, true) => {
                let prefix = format!("{path}/");
                let next = docs
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix)?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0)
                    + 1;
                docs.insert(format!("{prefix}{next}"), body.clone());
                let mut response = reply(StatusCode::CREATED, body);
                if let Ok(location) = HeaderValue::from_str(&format!("{prefix}{next}")) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
            _ => {
                let mut response = reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    r#"{"error":"method not allowed"}"#,
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, PUT, DELETE, POST"));
                response
            }
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let body: Bytes = body.into();
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Runs the demo until SIGINT/SIGTERM.
pub async fn run(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let legacy = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = format!("http://{}", legacy.local_addr()?);
    tokio::spawn(LegacyApi::seeded().serve(legacy));
    let toml = CONFIG
        .replace("@LISTEN@", &listen.to_string())
        .replace("@UPSTREAM@", &upstream);
    let config = Config::from_toml(&toml, "demo.toml")?;
    let proxy = Proxy::bind(&config).await?;
    let addr = proxy.local_addr()?;
    println!("{}", instructions(addr, &upstream, proxy.admin_addr()));
    proxy.run(crate::server::shutdown_signal()).await;
    Ok(())
}

fn instructions(addr: SocketAddr, upstream: &str, admin: Option<SocketAddr>) -> String {
    let p = format!("http://{addr}");
    let admin = admin
        .map(|a| format!("curl -s http://{a}/metrics | grep -E 'patchgate_(requests|patches|cache_hits)'"))
        .unwrap_or_default();
    format!(
        r#"patchgate demo
  legacy API (GET/PUT/DELETE/POST, no ETags, no PATCH): {upstream}
  patchgate in front of it:                             {p}

The legacy API itself has no ETag and refuses PATCH:
  curl -si {upstream}/api/people/1
  curl -si -X PATCH {upstream}/api/people/1

Through patchgate the same document has a strong ETag; a conditional GET gets 304:
  curl -si {p}/api/people/1
  E=$(curl -si {p}/api/people/1 | tr -d '\r' | sed -n 's/^etag: //p'); echo $E
  curl -si {p}/api/people/1 -H "If-None-Match: $E"

PATCH with JSON Patch or merge patch; patchgate PUTs the whole document upstream:
  curl -si -X PATCH {p}/api/people/1 -H 'Content-Type: application/json-patch+json' \
       -d '[{{"op":"replace","path":"/email","value":"ada@analytical.engine"}},{{"op":"add","path":"/tags/-","value":"poetry"}}]'
  curl -si -X PATCH {p}/api/people/1 -H 'Content-Type: application/merge-patch+json' -d '{{"born":null}}'
  curl -s {upstream}/api/people/1      # what the legacy API now holds

A stale If-Match ($E is from before the patches) gets 412 with the current body and ETag:
  curl -si -X PATCH {p}/api/people/1 -H "If-Match: $E" \
       -H 'Content-Type: application/merge-patch+json' -d '{{"name":"stale write"}}'

A failed JSON Patch test is 409, nothing is written:
  curl -si -X PATCH {p}/api/people/2 -H 'Content-Type: application/json-patch+json' \
       -d '[{{"op":"test","path":"/born","value":1913}},{{"op":"replace","path":"/born","value":0}}]'

/api/orders requires a precondition: without If-Match a write gets 428:
  curl -si -X PATCH {p}/api/orders/7 -H 'Content-Type: application/merge-patch+json' -d '{{"qty":2}}'
  O=$(curl -si {p}/api/orders/7 | tr -d '\r' | sed -n 's/^etag: //p')
  curl -si -X PATCH {p}/api/orders/7 -H "If-Match: $O" -H 'Content-Type: application/merge-patch+json' -d '{{"qty":2}}'

/api/catalog is freshness = "exclusive": repeated reads never reach the legacy API
(safe only because every write goes through patchgate):
  curl -s {p}/api/catalog/1; curl -s {p}/api/catalog/1

Create-only PUT, POST to a collection, DELETE:
  curl -si -X PUT {p}/api/people/3 -H 'If-None-Match: *' -H 'Content-Type: application/json' -d '{{"id":3,"name":"Grace Hopper"}}'
  curl -si -X POST {p}/api/people -H 'Content-Type: application/json' -d '{{"name":"Edsger Dijkstra"}}'
  curl -si -X DELETE {p}/api/people/3

Path tricks never escape the route:
  curl -si --path-as-is {p}/api/people/%2e%2e/orders/7

Metrics:
  {admin}

Stop with Ctrl-C."#
    )
}
