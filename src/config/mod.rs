//! patchgate's configuration: `proxy.toml` read in two steps, raw serde structs (`raw`,
//! unknown keys rejected on every level) then a validated [`Config`] (`validate`).
//!
//! Invariant: every value in a `Config` has been checked, and every error names the
//! dotted key (`route[1].freshness`, 0-based route index) with the line and column to fix.
//! The rest of the crate never sees TOML.

mod error;
mod raw;
mod units;
mod validate;
mod values;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Method};
use serde::Deserialize;
use toml::de::DeTable;

pub use error::ConfigError;
pub use units::{format_duration, format_size, parse_duration, parse_size};

#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub admin: Option<Admin>,
    pub cache: Cache,
    pub routes: Vec<Route>,
    /// Several instances coordinating through Redis; `None`: this process alone.
    pub cluster: Option<Cluster>,
}

/// `[cluster]`: writes serialized and caches kept coherent across instances by Redis.
#[derive(Clone, PartialEq)]
pub struct Cluster {
    /// One server: `redis://`, `rediss://`, `valkey://` or `valkeys://`, as written; it
    /// may hold a password, so it is never printed (see [`Cluster::redacted`]). `None`
    /// exactly when `sentinel` or `nodes` is set.
    pub redis: Option<String>,
    /// The primary as Sentinel names it.
    pub sentinel: Option<Sentinel>,
    /// `cluster_nodes`: seed nodes of a Redis Cluster (URLs, all TLS or none).
    pub nodes: Option<Vec<String>>,
    /// An environment variable holding the password, read at start.
    pub password_env: Option<String>,
    /// PEM roots for a `rediss://` server with a private CA.
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    /// A write's lease lifetime; always longer than `server.write_timeout`, so that a
    /// lease proven before its write was sent outlives the write.
    pub lease: Duration,
    /// One Redis command or connection attempt; always > 0.
    pub timeout: Duration,
    /// How often a waiting writer retries when no release notice comes; always > 0.
    pub lease_poll: Duration,
}

/// `sentinels` + `sentinel_master`: Redis Sentinel tells which server is the primary.
#[derive(Clone, PartialEq)]
pub struct Sentinel {
    /// Sentinel URLs (`redis://host:26379`), at least one, all TLS or none.
    pub nodes: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub master: String,
    /// The Sentinels' URLs are `rediss://`: the primary is reached over TLS too.
    pub tls: bool,
}

impl Cluster {
    /// Where Redis is, without passwords, for messages.
    pub fn redacted(&self) -> String {
        let list = |urls: &[String]| urls.iter().map(|n| redact(n)).collect::<Vec<_>>().join(", ");
        match (&self.redis, &self.sentinel, &self.nodes) {
            (Some(url), _, _) => redact(url),
            (None, Some(sentinel), _) => {
                format!(
                    "sentinel master {:?} via {}",
                    sentinel.master,
                    list(&sentinel.nodes)
                )
            }
            (None, None, Some(nodes)) => format!("redis cluster via {}", list(nodes)),
            (None, None, None) => "(none)".to_owned(),
        }
    }
}

/// A URL without its userinfo.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => "(invalid)".to_owned(),
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.redacted())
            .field("password_env", &self.password_env)
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("timeout", &self.timeout)
            .field("lease_poll", &self.lease_poll)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Larger request bodies (and patch results) get 413; always > 0.
    pub max_body_bytes: u64,
    /// The whole upstream exchange; past it 504. Always > 0.
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// An upstream write, once sent, runs to its end up to this bound, whatever happens
    /// to its client; never shorter than `request_timeout`.
    pub write_timeout: Duration,
    /// Cuts clients that trickle their request headers. Always > 0.
    pub header_read_timeout: Duration,
    /// Cuts clients that trickle a request body: the whole body read, from its first
    /// poll, gets 408 past it. Always > 0.
    pub body_read_timeout: Duration,
    /// Connections beyond this wait in the listen backlog; `None` = unlimited.
    pub max_connections: Option<usize>,
    pub tls: Option<Tls>,
}

