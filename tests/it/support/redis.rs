//! A real `redis-server` for the cluster tests: its own process on a free loopback port,
//! its own temporary directory, stopped, killed and restarted on the same port and
//! directory when a test says so, killed when dropped.
//!
//! Persistence is on (`--appendonly yes`, `--appendfsync everysec`, `--save ""`): Redis
//! writes each command to the append-only file before it answers, so a `stop` (SIGTERM)
//! or a `kill` (SIGKILL of the process, not of the machine) followed by `restart` brings
//! back the same keys, leases included, with their absolute expiry times. That is the
//! outage the tests model: the same Redis gone for a while, then back. A Redis that comes
//! back empty is [`RedisServer::flush_all`] after [`RedisServer::restart`].
//!
//! The harness speaks RESP over a plain TCP socket (no client crate), or over TLS
//! (tokio-rustls, trusting the server's CA, verifying the name `localhost`) for a server
//! started with [`RedisServer::start_tls`]; every call is bounded by a timeout. A machine
//! without `redis-server` fails the tests, never skips them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `start` and `restart` wait for the first `PONG`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command (connect, write, whole reply) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// Simple and bulk strings as text.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A running (or stopped, between `stop` and `restart`) `redis-server`.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    password: Option<String>,
    role: Role,
    /// Set for a TLS-only server: its files, and the harness's client for it.
    tls: Option<Tls>,
    child: Option<Child>,
}

/// A TLS-only server's files (`--port 0 --tls-port PORT`, no client certificates) and
/// the harness's client, which trusts `ca` and verifies the name `localhost`.
#[derive(Clone)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    connector: tokio_rustls::TlsConnector,
}

impl Tls {
    fn new(cert: &Path, key: &Path, ca: &Path) -> Tls {
        let mut roots = rustls::RootCertStore::empty();
        let pems = CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
        for der in pems {
            let der = der.unwrap_or_else(|e| panic!("a certificate in {}: {e}", ca.display()));
            roots
                .add(der)
                .unwrap_or_else(|e| panic!("a root in {}: {e}", ca.display()));
        }
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }
}

