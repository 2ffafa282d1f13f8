//! Several instances, one truth: with `[cluster]`, writes to a resource are serialized
//! across instances by a lease in Redis, and every instance drops its cached copy of a
//! resource another instance wrote, before that write is acknowledged.
//!
//! - **Leases** ([`lease`]): the local write lock first (so PATCHes still share writes
//!   inside an instance), then `SET NX PX` with a random token; renewed while held,
//!   proven just before the upstream write is sent (by its age when it was taken
//!   recently enough to outlive `server.write_timeout`, else by a script that finds the
//!   token and pushes the expiry a whole `lease` ahead), released by a compare-and-delete script that also
//!   publishes the write. Waiters wake on that notice, or poll every `lease_poll`.
//! - **Coherence** ([`watch`], [`message`]): one subscriber connection per instance
//!   receives the notices, drops the written resource's entries and acks. A writer on a
//!   route that may answer reads from the cache waits for every subscriber's ack, or for
//!   `cluster.timeout`; an instance answers reads from its cache only within
//!   `cluster.timeout` of sending a `PING` whose `PONG` it has processed (Redis answers
//!   in order: every notice published before that `PING` was applied first). So a
//!   silent instance's window closes before the writer stops waiting, and reads cost no
//!   Redis round trip. A write holding the lease passes a barrier (its own `PING`)
//!   before it reads the cache.
//! - **Change feed** ([`changes`]): one Redis stream per route with `changes = true`,
//!   appended by the writer and read by every instance's `/changes`.
//! - **Redis unreachable**: writes are refused (`503`, `Retry-After`) before anything is
//!   sent; reads skip the cache and the running exchanges and ask the upstream; the
//!   cache is emptied when the subscription comes back, because notices may have been
//!   missed meanwhile.

mod changes;
mod lease;
mod message;
mod versions;
mod watch;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use crate::config;
use crate::layer::Shared;

pub(crate) use lease::Lease;
pub(crate) use versions::share_version;

/// Why a write cannot be coordinated right now; each is a `503` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Redis did not answer (down, unreachable, timed out, or refused the command).
    Unreachable,
    /// Another instance held the resource's lease for the whole `request_timeout`.
    LeaseBusy,
    /// The lease was gone when the write was about to be sent: nothing was sent.
    LeaseLost,
}

