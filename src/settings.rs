//! One generation of the settings a request walks with: the compiled routes and the
//! limits of `[server]` and `[cache]`. A reload ([`crate::reload`]) swaps in a new
//! generation; each request loads the current one once, at its start, and keeps it to
//! its end (its sent write included), so a request never mixes two configs.
//!
//! Invariant: a cache entry or a resource is reached only through a route id, and a
//! route keeps its id across a reload exactly while nothing that decides what its
//! cached bytes mean changed ([`RouteIds`]); ids are never reused. So after a reload an
//! entry made for another upstream, prefix, ETag mode or `cache.key_headers` is never
//! served: no route has its id any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderName, Method};

use crate::config::{Config, OnStale, Route};
use crate::route::RouteTable;

/// What the request walk reads from the config, in one immutable generation.
#[derive(Debug)]
pub(crate) struct Settings {
    pub routes: RouteTable,
    pub max_body_bytes: u64,
    pub max_entry_bytes: u64,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    pub body_read_timeout: Duration,
    pub key_headers: Vec<HeaderName>,
}

impl Settings {
    /// Compiles `config`; routes keep the in-flight counters of `previous`'s routes of
    /// the same name.
    pub(crate) fn new(config: &Config, ids: &RouteIds, previous: Option<&Settings>) -> Settings {
        let routes = RouteTable::with_identities(&config.routes, |route| {
            let counter = previous
                .and_then(|p| p.routes.by_name(&route.name))
                .map(|r| Arc::clone(&r.in_flight))
                .unwrap_or_default();
            (ids.of(route, &config.cache.key_headers), counter)
        });
        Settings {
            routes,
            max_body_bytes: config.server.max_body_bytes,
            max_entry_bytes: config.cache.max_entry_bytes,
            request_timeout: config.server.request_timeout,
            write_timeout: config.server.write_timeout,
            body_read_timeout: config.server.body_read_timeout,
            key_headers: config.cache.key_headers.clone(),
        }
    }
}

/// Route identities for the life of the process: one number per distinct
/// [`meaning`], handed out in order and never reused.
#[derive(Debug, Default)]
pub(crate) struct RouteIds {
    // A std lock: held only while compiling a config, never across an `.await`.
    known: Mutex<HashMap<String, u32>>,
}

impl RouteIds {
    /// The id of `route` under these `key_headers`: the one it had if it had one.
    pub(crate) fn of(&self, route: &Route, key_headers: &[HeaderName]) -> u32 {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let next = u32::try_from(known.len()).unwrap_or(u32::MAX);
        *known.entry(meaning(route, key_headers)).or_insert(next)
    }
}

/// Everything that decides what a route's cached bytes mean and whom they are for: the
/// whole route (its name too: metrics, the feed and cluster notices name it) except the
/// keys that only shape how writes are done or how many requests run, and the
/// requester's key headers. A key added to `Route` counts by default: a reload that
/// changes it starts that route's cache afresh, which is always safe.
fn meaning(route: &Route, key_headers: &[HeaderName]) -> String {
    let mut route = route.clone();
    route.patch = Vec::new();
    route.write_method = Method::PUT;
    route.require_precondition = false;
    route.conflict_retries = 0;
    route.patch_max_ops = 1;
    route.refresh_after_write = false;
    route.batch_patches = false;
    route.batch_reads = false;
    route.max_in_flight = None;
    route.on_stale = OnStale::Reject;
    route.changes = false;
    format!("{route:?} {key_headers:?}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn routes(extra: &str) -> Config {
        let text = format!(
            "[[route]]\nname = \"a\"\npath = \"/a/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\n{extra}\n\
             [[route]]\nname = \"b\"\npath = \"/b/{{*rest}}\"\nupstream = \"http://127.0.0.1:9\"\n"
        );
        Config::from_toml(&text, "t.toml").unwrap()
    }

    fn ids(settings: &Settings) -> Vec<u32> {
        settings.routes.iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_route_keeps_its_id_while_only_operational_keys_change() {
        let ids_ = RouteIds::default();
        let first = Settings::new(&routes(""), &ids_, None);
        let second = Settings::new(
            &routes("max_in_flight = 3\nconflict_retries = 5\nbatch_reads = true"),
            &ids_,
            Some(&first),
        );
        assert_eq!(ids(&first), ids(&second));
        assert!(Arc::ptr_eq(
            &first.routes.iter().next().unwrap().in_flight,
            &second.routes.iter().next().unwrap().in_flight
        ));
    }

    #[test]
    fn a_route_gets_a_new_id_when_its_upstream_prefix_etag_or_key_headers_change() {
        let ids_ = RouteIds::default();
        let first = ids(&Settings::new(&routes(""), &ids_, None));
        for extra in [
            "strip_prefix = \"/a\"",
            "etag = \"upstream\"",
            "freshness = \"5s\"",
            "history = 2",
        ] {
            let other = ids(&Settings::new(&routes(extra), &ids_, None));
            assert_ne!(first[0], other[0], "{extra}");
            assert_eq!(first[1], other[1], "{extra}: route b is unchanged");
        }
        let mut moved = routes("");
        moved.routes[0].upstream = routes("").routes[0].upstream.clone();
        moved.routes[0].upstream.base_path = "/v2".to_owned();
        assert_ne!(first[0], ids(&Settings::new(&moved, &ids_, None))[0]);
        let mut keyed = routes("");
        keyed.cache.key_headers = vec![HeaderName::from_static("authorization")];
        let keyed = ids(&Settings::new(&keyed, &ids_, None));
        assert!(keyed.iter().all(|id| !first.contains(id)), "{keyed:?} {first:?}");
    }
}