/// What the server is for.
#[derive(Clone)]
enum Role {
    Primary,
    /// `--replicaof 127.0.0.1 <port>`
    Replica(u16),
    /// A Sentinel monitoring `127.0.0.1:<port>` as `name` (quorum 1, down after 500 ms).
    Sentinel {
        port: u16,
        name: String,
    },
    /// A node of a Redis Cluster (its bus on port + 10000).
    ClusterNode,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 in a new temporary directory and
    /// waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        RedisServer::start_inner(None, Role::Primary, None).await
    }

    /// A TLS-only primary (`--port 0 --tls-port PORT --tls-auth-clients no`) presenting
    /// `cert` and `key`; `ca` is its `--tls-ca-cert-file`, and the root the harness's
    /// own commands trust. `cert` must be valid for `localhost` (the name [`Self::url`]
    /// uses and the harness verifies). Every method works as for a plain server.
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        RedisServer::start_inner(None, Role::Primary, Some(Tls::new(cert, key, ca))).await
    }

    /// A replica of `primary`.
    pub async fn start_replica_of(primary: &RedisServer) -> RedisServer {
        RedisServer::start_inner(None, Role::Replica(primary.port), None).await
    }

    /// A Redis Cluster of `n` primaries (no replicas), the slots split evenly, once every
    /// node says `cluster_state:ok`.
    pub async fn start_cluster(n: usize) -> Vec<RedisServer> {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(RedisServer::start_inner(None, Role::ClusterNode, None).await);
        }
        let per = 16384 / n;
        for (i, node) in nodes.iter().enumerate() {
            let first = (i * per).to_string();
            let last = if i + 1 == n { 16383 } else { (i + 1) * per - 1 }.to_string();
            let added = node.command(&["CLUSTER", "ADDSLOTSRANGE", &first, &last]).await;
            assert!(matches!(added, Ok(Resp::Simple(_))), "ADDSLOTSRANGE: {added:?}");
        }
        for node in &nodes[1..] {
            let port = node.port.to_string();
            let met = nodes[0].command(&["CLUSTER", "MEET", "127.0.0.1", &port]).await;
            assert!(matches!(met, Ok(Resp::Simple(_))), "MEET: {met:?}");
        }
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        for node in &nodes {
            loop {
                let info = node
                    .command(&["CLUSTER", "INFO"])
                    .await
                    .ok()
                    .and_then(|r| r.as_text());
                if info.is_some_and(|i| i.contains("cluster_state:ok")) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the cluster did not form: {}",
                    node.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        nodes
    }

    /// A Sentinel that monitors `primary` under `name` (quorum 1: it alone decides a
    /// failover, 500 ms after the primary stops answering).
    pub async fn start_sentinel_of(primary: &RedisServer, name: &str) -> RedisServer {
        let role = Role::Sentinel {
            port: primary.port,
            name: name.to_owned(),
        };
        RedisServer::start_inner(None, role, None).await
    }

    /// Like [`Self::start`], with `--requirepass password`; the harness's own commands
    /// authenticate with it.
    pub async fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(Some(password.to_owned()), Role::Primary, None).await
    }

    async fn start_inner(password: Option<String>, role: Role, tls: Option<Tls>) -> RedisServer {
        let binary = redis_binary();
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Another process may take the port between our probe and Redis's bind: try again
        // on another port.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = if matches!(role, Role::ClusterNode) {
                free_cluster_port()
            } else {
                free_port()
            };
            let mut server = RedisServer {
                port,
                dir: dir.clone(),
                password: password.clone(),
                role: role.clone(),
                tls: tls.clone(),
                child: None,
            };
            server.spawn(&binary);
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(why) => {
                    last_failure = why;
                    server.kill_now();
                    // Keep the directory for the next attempt.
                    server.dir = PathBuf::new();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("redis-server did not start: {last_failure}");
    }

    /// `redis://127.0.0.1:PORT/0`; `rediss://localhost:PORT/0` for a TLS server.
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            format!("rediss://localhost:{}/0", self.port)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The data directory (`--dir`), removed when this is dropped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running (started and not yet stopped, killed or exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after 5 s). Connections are
    /// refused from then on, until [`Self::restart`].
    pub async fn stop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill -TERM");
            assert!(status.success(), "kill -TERM redis-server: {status}");
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        self.child = None;
    }

    /// SIGKILL and reap: Redis vanishes without a word to its clients.
    pub async fn kill(&mut self) {
        self.kill_now();
    }

    /// Starts `redis-server` again on the same port and directory (stopping it first if it
    /// still runs) and waits until it answers `PING`. Keys written before come back.
    pub async fn restart(&mut self) {
        if self.is_running() {
            self.stop().await;
        }
        self.child = None;
        self.spawn(&redis_binary());
        if let Err(why) = self.wait_ready().await {
            panic!("redis-server did not restart on port {}: {why}", self.port);
        }
    }

    /// `PING` answered `PONG`.
    pub async fn ping(&self) -> bool {
        matches!(self.command(&["PING"]).await, Ok(Resp::Simple(s)) if s == "PONG")
    }

    /// Every key matching `pattern` (`KEYS`; fine for a test's few keys), sorted.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        match self.command(&["KEYS", pattern]).await {
            Ok(Resp::Array(Some(items))) => {
                let mut keys: Vec<String> = items.iter().filter_map(Resp::as_text).collect();
                keys.sort();
                keys
            }
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// Drops every key (a Redis that came back empty).
    pub async fn flush_all(&self) {
        let reply = self.command(&["FLUSHALL"]).await;
        assert_eq!(reply, Ok(Resp::Simple("OK".into())), "FLUSHALL");
    }

    /// Sends one command on a fresh connection (after `AUTH` when a password is set) and
    /// returns its reply; `Err` when Redis cannot be reached or does not answer in time.
    pub async fn command(&self, args: &[&str]) -> Result<Resp, String> {
        let what = format!("{args:?} to redis on port {}", self.port);
        match tokio::time::timeout(COMMAND_TIMEOUT, self.exchange(args)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no reply within {COMMAND_TIMEOUT:?}")),
        }
    }

    async fn exchange(&self, args: &[&str]) -> std::io::Result<Resp> {
        let stream = TcpStream::connect(self.addr()).await?;
        match &self.tls {
            None => self.exchange_on(stream, args).await,
            Some(tls) => {
                let name = ServerName::try_from("localhost").expect("a server name");
                let stream = tls.connector.connect(name, stream).await?;
                self.exchange_on(stream, args).await
            }
        }
    }

    async fn exchange_on(
        &self,
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        args: &[&str],
    ) -> std::io::Result<Resp> {
        let mut request = Vec::new();
        if let Some(password) = &self.password {
            request.extend(encode(&["AUTH", password]));
        }
        request.extend(encode(args));
        stream.write_all(&request).await?;
        let mut buf = Vec::new();
        let mut replies = Vec::new();
        let wanted = if self.password.is_some() { 2 } else { 1 };
        let mut chunk = [0u8; 4096];
        while replies.len() < wanted {
            match parse(&buf) {
                Some((reply, used)) => {
                    buf.drain(..used);
                    replies.push(reply);
                }
                None => {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "connection closed mid-reply",
                        ));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        if self.password.is_some() && replies[0] != Resp::Simple("OK".into()) {
            return Err(std::io::Error::other(format!("AUTH: {:?}", replies[0])));
        }
        Ok(replies.pop().expect("one reply"))
    }

    /// The last lines Redis logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self, binary: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap_or_else(|e| panic!("open redis.log in {}: {e}", self.dir.display()));
        let mut command = Command::new(binary);
        if let Role::Sentinel { port, name } = &self.role {
            // A Sentinel rewrites its configuration file: it needs one of its own.
            let conf = self.dir.join(format!("sentinel-{}.conf", self.port));
            let text = format!(
                "port {}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 2000\n",
                self.port,
                self.dir.display()
            );
            std::fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
            command.arg(&conf).arg("--sentinel");
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log);
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            self.child = Some(child);
            return;
        }
        if let Role::Replica(primary) = &self.role {
            command
                .args(["--replicaof", "127.0.0.1"])
                .arg(primary.to_string());
        }
        if let Role::ClusterNode = &self.role {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"]);
        }
        match &self.tls {
            None => {
                command.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "redis-server on port {} exited with {status}:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            if self.ping().await {
                // Another test's Redis may have taken the port first: make sure it is ours.
                let ours = self.child.as_ref().map(Child::id);
                return match self.process_id().await {
                    Some(pid) if Some(pid) == ours => Ok(()),
                    other => Err(format!(
                        "port {} is answered by another redis-server (pid {other:?}, ours {ours:?})",
                        self.port
                    )),
                };
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `process_id` from `INFO server`.
    async fn process_id(&self) -> Option<u32> {
        let info = self.command(&["INFO", "server"]).await.ok()?.as_text()?;
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_now();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `redis-server` from `PATH` (or `/usr/bin`, `/usr/sbin`); panics with how to install it.
fn redis_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-server not found in PATH: the cluster tests need a real Redis. Install it \
                 (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`)"
            )
        })
}

/// A fresh directory under the system temporary directory.
fn unique_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("patchgate-redis-{}-{n}-{nanos}", std::process::id()))
}

/// A port that is free now, below the ephemeral range when it can be: the proxies'
/// reconnect attempts then never take it (as an outgoing port) while Redis is down, and a
/// connect to it can never meet itself (a TCP self-connect).
/// A port whose cluster bus port (+10000) is free too, both below the ephemeral range.
fn free_cluster_port() -> u16 {
    for _ in 0..50 {
        let port = free_port();
        if let Some(bus) = port.checked_add(10000)
            && bus < 32768
            && TcpListener::bind(("127.0.0.1", bus)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 11000 {
        let span = u64::from(ephemeral_low - 10000);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 20);
        for _ in 0..50 {
            // xorshift: good enough to spread concurrent tests over the range.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = 10000 + (seed % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend(arg.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// One complete reply at the start of `buf` and how many bytes it took; `None` while
/// incomplete.
fn parse(buf: &[u8]) -> Option<(Resp, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..end]).ok()?;
    let after = end + 2;
    match buf.first()? {
        b'+' => Some((Resp::Simple(line.to_owned()), after)),
        b'-' => Some((Resp::Error(line.to_owned()), after)),
        b':' => Some((Resp::Int(line.parse().ok()?), after)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((Resp::Bulk(None), after));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return None;
            }
            Some((
                Resp::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            ))
        }
        b'*' => {
            let count: i64 = line.parse().ok()?;
            if count < 0 {
                return Some((Resp::Array(None), after));
            }
            let mut items = Vec::new();
            let mut used = after;
            for _ in 0..count {
                let (item, n) = parse(&buf[used..])?;
                items.push(item);
                used += n;
            }
            Some((Resp::Array(Some(items)), used))
        }
        other => panic!(
            "not a RESP reply (first byte {other:#x}): {:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

/// A TCP relay in front of a server that can be paused: while paused, bytes in both
/// directions wait (a stalled network or a frozen peer, without a reset).
pub struct Relay {
    addr: SocketAddr,
    paused: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let gate = std::sync::Arc::clone(&paused);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, gate.subscribe()));
                tokio::spawn(pipe(server_read, client_write, gate.subscribe()));
            }
        });
        Relay { addr, paused, task }
    }

    /// `redis://` URL through the relay.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
