//! A cached representation and where the cache keeps it.
//!
//! With small documents every allocation an entry makes shows in resident memory, so a
//! stored variant is two allocations besides its body's buffer (which also holds its
//! tags): the entry with its place in the cache, and the path it shares with the map.
//! What most entries lack (upstream validators, a query, key values, `Vary`) is boxed.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::policy::Selectors;
use crate::etag::EntityTag;

/// What is stored: enough to answer a GET/HEAD/304 without the upstream and to revalidate.
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    /// The tag clients see.
    pub etag: EntityTag,
    /// End-to-end response headers to replay (content-type, cache-control, vary, …);
    /// shared between entries that have the same ones.
    pub headers: Arc<HeaderMap>,
    pub stored_at: Instant,
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

/// Where a stored entry is: its resource (the path shared with the map's key), what
/// selects it among the resource's variants, and its share of `max_bytes`.
#[derive(Debug)]
pub(super) struct Place {
    pub(super) route: u32,
    pub(super) path: Arc<str>,
    /// A hash of query and key values, which narrows a lookup before they decide.
    pub(super) selector: u64,
    /// `None`: no query, no key values and no `Vary`.
    pub(super) variant: Option<Box<Variant>>,
    pub(super) charge: u64,
    pub(super) referenced: AtomicBool,
}

#[derive(Debug)]
pub(super) struct Variant {
    pub(super) query: Option<Box<str>>,
    pub(super) key_values: Box<[Option<HeaderValue>]>,
    pub(super) vary: Selectors,
}

impl Variant {
    /// `None` when there is nothing to tell variants apart by.
    pub(super) fn boxed(
        query: Option<Box<str>>,
        key_values: Box<[Option<HeaderValue>]>,
        vary: Selectors,
    ) -> Option<Box<Variant>> {
        let plain = query.is_none() && key_values.is_empty() && vary.is_empty();
        (!plain).then(|| {
            Box::new(Variant {
                query,
                key_values,
                vary,
            })
        })
    }
}

impl Entry {
    /// An entry that is not stored yet, fresh as of now, without upstream validators.
    pub fn new(body: Bytes, etag: EntityTag, headers: Arc<HeaderMap>) -> Entry {
        Entry {
            body,
            etag,
            headers,
            stored_at: Instant::now(),
            validators: None,
            place: None,
        }
    }

    /// Records the upstream's validators.
    pub fn with_validators(mut self, etag: Option<HeaderValue>, last_modified: Option<SystemTime>) -> Entry {
        self.validators =
            (etag.is_some() || last_modified.is_some()).then(|| Box::new(Validators { etag, last_modified }));
        self
    }

    /// The upstream's own ETag, verbatim, for revalidation and `If-Match` upstream.
    pub fn upstream_etag(&self) -> Option<&HeaderValue> {
        self.validators.as_ref()?.etag.as_ref()
    }

    pub fn last_modified(&self) -> Option<SystemTime> {
        self.validators.as_ref()?.last_modified
    }

    /// The same representation, not stored: what [`super::Cache::insert`] takes again.
    pub fn duplicate(&self) -> Entry {
        Entry {
            body: self.body.clone(),
            etag: self.etag.clone(),
            headers: Arc::clone(&self.headers),
            stored_at: self.stored_at,
            validators: self.validators.clone(),
            place: None,
        }
    }

    /// Whether this stored entry is the variant that `selector`, `query`, `key_values`
    /// and `request` (for `Vary`) select.
    pub(super) fn serves(
        &self,
        selector: u64,
        query: &Option<Box<str>>,
        key_values: &[Option<HeaderValue>],
        request: &HeaderMap,
    ) -> bool {
        let Some(place) = &self.place else {
            return false;
        };
        place.selector == selector
            && match &place.variant {
                None => query.is_none() && key_values.is_empty(),
                Some(variant) => {
                    variant.query == *query
                        && *variant.key_values == *key_values
                        && variant.vary.matches(request)
                }
            }
    }

    /// Whether this stored entry is a variant that the stored entry `new`, stored for
    /// `request`, replaces.
    pub(super) fn serves_as(&self, new: &Entry, request: &HeaderMap) -> bool {
        let Some(place) = &new.place else {
            return false;
        };
        match place.variant.as_deref() {
            None => self.serves(place.selector, &None, &[], request),
            Some(variant) => self.serves(place.selector, &variant.query, &variant.key_values, request),
        }
    }

    pub(super) fn charge(&self) -> u64 {
        self.place.as_ref().map_or(0, |place| place.charge)
    }
}
