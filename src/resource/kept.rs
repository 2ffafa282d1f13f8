//! The parsed form of a resource's last written document, kept so that the next PATCH
//! of a hot document does not parse it again.
//!
//! Only the tree path keeps one: a PATCH the fast path takes (`Document::index`, most of
//! them: every body patchgate writes is in the compact form it indexes) scans the body
//! faster than a kept tree would serialize, and drops a tree kept for the entry. What is
//! left for a kept tree is a JSON Patch of more than 64 operations on a hot document.
//!
//! Invariant: a kept document is handed out only for the very cache entry it was made
//! from. It holds a `Weak` to that entry, which keeps its allocation from being reused,
//! so pointer equality means "the same entry"; an entry's body never changes, and an
//! entry is one requester's (its cache key holds the requester fingerprint).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Handle, Id, Resources};
use crate::cache::Entry;
use crate::patch::Document;

/// The text size of all kept documents together; their parsed trees take a few times it.
const BUDGET_BYTES: usize = 1 << 20;
/// Larger documents are not kept.
const MAX_SOURCE_BYTES: usize = 64 * 1024;

pub(crate) struct Kept {
    entry: Weak<Entry>,
    doc: Document,
    size: usize,
    /// This keeping's place in the [`Order`].
    stamp: u64,
}

/// The order in which documents were kept, so that making room takes the oldest in
/// constant time instead of scanning the registry (which, with many documents written
/// in turn, cost every PATCH a walk over all of them). An entry whose resource has since
/// let its document go, or kept another, is skipped; the queue is compacted when such
/// entries outnumber the live ones.
#[derive(Default)]
pub(crate) struct Order {
    queue: Mutex<VecDeque<(Id, u64)>>,
    next_stamp: AtomicU64,
    /// Documents kept now.
    live: AtomicUsize,
}
impl Handle {
    /// The parsed form of `entry` if it is kept, taken out: the caller is about to change
    /// it, under the resource's write lock.
    pub(crate) fn take_kept(&self, resources: &Resources, entry: &Arc<Entry>) -> Option<Document> {
        let kept = self.kept.lock().ok()?.take()?;
        release(resources, kept.size);
        std::ptr::eq(kept.entry.as_ptr(), Arc::as_ptr(entry)).then_some(kept.doc)
    }

    /// Keeps `doc` as the parsed form of `entry`; the caller has checked that `doc`
    /// serializes to `entry`'s body.
    pub(crate) fn keep(&self, resources: &Resources, entry: &Arc<Entry>, doc: Document) {
        let size = entry.body_len();
        if size > MAX_SOURCE_BYTES {
            return;
        }
        self.drop_kept(resources, None);
        make_room(resources, size);
        resources.kept_bytes.fetch_add(size, Ordering::Relaxed);
        resources.kept_order.live.fetch_add(1, Ordering::Relaxed);
        let stamp = resources.kept_order.next_stamp.fetch_add(1, Ordering::Relaxed);
        let kept = Kept {
            entry: Arc::downgrade(entry),
            doc,
            size,
            stamp,
        };
        match self.kept.lock() {
            Ok(mut slot) => {
                if let Some(old) = slot.replace(kept) {
                    release(resources, old.size);
                }
            }
            Err(_) => {
                release(resources, size);
                return;
            }
        }
        resources.kept_order.push(resources, self.id.clone(), stamp);
    }

    /// Lets the kept document go; with a stamp, only the one kept then.
    fn drop_kept(&self, resources: &Resources, stamp: Option<u64>) {
        let old = self.kept.lock().ok().and_then(|mut slot| {
            if stamp.is_none_or(|s| slot.as_ref().is_some_and(|k| k.stamp == s)) {
                slot.take()
            } else {
                None
            }
        });
        if let Some(old) = old {
            release(resources, old.size);
        }
    }

    fn keeps(&self, stamp: u64) -> bool {
        self.kept
            .lock()
            .is_ok_and(|k| k.as_ref().is_some_and(|k| k.stamp == stamp))
    }
}

impl Order {
    fn push(&self, resources: &Resources, id: Id, stamp: u64) {
        let Ok(mut queue) = self.queue.lock() else { return };
        queue.push_back((id, stamp));
        // Stale entries (taken or replaced documents) pile up while nothing needs room.
        let live = self.live.load(Ordering::Relaxed);
        if queue.len() > 2 * live + 64 {
            queue.retain(|(id, stamp)| {
                resources.table.get(id).is_some_and(|r| {
                    r.kept
                        .lock()
                        .is_ok_and(|k| k.as_ref().is_some_and(|k| k.stamp == *stamp))
                })
            });
        }
    }

    /// The oldest entries, up to `n`, taken out.
    fn oldest(&self, n: usize) -> Vec<(Id, u64)> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let n = n.min(queue.len());
        queue.drain(..n).collect()
    }
}