/// PEM files for HTTPS on the listener.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Cache {
    pub max_bytes: u64,
    /// Always <= `max_bytes`.
    pub max_entry_bytes: u64,
    /// Lowercase, no duplicates, in file order.
    pub key_headers: Vec<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Unique, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// A matchit 0.9 template, already accepted by `matchit::Router::insert`.
    pub path: String,
    pub upstream: Upstream,
    /// Starts with '/', no trailing '/', a leading whole-segment part of `path`.
    pub strip_prefix: Option<String>,
    pub freshness: Freshness,
    pub etag: EtagMode,
    /// Empty disables PATCH; no duplicates.
    pub patch: Vec<crate::patch::Format>,
    /// `PUT` or `POST`.
    pub write_method: Method,
    pub require_precondition: bool,
    /// At most 100.
    pub conflict_retries: u32,
    /// At least 1.
    pub patch_max_ops: usize,
    pub refresh_after_write: bool,
    /// With `freshness = "http"`: a response without explicit freshness but with
    /// `Last-Modified` is fresh for a tenth of its age, at most a day (RFC 9111 §4.2.2).
    pub heuristic_freshness: bool,
    /// Unconditional PATCHes waiting for one resource are written upstream together.
    pub batch_patches: bool,
    /// Concurrent revalidate reads with the same upstream request share one exchange.
    pub batch_reads: bool,
    /// Requests handled at once on this route; more get 503. `None` = unlimited.
    pub max_in_flight: Option<usize>,
    /// Versions kept per resource for merges and delta reads; 0 = none. At most 64.
    pub history: usize,
    /// What a PATCH whose `If-Match` names an older kept version gets.
    pub on_stale: OnStale,
    /// Confirmed writes are published on the admin listener's `GET /changes` feed.
    pub changes: bool,
    /// Only set for https upstreams.
    pub ca_file: Option<PathBuf>,
}

/// An upstream base URL: http or https, a host, no userinfo, query or fragment.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `""` or `"/x/y"`, never ending in '/'.
    pub base_path: String,
}

/// How long a cached body may answer reads without asking the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Every read goes upstream (conditionally when validators are known).
    Revalidate,
    /// patchgate is the only writer: a cache hit is answered directly.
    Exclusive,
    /// A hit younger than this (> 0) is answered directly.
    For(Duration),
    /// RFC 9111 shared-cache freshness from the upstream's `Cache-Control`, `Expires`
    /// and `Age`, and the request's `Cache-Control`.
    Http,
}

/// A PATCH whose `If-Match` names a version that is no longer current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// `412` with the current body.
    Reject,
    /// Applied to the current version when nothing it touches changed since.
    Merge,
}

/// Where ETags come from (RFC 9110 §8.8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagMode {
    /// The upstream's strong ETag when it sends one, else `Hash`.
    Auto,
    Upstream,
    Hash,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: None,
            tls: None,
        }
    }
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            max_bytes: 256 << 20,
            max_entry_bytes: 8 << 20,
            key_headers: vec![http::header::AUTHORIZATION, http::header::COOKIE],
        }
    }
}

impl Config {
    /// Parses and validates `src`; `file` is only used in messages. Relative paths are
    /// kept as written.
    pub fn from_toml(src: &str, file: &str) -> Result<Config, ConfigError> {
        let doc = match DeTable::parse(src) {
            Ok(doc) => doc,
            Err(err) => {
                // The partial document lets the message name the key near the mistake.
                let (partial, _) = DeTable::parse_recoverable(src);
                return Err(ConfigError::from_toml(src, file, partial.get_ref(), &err, true));
            }
        };
        let raw = raw::RawConfig::deserialize(toml::de::Deserializer::from(doc.clone()))
            .map_err(|err| ConfigError::from_toml(src, file, doc.get_ref(), &err, false))?;
        validate::validate(raw, src, file)
    }

    /// Reads and validates the file at `path`; relative TLS and `ca_file` paths are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::nowhere(
                &file,
                "",
                format!("cannot read the configuration file: {e}; pass its path with --config"),
            )
        })?;
        let mut config = Config::from_toml(&src, &file)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(tls) = &mut config.server.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        for route in &mut config.routes {
            if let Some(ca) = &mut route.ca_file {
                resolve(ca);
            }
        }
        if let Some(ca) = config.cluster.as_mut().and_then(|c| c.ca_file.as_mut()) {
            resolve(ca);
        }
        Ok(config)
    }
}

