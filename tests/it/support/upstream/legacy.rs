//! The legacy API itself: what the upstream answers to each request, over the document
//! map (RFC 9110 §9.3 methods, §13.1 conditional requests where this upstream honours them).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use http_body_util::Full;

use super::{EtagStyle, Fault, Recorded};

pub(super) type Reply = http::Response<Full<Bytes>>;

/// One stored document.
pub(super) struct Doc {
    pub(super) body: Bytes,
    pub(super) content_type: HeaderValue,
    pub(super) modified: SystemTime,
}

/// The documents, the recorded requests and every switch the tests flip.
pub(super) struct State {
    pub(super) docs: BTreeMap<String, Doc>,
    pub(super) requests: Vec<Recorded>,
    /// Requests whose body broke off before it was complete: never acted on.
    pub(super) aborted: usize,
    pub(super) fail_next: (usize, Fault),
    pub(super) fail_writes: (usize, Fault),
    pub(super) etag_style: EtagStyle,
    pub(super) honour_if_match: bool,
    pub(super) last_modified: bool,
    pub(super) extra_headers: HeaderMap,
    /// Added to every answer to a PUT, POST or DELETE.
    pub(super) write_headers: HeaderMap,
    pub(super) normalize_on_put: bool,
    pub(super) delay: Duration,
    /// Extra time a write takes before it takes effect and is answered.
    pub(super) write_delay: Duration,
    /// A delayed write whose connection closes meanwhile still takes effect.
    pub(super) writes_outlive_connections: bool,
    /// One document space per requester (every `Authorization` and `Cookie` line).
    pub(super) per_user: bool,
    /// Reads of a document answer `{"<name>":"<the request's value>"}` instead.
    pub(super) body_per: Option<HeaderName>,
}

/// The methods `writes()` and `fail_writes` count.
pub(super) fn is_write(method: &Method) -> bool {
    [Method::PUT, Method::POST, Method::DELETE, Method::PATCH].contains(method)
}

impl State {
    pub(super) fn new() -> State {
        State {
            docs: BTreeMap::new(),
            requests: Vec::new(),
            aborted: 0,
            fail_next: (0, Fault::Close),
            fail_writes: (0, Fault::Close),
            etag_style: EtagStyle::None,
            honour_if_match: false,
            last_modified: false,
            extra_headers: HeaderMap::new(),
            write_headers: HeaderMap::new(),
            normalize_on_put: false,
            delay: Duration::ZERO,
            write_delay: Duration::ZERO,
            writes_outlive_connections: false,
            per_user: false,
            body_per: None,
        }
    }

    pub(super) fn take_fault(&mut self, method: &Method) -> Option<Fault> {
        if self.fail_next.0 > 0 {
            self.fail_next.0 -= 1;
            return Some(self.fail_next.1);
        }
        if is_write(method) && self.fail_writes.0 > 0 {
            self.fail_writes.0 -= 1;
            return Some(self.fail_writes.1);
        }
        None
    }

