//! Test harness: a real legacy upstream, the real proxy on port 0, and HTTP clients.
#![allow(dead_code)]

pub mod client;
pub mod raw_upstream;
pub mod redis;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;

use patchgate::{Config, Proxy};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use client::*;
pub use raw_upstream::*;
pub use redis::{RedisServer, Relay, Resp};
pub use upstream::*;

/// The proxy running in this process on 127.0.0.1:0 (admin on 127.0.0.1:0 too).
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts the proxy from a TOML text whose `[server] listen` and `[admin]` are
    /// replaced by port-0 listeners bound here.
    pub async fn start(toml: &str) -> TestProxy {
        let config = Config::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::with_listeners(&config, listener, Some(admin_listener)).unwrap();
        TestProxy::run(proxy)
    }

    /// Starts the proxy from the file `path` (listen addresses as in [`TestProxy::start`]),
    /// reloadable through the admin listener's `POST /reload`.
    pub async fn start_file(path: &std::path::Path) -> TestProxy {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::with_listeners(&config, listener, Some(admin_listener))
            .unwrap()
            .reload_from(path);
        TestProxy::run(proxy)
    }

    fn run(proxy: Proxy) -> TestProxy {
        let addr = proxy.local_addr().unwrap();
        let admin = proxy.admin_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy.run(async move {
            let _ = rx.await;
        }));
        TestProxy {
            addr,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// One-route proxy in front of `upstream` with extra route keys (TOML lines).
    pub async fn in_front_of(upstream: &LegacyUpstream, route_extra: &str) -> TestProxy {
        TestProxy::start(&one_route(&upstream.url(), route_extra, "")).await
    }

    /// Signals shutdown and waits for `run` to return; re-raises a panic of the proxy task.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(()) => Ok(()),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(e.into()),
            },
            None => Ok(()),
        }
    }

    /// Starts shutdown without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> anyhow::Result<()> {
        match self.task.take() {
            Some(task) => Ok(task.await?),
            None => Ok(()),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A config with one route `/api/{*rest}` → `upstream`, plus extra keys.
pub fn one_route(upstream: &str, route_extra: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout = "2s"
max_body_bytes = "64KiB"
{server_extra}

[[route]]
name = "api"
path = "/api/{{*rest}}"
upstream = "{upstream}"
{route_extra}
"#
    )
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
