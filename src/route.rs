//! Route selection: path templates (matchit), first match in file order (found through
//! an index of the templates' literal prefixes: `index`), prefix stripping, and the
//! path-safety check that keeps a request inside its route.

mod index;

use std::sync::{Arc, atomic::AtomicUsize};

use crate::config::Route;

/// A configured route with its template compiled once.
#[derive(Debug)]
pub struct CompiledRoute {
    /// The route's identity: the same number across reloads exactly while everything
    /// that decides what its cached bytes mean stays the same (see
    /// [`crate::settings::RouteIds`]); never reused. Cache keys and resources carry it.
    pub id: u32,
    /// Requests in flight on this route, for `max_in_flight`; carried over a reload to
    /// the route of the same name, so that a reload does not reset the count.
    pub in_flight: Arc<AtomicUsize>,
    pub config: Route,
    /// `scheme://authority`, prefixed to every upstream path.
    pub origin: String,
    /// The `Host` header sent upstream.
    pub host: http::HeaderValue,
    /// `Accept-Patch` listing the route's formats; `None` when PATCH is disabled.
    pub accept_patch: Option<http::HeaderValue>,
    router: matchit::Router<()>,
}

/// Routes in file order.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    /// Positions in `routes` by the literal prefix of their templates.
    index: index::Index,
    /// (id, position in `routes`), sorted by id: ids are not positions after a reload.
    ids: Vec<(u32, usize)>,
}

impl RouteTable {
    /// Routes numbered by their position, each with a counter of its own.
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut next = 0;
        RouteTable::with_identities(routes, |_| {
            next += 1;
            (next - 1, Arc::default())
        })
    }

    /// Routes whose id and in-flight counter `identify` gives.
    ///
    /// Config validation already inserted each template into a router, so a failure here
    /// only drops that route (logged) instead of panicking.
    pub fn with_identities(
        routes: &[Route],
        mut identify: impl FnMut(&Route) -> (u32, Arc<AtomicUsize>),
    ) -> RouteTable {
        let routes = routes
            .iter()
            .filter_map(|route| {
                let (id, in_flight) = identify(route);
                let mut router = matchit::Router::new();
                let authority = route.upstream.authority.as_str();
                let host = http::HeaderValue::from_str(authority);
                match (router.insert(route.path.clone(), ()), host) {
                    (Ok(()), Ok(host)) => Some(CompiledRoute {
                        id,
                        in_flight,
                        config: route.clone(),
                        origin: format!("{}://{authority}", route.upstream.scheme),
                        host,
                        accept_patch: accept_patch(&route.patch),
                        router,
                    }),
                    (_, Err(e)) => {
                        tracing::error!(route = %route.name, error = %e, "upstream authority rejected");
                        None
                    }
                    (Err(e), _) => {
                        tracing::error!(route = %route.name, error = %e, "route template rejected");
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        let mut index = index::Index::default();
        for (position, route) in routes.iter().enumerate() {
            index.insert(&route.config.path, position);
        }
        let mut ids: Vec<(u32, usize)> = routes.iter().enumerate().map(|(p, r)| (r.id, p)).collect();
        ids.sort_unstable();
        RouteTable { routes, index, ids }
    }

    /// The first route whose template matches `path` (the raw, still-encoded path).
    pub fn find(&self, path: &str) -> Option<&CompiledRoute> {
        let matches = |position: usize| {
            self.routes
                .get(position)
                .is_some_and(|r| r.router.at(path).is_ok())
        };
        self.index
            .first(path, matches)
            .and_then(|position| self.routes.get(position))
    }

    pub fn get(&self, id: u32) -> Option<&CompiledRoute> {
        let at = self.ids.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        self.ids
            .get(at)
            .and_then(|&(_, position)| self.routes.get(position))
    }

    pub fn by_name(&self, name: &str) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.config.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &CompiledRoute> {
        self.routes.iter()
    }
}

impl CompiledRoute {
    /// The path to request upstream: prefix stripped, upstream base path prepended.
    pub fn upstream_path(&self, path: &str) -> String {
        let rest = match &self.config.strip_prefix {
            Some(prefix) => path.strip_prefix(prefix.as_str()).unwrap_or(path),
            None => path,
        };
        let base = &self.config.upstream.base_path;
        let mut out = String::with_capacity(base.len() + rest.len() + 1);
        out.push_str(base);
        if !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        out
    }

    /// The absolute upstream URI for a client request URI: the route's origin, the
    /// upstream path and the client's query. `None` when that is no valid URI.
    pub fn upstream_uri(&self, uri: &http::Uri) -> Option<http::Uri> {
        let path = self.upstream_path(uri.path());
        let mut target = String::with_capacity(self.origin.len() + path.len() + 32);
        target.push_str(&self.origin);
        target.push_str(&path);
        if let Some(query) = uri.query() {
            target.push('?');
            target.push_str(query);
        }
        http::Uri::try_from(target).ok()
    }
}

fn accept_patch(formats: &[crate::patch::Format]) -> Option<http::HeaderValue> {
    let list: Vec<&str> = formats.iter().map(|f| f.media_type()).collect();
    if list.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&list.join(", ")).ok()
}

/// Rejects paths that could escape the route they matched once an upstream decodes
/// them: dot segments (raw or percent-encoded), encoded `/` or `\`, NUL, and malformed
/// percent escapes (RFC 3986 §3.3, §5.2.4).
pub fn is_safe_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    path.split('/').skip(1).all(is_safe_segment)
}

fn is_safe_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let mut decoded_len = 0usize;
    let mut all_dots = true;
    let mut i = 0;
    while i < bytes.len() {
        let byte = if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    i += 3;
                    (h * 16 + l) as u8
                }
                _ => return false,
            }
        } else {
            i += 1;
            bytes[i - 1]
        };
        if matches!(byte, b'/' | b'\\' | 0) {
            return false;
        }
        all_dots &= byte == b'.';
        decoded_len += 1;
    }
    !(all_dots && (decoded_len == 1 || decoded_len == 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_separators_are_unsafe() {
        for path in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E%2e",
            "/api/.%2e/x",
            "/api/a%2fb",
            "/api/a%2Fb",
            "/api/a%5cb",
            "/api/a\\b",
            "/api/a%00",
            "/api/%zz",
            "/api/%2",
            "api/x",
            "",
        ] {
            assert!(!is_safe_path(path), "{path} should be unsafe");
        }
    }

    #[test]
    fn routes_are_found_by_id_whatever_their_position() {
        let toml = ["a", "b", "c"]
            .map(|name| format!("[[route]]\nname = \"{name}\"\npath = \"/{name}/{{id}}\"\nupstream = \"http://127.0.0.1:9\"\n"))
            .concat();
        let config = crate::config::Config::from_toml(&toml, "t.toml").unwrap();
        let mut ids = [7, 2, 5].into_iter();
        let table = RouteTable::with_identities(&config.routes, |_| (ids.next().unwrap(), Arc::default()));
        let name = |id| table.get(id).map(|r| r.config.name.as_str());
        assert_eq!(
            [name(7), name(2), name(5), name(0)],
            [Some("a"), Some("b"), Some("c"), None]
        );
        assert_eq!(table.find("/c/1").map(|r| r.id), Some(5));
    }

    #[test]
    fn ordinary_paths_are_safe() {
        for path in [
            "/",
            "/api/people/1",
            "/api/a.b",
            "/api/...",
            "/api/%41",
            "/api/x/",
            "/a%20b",
        ] {
            assert!(is_safe_path(path), "{path} should be safe");
        }
    }
}