impl Route {
    /// One line for `patchgate check`; options at their defaults beyond the main four are
    /// left out.
    pub fn describe(&self) -> String {
        let patch = if self.patch.is_empty() {
            "none".to_owned()
        } else {
            self.patch
                .iter()
                .map(|f| format_name(*f))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut line = format!(
            "{}  {} -> {}  freshness={} etag={} patch={} write={}",
            self.name, self.path, self.upstream, self.freshness, self.etag, patch, self.write_method
        );
        if let Some(prefix) = &self.strip_prefix {
            line.push_str(&format!(" strip_prefix={prefix}"));
        }
        if self.require_precondition {
            line.push_str(" require_precondition=true");
        }
        if self.refresh_after_write {
            line.push_str(" refresh_after_write=true");
        }
        if self.heuristic_freshness {
            line.push_str(" heuristic_freshness=true");
        }
        if !self.batch_patches {
            line.push_str(" batch_patches=false");
        }
        if !self.batch_reads {
            line.push_str(" batch_reads=false");
        }
        if self.history != 8 {
            line.push_str(&format!(" history={}", self.history));
        }
        if self.on_stale == OnStale::Merge {
            line.push_str(" on_stale=merge");
        }
        if self.changes {
            line.push_str(" changes=true");
        }
        line
    }
}

/// The `proxy.toml` spelling of a patch format.
pub fn format_name(format: crate::patch::Format) -> &'static str {
    match format {
        crate::patch::Format::JsonPatch => "json-patch",
        crate::patch::Format::MergePatch => "merge-patch",
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Freshness::Revalidate => f.write_str("revalidate"),
            Freshness::Exclusive => f.write_str("exclusive"),
            Freshness::For(d) => f.write_str(&format_duration(*d)),
            Freshness::Http => f.write_str("http"),
        }
    }
}

impl fmt::Display for EtagMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EtagMode::Auto => "auto",
            EtagMode::Upstream => "upstream",
            EtagMode::Hash => "hash",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::patch::Format;

    /// The example from SPEC.md "Configuration: proxy.toml", verbatim.
    const SPEC_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"        # address:port; port 0 picks a free port (logged at start)
max_body_bytes = "1MiB"          # larger request bodies get 413
request_timeout = "30s"          # whole upstream exchange; past it 504
shutdown_grace = "10s"
write_timeout = "60s"            # a sent upstream write runs to its end up to this bound
# [server.tls]                   # present => HTTPS (rustls), HTTP/1.1 and HTTP/2 by ALPN
# cert = "certs/server.pem"
# key  = "certs/server.key"

[admin]                          # optional; absent => no admin listener
listen = "127.0.0.1:9901"        # GET /healthz, GET /metrics (Prometheus text, names prefixed patchgate_)

[cache]
max_bytes = "256MiB"             # hard bound on cached bodies plus per-entry overhead
max_entry_bytes = "8MiB"         # larger bodies are streamed through, not stored
key_headers = ["authorization", "cookie"]   # part of every cache key