/// What a failed start of `[cluster]` says; the Redis URL is never part of it.
#[derive(Debug)]
pub enum ClusterError {
    PasswordEnv(String),
    CaFile(std::path::PathBuf, std::io::Error),
    Client(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::PasswordEnv(name) => write!(
                f,
                "cluster.password_env: the environment variable {name} is not set (or not UTF-8)"
            ),
            ClusterError::CaFile(path, e) => {
                write!(f, "cluster.ca_file: cannot read {}: {e}", path.display())
            }
            ClusterError::Client(kind) => write!(f, "cluster.redis: {kind}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// Where the Redis server is: one address, the primary Sentinel names, or a Redis
/// Cluster (every key and the channel share one hash slot: see [`Cluster::prefix`]).
pub(crate) enum Source {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    Cluster(ClusterSpec),
}

/// How to build a Redis Cluster client (one per subscription: each has its own push
/// channel).
pub(crate) struct ClusterSpec {
    nodes: Vec<String>,
    password: Option<String>,
    root_cert: Option<Vec<u8>>,
    timeout: std::time::Duration,
}

impl ClusterSpec {
    fn build(
        &self,
        pushes: Option<mpsc::UnboundedSender<redis::PushInfo>>,
        response_timeout: std::time::Duration,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.nodes.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(self.timeout)
            .response_timeout(response_timeout)
            .retries(1);
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        if let Some(pem) = &self.root_cert {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        if let Some(pushes) = pushes {
            builder = builder.push_sender(pushes);
        }
        builder.build()
    }
}

/// The command connection: one server's, or the cluster's (which routes by key).
#[derive(Clone)]
enum Commands {
    One(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Commands::One(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Commands::One(c) => c.req_packed_commands(cmd, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::One(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

impl Source {
    /// A client for the server to use now (for Sentinel: the current primary).
    async fn resolve(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Source::Cluster(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a Redis Cluster has no one server",
            ))),
        }
    }
}

/// The Redis connection `[cluster]` describes, password and CA included; checked at
/// start so that a mistake stops it, naming the key.
pub fn client(config: &config::Cluster) -> Result<(), ClusterError> {
    source(config).map(|_| ())
}

fn source(config: &config::Cluster) -> Result<Source, ClusterError> {
    use redis::IntoConnectionInfo;
    let invalid = |e: redis::RedisError| ClusterError::Client(format!("{:?}", e.kind()));
    let password = match &config.password_env {
        Some(name) => Some(std::env::var(name).map_err(|_| ClusterError::PasswordEnv(name.clone()))?),
        None => None,
    };
    let root_cert = match &config.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| ClusterError::CaFile(path.clone(), e))?),
        None => None,
    };
    if let Some(nodes) = &config.nodes {
        let spec = ClusterSpec {
            nodes: nodes.clone(),
            password,
            root_cert,
            timeout: config.timeout,
        };
        spec.build(None, config.timeout).map_err(invalid)?;
        return Ok(Source::Cluster(spec));
    }
    if let Some(sentinel) = &config.sentinel {
        let mut node = redis::RedisConnectionInfo::default();
        if let Some(password) = password {
            node = node.set_password(password);
        }
        let mut info = redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
        if sentinel.tls {
            info = info.set_tls_mode(redis::TlsMode::Secure);
        }
        let client = redis::sentinel::SentinelClient::build(
            sentinel.nodes.clone(),
            &sentinel.master,
            Some(info),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(invalid)?;
        return Ok(Source::Sentinel(tokio::sync::Mutex::new(client)));
    }
    let url = config.redis.as_deref().unwrap_or_default();
    let mut info = url.into_connection_info().map_err(invalid)?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    let client = match root_cert {
        Some(pem) => {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs)
        }
        None => redis::Client::open(info),
    };
    client.map(Source::Direct).map_err(invalid)
}

/// The instance's side of `[cluster]`, in [`Shared`].
pub(crate) struct Cluster {
    settings: config::Cluster,
    /// `None` when it could not be built: writes permanently refused, and logged.
    source: Option<Arc<Source>>,
    /// Made on the runtime, at the first request or when the layer is made on one.
    running: OnceLock<Running>,
    /// Ours alone: notices we published are not applied again here.
    instance: String,
    /// Subscribed and answering: reads may use the cache, writes may ask for leases.
    up: AtomicBool,
    /// The epoch of Redis's data this instance saw last (see [`lease`]: a Redis that lost
    /// its keys is noticed by the epoch key missing or changed).
    epoch: Mutex<Option<String>>,
    /// Until when (nanoseconds after `born`) this instance's cache is known to hold every
    /// acknowledged write of the others: a `PING` sent at `t` came back after every
    /// notice before it, and a writer waits for this instance's ack or for `t` +
    /// `cluster.timeout`, whichever comes first. Zero while Redis is unreachable.
    coherent_until: AtomicU64,
    born: std::time::Instant,
    /// Writes of ours waiting for the other instances' acks, by sequence number.
    acks: dashmap::DashMap<u64, Arc<Acks>>,
    next_seq: AtomicU64,
    /// Notified whenever `up` turns true.
    came_up: tokio::sync::Notify,
    /// The last reason Redis was unreachable, for `/healthz` and the logs.
    cause: Mutex<String>,
    pub counters: Counters,
}

struct Running {
    /// Made anew by the subscriber each time it (re)connects: the server may have moved.
    commands: Mutex<Option<Commands>>,
    barrier: mpsc::UnboundedSender<oneshot::Sender<bool>>,
}

/// Acks of one write.
#[derive(Default)]
struct Acks {
    count: AtomicU64,
    arrived: tokio::sync::Notify,
}

/// For `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pub lease_waits: AtomicU64,
    pub lease_losses: AtomicU64,
    pub invalidations_sent: AtomicU64,
    pub invalidations_received: AtomicU64,
    pub redis_errors: AtomicU64,
    pub feed_events_lost: AtomicU64,
}

impl Cluster {
    pub(crate) fn new(settings: &config::Cluster) -> Cluster {
        let source = match source(settings) {
            Ok(source) => Some(Arc::new(source)),
            Err(error) => {
                tracing::error!(%error, "[cluster] cannot be used: every write will be refused");
                None
            }
        };
        Cluster {
            settings: settings.clone(),
            source,
            running: OnceLock::new(),
            instance: random_token(),
            up: AtomicBool::new(false),
            came_up: tokio::sync::Notify::new(),
            epoch: Mutex::new(None),
            coherent_until: AtomicU64::new(0),
            born: std::time::Instant::now(),
            acks: dashmap::DashMap::new(),
            next_seq: AtomicU64::new(1),
            cause: Mutex::new("not connected yet".to_owned()),
            counters: Counters::default(),
        }
    }

    /// Connects (lazily) and starts the subscriber, once; needs the tokio runtime.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        if self.running.get().is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let Some(source) = &self.source else { return };
        let (barrier, requests) = mpsc::unbounded_channel();
        let running = Running {
            commands: Mutex::new(None),
            barrier,
        };
        if self.running.set(running).is_ok() {
            tokio::spawn(watch::run(Arc::downgrade(shared), Arc::clone(source), requests));
        }
    }

    /// A command connection to `client`'s server, replacing the previous one.
    fn connect_commands(&self, client: redis::Client) -> redis::RedisResult<()> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.settings.timeout);
        let commands = ConnectionManager::new_lazy_with_config(client, config)?;
        self.use_commands(Commands::One(commands));
        Ok(())
    }

    fn use_commands(&self, commands: Commands) {
        if let Some(running) = self.running.get()
            && let Ok(mut slot) = running.commands.lock()
        {
            *slot = Some(commands);
        }
    }

    /// Whether Redis is reachable (the subscriber is connected).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Acquire)
    }

    /// The client's error for a write refused for `refusal`.
    pub(crate) fn refused(&self, refusal: Refusal) -> crate::problem::Error {
        let cause = match refusal {
            Refusal::Unreachable => {
                let cause = self.cause();
                if self.is_up() || cause.is_empty() {
                    "redis did not answer".to_owned()
                } else {
                    cause
                }
            }
            Refusal::LeaseBusy => "lease held by another instance".to_owned(),
            Refusal::LeaseLost => "lease expired before the write was sent".to_owned(),
        };
        crate::problem::Error::Coordination { refusal, cause }
    }

    /// Why it is not, for `/healthz`.
    pub(crate) fn cause(&self) -> String {
        self.cause.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Whether every write another instance acknowledged so far has been applied to this
    /// instance's cache, so that a read may be answered from it: no Redis round trip.
    pub(crate) fn coherent(&self) -> bool {
        self.is_up() && self.nanos(std::time::Instant::now()) < self.coherent_until.load(Acquire)
    }

    /// A `PONG` came back for a `PING` sent at `sent`.
    fn coherent_since(&self, sent: std::time::Instant) {
        let until = self.nanos(sent + self.settings.timeout);
        self.coherent_until.fetch_max(until, AcqRel);
    }

    fn nanos(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Waits until every write acknowledged before this call has been applied to this
    /// instance's cache. False when that cannot be known (Redis unreachable): the caller
    /// must ask the upstream and not share an exchange already running.
    pub(crate) async fn barrier(&self) -> bool {
        let Some(running) = self.running.get() else {
            return false;
        };
        if !self.is_up() {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        if running.barrier.send(tx).is_err() {
            return false;
        }
        // The subscriber answers every request, with false when its connection fails.
        matches!(
            tokio::time::timeout(self.settings.timeout * 2, rx).await,
            Ok(Ok(true))
        )
    }

    /// The command connection, whatever the subscriber's state: a write's notice is worth
    /// trying to publish.
    fn commands_even_if_down(&self) -> Result<Commands, Refusal> {
        self.running
            .get()
            .and_then(|running| running.commands.lock().ok()?.clone())
            .ok_or(Refusal::Unreachable)
    }

    /// Publishes an ack of `writer`'s write `seq`, in the background: the subscriber
    /// that applied it never waits for Redis.
    fn send_ack(&self, writer: &str, seq: u64) {
        let Ok(mut commands) = self.commands_even_if_down() else {
            return;
        };
        let ack = message::Message::ack(writer, seq, &self.instance);
        let channel = self.channel();
        let publish = self.publish_command();
        tokio::spawn(async move {
            let sent: redis::RedisResult<i64> = redis::cmd(publish)
                .arg(channel)
                .arg(ack)
                .query_async(&mut commands)
                .await;
            if let Err(error) = sent {
                // The writer stops waiting at `cluster.timeout`; this instance's
                // coherence window ends by then too.
                tracing::debug!(error = %describe(&error), "ack not sent");
            }
        });
    }

    /// One more instance applied our write `seq`.
    fn acked(&self, seq: u64) {
        if let Some(acks) = self.acks.get(&seq) {
            acks.count.fetch_add(1, AcqRel);
            acks.arrived.notify_waiters();
        }
    }

    /// Counts and logs a Redis failure.
    fn failed(&self, error: &redis::RedisError) {
        self.counters.redis_errors.fetch_add(1, Relaxed);
        tracing::warn!(error = %describe(error), "redis command failed");
    }

    fn set_up(&self, up: bool, cause: &str) {
        if let Ok(mut c) = self.cause.lock() {
            cause.clone_into(&mut c);
        }
        self.up.store(up, Release);
        if !up {
            self.coherent_until.store(0, Release);
        }
        if up {
            self.came_up.notify_waiters();
        }
    }

    /// Whether Redis is reachable, waiting up to one `cluster.timeout` for a connection
    /// under way (an instance just started, Redis just back).
    async fn is_up_soon(&self) -> bool {
        if self.is_up() {
            return true;
        }
        let came_up = self.came_up.notified();
        tokio::pin!(came_up);
        came_up.as_mut().enable();
        if self.is_up() {
            return true;
        }
        let _ = tokio::time::timeout(self.settings.timeout, came_up).await;
        self.is_up()
    }

    /// What every key and the channel start with: `key_prefix`, and on a Redis Cluster
    /// `{key_prefix}`, a hash tag that puts them all in one slot (the scripts touch two
    /// keys, and a notice must travel on the connection the `PING`s use).
    fn prefix(&self) -> String {
        if self.settings.nodes.is_some() {
            format!("{{{}}}", self.settings.key_prefix)
        } else {
            self.settings.key_prefix.clone()
        }
    }

    /// Sharded pub/sub on a Redis Cluster: delivered by the slot's own node, in order
    /// with its other answers.
    fn publish_command(&self) -> &'static str {
        if self.settings.nodes.is_some() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A key of the whole cluster, such as `epoch`.
    fn global_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    fn key(&self, kind: &str, route: &str, path: &str) -> String {
        format!("{}{kind}:{route}:{path}", self.prefix())
    }

    fn channel(&self) -> String {
        format!("{}events", self.prefix())
    }

    /// Renders the cluster's metric families.
    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = &self.counters;
        let _ = write!(
            out,
            "# HELP patchgate_cluster_redis_up Whether this instance reaches Redis (1) or not (0).\n\
             # TYPE patchgate_cluster_redis_up gauge\n\
             patchgate_cluster_redis_up {}\n",
            u8::from(self.is_up())
        );
        for (name, help, value) in [
            (
                "lease_waits",
                "Writes that found another instance holding the lease and waited.",
                &c.lease_waits,
            ),
            (
                "lease_losses",
                "Leases found gone while held: writes refused before sending, or renewals lost.",
                &c.lease_losses,
            ),
            (
                "invalidations_sent",
                "Write notices published for other instances.",
                &c.invalidations_sent,
            ),
            (
                "invalidations_received",
                "Write notices from other instances applied to this cache.",
                &c.invalidations_received,
            ),
            (
                "redis_errors",
                "Redis commands or connections that failed.",
                &c.redis_errors,
            ),
            (
                "feed_events_lost",
                "Change feed events not appended to the shared stream (Redis did not answer).",
                &c.feed_events_lost,
            ),
        ] {
            let _ = write!(
                out,
                "# HELP patchgate_cluster_{name}_total {help}\n\
                 # TYPE patchgate_cluster_{name}_total counter\n\
                 patchgate_cluster_{name}_total {}\n",
                value.load(Relaxed)
            );
        }
    }
}

/// 128 random bits, hex: lease tokens and the instance's id.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Relaxed));
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        *word = h.finish();
    }
    format!("{:016x}{:016x}", words[0], words[1])
}

