//! A cached representation and where the cache keeps it.
//!
//! With small documents every byte an entry holds shows in resident memory, so a stored
//! variant is one allocation besides its body's buffer: the entry with its place in the
//! cache, a path of up to 24 bytes included. The buffer holds the body and then its tag,
//! and response bodies borrow it through the entry, so it needs no reference count of its
//! own. What most entries lack (upstream validators, a query, key values, `Vary`) is
//! boxed. Entries are not copied: the cache gives back one it does not store, and an
//! upstream `304` renews one in place.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use compact_str::CompactString;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Key;
use super::policy::{self, Selectors};
use crate::etag::EntityTag;
use crate::requester::Requester;

/// A response body borrowed from a shared entry.
struct BodyOf(Arc<Entry>);

impl AsRef<[u8]> for BodyOf {
    fn as_ref(&self) -> &[u8] {
        self.0.body_bytes()
    }
}

/// The process's clock origin for entry ages.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn since_epoch() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What is stored: enough to answer a GET/HEAD/304 without the upstream and to revalidate.
#[derive(Debug)]
pub struct Entry {
    /// The body, then the rendered tag clients see (its last `tag` bytes). A plain
    /// allocation: response bodies borrow it through the entry's own reference count
    /// ([`Entry::body`]), so it needs none of its own.
    buf: Box<[u8]>,
    tag: u32,
    /// End-to-end response headers to replay (content-type, cache-control, vary, …);
    /// shared between entries that have the same ones.
    pub headers: Arc<HeaderMap>,
    /// When the representation was read from the upstream: nanoseconds since [`EPOCH`],
    /// half the size of an `Instant`; renewed in place after an upstream `304`.
    stored_at: AtomicU64,
    validators: Option<Box<Validators>>,
    /// Set by the cache when it stores the entry.
    pub(super) place: Option<Place>,
}

/// What the upstream sent to validate its representation.
#[derive(Debug, Clone)]
struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<SystemTime>,
}

/// Where a stored entry is: its resource, what selects it among the resource's
/// variants, and its share of `max_bytes`.
#[derive(Debug)]
pub(super) struct Place {
    pub(super) route: u32,
    pub(super) path: CompactString,
    /// A hash of query and key values, which narrows a lookup before they decide.
    pub(super) selector: u64,
    /// `None`: no query, no key values and no `Vary`.
    pub(super) variant: Option<Box<Variant>>,
    pub(super) charge: u64,
    pub(super) referenced: AtomicBool,
    /// `Cache-Control: no-cache` in the stored headers, read once at storing: every hit
    /// checks it (RFC 9111 §5.2.2.4).
    pub(super) no_cache: bool,
}

impl Place {
    /// Whether a request with this query and these key values selects this variant.
    fn selects(&self, query: &Option<Box<str>>, requester: &Requester, request: &HeaderMap) -> bool {
        match &self.variant {
            None => query.is_none() && requester.is_anonymous(),
            Some(variant) => {
                variant.query == *query && variant.requester == *requester && variant.vary.matches(request)
            }
        }
    }

    /// Whether the request `other` was stored for selects this variant.
    fn selects_as(&self, other: Option<&Variant>, request: &HeaderMap) -> bool {
        let same = |a: &Variant, b: &Variant| a.query == b.query && a.requester == b.requester;
        match (self.variant.as_deref(), other) {
            (None, None) => true,
            (None, Some(other)) => other.query.is_none() && other.requester.is_anonymous(),
            (Some(mine), None) => {
                mine.query.is_none() && mine.requester.is_anonymous() && mine.vary.matches(request)
            }
            (Some(mine), Some(other)) => same(mine, other) && mine.vary.matches(request),
        }
    }
}

#[derive(Debug)]
pub(super) struct Variant {
    pub(super) query: Option<Box<str>>,
    pub(super) requester: Requester,
    pub(super) vary: Selectors,
}

impl Variant {
    /// `None` when there is nothing to tell variants apart by.
    pub(super) fn boxed(
        query: Option<Box<str>>,
        requester: Requester,
        vary: Selectors,
    ) -> Option<Box<Variant>> {
        let plain = query.is_none() && requester.is_anonymous() && vary.is_empty();
        (!plain).then(|| {
            Box::new(Variant {
                query,
                requester,
                vary,
            })
        })
    }
}

impl Entry {
    /// An entry that is not stored yet, fresh as of now, without upstream validators.
    pub fn new(body: &[u8], etag: &EntityTag, headers: Arc<HeaderMap>) -> Entry {
        let tag = etag.to_header_value();
        let mut buf = Vec::with_capacity(body.len() + tag.len());
        buf.extend_from_slice(body);
        buf.extend_from_slice(tag.as_bytes());
        Entry::held(buf.into_boxed_slice(), tag.len(), headers)
    }

    /// An entry over `buf`: a body, then a rendered entity-tag of `tag` bytes. A length
    /// out of range is clamped: the tag is then not one, and [`Entry::etag`] falls back
    /// to a hash of the body.
    pub(crate) fn held(buf: Box<[u8]>, tag: usize, headers: Arc<HeaderMap>) -> Entry {
        let tag = u32::try_from(tag.min(buf.len())).unwrap_or(0);
        Entry {
            buf,
            tag,
            headers,
            stored_at: AtomicU64::new(since_epoch()),
            validators: None,
            place: None,
        }
    }

