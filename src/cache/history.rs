//! Recent versions of each resource, by cache key (so by requester too) and ETag: the
//! bases of merged stale PATCHes and of delta reads.
//!
//! Bounded twice: at most `keep` versions a key (the route's `history`), and a byte
//! bound (a share of `cache.max_bytes`, taken from the cache's own budget) over all of
//! them, the oldest recorded going first. A version holds its entry (shared with the
//! cache while it is current there), charged in full: the bound is never exceeded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::budget::ENTRY_OVERHEAD;
use super::{Entry, Key};
use crate::etag::EntityTag;

#[derive(Default)]
pub(super) struct History {
    /// Oldest first.
    versions: DashMap<Key, VecDeque<Arc<Entry>>>,
    /// Versions in the order recorded: who goes when bytes run short. A version that left
    /// by count stays here until met (or until a compaction), and is then skipped.
    order: Mutex<VecDeque<(Key, Arc<Entry>)>>,
    /// Versions in `versions`.
    live: AtomicU64,
    bytes: AtomicU64,
    /// Changed by a reload ([`History::set_max_bytes`]).
    max_bytes: AtomicU64,
}

impl History {
    pub(super) fn new(max_bytes: u64) -> History {
        History {
            max_bytes: AtomicU64::new(max_bytes),
            ..History::default()
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Whether `entry` is already the newest version of `key` (most records are: reads
    /// of an unchanged resource); a shared look.
    pub(super) fn is_newest(&self, key: &Key, entry: &Entry) -> bool {
        self.versions
            .get(key)
            .is_some_and(|v| v.back().is_some_and(|newest| newest.same_tag(entry)))
    }

    /// Records `entry` as the newest version of `key`, keeping at most `keep`.
    pub(super) fn record(&self, key: &Key, entry: &Arc<Entry>, keep: usize) {
        let charge = charge(entry);
        if keep == 0 || charge > self.max_bytes.load(Relaxed) || self.is_newest(key, entry) {
            return;
        }
        let Ok(mut order) = self.order.lock() else { return };
        let mut versions = self.versions.entry(key.clone()).or_default();
        if versions.back().is_some_and(|newest| newest.same_tag(entry)) {
            return;
        }
        versions.push_back(Arc::clone(entry));
        self.live.fetch_add(1, Relaxed);
        self.bytes.fetch_add(charge, Relaxed);
        order.push_back((key.clone(), Arc::clone(entry)));
        while versions.len() > keep {
            if let Some(gone) = versions.pop_front() {
                self.live.fetch_sub(1, Relaxed);
                self.bytes.fetch_sub(self::charge(&gone), Relaxed);
            }
        }
        drop(versions);
        self.trim(&mut order);
    }

    /// A new byte bound; versions over it go at once, oldest first.
    pub(super) fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Relaxed);
        let Ok(mut order) = self.order.lock() else { return };
        self.trim(&mut order);
    }

    /// The byte bound: the oldest recorded anywhere go first. Then versions that left by
    /// count are dropped from the order now and then, so that it stays within twice what
    /// is kept.
    fn trim(&self, order: &mut VecDeque<(Key, Arc<Entry>)>) {
        while self.bytes.load(Relaxed) > self.max_bytes.load(Relaxed) {
            let Some((old_key, old)) = order.pop_front() else {
                break;
            };
            let mut found = false;
            self.versions.remove_if_mut(&old_key, |_, versions| {
                let before = versions.len();
                versions.retain(|v| !Arc::ptr_eq(v, &old));
                found = versions.len() < before;
                versions.is_empty()
            });
            if found {
                self.live.fetch_sub(1, Relaxed);
                self.bytes.fetch_sub(self::charge(&old), Relaxed);
            }
        }
        let live = usize::try_from(self.live.load(Relaxed)).unwrap_or(usize::MAX);
        if order.len() > 2 * live + 64 {
            order.retain(|(key, version)| {
                self.versions
                    .get(key)
                    .is_some_and(|v| v.iter().any(|kept| Arc::ptr_eq(kept, version)))
            });
        }
    }

    /// The kept version of `key` whose strong ETag is `tag`.
    pub(super) fn find(&self, key: &Key, tag: &EntityTag) -> Option<Arc<Entry>> {
        let versions = self.versions.get(key)?;
        versions.iter().rev().find(|v| v.etag().strong_eq(tag)).cloned()
    }
}

fn charge(entry: &Entry) -> u64 {
    ENTRY_OVERHEAD.saturating_add(entry.body_len() as u64)
}