/// A Redis error as logs and `/healthz` show it: its class, never a URL or password.
fn describe(error: &redis::RedisError) -> String {
    if let Some(tls) = tls_failure(error) {
        format!("TLS handshake failed: {tls}")
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connection_refusal() {
        "connection refused".to_owned()
    } else if error.is_connection_dropped() || error.is_io_error() {
        "connection lost".to_owned()
    } else {
        format!("{:?}", error.kind())
    }
}

/// The TLS error behind a failed `rediss://` connection (an untrusted certificate, a
/// name it lacks), which would otherwise read as "connection lost". The redis crate keeps
/// the `io::Error` from tokio-rustls, which wraps the `rustls::Error`, behind an `Arc`.
fn tls_failure(error: &redis::RedisError) -> Option<&rustls::Error> {
    use std::error::Error;
    let source = error.source()?;
    let io = match source.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
        Some(inner) => inner.downcast_ref::<std::io::Error>()?,
        None => source.downcast_ref::<std::io::Error>()?,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 32);
    }

    #[test]
    fn a_tls_failure_is_described_as_one() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let error = redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert_eq!(
            describe(&error),
            "TLS handshake failed: invalid peer certificate: UnknownIssuer"
        );
        let reset = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(describe(&reset), "connection lost");
    }
}
