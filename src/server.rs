//! The listening side: accept, TLS (rustls, ALPN h2 + http/1.1; its pair replaced by a
//! reload: see [`ListenerTls`]), HTTP/1.1 and h2/h2c through hyper-util's auto builder, a
//! header-read timeout, graceful shutdown, and SIGHUP ([`reload_on_sighup`]). It serves any `Service` that answers every request
//! (`Error = Infallible`); the binary's is [`PatchLayer`] over the pooled client.

mod signals;
mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::{
    convert::Infallible, fmt, future::Future, io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration,
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

use arc_swap::ArcSwap;

use crate::admin;
use crate::body::BoxError;
use crate::config::Config;
use crate::layer::{PatchLayer, PatchService};
use crate::reload::Reloader;
use crate::upstream::{self, ClientError, ConnInfo};

#[cfg(unix)]
pub use signals::reload_on_sighup;
pub use signals::shutdown_signal;
pub use tls::{ListenerTls, TlsError, server_config};

/// Why the proxy could not start; the text names the key in proxy.toml and the file or
/// address.
#[derive(Debug)]
pub enum StartError {
    Bind {
        key: &'static str,
        addr: SocketAddr,
        error: io::Error,
    },
    Tls(TlsError),
    Upstream(ClientError),
    Cluster(crate::cluster::ClusterError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { key, addr, error } => write!(f, "{key}: cannot bind {addr}: {error}"),
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::Upstream(e) => write!(f, "{e}"),
            StartError::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<TlsError> for StartError {
    fn from(e: TlsError) -> StartError {
        StartError::Tls(e)
    }
}

impl From<ClientError> for StartError {
    fn from(e: ClientError) -> StartError {
        StartError::Upstream(e)
    }
}

/// A bound, ready-to-run proxy serving `S`: listeners are open (so port 0 has become a
/// real port) before [`Proxy::run`] is called.
pub struct Proxy<S = PatchService> {
    listener: TcpListener,
    admin: Option<TcpListener>,
    /// The layer inside `service`, when there is one: metrics for the admin listener,
    /// and the upstream writes shutdown waits for.
    layer: Option<PatchLayer>,
    service: S,
    tls: Option<Arc<ListenerTls>>,
    /// What a reload changes on the listening side, read per connection.
    listening: Arc<ArcSwap<Listening>>,
    /// Bound at accept: a reload cannot change it.
    max_connections: Option<usize>,
    /// The config it was built from, until [`Proxy::reload_from`] names its file.
    config: Config,
    reloader: Option<Arc<Reloader>>,
}

/// The listening side's settings a reload replaces: new connections take the current
/// ones; shutdown reads them when it starts.
pub(crate) struct Listening {
    builder: Arc<auto::Builder<TokioExecutor>>,
    header_read_timeout: Duration,
    shutdown_grace: Duration,
    write_timeout: Duration,
}

impl Listening {
    pub(crate) fn new(config: &Config) -> Listening {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.server.header_read_timeout)
            // A client may shut down its sending side once the request is out (`nc -N`,
            // health checkers) and still read the answer; without this hyper drops the
            // connection at that EOF, unanswered.
            .half_close(true)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        Listening {
            builder: Arc::new(builder),
            header_read_timeout: config.server.header_read_timeout,
            shutdown_grace: config.server.shutdown_grace,
            write_timeout: config.server.write_timeout,
        }
    }
}

/// After the writes that outlived `shutdown_grace` have landed, how long their clients
/// get to receive the answers.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

impl Proxy {
    /// Binds `server.listen` and `admin.listen` from the config.
    pub async fn bind(config: &Config) -> Result<Proxy, StartError> {
        let listener = bind("server.listen", config.server.listen).await?;
        let admin = match &config.admin {
            Some(admin) => Some(bind("admin.listen", admin.listen).await?),
            None => None,
        };
        Proxy::with_listeners(config, listener, admin)
    }

    /// Uses listeners the caller already bound (tests bind port 0), with [`PatchLayer`]
    /// over the pooled client.
    pub fn with_listeners(
        config: &Config,
        listener: TcpListener,
        admin: Option<TcpListener>,
    ) -> Result<Proxy, StartError> {
        let tls = load_tls(config)?;
        let client = upstream::client(config)?;
        if let Some(cluster) = &config.cluster {
            crate::cluster::client(cluster).map_err(StartError::Cluster)?;
        }
        let layer = PatchLayer::new(config);
        let service = tower::Layer::layer(&layer, client);
        Ok(Proxy::assemble(
            config,
            listener,
            admin,
            tls,
            service,
            Some(layer),
        ))
    }
}

fn load_tls(config: &Config) -> Result<Option<Arc<ListenerTls>>, TlsError> {
    match &config.server.tls {
        Some(files) => Ok(Some(Arc::new(ListenerTls::load(files)?))),
        None => Ok(None),
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Bind { key, addr, error })
}

impl<S> Proxy<S> {
    /// Serves `service` on listeners the caller bound, with `[server]` settings from the
    /// config. `layer` is the [`PatchLayer`] inside `service`, if any: without it the
    /// admin listener has no `/metrics` and shutdown does not wait for upstream writes.
    pub fn with_service(
        config: &Config,
        listener: TcpListener,
        admin: Option<TcpListener>,
        service: S,
        layer: Option<PatchLayer>,
    ) -> Result<Proxy<S>, StartError> {
        let tls = load_tls(config)?;
        Ok(Proxy::assemble(config, listener, admin, tls, service, layer))
    }

    fn assemble(
        config: &Config,
        listener: TcpListener,
        admin: Option<TcpListener>,
        tls: Option<Arc<ListenerTls>>,
        service: S,
        layer: Option<PatchLayer>,
    ) -> Proxy<S> {
        Proxy {
            listener,
            admin,
            layer,
            service,
            tls,
            listening: Arc::new(ArcSwap::from_pointee(Listening::new(config))),
            max_connections: config.server.max_connections,
            config: config.clone(),
            reloader: None,
        }
    }

    /// Makes SIGHUP ([`reload_on_sighup`]) and the admin listener's `POST /reload`
    /// re-read `path`, the file this proxy's config came from (see [`crate::reload`]).
    #[must_use]
    pub fn reload_from(mut self, path: impl Into<PathBuf>) -> Self {
        self.reloader = Some(Arc::new(Reloader::new(
            path.into(),
            self.config.clone(),
            self.layer.clone(),
            self.tls.clone(),
            Arc::clone(&self.listening),
        )));
        self
    }

    /// What reloads this proxy, once [`Proxy::reload_from`] named its file.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The listener's TLS state (a reload replaces its pair).
    pub fn tls(&self) -> Option<Arc<ListenerTls>> {
        self.tls.clone()
    }
}

impl<S, B> Proxy<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight
    /// requests `shutdown_grace` to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Proxy {
            listener,
            admin,
            layer,
            service,
            tls,
            listening,
            max_connections,
            config: _,
            reloader,
        } = self;
        let graceful = GracefulShutdown::new();
        let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
        let admin_task = admin.map(|l| tokio::spawn(admin::serve(l, layer.clone(), reloader, admin_stopped)));

        // Past max_connections, connections wait in the kernel's backlog, not in memory.
        let slots = max_connections.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        tokio::pin!(shutdown);
        loop {
            let permit = match &slots {
                Some(slots) => tokio::select! {
                    permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                    () = &mut shutdown => break,
                },
                None => None,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let live = listening.load();
            let conn = Connection {
                builder: Arc::clone(&live.builder),
                service: service.clone(),
                watcher: graceful.watcher(),
                tls: tls.clone(),
                handshake_timeout: live.header_read_timeout,
            };
            tokio::spawn(async move {
                conn.serve(stream, peer).await;
                drop(permit);
            });
        }
        drop(listener);
        let (shutdown_grace, write_timeout) = {
            let live = listening.load();
            (live.shutdown_grace, live.write_timeout)
        };
        tracing::info!(grace = ?shutdown_grace, "shutting down: draining in-flight requests");
        let drained = graceful.shutdown();
        tokio::pin!(drained);
        let closed = tokio::select! {
            () = &mut drained => true,
            () = tokio::time::sleep(shutdown_grace) => false,
        };
        if closed {
            tracing::info!("all connections closed");
        }
        // A sent write is never cut short, even past the grace or with its client gone:
        // its upstream may apply it anyway, and its answer decides the cache.
        let writes = layer.as_ref().map_or(0, PatchLayer::writes_in_flight);
        if let Some(layer) = layer.filter(|_| writes > 0) {
            tracing::warn!(
                writes,
                bound = ?write_timeout,
                "upstream writes in flight; waiting for them to land (server.write_timeout)"
            );
            match tokio::time::timeout(write_timeout, layer.writes_landed()).await {
                Ok(()) => tracing::info!("every upstream write has landed"),
                Err(_) => tracing::warn!("upstream writes still unanswered at server.write_timeout"),
            }
            if !closed {
                // Their clients, if still connected, get the answers now ready.
                let _ = tokio::time::timeout(ANSWER_GRACE, &mut drained).await;
            }
        }
        if !closed {
            tracing::warn!("shutdown grace elapsed; closing remaining connections");
        }
        let _ = admin_stop.send(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
    }
}

struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    tls: Option<Arc<ListenerTls>>,
    handshake_timeout: Duration,
}

impl<S, B> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let Connection {
            builder,
            service,
            watcher,
            tls,
            handshake_timeout,
        } = self;
        let info = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        // hyper's header-read timeout starts once HTTP/1 is chosen; a client that sends
        // nothing, or only part of the h2 preface, would otherwise hold the connection.
        let first_request = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&first_request);
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(info);
            // `oneshot` waits for `poll_ready`, which a caller's service may need.
            service.clone().oneshot(req)
        });
        let deadline = async {
            tokio::time::sleep(handshake_timeout).await;
            if first_request.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
            tracing::debug!(%peer, "no request within header_read_timeout");
        };
        let result = match tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                tokio::select! {
                    result = watcher.watch(conn.into_owned()) => result,
                    () = deadline => return,
                }
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                tokio::select! {
                    result = watcher.watch(conn.into_owned()) => result,
                    () = deadline => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
