//! Raw → validated: defaults, value parsing and cross-key checks, each failure pointing at
//! the value (or, for a missing key, the table) that needs fixing.

use http::uri::Scheme;
use http::{HeaderName, Method};
use toml::Spanned;

use super::raw::{RawAdmin, RawCache, RawCluster, RawConfig, RawRoute, RawServer, RawTls};
use super::values::{
    etag, file_path, freshness, listen, nonzero_duration, nonzero_size, path_template, size, strip_prefix,
    upstream, write_method,
};
use super::{Admin, Cache, Cluster, Config, ConfigError, EtagMode, Freshness, OnStale, Route, Server, Tls};
use super::{format_size, parse_duration};
use crate::patch::Format;

type Result<T> = std::result::Result<T, ConfigError>;

pub(super) fn validate(raw: RawConfig, src: &str, file: &str) -> Result<Config> {
    let c = Checker { src, file };
    let server = c.server(raw.server)?;
    let admin = raw.admin.map(|admin| c.admin(admin, &server)).transpose()?;
    let cache = c.cache(raw.cache)?;
    let routes = c.routes(raw.route)?;
    let cluster = raw
        .cluster
        .map(|cluster| c.cluster(cluster, &server))
        .transpose()?;
    Ok(Config {
        server,
        admin,
        cache,
        routes,
        cluster,
    })
}

struct Checker<'a> {
    src: &'a str,
    file: &'a str,
}