    /// The representation's body, as a response body: it holds the entry, not a copy.
    pub fn body(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(BodyOf(Arc::clone(self)))
    }

    pub fn body_bytes(&self) -> &[u8] {
        self.buf.get(..self.body_len()).unwrap_or_default()
    }

    pub fn body_len(&self) -> usize {
        self.buf.len() - self.tag as usize
    }

    /// The tag clients see.
    pub fn etag(&self) -> EntityTag {
        let rendered = self.buf.get(self.body_len()..).unwrap_or_default();
        EntityTag::from_rendered(rendered).unwrap_or_else(|| EntityTag::from_body(self.body_bytes()))
    }

    /// Records the upstream's validators.
    pub fn with_validators(mut self, etag: Option<HeaderValue>, last_modified: Option<SystemTime>) -> Entry {
        self.validators =
            (etag.is_some() || last_modified.is_some()).then(|| Box::new(Validators { etag, last_modified }));
        self
    }

    /// How long ago the representation was read from the upstream.
    pub fn age(&self) -> Duration {
        Duration::from_nanos(since_epoch().saturating_sub(self.stored_at.load(Relaxed)))
    }

    /// Marks the representation as read from the upstream just now.
    pub fn renew(&self) {
        self.stored_at.store(since_epoch(), Relaxed);
    }

    /// The upstream's own ETag, verbatim, for revalidation and `If-Match` upstream.
    pub fn upstream_etag(&self) -> Option<&HeaderValue> {
        self.validators.as_ref()?.etag.as_ref()
    }

    pub fn last_modified(&self) -> Option<SystemTime> {
        self.validators.as_ref()?.last_modified
    }

    /// RFC 9111 §5.2.2.4: the upstream said `no-cache`, so the entry is never used
    /// without revalidating it, whatever the route's freshness.
    pub fn no_cache(&self) -> bool {
        self.place
            .as_ref()
            .map_or_else(|| policy::no_cache(&self.headers), |place| place.no_cache)
    }

    /// Whether an upstream `304` is about this representation (RFC 9111 §4.3.4); one
    /// with another validator does not confirm this body.
    pub fn confirmed_by(&self, not_modified: &HeaderMap) -> bool {
        policy::confirms(self.upstream_etag(), self.last_modified(), not_modified)
    }

    /// After a `304`: the header set `self` has with the fields of `not_modified` that
    /// `replayed` picks (RFC 9111 §3.2), or `None` when the `304` changes none.
    pub fn updated_headers(
        &self,
        not_modified: &HeaderMap,
        replayed: impl Fn(&HeaderName) -> bool,
    ) -> Option<HeaderMap> {
        policy::updated(&self.headers, not_modified, replayed)
    }

    /// The same body and tag with `headers`, read from the upstream just now and not
    /// stored: an entry's headers never change, so a `304` that updates them makes this
    /// replacement. `Last-Modified` is taken from `headers`.
    pub fn revised(&self, headers: Arc<HeaderMap>) -> Entry {
        let last_modified = headers
            .get(http::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        Entry {
            buf: self.buf.clone(),
            tag: self.tag,
            headers,
            stored_at: AtomicU64::new(since_epoch()),
            validators: None,
            place: None,
        }
        .with_validators(self.upstream_etag().cloned(), last_modified)
    }

    /// The same representation, not stored: what [`super::Cache::insert`] takes again.
    pub fn duplicate(&self) -> Entry {
        Entry {
            buf: self.buf.clone(),
            tag: self.tag,
            headers: Arc::clone(&self.headers),
            stored_at: AtomicU64::new(self.stored_at.load(Relaxed)),
            validators: self.validators.clone(),
            place: None,
        }
    }

    /// Whether this stored entry is the variant of `key` that `request` selects
    /// (`selector` is the cache's hash of the key's query and values).
    pub(super) fn serves(&self, key: &Key, selector: u64, request: &HeaderMap) -> bool {
        self.place.as_ref().is_some_and(|place| {
            place.selector == selector
                && place.route == key.route
                && place.path == *key.path
                && place.selects(&key.query, &key.requester, request)
        })
    }

    /// Whether this stored entry is a variant that `new`, stored for `request`,
    /// replaces.
    pub(super) fn serves_as(&self, new: &Entry, request: &HeaderMap) -> bool {
        let (Some(old), Some(new)) = (&self.place, &new.place) else {
            return false;
        };
        old.selector == new.selector
            && old.route == new.route
            && old.path == new.path
            && old.selects_as(new.variant.as_deref(), request)
    }

    /// Whether this is the place of (route, path).
    pub(super) fn is_at(&self, route: u32, path: &str) -> bool {
        self.place
            .as_ref()
            .is_some_and(|place| place.route == route && place.path == path)
    }

    pub(super) fn charge(&self) -> u64 {
        self.place.as_ref().map_or(0, |place| place.charge)
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_entry_stays_one_small_allocation() {
        // With the `Arc` counts and the allocator's header, 104 bytes is a 128-byte
        // chunk (glibc); a map bucket is the hash and a one-variant `Variants`.
        assert!(
            std::mem::size_of::<Entry>() <= 104,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert_eq!(std::mem::size_of::<super::super::Variants>(), 16);
    }
}