    pub(super) fn answer(&mut self, parts: &Parts, body: Bytes) -> Reply {
        let scoped;
        let path = if self.per_user {
            scoped = user_path(&parts.headers, parts.uri.path());
            scoped.as_str()
        } else {
            parts.uri.path()
        };
        match parts.method {
            Method::GET | Method::HEAD => self.read(parts, path),
            Method::PUT => self.put(parts, path, body),
            Method::DELETE => self.delete(parts, path),
            Method::POST if self.docs.contains_key(path) => self.put(parts, path, body),
            Method::POST => self.post(parts, path, body),
            _ => reply(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, PUT, DELETE, POST")
                .json(r#"{"error":"method not allowed"}"#.into()),
        }
    }

    fn read(&self, parts: &Parts, path: &str) -> Reply {
        let (body, content_type, modified) = match self.docs.get(path) {
            Some(doc) => (
                self.per_requester(parts, &doc.body),
                doc.content_type.clone(),
                Some(doc.modified),
            ),
            None => match self.collection(path) {
                Some(listing) => listing,
                None => {
                    let mut r = reply(StatusCode::NOT_FOUND);
                    r.headers.extend(self.extra_headers.clone());
                    return r.json(r#"{"error":"not found"}"#.into());
                }
            },
        };
        let mut r = reply(StatusCode::OK);
        r.headers.extend(self.extra_headers.clone());
        self.validators(&mut r.headers, &body, modified);
        if self.not_modified(&parts.headers, &body, modified) {
            r.status = StatusCode::NOT_MODIFIED;
            return r.empty();
        }
        r.headers.insert(header::CONTENT_TYPE, content_type);
        if parts.method == Method::HEAD {
            r.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            return r.empty();
        }
        r.body(body)
    }

    /// `body`, or the requester's own body when reads depend on a request header.
    fn per_requester(&self, parts: &Parts, body: &Bytes) -> Bytes {
        let Some(name) = &self.body_per else {
            return body.clone();
        };
        let value = parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Bytes::from(serde_json::json!({ name.as_str(): value }).to_string())
    }

    /// Every document under `path/`, in path order, as one JSON array.
    fn collection(&self, path: &str) -> Option<(Bytes, HeaderValue, Option<SystemTime>)> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let children: Vec<&Doc> = self
            .docs
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, d)| d)
            .collect();
        if children.is_empty() {
            return None;
        }
        let mut body = b"[".to_vec();
        for (i, doc) in children.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&doc.body);
        }
        body.push(b']');
        let modified = children.iter().map(|d| d.modified).max();
        Some((
            body.into(),
            HeaderValue::from_static("application/json"),
            modified,
        ))
    }

    fn put(&mut self, parts: &Parts, path: &str, body: Bytes) -> Reply {
        if let Some(refused) = self.refuse_if_match(parts, path) {
            return refused;
        }
        let stored = self.store(parts, path.to_owned(), body);
        let mut r = reply(if stored.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        });
        let doc = &self.docs[path];
        self.validators(&mut r.headers, &doc.body, Some(doc.modified));
        r.headers.extend(self.write_headers.clone());
        if stored.is_none() {
            r.headers.insert(header::LOCATION, header_value(path));
            return r.empty();
        }
        r.headers.insert(header::CONTENT_TYPE, doc.content_type.clone());
        r.body(doc.body.clone())
    }

    fn delete(&mut self, parts: &Parts, path: &str) -> Reply {
        if let Some(refused) = self.refuse_if_match(parts, path) {
            return refused;
        }
        match self.docs.remove(path) {
            Some(_) => {
                let mut r = reply(StatusCode::NO_CONTENT);
                r.headers.extend(self.write_headers.clone());
                r.empty()
            }
            None => reply(StatusCode::NOT_FOUND).json(r#"{"error":"not found"}"#.into()),
        }
    }

    /// Creates `path/<next numeric id>`.
    fn post(&mut self, parts: &Parts, path: &str, body: Bytes) -> Reply {
        let base = path.trim_end_matches('/');
        let prefix = format!("{base}/");
        let next = self
            .docs
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|id| id.parse::<u64>().ok())
            .max()
            .map_or(1, |max| max + 1);
        let location = format!("{prefix}{next}");
        self.store(parts, location.clone(), body);
        let doc = &self.docs[&location];
        let mut r = reply(StatusCode::CREATED);
        self.validators(&mut r.headers, &doc.body, Some(doc.modified));
        r.headers.insert(header::LOCATION, header_value(&location));
        r.headers.extend(self.write_headers.clone());
        r.headers.insert(header::CONTENT_TYPE, doc.content_type.clone());
        r.body(doc.body.clone())
    }

    /// Stores a written body; returns the previous document if there was one.
    fn store(&mut self, parts: &Parts, path: String, body: Bytes) -> Option<Doc> {
        let body = if self.normalize_on_put {
            normalize(body)
        } else {
            body
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        self.docs.insert(
            path,
            Doc {
                body,
                content_type,
                modified: now_seconds(),
            },
        )
    }

    /// RFC 9110 §13.1.1 with strong comparison; `None` means the write may proceed.
    fn refuse_if_match(&self, parts: &Parts, path: &str) -> Option<Reply> {
        if !self.honour_if_match {
            return None;
        }
        let values: Vec<&HeaderValue> = parts.headers.get_all(header::IF_MATCH).iter().collect();
        if values.is_empty() {
            return None;
        }
        let doc = self.docs.get(path);
        let current = doc.and_then(|d| match self.etag_style {
            EtagStyle::Strong => Some(etag(EtagStyle::Strong, &d.body)),
            EtagStyle::None | EtagStyle::Weak => None,
        });
        let matches = tags(&values).any(|tag| {
            (tag == "*" && doc.is_some()) || (!tag.starts_with("W/") && current.as_deref() == Some(tag))
        });
        if matches {
            return None;
        }
        let mut r = reply(StatusCode::PRECONDITION_FAILED);
        if let Some(doc) = doc {
            self.validators(&mut r.headers, &doc.body, Some(doc.modified));
        }
        Some(r.json(r#"{"error":"precondition failed"}"#.into()))
    }

    /// RFC 9110 §13.1.2 (weak comparison) then §13.1.3, only for validators this upstream sends.
    fn not_modified(&self, headers: &HeaderMap, body: &[u8], modified: Option<SystemTime>) -> bool {
        let inm: Vec<&HeaderValue> = headers.get_all(header::IF_NONE_MATCH).iter().collect();
        if !inm.is_empty() {
            if self.etag_style == EtagStyle::None {
                return false;
            }
            let current = etag(EtagStyle::Strong, body);
            return tags(&inm).any(|tag| tag == "*" || tag.trim_start_matches("W/") == current);
        }
        let since = headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok());
        match (
            self.last_modified,
            since.and_then(|s| httpdate::parse_http_date(s).ok()),
            modified,
        ) {
            (true, Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }

    fn validators(&self, headers: &mut HeaderMap, body: &[u8], modified: Option<SystemTime>) {
        // An extra `ETag` is sent as it is, 304s included, whatever the body.
        if self.etag_style != EtagStyle::None && !self.extra_headers.contains_key(header::ETAG) {
            headers.insert(header::ETAG, header_value(&etag(self.etag_style, body)));
        }
        if let (true, Some(modified)) = (self.last_modified, modified) {
            headers.insert(
                header::LAST_MODIFIED,
                header_value(&httpdate::fmt_http_date(modified)),
            );
        }
    }
}

/// The tag this upstream gives `body`; deterministic across processes.
fn etag(style: EtagStyle, body: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let tag = format!("\"up-{:016x}-{}\"", hasher.finish(), body.len());
    match style {
        EtagStyle::Weak => format!("W/{tag}"),
        EtagStyle::None | EtagStyle::Strong => tag,
    }
}

/// The entity-tags of a list header, split on commas (tags here never contain one).
fn tags<'a>(values: &'a [&'a HeaderValue]) -> impl Iterator<Item = &'a str> + 'a {
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn normalize(body: Bytes) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut value) => {
            if let Some(object) = value.as_object_mut() {
                object.insert("normalized".to_owned(), serde_json::Value::Bool(true));
            }
            serde_json::to_vec(&value).map_or(body, Bytes::from)
        }
        Err(_) => body,
    }
}

pub(super) fn now_seconds() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A response under construction.
pub(super) struct Draft {
    status: StatusCode,
    headers: HeaderMap,
}

pub(super) fn reply(status: StatusCode) -> Draft {
    Draft {
        status,
        headers: HeaderMap::new(),
    }
}

impl Draft {
    fn header(mut self, name: HeaderName, value: &'static str) -> Draft {
        self.headers.insert(name, HeaderValue::from_static(value));
        self
    }

    pub(super) fn json(mut self, body: Bytes) -> Reply {
        self.headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body(body)
    }

    pub(super) fn empty(self) -> Reply {
        self.body(Bytes::new())
    }

    fn body(self, body: Bytes) -> Reply {
        let mut response = http::Response::new(Full::new(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// The key of `path` in a requester's own document space: every `Authorization` and
/// `Cookie` line, then the path.
pub(super) fn user_path(headers: &HeaderMap, path: &str) -> String {
    let mut key = String::new();
    for name in [header::AUTHORIZATION, header::COOKIE] {
        for value in headers.get_all(&name) {
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            key.push('|');
        }
        key.push('#');
    }
    key.push_str(path);
    key
}
