//! Route selection: path templates (matchit), first match in file order, prefix
//! stripping, and the path-safety check that keeps a request inside its route.

use crate::config::Route;

/// A configured route with its template compiled once.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: u32,
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
}

impl RouteTable {
    /// Config validation already inserted each template into a router, so a failure here
    /// only drops that route (logged) instead of panicking.
    pub fn new(routes: &[Route]) -> RouteTable {
        let routes = routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let mut router = matchit::Router::new();
                let authority = route.upstream.authority.as_str();
                let host = http::HeaderValue::from_str(authority);
                match (router.insert(route.path.clone(), ()), host) {
                    (Ok(()), Ok(host)) => Some(CompiledRoute {
                        id: u32::try_from(i).unwrap_or(u32::MAX),
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
            .collect();
        RouteTable { routes }
    }

    /// The first route whose template matches `path` (the raw, still-encoded path).
    pub fn find(&self, path: &str) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.router.at(path).is_ok())
    }

    pub fn get(&self, id: u32) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.id == id)
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
