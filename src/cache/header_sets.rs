//! Header sets shared between entries: the documents of one API mostly carry the same
//! few, and a `HeaderMap` of its own costs an entry hundreds of bytes (without sharing,
//! `benches/memory.rs` shows 18 % more resident memory with 1 KiB documents).
//!
//! Invariant: a kept set is never changed, only replaced; an entry's headers are the
//! same fields whether it holds its own set or a shared one.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue};

/// Distinct header sets kept for entries to share.
const HEADER_SETS: usize = 64;

/// The kept sets and the next place to reuse once all are taken. A std mutex: held for
/// a scan of at most [`HEADER_SETS`] sets, never across an await.
#[derive(Default)]
pub(super) struct HeaderSets(Mutex<(Vec<Arc<HeaderMap>>, usize)>);

impl HeaderSets {
    /// A kept set of exactly the fields of `headers` that `keep` picks (in this order),
    /// else a new one of detached copies of them, kept for the next entries.
    pub(super) fn pick(&self, headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Arc<HeaderMap> {
        let fields = || headers.iter().filter(|(name, _)| keep(name));
        let held = self.0.lock().ok().and_then(|guard| {
            let sets = &guard.0;
            sets.iter().find(|set| same_fields(set, fields())).cloned()
        });
        if let Some(set) = held {
            return set;
        }
        let mut kept = HeaderMap::with_capacity(fields().count());
        for (name, value) in fields() {
            kept.append(name.clone(), crate::headers::detached(value));
        }
        self.share(Arc::new(kept))
    }

    /// An equal set already kept, or this one, kept for the next entries (the oldest
    /// kept set makes room when all places are taken).
    pub(super) fn share(&self, headers: Arc<HeaderMap>) -> Arc<HeaderMap> {
        let Ok(mut guard) = self.0.lock() else {
            return headers;
        };
        let (sets, next) = &mut *guard;
        if let Some(set) = sets
            .iter()
            .find(|set| Arc::ptr_eq(set, &headers) || ***set == *headers)
        {
            return Arc::clone(set);
        }
        if sets.len() < HEADER_SETS {
            sets.push(Arc::clone(&headers));
        } else if let Some(place) = sets.get_mut(*next % HEADER_SETS) {
            *place = Arc::clone(&headers);
            *next = next.wrapping_add(1);
        }
        headers
    }
}

/// Whether `set` holds exactly `fields`, in this order.
fn same_fields<'a>(
    set: &HeaderMap,
    mut fields: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> bool {
    let mut held = set.iter();
    loop {
        match (held.next(), fields.next()) {
            (None, None) => return true,
            (Some((a, x)), Some((b, y))) if a == b && x == y => {}
            _ => return false,
        }
    }
}