[[route]]
name = "people"                  # unique; used in logs and metrics
path = "/api/people/{id}"        # `{name}` = one segment, `{*rest}` = the remainder
upstream = "http://127.0.0.1:3000"   # http or https base URL; the request path is appended
# strip_prefix = "/api"          # removed from the path before it is appended
freshness = "revalidate"         # "revalidate" | "exclusive" | "http" | a duration such as "5s"
# heuristic_freshness = false    # freshness = "http" only: Last-Modified-based freshness
etag = "auto"                    # "auto" | "upstream" | "hash"
patch = ["json-patch", "merge-patch"]   # accepted PATCH formats; [] disables PATCH
write_method = "PUT"             # how a patched body is written upstream: "PUT" | "POST"
require_precondition = false     # true => writes without If-Match/If-Unmodified-Since get 428
conflict_retries = 3             # see "No lost updates"
patch_max_ops = 1000             # more operations in one JSON Patch => 413
refresh_after_write = false      # true => re-read after a write (the upstream rewrites bodies)
batch_patches = true             # false => every PATCH is its own upstream write
batch_reads = true               # false => every revalidate read is its own upstream exchange
# ca_file = "certs/upstream-ca.pem"   # extra trust root for an https upstream
"#;

    const MINIMAL: &str =
        "[[route]]\nname = \"a\"\npath = \"/a/{*rest}\"\nupstream = \"http://127.0.0.1:3000\"\n";

    fn parse(src: &str) -> Config {
        Config::from_toml(src, "proxy.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(headers: &[HeaderName]) -> Vec<&str> {
        headers.iter().map(HeaderName::as_str).collect()
    }

    #[test]
    fn spec_example_parses_to_the_documented_values() {
        let c = parse(SPEC_EXAMPLE);
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.server.max_body_bytes, 1_048_576);
        assert_eq!(c.server.request_timeout, Duration::from_secs(30));
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert!(c.server.tls.is_none());
        assert_eq!(
            c.admin.unwrap().listen,
            "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.cache.max_bytes, 268_435_456);
        assert_eq!(c.cache.max_entry_bytes, 8_388_608);
        assert_eq!(names(&c.cache.key_headers), ["authorization", "cookie"]);
        assert_eq!(c.routes.len(), 1);
        let r = &c.routes[0];
        assert_eq!((r.name.as_str(), r.path.as_str()), ("people", "/api/people/{id}"));
        assert_eq!(r.upstream.scheme, Scheme::HTTP);
        assert_eq!(r.upstream.authority.as_str(), "127.0.0.1:3000");
        assert_eq!(r.upstream.base_path, "");
        assert_eq!(r.strip_prefix, None);
        assert_eq!((r.freshness, r.etag), (Freshness::Revalidate, EtagMode::Auto));
        assert_eq!(r.patch, [Format::JsonPatch, Format::MergePatch]);
        assert_eq!(r.write_method, Method::PUT);
        assert!(!r.require_precondition && !r.refresh_after_write);
        assert_eq!((r.conflict_retries, r.patch_max_ops), (3, 1000));
        assert_eq!(r.ca_file, None);
        assert_eq!(
            r.describe(),
            "people  /api/people/{id} -> http://127.0.0.1:3000  freshness=revalidate etag=auto \
             patch=json-patch,merge-patch write=PUT"
        );
    }

    #[test]
    fn shipped_proxy_toml_is_valid() {
        let c = parse(include_str!("../../proxy.toml"));
        let routes: Vec<_> = c
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.path.as_str()))
            .collect();
        assert_eq!(
            routes,
            [
                ("people", "/api/people/{id}"),
                ("everything-else", "/api/{*rest}")
            ]
        );
    }

    #[test]
    fn absent_sections_and_keys_take_the_documented_defaults() {
        for src in [MINIMAL.to_owned(), format!("[server]\n[cache]\n{MINIMAL}")] {
            let c = parse(&src);
            assert_eq!(c.server.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
            assert_eq!(c.server.max_body_bytes, 1 << 20);
            assert_eq!(c.server.request_timeout, Duration::from_secs(30));
            assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
            assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
            assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
            assert_eq!(c.server.write_timeout, Duration::from_secs(60));
            assert!(c.server.tls.is_none() && c.admin.is_none());
            assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes), (256 << 20, 8 << 20));
            assert_eq!(names(&c.cache.key_headers), ["authorization", "cookie"]);
            let r = &c.routes[0];
            assert_eq!(
                (r.freshness, r.etag, r.write_method.clone()),
                (Freshness::Revalidate, EtagMode::Auto, Method::PUT)
            );
            assert_eq!(r.patch, [Format::JsonPatch, Format::MergePatch]);
            assert_eq!((r.conflict_retries, r.patch_max_ops), (3, 1000));
            assert!(!r.require_precondition && !r.refresh_after_write);
            assert_eq!((r.strip_prefix.as_deref(), r.ca_file.as_deref()), (None, None));
        }
    }

    #[test]
    fn write_timeout_is_never_shorter_than_request_timeout_by_default() {
        let c = parse(&format!("[server]\nrequest_timeout = \"90s\"\n{MINIMAL}"));
        assert_eq!(c.server.write_timeout, Duration::from_secs(90));
    }

    #[test]
    fn every_option_is_read() {
        let src = r#"
[server]
listen = "[::1]:0"
max_body_bytes = 65536
request_timeout = "250ms"
shutdown_grace = "0s"
header_read_timeout = "5m"
body_read_timeout = "1500ms"
write_timeout = "2s"
tls = { cert = "certs/server.pem", key = "/etc/key.pem" }

[cache]
max_bytes = "10KB"
max_entry_bytes = 10000
key_headers = ["X-Api-Key", "Cookie", "cookie", "x-api-key"]

[[route]]
name = "v1.items_all-2"
path = "/api/items/{*rest}"
upstream = "https://api.internal:8443/legacy/v1/"
strip_prefix = "/api"
freshness = "5s"
etag = "hash"
patch = []
write_method = "POST"
require_precondition = true
conflict_retries = 0
patch_max_ops = 1
refresh_after_write = true
ca_file = "ca.pem"

[[route]]
name = "b"
path = "/b"
upstream = "http://[::1]:3000"
freshness = "exclusive"
etag = "upstream"
patch = ["merge-patch"]
"#;
        let c = parse(src);
        assert_eq!(c.server.listen, "[::1]:0".parse::<SocketAddr>().unwrap());
        assert_eq!(c.server.max_body_bytes, 65536);
        assert_eq!(c.server.request_timeout, Duration::from_millis(250));
        assert_eq!(c.server.shutdown_grace, Duration::ZERO);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(300));
        assert_eq!(c.server.body_read_timeout, Duration::from_millis(1500));
        assert_eq!(c.server.write_timeout, Duration::from_secs(2));
        let tls = c.server.tls.unwrap();
        assert_eq!(
            (tls.cert, tls.key),
            (PathBuf::from("certs/server.pem"), PathBuf::from("/etc/key.pem"))
        );
        assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes), (10_000, 10_000));
        assert_eq!(names(&c.cache.key_headers), ["x-api-key", "cookie"]);
        let r = &c.routes[0];
        assert_eq!(r.name, "v1.items_all-2");
        assert_eq!(r.upstream.scheme, Scheme::HTTPS);
        assert_eq!(r.upstream.authority.as_str(), "api.internal:8443");
        assert_eq!(r.upstream.base_path, "/legacy/v1");
        assert_eq!(r.strip_prefix.as_deref(), Some("/api"));
        assert_eq!(
            (r.freshness, r.etag),
            (Freshness::For(Duration::from_secs(5)), EtagMode::Hash)
        );
        assert_eq!(
            (r.patch.as_slice(), r.write_method.clone()),
            ([].as_slice(), Method::POST)
        );
        assert!(r.require_precondition && r.refresh_after_write);
        assert_eq!((r.conflict_retries, r.patch_max_ops), (0, 1));
        assert_eq!(r.ca_file.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(
            r.describe(),
            "v1.items_all-2  /api/items/{*rest} -> https://api.internal:8443/legacy/v1  freshness=5s etag=hash \
             patch=none write=POST strip_prefix=/api require_precondition=true refresh_after_write=true"
        );
        let b = &c.routes[1];
        assert_eq!(b.upstream.authority.as_str(), "[::1]:3000");
        assert_eq!(
            (b.freshness, b.etag, b.patch.as_slice()),
            (
                Freshness::Exclusive,
                EtagMode::Upstream,
                [Format::MergePatch].as_slice()
            )
        );
        assert_eq!(
            b.describe(),
            "b  /b -> http://[::1]:3000  freshness=exclusive etag=upstream patch=merge-patch write=PUT"
        );
    }

    #[test]
    fn empty_key_headers_are_allowed() {
        let c = parse(&format!("[cache]\nkey_headers = []\n{MINIMAL}"));
        assert!(c.cache.key_headers.is_empty());
    }

    #[test]
    fn load_resolves_relative_paths_against_the_file_directory() {
        let dir = std::env::temp_dir().join(format!("patchgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        let src = "[server.tls]\ncert = \"certs/a.pem\"\nkey = \"/abs/k.pem\"\n\n[[route]]\nname = \"a\"\npath = \"/a\"\n\
                   upstream = \"https://h\"\nca_file = \"ca.pem\"\n";
        std::fs::write(&path, src).unwrap();
        let c = Config::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let tls = c.server.tls.unwrap();
        assert_eq!(tls.cert, dir.join("certs/a.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/k.pem"));
        assert_eq!(c.routes[0].ca_file, Some(dir.join("ca.pem")));
        // from_toml keeps them as written.
        let c = Config::from_toml(src, "proxy.toml").unwrap();
        assert_eq!(c.server.tls.unwrap().cert, PathBuf::from("certs/a.pem"));
    }

    #[test]
    fn load_names_an_unreadable_file_without_a_position() {
        let e = Config::load(Path::new("/nonexistent/patchgate/proxy.toml")).unwrap_err();
        assert_eq!(
            (e.file(), e.line(), e.key()),
            ("/nonexistent/patchgate/proxy.toml", None, "")
        );
        assert!(
            e.to_string()
                .starts_with("/nonexistent/patchgate/proxy.toml: cannot read the configuration file: "),
            "{e}"
        );
    }

    #[test]
    fn load_reports_errors_with_the_path_as_given() {
        let dir = std::env::temp_dir().join(format!("patchgate-config-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.to_string().starts_with(&format!(
                "{}:3:1: server.lisen: unknown key `lisen`",
                path.display()
            )),
            "{e}"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
