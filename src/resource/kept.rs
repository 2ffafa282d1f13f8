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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{Handle, Resources};
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
        self.drop_kept(resources);
        make_room(resources, size, self);
        resources.kept_bytes.fetch_add(size, Ordering::Relaxed);
        let kept = Kept {
            entry: Arc::downgrade(entry),
            doc,
            size,
        };
        match self.kept.lock() {
            Ok(mut slot) => {
                if let Some(old) = slot.replace(kept) {
                    release(resources, old.size);
                }
            }
            Err(_) => release(resources, size),
        }
    }

    fn drop_kept(&self, resources: &Resources) {
        if let Some(old) = self.kept.lock().ok().and_then(|mut slot| slot.take()) {
            release(resources, old.size);
        }
    }
}

/// Any other kept document makes room: this is a small working set, not a cache.
fn make_room(resources: &Resources, size: usize, keeper: &Handle) {
    if resources.kept_bytes.load(Ordering::Relaxed) + size <= BUDGET_BYTES {
        return;
    }
    // Victims are chosen under the registry's read locks and dropped after, through a
    // handle each, so that a resource left idle leaves the registry.
    let victims: Vec<(u32, Box<str>)> = resources
        .table
        .iter()
        .filter(|r| !Arc::ptr_eq(r.value(), &keeper.resource))
        .filter(|r| r.kept.lock().is_ok_and(|k| k.is_some()))
        .map(|r| r.key().clone())
        .take(16)
        .collect();
    for (route, path) in victims {
        if resources.kept_bytes.load(Ordering::Relaxed) + size <= BUDGET_BYTES {
            break;
        }
        if let Some(victim) = resources.find(route, &path) {
            victim.drop_kept(resources);
        }
    }
}

fn release(resources: &Resources, size: usize) {
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

    #[test]
    fn kept_documents_stay_within_their_budget_and_large_ones_are_not_kept() {
        let resources = Resources::default();
        let text = format!(r#"{{"s":"{}"}}"#, "x".repeat(60_000));
        let entries: Vec<_> = (0..40).map(|_| entry(&text)).collect();
        for (i, e) in entries.iter().enumerate() {
            resources
                .get(1, &format!("/d/{i}"))
                .keep(&resources, e, Document::parse(&e.body()).unwrap());
        }
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
}
