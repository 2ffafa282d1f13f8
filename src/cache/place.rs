//! Where the cache keeps a stored entry, and which requests it serves there.
//!
//! A stored variant is told apart from the others of its resource by its query, its
//! requester and the request values its `Vary` names (RFC 9111 §4.1). Most entries have
//! none of them, so they are boxed: an entry without them holds a `None`.

use std::sync::atomic::AtomicBool;

use http::HeaderMap;

use super::policy::Selectors;
use super::{Entry, Key};
use crate::requester::Requester;

/// Where a stored entry is: its resource, what selects it among the resource's
/// variants, and its share of `max_bytes`.
#[derive(Debug)]
pub(super) struct Place {
    pub(super) route: u32,
    pub(super) path: Box<str>,
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
    /// Whether this stored entry is the variant of `key` that `request` selects
    /// (`selector` is the cache's hash of the key's query and values).
    pub(super) fn serves(&self, key: &Key, selector: u64, request: &HeaderMap) -> bool {
        self.place.as_ref().is_some_and(|place| {
            place.selector == selector
                && place.route == key.route
                && place.path == key.path
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
            .is_some_and(|place| place.route == route && *place.path == *path)
    }

    /// Its share of `max_bytes`; none while it is not stored.
    pub(super) fn charge(&self) -> u64 {
        self.place.as_ref().map_or(0, |place| place.charge)
    }
}
