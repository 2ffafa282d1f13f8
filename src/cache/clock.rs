//! CLOCK ("second chance") eviction order, the classic approximation of LRU.
//!
//! Entries join at the back with their bit clear. A hit sets the bit without touching
//! the ring, so reads never take its lock. The hand pops from the front: an entry with
//! its bit set has it cleared and goes to the back; the first with a clear bit is the
//! victim.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::Entry;

/// Oldest first. A std mutex: held for a few pops and pushes, never across an await.
/// Weak links, so that an entry dropped by invalidation or replacement frees its body
/// at once; dead links are skipped by the hand and compacted on push.
#[derive(Default)]
pub(super) struct Ring(Mutex<Links>);

/// The links, and what compacting them last left.
#[derive(Default)]
struct Links {
    ring: VecDeque<Weak<Entry>>,
    /// Links left by the last compaction: entries replaced in the cache but still held
    /// elsewhere (history keeps recent versions) are not dead, so the next compaction
    /// waits until the ring has doubled past them, or every push would scan it all.
    after_compaction: usize,
    #[cfg(test)]
    compactions: usize,
}

impl Ring {
    /// Adds a newly stored entry; `live` is the number of entries in the cache.
    pub(super) fn push(&self, entry: &Arc<Entry>, live: u64) {
        let mut links = self.lock();
        links.ring.push_back(Arc::downgrade(entry));
        // Keep dead links under one per live entry (plus slack): amortized O(1), and the
        // ring stays proportional to the cache and what history holds.
        let live = usize::try_from(live).unwrap_or(usize::MAX);
        let bound = live
            .saturating_mul(2)
            .saturating_add(1024)
            .max(links.after_compaction.saturating_mul(2));
        if links.ring.len() > bound {
            links.ring.retain(|link| link.strong_count() > 0);
            links.after_compaction = links.ring.len();
            #[cfg(test)]
            {
                links.compactions += 1;
            }
        }
    }

    /// The next entry to evict, taken out of the ring; `None` when no entry is left.
    pub(super) fn victim(&self) -> Option<Arc<Entry>> {
        let mut links = self.lock();
        let ring = &mut links.ring;
        // Two turns clear every bit, so hits racing with the hand cannot keep it going.
        let mut budget = ring.len().saturating_mul(2);
        while let Some(link) = ring.pop_front() {
            let Some(entry) = link.upgrade() else { continue };
            budget = budget.saturating_sub(1);
            let referenced = entry
                .place
                .as_ref()
                .is_some_and(|place| place.referenced.swap(false, Relaxed));
            if budget > 0 && referenced {
                ring.push_back(link);
                continue;
            }
            return Some(entry);
        }
        None
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().ring.len()
    }

    fn lock(&self) -> MutexGuard<'_, Links> {
        // Every operation leaves the ring consistent, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cache::{Entry, Place};
    use crate::etag::EntityTag;
    use std::sync::atomic::AtomicBool;

    fn slot(path: &str) -> Arc<Entry> {
        let mut entry = Entry::new(b"", &EntityTag::from_body(b""), Arc::default());
        entry.place = Some(Place {
            route: 1,
            path: path.into(),
            selector: 0,
            variant: None,
            charge: 1,
            no_cache: false,
            referenced: AtomicBool::new(false),
        });
        Arc::new(entry)
    }

    fn referenced(entry: &Entry) -> &AtomicBool {
        &entry.place.as_ref().unwrap().referenced
    }

    fn victim_path(ring: &Ring) -> Option<String> {
        ring.victim()
            .map(|entry| entry.place.as_ref().unwrap().path.to_string())
    }

    #[test]
    fn victims_come_oldest_first() {
        let ring = Ring::default();
        let slots: Vec<_> = ["/a", "/b", "/c"].into_iter().map(slot).collect();
        slots.iter().for_each(|s| ring.push(s, 3));
        assert_eq!(victim_path(&ring).as_deref(), Some("/a"));
        assert_eq!(victim_path(&ring).as_deref(), Some("/b"));
        assert_eq!(victim_path(&ring).as_deref(), Some("/c"));
        assert_eq!(victim_path(&ring), None);
    }

    #[test]
    fn referenced_entry_gets_a_second_chance_and_loses_its_bit() {
        let ring = Ring::default();
        let slots: Vec<_> = ["/a", "/b"].into_iter().map(slot).collect();
        slots.iter().for_each(|s| ring.push(s, 2));
        referenced(&slots[0]).store(true, Relaxed);
        assert_eq!(victim_path(&ring).as_deref(), Some("/b"));
        assert!(!referenced(&slots[0]).load(Relaxed));
        assert_eq!(victim_path(&ring).as_deref(), Some("/a"));
    }

    #[test]
    fn all_referenced_still_yields_a_victim() {
        let ring = Ring::default();
        let slots: Vec<_> = ["/a", "/b"].into_iter().map(slot).collect();
        slots.iter().for_each(|s| {
            ring.push(s, 2);
            referenced(s).store(true, Relaxed);
        });
        assert_eq!(victim_path(&ring).as_deref(), Some("/a"));
    }

    #[test]
    fn dropped_entries_are_skipped_and_compacted() {
        let ring = Ring::default();
        let kept = slot("/kept");
        ring.push(&kept, 1);
        for i in 0..2000 {
            ring.push(&slot(&format!("/gone/{i}")), 1);
        }
        assert!(ring.len() <= 2 + 1024);
        assert_eq!(victim_path(&ring).as_deref(), Some("/kept"));
        assert_eq!(victim_path(&ring), None);
    }

    #[test]
    fn entries_held_elsewhere_do_not_make_every_push_compact() {
        let ring = Ring::default();
        // Replaced in the cache (one live entry) but all held, as history holds versions.
        let held: Vec<_> = (0..20_000).map(|i| slot(&format!("/v/{i}"))).collect();
        held.iter().for_each(|s| ring.push(s, 1));
        assert_eq!(ring.len(), 20_000);
        let compactions = ring.lock().compactions;
        assert!(compactions <= 8, "{compactions} compactions for 20 000 pushes");
    }
}
