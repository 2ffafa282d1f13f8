//! Reloading `proxy.toml` without a restart: on SIGHUP ([`crate::server::reload_on_sighup`])
//! and on the admin listener's `POST /reload`.
//!
//! The file is validated as `patchgate check` does (TLS pair, `ca_file`s, `[cluster]`
//! URLs loaded); a config that fails changes nothing. A valid one is applied: routes,
//! limits and cache sizes as one new generation of [`crate::settings::Settings`] (requests
//! in flight keep theirs), the listener's TLS pair and header-read timeout for new
//! connections. Keys that only a restart changes keep their running values and are
//! named in the answer and the log.
//!
//! Invariant: reloads run one at a time, and what a restart-only key says is always
//! compared with the value the process started with.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::layer::PatchLayer;
use crate::metrics::Reload;
use crate::server::{ListenerTls, Listening};

/// What one reload did, for the log, `/metrics` and `POST /reload`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new config is in use, except the keys in `restart` (empty: all of it).
    Applied { restart: Vec<&'static str> },
    /// Refused: the config in use stays. The text names file, line, column and key.
    Invalid { error: String },
}

impl Outcome {
    /// The JSON `POST /reload` answers with.
    pub fn to_json(&self) -> String {
        let value = match self {
            Outcome::Applied { restart } => serde_json::json!({
                "result": self.result().as_str(),
                "restart_needed": restart,
            }),
            Outcome::Invalid { error } => serde_json::json!({
                "result": self.result().as_str(),
                "error": error,
            }),
        };
        value.to_string()
    }

    pub fn result(&self) -> Reload {
        match self {
            Outcome::Applied { restart } if restart.is_empty() => Reload::Applied,
            Outcome::Applied { .. } => Reload::RestartNeeded,
            Outcome::Invalid { .. } => Reload::Invalid,
        }
    }
}

/// Re-reads the file a proxy was started from and applies it.
pub struct Reloader {
    path: PathBuf,
    /// The config the process started with: what restart-only keys are compared with.
    started: Config,
    layer: Option<PatchLayer>,
    tls: Option<Arc<ListenerTls>>,
    listening: Arc<ArcSwap<Listening>>,
    /// One reload at a time (SIGHUP and `POST /reload` may race).
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(
        path: PathBuf,
        started: Config,
        layer: Option<PatchLayer>,
        tls: Option<Arc<ListenerTls>>,
        listening: Arc<ArcSwap<Listening>>,
    ) -> Reloader {
        Reloader {
            path,
            started,
            layer,
            tls,
            listening,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The file reloads read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, validates and applies the file; logs and counts the outcome.
    pub async fn reload(&self) -> Outcome {
        let _one_at_a_time = self.running.lock().await;
        let outcome = match self.validate() {
            Ok((config, tls)) => self.apply(&config, tls),
            Err(error) => Outcome::Invalid { error },
        };
        let file = self.path.display();
        match &outcome {
            Outcome::Applied { restart } if restart.is_empty() => {
                tracing::info!(%file, "configuration reloaded");
            }
            Outcome::Applied { restart } => tracing::warn!(
                %file,
                restart_needed = %restart.join(", "),
                "configuration reloaded; these keys keep their running values until a restart"
            ),
            Outcome::Invalid { error } => {
                tracing::error!(%file, %error, "configuration reload refused; keeping the configuration in use")
            }
        }
        if let Some(layer) = &self.layer {
            layer.metrics().record_reload(outcome.result());
        }
        outcome
    }

    /// The new config, checked as `patchgate check` checks it, with its TLS pair loaded.
    fn validate(&self) -> Result<(Config, Option<Arc<rustls::ServerConfig>>), String> {
        let config = Config::load(&self.path).map_err(|e| e.to_string())?;
        let tls = match &config.server.tls {
            Some(files) => Some(crate::server::server_config(files).map_err(|e| e.to_string())?),
            None => None,
        };
        crate::upstream::client(&config).map_err(|e| e.to_string())?;
        if let Some(cluster) = &config.cluster {
            crate::cluster::client(cluster).map_err(|e| e.to_string())?;
        }
        // The cluster in use is the one started with: its lease must outlast a write.
        if let Some(running) = &self.started.cluster
            && config.server.write_timeout + running.timeout >= running.lease
        {
            return Err(format!(
                "{}: server.write_timeout: {} is too long for the running cluster.lease ({}); \
                 a [cluster] change needs a restart",
                self.path.display(),
                crate::config::format_duration(config.server.write_timeout),
                crate::config::format_duration(running.lease)
            ));
        }
        Ok((config, tls))
    }

    fn apply(&self, config: &Config, tls: Option<Arc<rustls::ServerConfig>>) -> Outcome {
        let restart = restart_needed(&self.started, config);
        if let Some(layer) = &self.layer {
            layer.apply(config);
        }
        if let (Some(listener), Some(files), Some(tls)) = (&self.tls, &config.server.tls, tls) {
            listener.install(files.clone(), tls);
        }
        self.listening.store(Arc::new(Listening::new(config)));
        Outcome::Applied { restart }
    }
}

/// The keys whose new value differs from the running one and takes a restart: the
/// listeners are bound, the connection limit and `[cluster]` are set up once, and each
/// upstream origin's trust (`route.ca_file`) is fixed in the pooled client.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if running.server.listen != new.server.listen {
        keys.push("server.listen");
    }
    if running.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        keys.push("admin.listen");
    }
    if running.server.tls.is_some() != new.server.tls.is_some() {
        keys.push("server.tls");
    }
    if running.server.max_connections != new.server.max_connections {
        keys.push("server.max_connections");
    }
    if running.cluster != new.cluster {
        keys.push("cluster");
    }
    if trust(running) != trust(new) {
        keys.push("route.ca_file");
    }
    keys
}

