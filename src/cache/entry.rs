//! A cached representation, and how one is made from an upstream response.
//!
//! With small documents every byte an entry holds shows in resident memory, so a stored
//! variant is one allocation besides its body's buffer and its path: the entry with its
//! place in the cache. The buffer holds the body and then its tag,
//! and response bodies borrow it through the entry, so it needs no reference count of its
//! own. What most entries lack (upstream validators, a query, key values, `Vary`) is
//! boxed. Entries are not copied: the cache gives back one it does not store, and an
//! upstream `304` renews one in place. Each of these choices saves 2–2.5 % of resident
//! memory with 1 KiB documents (`benches/memory.rs`), measured against the plain layout.
//!
//! Invariant: an entry's tag is the one its route's ETag mode gives its body (SPEC
//! "Validators"), and its headers are the upstream's end-to-end ones minus those
//! patchgate sets itself ([`replayed`]).

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::place::Place;
use super::{Cache, policy};
use crate::config::EtagMode;
use crate::etag::EntityTag;

/// A response body borrowed from a shared entry.
struct BodyOf(Arc<Entry>);

impl AsRef<[u8]> for BodyOf {
    fn as_ref(&self) -> &[u8] {
        self.0.body_bytes()
    }
}

/// The process's clock origin for entry ages.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Where [`EPOCH`] sits on the entry clock: far enough from 0 that an entry the upstream
/// says is old (RFC 9111 `Age`, up to 2^31 s) can be dated before the process started.
const EPOCH_OFFSET: u64 = 1 << 62;

fn since_epoch() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(EPOCH_OFFSET)
}

/// What is stored: enough to answer a GET/HEAD/304 without the upstream and to revalidate.
#[derive(Debug)]
pub struct Entry {
    /// The body, then the rendered tag clients see (its last `tag` bytes). A plain
    /// allocation: response bodies borrow it through the entry's own reference count
    /// ([`Entry::body`]), so it needs none of its own.
    buf: Box<[u8]>,
    tag: u32,
    /// With `freshness = "http"`: the freshness lifetime in seconds (RFC 9111 §4.2.1),
    /// set when stored or revalidated. Fills what would be padding after `tag`.
    lifetime: AtomicU32,
    /// End-to-end response headers to replay (content-type, cache-control, vary, …);
    /// shared between entries that have the same ones.
    pub headers: Arc<HeaderMap>,
    /// When the representation was read from the upstream: nanoseconds since [`EPOCH`]
    /// (plus its offset), half the size of an `Instant`; renewed in place after an
    /// upstream `304`. With `freshness = "http"` dated back by the age the upstream's
    /// answer already had (RFC 9111 §4.2.3), so that [`Entry::age`] is its current age.
    stored_at: AtomicU64,
    validators: Option<Box<Validators>>,
    /// The body is a PATCH's result, serialized by patchgate: valid JSON in the compact
    /// form, which the next PATCH indexes without validating it again.
    patched: bool,
    /// Set by the cache when it stores the entry.
    pub(super) place: Option<Place>,
}

/// What the upstream sent to validate its representation.
#[derive(Debug, Clone)]
struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<SystemTime>,
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
    fn held(buf: Box<[u8]>, tag: usize, headers: Arc<HeaderMap>) -> Entry {
        let tag = u32::try_from(tag.min(buf.len())).unwrap_or(0);
        Entry {
            buf,
            tag,
            lifetime: AtomicU32::new(0),
            headers,
            stored_at: AtomicU64::new(since_epoch()),
            validators: None,
            patched: false,
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

    /// Whether `other` carries the same tag, compared as rendered (no allocation).
    pub fn same_tag(&self, other: &Entry) -> bool {
        let mine = self.buf.get(self.body_len()..).unwrap_or_default();
        let theirs = other.buf.get(other.body_len()..).unwrap_or_default();
        if !mine.is_empty() && !theirs.is_empty() {
            return mine == theirs;
        }
        self.etag().strong_eq(&other.etag())
    }

    /// Records the upstream's validators.
    pub fn with_validators(mut self, etag: Option<HeaderValue>, last_modified: Option<SystemTime>) -> Entry {
        self.validators =
            (etag.is_some() || last_modified.is_some()).then(|| Box::new(Validators { etag, last_modified }));
        self
    }

    /// Marks the body as a PATCH's result, serialized by patchgate ([`Entry::patched`]).
    pub(crate) fn mark_patched(mut self) -> Entry {
        self.patched = true;
        self
    }

    /// Whether the body is a PATCH's result: valid JSON in patchgate's compact form by
    /// construction (`Document::index_written` relies on it).
    pub fn patched(&self) -> bool {
        self.patched
    }

    /// How long ago the representation was read from the upstream.
    pub fn age(&self) -> Duration {
        Duration::from_nanos(since_epoch().saturating_sub(self.stored_at.load(Relaxed)))
    }

    /// Marks the representation as read from the upstream just now.
    pub fn renew(&self) {
        self.stored_at.store(since_epoch(), Relaxed);
    }

    /// `freshness = "http"`: the freshness lifetime (seconds) and the age the upstream's
    /// answer had when it arrived just now (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub fn set_freshness(&self, lifetime: u32, initial_age: Duration) {
        let back = u64::try_from(initial_age.as_nanos()).unwrap_or(u64::MAX);
        self.lifetime.store(lifetime, Relaxed);
        self.stored_at.store(since_epoch().saturating_sub(back), Relaxed);
    }

    /// `freshness = "http"`: the freshness lifetime in seconds (0 when never set).
    pub fn lifetime(&self) -> u32 {
        self.lifetime.load(Relaxed)
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
            lifetime: AtomicU32::new(self.lifetime()),
            headers,
            stored_at: AtomicU64::new(since_epoch()),
            validators: None,
            patched: self.patched,
            place: None,
        }
        .with_validators(self.upstream_etag().cloned(), last_modified)
    }

    /// The same representation, not stored: what [`super::Cache::insert`] takes again.
    pub fn duplicate(&self) -> Entry {
        Entry {
            buf: self.buf.clone(),
            tag: self.tag,
            lifetime: AtomicU32::new(self.lifetime()),
            headers: Arc::clone(&self.headers),
            stored_at: AtomicU64::new(self.stored_at.load(Relaxed)),
            validators: self.validators.clone(),
            patched: self.patched,
            place: None,
        }
    }
}