impl Checker<'_> {
    fn error(&self, at: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.src, self.file, at, key, message)
    }

    /// Parses an optional value, or returns `default` when the key is absent.
    fn optional<R, T>(
        &self,
        raw: Option<Spanned<R>>,
        key: &str,
        default: T,
        parse: impl FnOnce(&R) -> std::result::Result<T, String>,
    ) -> Result<T> {
        match raw {
            None => Ok(default),
            Some(value) => parse(value.get_ref()).map_err(|m| self.error(value.span().start, key, m)),
        }
    }

    /// Parses a required value; a missing one is reported at its table (`table_at`).
    fn required<R, T>(
        &self,
        raw: Option<Spanned<R>>,
        table_at: usize,
        key: &str,
        hint: &str,
        parse: impl FnOnce(&R) -> std::result::Result<T, String>,
    ) -> Result<T> {
        match raw {
            None => Err(self.error(table_at, key, format!("missing; {hint}"))),
            Some(value) => parse(value.get_ref()).map_err(|m| self.error(value.span().start, key, m)),
        }
    }

    fn server(&self, raw: Option<RawServer>) -> Result<Server> {
        let d = Server::default();
        let Some(raw) = raw else { return Ok(d) };
        let request_timeout = self.optional(
            raw.request_timeout,
            "server.request_timeout",
            d.request_timeout,
            nonzero_duration,
        )?;
        Ok(Server {
            listen: self.optional(raw.listen, "server.listen", d.listen, |s| listen(s))?,
            max_body_bytes: self.optional(
                raw.max_body_bytes,
                "server.max_body_bytes",
                d.max_body_bytes,
                nonzero_size,
            )?,
            request_timeout,
            write_timeout: self.optional(
                raw.write_timeout,
                "server.write_timeout",
                d.write_timeout.max(request_timeout),
                |s| {
                    let bound = parse_duration(&s.0)?;
                    if bound < request_timeout {
                        return Err(format!(
                            "{bound:?} is shorter than server.request_timeout ({request_timeout:?}); \
                             a sent write must be given at least as long as its client waits"
                        ));
                    }
                    Ok(bound)
                },
            )?,
            shutdown_grace: self.optional(
                raw.shutdown_grace,
                "server.shutdown_grace",
                d.shutdown_grace,
                |s| parse_duration(&s.0),
            )?,
            header_read_timeout: self.optional(
                raw.header_read_timeout,
                "server.header_read_timeout",
                d.header_read_timeout,
                nonzero_duration,
            )?,
            body_read_timeout: self.optional(
                raw.body_read_timeout,
                "server.body_read_timeout",
                d.body_read_timeout,
                nonzero_duration,
            )?,
            max_connections: self.optional(raw.max_connections, "server.max_connections", None, |n| {
                positive(*n).map(Some)
            })?,
            tls: raw.tls.map(|tls| self.tls(tls)).transpose()?,
        })
    }

    fn tls(&self, raw: Spanned<RawTls>) -> Result<Tls> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let hint = "[server.tls] needs both `cert` and `key`, paths to PEM files";
        Ok(Tls {
            cert: self.required(raw.cert, at, "server.tls.cert", hint, |s| file_path(s))?,
            key: self.required(raw.key, at, "server.tls.key", hint, |s| file_path(s))?,
        })
    }

    fn admin(&self, raw: Spanned<RawAdmin>, server: &Server) -> Result<Admin> {
        let at = raw.span().start;
        let hint = "add listen = \"127.0.0.1:9901\", or remove [admin] to run without an admin listener";
        let listen = self.required(raw.into_inner().listen, at, "admin.listen", hint, |s| {
            let addr = listen(s)?;
            if addr == server.listen && addr.port() != 0 {
                return Err(format!(
                    "{addr} is already server.listen; give the admin listener its own port"
                ));
            }
            Ok(addr)
        })?;
        Ok(Admin { listen })
    }

    fn cluster(&self, raw: Spanned<RawCluster>, server: &Server) -> Result<Cluster> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let hint = "add redis = \"redis://127.0.0.1:6379/0\" (or sentinels and sentinel_master, or \
                    cluster_nodes), or remove [cluster] to run one instance alone";
        let url = |s: &String| {
            // The URL may hold a password: messages never repeat it.
            redis::Client::open(s.as_str()).map(|_| s.clone()).map_err(|_| {
                "not a Redis URL; write redis://host:port/db or rediss://host:port/db \
                 (valkey:// and valkeys:// too)"
                    .to_owned()
            })
        };
        // A list of URLs, all with TLS or all without: (urls, tls).
        let urls = |list: Spanned<Vec<Spanned<String>>>, key: &str| -> Result<(Vec<String>, bool)> {
            let list_at = list.span().start;
            let mut out = Vec::new();
            for (i, item) in list.into_inner().into_iter().enumerate() {
                let at = format!("{key}[{i}]");
                out.push(url(item.get_ref()).map_err(|m| self.error(item.span().start, &at, m))?);
            }
            let tls: Vec<bool> = out
                .iter()
                .map(|u| u.starts_with("rediss://") || u.starts_with("valkeys://"))
                .collect();
            match tls.first() {
                Some(first) if tls.iter().all(|t| t == first) => Ok((out, *first)),
                _ => Err(self.error(
                    list_at,
                    key,
                    "list at least one URL (redis://host:port), all with TLS or all without",
                )),
            }
        };
        let given = [
            raw.redis.is_some(),
            raw.sentinels.is_some(),
            raw.cluster_nodes.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(self.error(
                at,
                "cluster.redis",
                "give one of redis (one server), sentinels (Redis Sentinel) or cluster_nodes \
                 (Redis Cluster)",
            ));
        }
        let sentinel = match (raw.sentinels, raw.sentinel_master) {
            (None, None) => None,
            (Some(nodes), Some(master)) => {
                let (nodes, tls) = urls(nodes, "cluster.sentinels")?;
                Some(super::Sentinel {
                    nodes,
                    master: master.into_inner(),
                    tls,
                })
            }
            (Some(nodes), None) => {
                return Err(self.error(
                    nodes.span().start,
                    "cluster.sentinel_master",
                    "missing; sentinels needs the name the Sentinels monitor the primary under",
                ));
            }
            (None, Some(master)) => {
                return Err(self.error(
                    master.span().start,
                    "cluster.sentinels",
                    "missing; sentinel_master needs the Sentinels' URLs",
                ));
            }
        };
        let (nodes, nodes_tls) = match raw.cluster_nodes {
            Some(list) => {
                let (urls, tls) = urls(list, "cluster.cluster_nodes")?;
                (Some(urls), tls)
            }
            None => (None, false),
        };
        let redis = match (&sentinel, &nodes) {
            (None, None) => Some(self.required(raw.redis, at, "cluster.redis", hint, url)?),
            _ => None,
        };
        let write_timeout = server.write_timeout;
        let lease = self.optional(
            raw.lease,
            "cluster.lease",
            write_timeout + std::time::Duration::from_secs(5),
            |s| {
                let lease = parse_duration(&s.0)?;
                if lease <= write_timeout {
                    return Err(format!(
                        "{lease:?} is not longer than server.write_timeout ({write_timeout:?}); a \
                         lease must outlive the write it was proven for"
                    ));
                }
                Ok(lease)
            },
        )?;
        let tls = nodes_tls
            || redis
                .as_ref()
                .is_some_and(|r| r.starts_with("rediss://") || r.starts_with("valkeys://"));
        let ca_file = match raw.ca_file {
            Some(value) if !tls => {
                return Err(self.error(
                    value.span().start,
                    "cluster.ca_file",
                    "only TLS URLs in redis or cluster_nodes (rediss://, valkeys://) use a CA file",
                ));
            }
            raw => self.optional(raw, "cluster.ca_file", None, |s| file_path(s).map(Some))?,
        };
        Ok(Cluster {
            redis,
            sentinel,
            nodes,
            password_env: self.optional(raw.password_env, "cluster.password_env", None, |s| {
                if s.is_empty() || s.contains('=') || s.contains('\0') {
                    return Err(format!("{s:?} is not an environment variable name"));
                }
                Ok(Some(s.clone()))
            })?,
            ca_file,
            key_prefix: self.optional(
                raw.key_prefix,
                "cluster.key_prefix",
                "patchgate:".to_owned(),
                |s| Ok(s.clone()),
            )?,
            lease,
            timeout: self.optional(
                raw.timeout,
                "cluster.timeout",
                std::time::Duration::from_secs(1),
                nonzero_duration,
            )?,
            lease_poll: self.optional(
                raw.lease_poll,
                "cluster.lease_poll",
                std::time::Duration::from_millis(250),
                nonzero_duration,
            )?,
        })
    }

    fn cache(&self, raw: Option<RawCache>) -> Result<Cache> {
        let d = Cache::default();
        let Some(raw) = raw else { return Ok(d) };
        let max_at = raw.max_bytes.as_ref().map(|v| v.span().start);
        let entry_at = raw.max_entry_bytes.as_ref().map(|v| v.span().start);
        let max_bytes = self.optional(raw.max_bytes, "cache.max_bytes", d.max_bytes, size)?;
        let max_entry_bytes = self.optional(
            raw.max_entry_bytes,
            "cache.max_entry_bytes",
            d.max_entry_bytes,
            size,
        )?;
        if max_entry_bytes > max_bytes {
            let message = format!(
                "cache.max_entry_bytes ({}) must not exceed cache.max_bytes ({}); raise max_bytes or lower max_entry_bytes",
                format_size(max_entry_bytes),
                format_size(max_bytes)
            );
            // Point at whichever of the two the file actually sets, preferring the entry size.
            return Err(match (entry_at, max_at) {
                (Some(at), _) => self.error(at, "cache.max_entry_bytes", message),
                (None, Some(at)) => self.error(at, "cache.max_bytes", message),
                (None, None) => ConfigError::nowhere(self.file, "cache.max_entry_bytes", message),
            });
        }
        let key_headers = match raw.key_headers {
            None => d.key_headers,
            Some(list) => self.key_headers(list.into_inner())?,
        };
        Ok(Cache {
            max_bytes,
            max_entry_bytes,
            key_headers,
        })
    }

    /// Field names are case-insensitive tokens (RFC 9110 §5.1), stored lowercase.
    fn key_headers(&self, list: Vec<Spanned<String>>) -> Result<Vec<HeaderName>> {
        let mut names = Vec::with_capacity(list.len());
        for (i, item) in list.into_iter().enumerate() {
            let name = HeaderName::from_bytes(item.get_ref().as_bytes()).map_err(|_| {
                let message = format!(
                    "{:?} is not a valid header name; use names such as \"authorization\" or \"x-api-key\"",
                    item.get_ref()
                );
                self.error(item.span().start, &format!("cache.key_headers[{i}]"), message)
            })?;
            // HeaderName is already lowercase, so this also folds "Cookie" into "cookie".
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn routes(&self, raw: Option<Spanned<Vec<Spanned<RawRoute>>>>) -> Result<Vec<Route>> {
        const NONE: &str =
            "no routes configured; add at least one [[route]] table with name, path and upstream";
        let Some(raw) = raw else {
            return Err(ConfigError::nowhere(self.file, "route", NONE));
        };
        let at = raw.span().start;
        let raw = raw.into_inner();
        if raw.is_empty() {
            return Err(self.error(at, "route", NONE));
        }
        let mut names: Vec<(String, usize)> = Vec::new();
        let mut routes = Vec::with_capacity(raw.len());
        for (i, route) in raw.into_iter().enumerate() {
            routes.push(self.route(i, route, &mut names)?);
        }
        Ok(routes)
    }

    fn route(&self, i: usize, raw: Spanned<RawRoute>, names: &mut Vec<(String, usize)>) -> Result<Route> {
        let at = raw.span().start;
        let raw = raw.into_inner();
        let key = |name: &str| format!("route[{i}].{name}");
        let name = self.route_name(raw.name, at, &key("name"), names)?;
        let path = self.required(
            raw.path,
            at,
            &key("path"),
            "add path = \"/api/people/{id}\"",
            |s| path_template(s),
        )?;
        let upstream = self.required(
            raw.upstream,
            at,
            &key("upstream"),
            "add upstream = \"http://127.0.0.1:3000\"",
            |s| upstream(s),
        )?;
        let https = upstream.scheme == Scheme::HTTPS;
        let freshness = self.optional(raw.freshness, &key("freshness"), Freshness::Revalidate, |s| {
            freshness(s)
        })?;
        Ok(Route {
            strip_prefix: self.optional(raw.strip_prefix, &key("strip_prefix"), None, |s| {
                strip_prefix(s, &path).map(Some)
            })?,
            freshness,
            heuristic_freshness: self.optional(raw.heuristic_freshness, &key("heuristic_freshness"), false, |on| {
                if *on && freshness != Freshness::Http {
                    Err("heuristic_freshness only applies to freshness = \"http\"; remove it or set freshness = \"http\"".to_owned())
                } else {
                    Ok(*on)
                }
            })?,
            etag: self.optional(raw.etag, &key("etag"), EtagMode::Auto, |s| etag(s))?,
            patch: self.patch(raw.patch, &key("patch"))?,
            write_method: self.optional(raw.write_method, &key("write_method"), Method::PUT, |s| {
                write_method(s)
            })?,
            require_precondition: raw.require_precondition.is_some_and(Spanned::into_inner),
            conflict_retries: self.optional(raw.conflict_retries, &key("conflict_retries"), 3, |n| {
                u32::try_from(*n)
                    .ok()
                    .filter(|n| *n <= 100)
                    .ok_or_else(|| format!("must be between 0 and 100, found {n}"))
            })?,
            patch_max_ops: self.optional(raw.patch_max_ops, &key("patch_max_ops"), 1000, |n| {
                usize::try_from(*n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("must be at least 1, found {n}"))
            })?,
            refresh_after_write: raw.refresh_after_write.is_some_and(Spanned::into_inner),
            batch_patches: raw.batch_patches.is_none_or(Spanned::into_inner),
            batch_reads: raw.batch_reads.is_none_or(Spanned::into_inner),
            changes: raw.changes.is_some_and(Spanned::into_inner),
            max_in_flight: self.optional(raw.max_in_flight, &key("max_in_flight"), None, |n| {
                positive(*n).map(Some)
            })?,
            history: self.optional(raw.history, &key("history"), 8, |n| {
                usize::try_from(*n)
                    .ok()
                    .filter(|n| *n <= 64)
                    .ok_or_else(|| format!("expected 0 (off) to 64 versions, found {n}"))
            })?,
            on_stale: self.optional(raw.on_stale, &key("on_stale"), OnStale::Reject, |s| {
                match s.as_str() {
                    "reject" => Ok(OnStale::Reject),
                    "merge" => Ok(OnStale::Merge),
                    other => Err(format!("expected \"reject\" or \"merge\", found {other:?}")),
                }
            })?,
            ca_file: self.optional(raw.ca_file, &key("ca_file"), None, |s| {
                if https {
                    file_path(s).map(Some)
                } else {
                    Err("ca_file only applies to an https upstream; remove it or use https://".to_owned())
                }
            })?,
            name,
            path,
            upstream,
        })
    }

    /// Checks the name's syntax and that no earlier route (recorded in `names` with its
    /// line) uses it; the duplicate is reported at the later route.
    fn route_name(
        &self,
        raw: Option<Spanned<String>>,
        table_at: usize,
        key: &str,
        names: &mut Vec<(String, usize)>,
    ) -> Result<String> {
        let Some(raw) = raw else {
            return Err(self.error(
                table_at,
                key,
                "missing; add name = \"people\" (unique; used in logs and metrics)",
            ));
        };
        let at = raw.span().start;
        let name = raw.into_inner();
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || !name.chars().all(valid) {
            let message =
                format!("{name:?} is not a valid route name; use letters, digits, '_', '.' and '-' only");
            return Err(self.error(at, key, message));
        }
        if let Some(index) = names.iter().position(|(other, _)| *other == name) {
            let line = names.get(index).map_or(0, |(_, line)| *line);
            let message = format!(
                "route name {name:?} is already used by route[{index}] (line {line}); give each route a unique name"
            );
            return Err(self.error(at, key, message));
        }
        names.push((name.clone(), super::error::line_col(self.src, at).0));
        Ok(name)
    }

    fn patch(&self, raw: Option<Spanned<Vec<Spanned<String>>>>, key: &str) -> Result<Vec<Format>> {
        let Some(raw) = raw else {
            return Ok(vec![Format::JsonPatch, Format::MergePatch]);
        };
        let mut formats = Vec::new();
        for (j, item) in raw.into_inner().into_iter().enumerate() {
            let format = match item.get_ref().as_str() {
                "json-patch" => Format::JsonPatch,
                "merge-patch" => Format::MergePatch,
                other => {
                    let message = format!("expected \"json-patch\" or \"merge-patch\", found {other:?}");
                    return Err(self.error(item.span().start, &format!("{key}[{j}]"), message));
                }
            };
            if formats.contains(&format) {
                let message = format!("{:?} is listed twice; list each format once", item.get_ref());
                return Err(self.error(item.span().start, &format!("{key}[{j}]"), message));
            }
            formats.push(format);
        }
        Ok(formats)
    }
}

/// A count that must be at least 1.
fn positive(n: i64) -> std::result::Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("must be at least 1, found {n}; remove the key for no limit"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