/// Each https origin with the `ca_file`s routes give it.
fn trust(config: &Config) -> BTreeSet<(String, PathBuf)> {
    config
        .routes
        .iter()
        .filter_map(|route| {
            let origin = format!("{}://{}", route.upstream.scheme, route.upstream.authority);
            Some((origin.to_ascii_lowercase(), route.ca_file.clone()?))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(server: &str, admin: &str, route: &str) -> Config {
        let text = format!(
            "[server]\n{server}\n{admin}\n[[route]]\nname = \"a\"\npath = \"/a/{{*rest}}\"\n{route}\n"
        );
        Config::from_toml(&text, "t.toml").unwrap()
    }

    #[test]
    fn listeners_the_connection_limit_and_trust_need_a_restart_and_the_rest_does_not() {
        let base = config(
            "listen = \"127.0.0.1:8080\"",
            "[admin]\nlisten = \"127.0.0.1:9090\"",
            "upstream = \"http://127.0.0.1:9\"",
        );
        let live = config(
            "listen = \"127.0.0.1:8080\"\nmax_body_bytes = \"1KiB\"\nrequest_timeout = \"3s\"",
            "[admin]\nlisten = \"127.0.0.1:9090\"",
            "upstream = \"http://127.0.0.1:10\"\nmax_in_flight = 2",
        );
        assert!(restart_needed(&base, &live).is_empty());
        let moved = config(
            "listen = \"127.0.0.1:8081\"\nmax_connections = 10",
            "",
            "upstream = \"https://127.0.0.1:10\"\nca_file = \"/etc/ca.pem\"",
        );
        assert_eq!(
            restart_needed(&base, &moved),
            [
                "server.listen",
                "admin.listen",
                "server.max_connections",
                "route.ca_file"
            ]
        );
    }

    #[test]
    fn the_answer_is_json_naming_the_result() {
        let applied = Outcome::Applied { restart: vec![] };
        assert_eq!(applied.to_json(), r#"{"restart_needed":[],"result":"applied"}"#);
        let partial = Outcome::Applied {
            restart: vec!["server.listen"],
        };
        assert_eq!(
            partial.to_json(),
            r#"{"restart_needed":["server.listen"],"result":"restart_needed"}"#
        );
        let invalid = Outcome::Invalid {
            error: "t.toml:3:1: x".to_owned(),
        };
        assert_eq!(
            invalid.to_json(),
            r#"{"error":"t.toml:3:1: x","result":"invalid"}"#
        );
    }
}