/// What [`make_entry`] appends to a body: the longest tag it makes, a weak hash or
/// the upstream's. A body read with this much spare capacity is stored in place.
pub(crate) fn tag_room(upstream_headers: &HeaderMap) -> usize {
    // `W/"` + 32 hex digits + `"`.
    const WEAK_HASH: usize = 36;
    WEAK_HASH.max(upstream_headers.get(header::ETAG).map_or(0, HeaderValue::len))
}

/// Builds the entry for an upstream 200, with the route's ETag mode (SPEC "Validators").
/// With `etag = "upstream"` and no upstream tag, a weak tag of the body's hash lets
/// 304s work but can never satisfy `If-Match`. The header set comes from `cache`'s
/// kept ones.
pub(crate) fn make_entry(
    mode: EtagMode,
    upstream_headers: &HeaderMap,
    body: BytesMut,
    cache: &Cache,
) -> Entry {
    let upstream_etag = upstream_headers.get(header::ETAG);
    let upstream_tag = upstream_etag.and_then(|v| EntityTag::rendered_in(v.as_bytes()));
    let hash;
    let (weak_prefix, tag): (&[u8], &[u8]) = match (mode, upstream_tag) {
        (EtagMode::Auto, Some((false, rendered))) | (EtagMode::Upstream, Some((_, rendered))) => {
            (b"", rendered)
        }
        (EtagMode::Upstream, None) => {
            hash = EntityTag::render_hash(&body);
            (b"W/", &hash)
        }
        (EtagMode::Hash | EtagMode::Auto, _) => {
            hash = EntityTag::render_hash(&body);
            (b"", &hash)
        }
    };
    // The body and its tag in one buffer. A buffer with more spare capacity than that
    // (grown by doubling) is copied to fit.
    let room = weak_prefix.len() + tag.len();
    let spare = body.capacity() - body.len();
    let mut buf = if (room..=room + 64).contains(&spare) {
        body
    } else {
        let mut exact = BytesMut::with_capacity(body.len() + room);
        exact.extend_from_slice(&body);
        exact
    };
    buf.extend_from_slice(weak_prefix);
    buf.extend_from_slice(tag);
    let buf = Vec::from(buf).into_boxed_slice();
    let upstream_etag = upstream_etag.map(crate::headers::detached);
    let last_modified = upstream_headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let headers = cache.header_set(upstream_headers, |name| replayed(name, upstream_headers));
    Entry::held(buf, room, headers).with_validators(upstream_etag, last_modified)
}

/// Whether an entry replays the upstream's field `name` (from a 200, or a 304 that
/// updates it): not hop-by-hop, and not one patchgate sets itself.
pub(crate) fn replayed(name: &HeaderName, upstream_headers: &HeaderMap) -> bool {
    !REPLACED.contains(name) && !crate::headers::is_hop_by_hop(name, upstream_headers)
}

/// Upstream response headers an entry does not replay: patchgate sets them itself.
const REPLACED: [HeaderName; 6] = [
    header::ETAG,
    header::CONTENT_LENGTH,
    header::DATE,
    header::AGE,
    header::SET_COOKIE,
    header::VIA,
];

#[cfg(all(test, target_pointer_width = "64"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_entry_stays_one_small_allocation() {
        // With the `Arc` counts and the allocator's header, 104 bytes is a 128-byte
        // chunk (glibc), besides the body's buffer and the path; a map bucket is the
        // hash and a one-variant `Variants`.
        assert!(
            std::mem::size_of::<Entry>() <= 104,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert_eq!(std::mem::size_of::<super::super::resource::Variants>(), 16);
    }
}
