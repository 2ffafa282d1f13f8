//! STUB (replaced by the config helper's module).
use http::{
    HeaderName, Method,
    uri::{Authority, Scheme},
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub admin: Option<Admin>,
    pub cache: Cache,
    pub routes: Vec<Route>,
}
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub tls: Option<Tls>,
}
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
    pub max_entry_bytes: u64,
    pub key_headers: Vec<HeaderName>,
}
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: String,
    pub upstream: Upstream,
    pub strip_prefix: Option<String>,
    pub freshness: Freshness,
    pub etag: EtagMode,
    pub patch: Vec<crate::patch::Format>,
    pub write_method: Method,
    pub require_precondition: bool,
    pub conflict_retries: u32,
    pub patch_max_ops: usize,
    pub refresh_after_write: bool,
    pub ca_file: Option<PathBuf>,
}
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
    pub base_path: String,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Revalidate,
    Exclusive,
    For(Duration),
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagMode {
    Auto,
    Upstream,
    Hash,
}
#[derive(Debug)]
pub struct ConfigError(pub String);
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}
impl Config {
    pub fn from_toml(_src: &str, file: &str) -> Result<Config, ConfigError> {
        Err(ConfigError(format!("{file}: stub")))
    }
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Err(ConfigError(format!("{}: stub", path.display())))
    }
}
impl Route {
    pub fn describe(&self) -> String {
        self.name.clone()
    }
}
