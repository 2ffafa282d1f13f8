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
    /// Every version kept, in the order recorded: who goes when bytes run short.
    order: Mutex<VecDeque<(Key, Arc<Entry>)>>,
    bytes: AtomicU64,
    max_bytes: u64,
}

impl History {
    pub(super) fn new(max_bytes: u64) -> History {
        History {
            max_bytes,
            ..History::default()
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Records `entry` as the newest version of `key`, keeping at most `keep`.
    pub(super) fn record(&self, key: &Key, entry: &Arc<Entry>, keep: usize) {
        let charge = charge(entry);
        if keep == 0 || charge > self.max_bytes {
            return;
        }
        let tag = entry.etag();
        let known =
            |versions: &VecDeque<Arc<Entry>>| versions.back().is_some_and(|v| v.etag().strong_eq(&tag));
        // Most records repeat the newest version (reads of an unchanged resource): a
        // shared look, without the order's lock.
        if self.versions.get(key).is_some_and(|v| known(&v)) {
            return;
        }
        let Ok(mut order) = self.order.lock() else { return };
        let mut versions = self.versions.entry(key.clone()).or_default();
        if known(&versions) {
            return;
        }
        versions.push_back(Arc::clone(entry));
        self.bytes.fetch_add(charge, Relaxed);
        order.push_back((key.clone(), Arc::clone(entry)));
        while versions.len() > keep {
            if let Some(gone) = versions.pop_front() {
                self.bytes.fetch_sub(self::charge(&gone), Relaxed);
                forget(&mut order, key, &gone);
            }
        }
        drop(versions);
        // The byte bound: the oldest recorded anywhere go first.
        while self.bytes.load(Relaxed) > self.max_bytes {
            let Some((old_key, old)) = order.pop_front() else {
                break;
            };
            self.bytes.fetch_sub(self::charge(&old), Relaxed);
            self.versions.remove_if_mut(&old_key, |_, versions| {
                versions.retain(|v| !Arc::ptr_eq(v, &old));
                versions.is_empty()
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

/// Drops `gone` of `key` from the recording order (a version that left by count).
fn forget(order: &mut VecDeque<(Key, Arc<Entry>)>, key: &Key, gone: &Arc<Entry>) {
    if let Some(i) = order.iter().position(|(k, v)| Arc::ptr_eq(v, gone) && k == key) {
        order.remove(i);
    }
}