/// The oldest kept documents make room: this is a small working set, not a cache.
fn make_room(resources: &Resources, size: usize) {
    let fits = || resources.kept_bytes.load(Ordering::Relaxed) + size <= BUDGET_BYTES;
    while !fits() {
        // Taken out under the order's lock and dropped after, through a handle each, so
        // that a resource left idle leaves the registry.
        let victims = resources.kept_order.oldest(16);
        if victims.is_empty() {
            return;
        }
        let mut victims = victims.into_iter();
        for (id, stamp) in victims.by_ref() {
            if let Some(victim) = resources.find(id.0, &id.1)
                && victim.keeps(stamp)
            {
                victim.drop_kept(resources, Some(stamp));
                if fits() {
                    break;
                }
            }
        }
        // Not needed after all: back to the front, still the oldest.
        if let Ok(mut queue) = resources.kept_order.queue.lock() {
            for entry in victims.rev() {
                queue.push_front(entry);
            }
        }
    }
}

fn release(resources: &Resources, size: usize) {
    let _ = resources
        .kept_order
        .live
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    let _ = resources
        .kept_bytes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_sub(size))
        });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::etag::EntityTag;

    fn entry(body: &str) -> Arc<Entry> {
        Arc::new(Entry::new(
            body.as_bytes(),
            &EntityTag::from_body(body.as_bytes()),
            Arc::default(),
        ))
    }

    #[test]
    fn a_kept_document_serves_only_its_own_entry_and_only_once() {
        let resources = Resources::default();
        let first = entry(r#"{"a":1}"#);
        let same_bytes = entry(r#"{"a":1}"#);
        let doc = || Document::parse(&first.body()).unwrap();
        resources.get(1, "/d").keep(&resources, &first, doc());
        assert!(
            resources
                .get(1, "/d")
                .take_kept(&resources, &same_bytes)
                .is_none(),
            "another entry, even with equal bytes"
        );
        resources.get(1, "/d").keep(&resources, &first, doc());
        assert!(
            resources.get(2, "/d").take_kept(&resources, &first).is_none(),
            "another route"
        );
        let taken = resources.get(1, "/d").take_kept(&resources, &first).unwrap();
        assert_eq!(taken.to_bytes(), first.body());
        assert!(
            resources.get(1, "/d").take_kept(&resources, &first).is_none(),
            "taken out"
        );
        assert_eq!(resources.len(), 0, "nothing kept, nobody holding: gone");
        assert_eq!(resources.kept_bytes.load(Ordering::Relaxed), 0);
    }

    /// Forty documents of 60 kB kept in turn, more than the budget holds.
    fn forty_kept() -> (Resources, String, Vec<Arc<Entry>>) {
        let resources = Resources::default();
        let text = format!(r#"{{"s":"{}"}}"#, "x".repeat(60_000));
        let entries: Vec<_> = (0..40).map(|_| entry(&text)).collect();
        for (i, e) in entries.iter().enumerate() {
            resources
                .get(1, &format!("/d/{i}"))
                .keep(&resources, e, Document::parse(&e.body()).unwrap());
        }
        (resources, text, entries)
    }

    #[test]
    fn kept_documents_stay_within_their_budget_and_large_ones_are_not_kept() {
        let (resources, text, _entries) = forty_kept();
        assert_eq!(resources.len(), BUDGET_BYTES / text.len());
        assert_eq!(
            resources.kept_bytes.load(Ordering::Relaxed),
            resources.len() * text.len()
        );
        let large = entry(&format!(r#"{{"s":"{}"}}"#, "x".repeat(MAX_SOURCE_BYTES)));
        resources
            .get(1, "/large")
            .keep(&resources, &large, Document::parse(&large.body()).unwrap());
        assert!(resources.get(1, "/large").take_kept(&resources, &large).is_none());
    }

    #[test]
    fn room_is_made_by_the_oldest_kept_documents_and_the_order_stays_small() {
        let (resources, text, entries) = forty_kept();
        let fit = BUDGET_BYTES / text.len();
        for (i, e) in entries.iter().enumerate() {
            let kept = resources
                .get(1, &format!("/d/{i}"))
                .take_kept(&resources, e)
                .is_some();
            assert_eq!(
                kept,
                i >= 40 - fit,
                "document {i}: only the newest {fit} are kept"
            );
        }
        // One hot document kept and taken over and over: its stale places are dropped.
        let hot = entry(r#"{"a":1}"#);
        for _ in 0..10_000 {
            let handle = resources.get(1, "/hot");
            handle.keep(&resources, &hot, Document::parse(&hot.body()).unwrap());
            assert!(handle.take_kept(&resources, &hot).is_some());
        }
        let queued = resources.kept_order.queue.lock().unwrap().len();
        assert!(queued <= 65, "{queued} entries for no kept document");
        assert_eq!(resources.kept_order.live.load(Ordering::Relaxed), 0);
    }
}
