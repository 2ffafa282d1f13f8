//! The byte budget: what an entry is charged, room reserved before it is stored, and
//! eviction to make that room (in CLOCK order, see `clock`).
//!
//! Invariant: the reserved total never exceeds `max_bytes`, not even transiently (a
//! reservation is one compare-and-swap that refuses to pass it), and it is never less
//! than the charge of the entries in the map: room is reserved before an entry becomes
//! visible and released only after it is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::*};

use http::HeaderValue;

use super::policy::Selectors;
use super::{Cache, Entry, Key};

/// Charged per entry on top of its bytes: the entry, its map bucket and ring link, its
/// tag, and the allocator's share. `benches/memory.rs` measures about 420 bytes per
/// 1 KiB entry beyond its body, fragmentation included (more with credentials in the
/// key); the charge keeps a margin so that `max_bytes` bounds resident memory, not just
/// bodies, also while entries are evicted and replaced.
pub const ENTRY_OVERHEAD: u64 = 1024;

/// The bytes and entries reserved against `max_bytes`.
pub(super) struct Budget {
    /// Lowered or raised by a reload ([`Cache::resize`]).
    max_bytes: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl Budget {
    pub(super) fn new(max_bytes: u64) -> Budget {
        Budget {
            max_bytes: AtomicU64::new(max_bytes),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    pub(super) fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Acquire)
    }

    pub(super) fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Release);
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub(super) fn entries(&self) -> u64 {
        self.entries.load(Relaxed)
    }

    /// Reserves room for one entry charged `charge`, if the total stays within
    /// `max_bytes`.
    pub(super) fn try_reserve(&self, charge: u64) -> bool {
        let reserved = self
            .bytes
            .fetch_update(AcqRel, Acquire, |bytes| {
                bytes
                    .checked_add(charge)
                    .filter(|&total| total <= self.max_bytes())
            })
            .is_ok();
        if reserved {
            self.entries.fetch_add(1, Relaxed);
        }
        reserved
    }

    /// Releases the reservations of entries already out of the map.
    pub(super) fn forget(&self, entries: &[Arc<Entry>]) {
        let bytes = entries.iter().map(|entry| entry.charge()).sum();
        self.release(bytes, entries.len() as u64);
    }

    pub(super) fn release(&self, bytes: u64, entries: u64) {
        self.bytes.fetch_sub(bytes, AcqRel);
        self.entries.fetch_sub(entries, Relaxed);
    }
}

impl Cache {
    /// Reserves `charge`, evicting from the CLOCK ring until it fits.
    pub(super) fn reserve_evicting(&self, charge: u64) -> bool {
        loop {
            if self.budget.try_reserve(charge) {
                return true;
            }
            if !self.evict_one() {
                return false;
            }
        }
    }

    /// Evicts until the entries fit `max_bytes` (after a reload lowered it).
    pub(super) fn evict_to_bound(&self) {
        while self.budget.bytes() > self.budget.max_bytes() && self.evict_one() {}
    }

    /// Evicts the CLOCK ring's next victim; false when the ring is empty.
    fn evict_one(&self) -> bool {
        let Some(victim) = self.ring.victim() else {
            return false;
        };
        let Some(place) = &victim.place else { return true };
        let resource = self.resource(place.route, &place.path);
        let evicted = self.remove_where(resource, |entry| Arc::ptr_eq(entry, &victim));
        self.evictions.fetch_add(evicted, Relaxed);
        true
    }
}

/// What storing `entry` under `key`, selected by `vary`, costs: see [`Cache::insert`].
pub(super) fn charge(key: &Key, vary: &Selectors, entry: &Entry) -> u64 {
    let headers: usize = entry
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let key_bytes = key.path.len() + key.query.as_ref().map_or(0, |query| query.len()) + key.requester.len();
    // The client's tag is usually the upstream's, else a fixed-size hash (in the overhead).
    let tags = 2 * entry.upstream_etag().map_or(0, HeaderValue::len);
    let bytes = entry.body_len() + headers + key_bytes + vary.bytes() + tags;
    ENTRY_OVERHEAD.saturating_add(bytes as u64)
}
